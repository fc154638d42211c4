// Package benchtool holds the helpers behind `make bench` (scripts/bench.sh):
// a connect-to-banner latency measurer that interleaves several targets, a
// PROXY-aware fakesource sink, free-port and readiness helpers, and the
// report writer that turns the raw figures into Markdown.
//
// It measures; it asserts nothing about speed. Its tests check only that the
// measurements and the arithmetic are right.
package benchtool

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strings"
	"time"

	"github.com/pires/go-proxyproto"
)

// ErrReply is wrapped when a server answers with an unexpected SMTP reply.
var ErrReply = errors.New("benchtool: unexpected reply")

// maxReplyLines bounds a multi-line reply read by readReply.
const maxReplyLines = 64

// Target is one address to measure, such as a sink or a proxy in front of it.
type Target struct {
	Name string
	Addr string
	// ProxyV2 makes the client itself send a PROXY v2 header announcing
	// its own address, so a sink that expects one can be measured without
	// a proxy in front of it.
	ProxyV2 bool
}

// BannerTime dials t.Addr and returns the time from the start of the dial
// until the last line of the server's 220 banner was read (with t.ProxyV2,
// after writing the header in one write). It then sends QUIT and waits for
// the 221 (not timed) so that the server and any proxy see a clean session.
// timeout bounds the whole exchange.
func BannerTime(ctx context.Context, t Target, timeout time.Duration) (time.Duration, error) {
	addr := t.Addr
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var d net.Dialer
	start := time.Now()
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return 0, fmt.Errorf("banner time: dial %s: %w", addr, err)
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { _ = c.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	if dl, ok := ctx.Deadline(); ok {
		if err := c.SetDeadline(dl); err != nil {
			return 0, fmt.Errorf("banner time: set deadline: %w", err)
		}
	}
	if t.ProxyV2 {
		b, err := proxyproto.HeaderProxyFromAddrs(2, c.LocalAddr(), c.RemoteAddr()).Format()
		if err != nil {
			return 0, fmt.Errorf("banner time: PROXY header: %w", err)
		}
		if _, err := c.Write(b); err != nil {
			return 0, fmt.Errorf("banner time: write PROXY header to %s: %w", addr, err)
		}
	}
	r := bufio.NewReaderSize(c, 1024)
	if err := readReply(r, "220"); err != nil {
		return 0, fmt.Errorf("banner time: banner from %s: %w", addr, err)
	}
	elapsed := time.Since(start)
	if _, err := io.WriteString(c, "QUIT\r\n"); err != nil {
		return 0, fmt.Errorf("banner time: write QUIT to %s: %w", addr, err)
	}
	if err := readReply(r, "221"); err != nil {
		return 0, fmt.Errorf("banner time: QUIT reply from %s: %w", addr, err)
	}
	return elapsed, nil
}

// readReply reads one (possibly multi-line) SMTP reply and checks its code.
func readReply(r *bufio.Reader, code string) error {
	for range maxReplyLines {
		line, err := r.ReadString('\n')
		if err != nil {
			return fmt.Errorf("read reply: %w", err)
		}
		if len(line) < 4 || line[:3] != code {
			return fmt.Errorf("%w: want %s, got %q", ErrReply, code, strings.TrimRight(line, "\r\n"))
		}
		if line[3] != '-' {
			return nil
		}
	}
	return fmt.Errorf("%w: more than %d reply lines", ErrReply, maxReplyLines)
}

// MeasureLatency takes n rounds of BannerTime samples, one per target per
// round, one connection at a time. The order of the targets rotates from
// round to round so that a slow spell of the machine hits them all alike.
// It returns the samples by target name, in the order they were taken.
func MeasureLatency(ctx context.Context, targets []Target, n int, timeout time.Duration) (map[string][]time.Duration, error) {
	if len(targets) == 0 || n <= 0 {
		return nil, fmt.Errorf("measure latency: %d targets, %d rounds: want at least one of each", len(targets), n)
	}
	out := make(map[string][]time.Duration, len(targets))
	for _, t := range targets {
		if _, dup := out[t.Name]; dup {
			return nil, fmt.Errorf("measure latency: target %q named twice", t.Name)
		}
		out[t.Name] = make([]time.Duration, 0, n)
	}
	for i := range n {
		for j := range targets {
			t := targets[(i+j)%len(targets)]
			d, err := BannerTime(ctx, t, timeout)
			if err != nil {
				return nil, fmt.Errorf("measure latency: %s round %d: %w", t.Name, i+1, err)
			}
			out[t.Name] = append(out[t.Name], d)
		}
	}
	return out, nil
}

// Summary describes a set of duration samples.
type Summary struct {
	N      int
	Min    time.Duration
	Median time.Duration
	P95    time.Duration
	Max    time.Duration
}

// Summarize returns the summary of samples (which it does not modify). The
// median of an even count is the mean of the two middle samples; P95 is the
// nearest-rank 95th percentile.
func Summarize(samples []time.Duration) Summary {
	if len(samples) == 0 {
		return Summary{}
	}
	s := slices.Clone(samples)
	slices.Sort(s)
	n := len(s)
	med := s[n/2]
	if n%2 == 0 {
		med = (s[n/2-1] + s[n/2]) / 2
	}
	return Summary{N: n, Min: s[0], Median: med, P95: s[nearestRank(n, 95)], Max: s[n-1]}
}

// nearestRank returns the index of the p-th percentile of n sorted samples.
func nearestRank(n, p int) int {
	r := (p*n + 99) / 100 // ceil(p*n/100)
	return min(max(r, 1), n) - 1
}

// MedianFloat returns the median of xs (the mean of the middle two for an
// even count), and 0 for none.
func MedianFloat(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	n := len(s)
	if n%2 == 0 {
		return (s[n/2-1] + s[n/2]) / 2
	}
	return s[n/2]
}
