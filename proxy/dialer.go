package proxy

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"time"
)

// defaultDialTimeout bounds a connect (and, for Dialer, the header write).
const defaultDialTimeout = 5 * time.Second

// Dialer connects straight to a server and writes a chosen PROXY header
// (valid or deliberately broken) before the caller's first byte. It is the
// probe-side counterpart of Proxy. The zero value is ready to use.
type Dialer struct {
	// LocalAddr is an optional source IP address (no port) to dial from,
	// such as "127.0.0.9".
	LocalAddr string
	// Timeout bounds the connect and the header write; 0 means 5s.
	Timeout time.Duration
}

// DialContext connects to addr over network ("tcp", "tcp4" or "tcp6") and,
// if header is non-nil, writes it with exactly one Write call before
// returning, so it leaves in one TCP segment (Postfix reads the header with a
// single recv and rejects one split across segments). The returned conn has
// no deadlines set.
func (d *Dialer) DialContext(ctx context.Context, network, addr string, header []byte) (net.Conn, error) {
	la, err := localTCPAddr(d.LocalAddr)
	if err != nil {
		return nil, err
	}
	timeout := d.Timeout
	if timeout <= 0 {
		timeout = defaultDialTimeout
	}
	nd := net.Dialer{Timeout: timeout}
	if la != nil {
		nd.LocalAddr = la
	}
	conn, err := nd.DialContext(ctx, network, addr)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", addr, err)
	}
	if header == nil {
		return conn, nil
	}
	if err := writeHeader(ctx, conn, header, time.Now().Add(timeout)); err != nil {
		conn.Close()
		return nil, err
	}
	return conn, nil
}

// writeHeader writes b to conn in one Write, bounded by deadline and ctx, and
// clears the write deadline afterwards.
func writeHeader(ctx context.Context, conn net.Conn, b []byte, deadline time.Time) error {
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	if err := conn.SetWriteDeadline(deadline); err != nil {
		return fmt.Errorf("write PROXY header: %w", err)
	}
	fired := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		defer close(fired)
		// Unblock the write now; the result is reported below.
		_ = conn.SetWriteDeadline(time.Unix(1, 0))
	})
	n, err := conn.Write(b)
	if !stop() {
		<-fired // the func ran: wait for it, and report the cancellation
		if err == nil {
			err = ctx.Err()
		}
	}
	if err == nil && n != len(b) {
		err = io.ErrShortWrite
	}
	if err != nil {
		return fmt.Errorf("write PROXY header: %w", err)
	}
	if err := conn.SetWriteDeadline(time.Time{}); err != nil {
		return fmt.Errorf("write PROXY header: %w", err)
	}
	return nil
}

// localTCPAddr parses an optional bare source IP into a dialer LocalAddr.
func localTCPAddr(s string) (*net.TCPAddr, error) {
	if s == "" {
		return nil, nil
	}
	ip, err := netip.ParseAddr(s)
	if err != nil {
		return nil, fmt.Errorf("%w %q: want an IP address without port", ErrLocalAddr, s)
	}
	return net.TCPAddrFromAddrPort(netip.AddrPortFrom(ip, 0)), nil
}
