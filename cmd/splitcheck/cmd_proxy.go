package main

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/pires/go-proxyproto"
	"github.com/spf13/cobra"

	"github.com/splitcheck/splitcheck/proxy"
)

// proxyOptions are the flags of `splitcheck proxy`.
type proxyOptions struct {
	listen       string
	backend      string
	version      int
	announce     string
	sourceAddr   string
	tlvs         []string
	idleTimeout  time.Duration
	dialTimeout  time.Duration
	drainTimeout time.Duration
}

func newProxyCmd(ios *ioStreams) *cobra.Command {
	opts := &proxyOptions{}
	cmd := &cobra.Command{
		Use:   "proxy --listen ADDR --backend ADDR [flags]",
		Short: "Run a TCP proxy that announces each client to the backend with a PROXY v1/v2 header",
		Long: `proxy accepts TCP connections on --listen, connects each one to --backend, sends a
PROXY protocol header (v1 text or v2 binary) in a single write before any client byte,
then copies bytes both ways, passing half-closes through. It knows nothing of SMTP.

By default the header announces the real client address and port. --announce claims
another source instead, so one machine can play many clients. The header's destination
is the backend address.

It prints "listening on ADDR" on stderr once it accepts connections, and one log line
per connection on stderr. On SIGINT or SIGTERM it stops accepting, lets open
connections finish for up to --drain-timeout, cuts the rest, prints the final counters
on stdout (JSON when stdout is not a terminal) and exits 0.`,
		Example: `  splitcheck proxy --listen 127.0.0.1:2525 --backend 127.0.0.1:25
  splitcheck proxy --listen 127.0.0.1:0 --backend 127.0.0.1:25 --proxy-version 2 \
      --announce 198.51.100.7 --source-addr 127.0.0.9 --tlv 0x05=636f6e6e2d31`,
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) > 0 {
				return &usageError{fmt.Errorf("proxy takes no arguments, got %q", args)}
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, _ []string) error {
			p, err := buildProxy(opts)
			if err != nil {
				return err
			}
			log, err := proxyLogger(cmd, ios)
			if err != nil {
				return err
			}
			p.Logger = log
			return runProxy(cmd.Context(), p, opts, ios)
		},
	}
	cmd.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return &usageError{err} })
	f := cmd.Flags()
	f.StringVar(&opts.listen, "listen", "", "address to accept clients on, such as 127.0.0.1:2525; port 0 picks a free one (required)")
	f.StringVar(&opts.backend, "backend", "", "HOST:PORT of the server behind the proxy, such as 127.0.0.1:25 (required)")
	f.IntVar(&opts.version, "proxy-version", 1, "PROXY protocol version to send: 1 (text) or 2 (binary); 0 sends no header at all")
	f.StringVar(&opts.announce, "announce", "", "IP or IP:PORT to claim as the client instead of the real one; without a port the client's port is kept")
	f.StringVar(&opts.sourceAddr, "source-addr", "", "local IP (no port) to connect to the backend from, such as 127.0.0.9")
	f.StringArrayVar(&opts.tlvs, "tlv", nil, "TYPE=HEX: add a v2 TLV, TYPE 0-255 (decimal or 0x..), value as hex, may be empty (repeatable; needs --proxy-version 2)")
	f.DurationVar(&opts.idleTimeout, "idle-timeout", 2*time.Minute, "close a connection when no byte has moved either way for this long")
	f.DurationVar(&opts.dialTimeout, "dial-timeout", 5*time.Second, "give up connecting to the backend after this long")
	f.DurationVar(&opts.drainTimeout, "drain-timeout", 10*time.Second, "on SIGINT/SIGTERM, wait this long for open connections before cutting them")
	return cmd
}

// proxyLogger uses the root's --log-level/--log-format when present.
func proxyLogger(cmd *cobra.Command, ios *ioStreams) (*slog.Logger, error) {
	if cmd.Flags().Lookup("log-level") == nil || cmd.Flags().Lookup("log-format") == nil {
		return slog.New(slog.NewTextHandler(ios.ErrOut, nil)), nil
	}
	return newLogger(cmd, ios)
}

// buildProxy checks the flags and builds the proxy; bad values are usage errors.
func buildProxy(opts *proxyOptions) (*proxy.Proxy, error) {
	if opts.listen == "" {
		return nil, &usageError{errors.New("--listen is required (for example --listen 127.0.0.1:2525)")}
	}
	if _, _, err := net.SplitHostPort(opts.listen); err != nil {
		return nil, &usageError{fmt.Errorf("--listen %q: want HOST:PORT", opts.listen)}
	}
	if opts.backend == "" {
		return nil, &usageError{errors.New("--backend is required (for example --backend 127.0.0.1:25)")}
	}
	if host, port, err := net.SplitHostPort(opts.backend); err != nil || host == "" || port == "" || port == "0" {
		return nil, &usageError{fmt.Errorf("--backend %q: want HOST:PORT", opts.backend)}
	}
	if opts.version < 0 || opts.version > 2 {
		return nil, &usageError{fmt.Errorf("--proxy-version %d: want 1 or 2 (or 0 for no header)", opts.version)}
	}
	if opts.sourceAddr != "" {
		if _, err := netip.ParseAddr(opts.sourceAddr); err != nil {
			return nil, &usageError{fmt.Errorf("--source-addr %q: want an IP address without port", opts.sourceAddr)}
		}
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"--idle-timeout", opts.idleTimeout}, {"--dial-timeout", opts.dialTimeout}, {"--drain-timeout", opts.drainTimeout}} {
		if d.v <= 0 {
			return nil, &usageError{fmt.Errorf("%s %v: want a positive duration such as 30s", d.name, d.v)}
		}
	}
	tlvs := make([]proxyproto.TLV, 0, len(opts.tlvs))
	for _, s := range opts.tlvs {
		tlv, err := parseTLV(s)
		if err != nil {
			return nil, &usageError{fmt.Errorf("--tlv %q: %w", s, err)}
		}
		tlvs = append(tlvs, tlv)
	}
	if len(tlvs) > 0 && opts.version != 2 {
		return nil, &usageError{fmt.Errorf("--tlv needs --proxy-version 2 (got %d)", opts.version)}
	}
	if _, err := proxyproto.JoinTLVs(tlvs); err != nil {
		return nil, &usageError{fmt.Errorf("--tlv: %w", err)}
	}

	p := &proxy.Proxy{
		Upstream:    opts.backend,
		LocalAddr:   opts.sourceAddr,
		DialTimeout: opts.dialTimeout,
		IdleTimeout: opts.idleTimeout,
	}
	v := byte(opts.version)
	switch {
	case opts.version == 0:
		if opts.announce != "" {
			return nil, &usageError{errors.New("--announce needs a header: use --proxy-version 1 or 2")}
		}
		p.Header = proxy.NoHeader
	case opts.announce != "":
		src, err := parseAnnounce(opts.announce)
		if err != nil {
			return nil, &usageError{fmt.Errorf("--announce %q: %w", opts.announce, err)}
		}
		p.Header = proxy.Announce(v, src, tlvs...)
	default:
		p.Header = proxy.RealClient(v, tlvs...)
	}
	return p, nil
}

// parseAnnounce reads IP or IP:PORT ([IPv6]:PORT); a missing port is 0.
func parseAnnounce(s string) (netip.AddrPort, error) {
	if ap, err := netip.ParseAddrPort(s); err == nil {
		if ap.Port() == 0 {
			return ap, errors.New("port 0: leave the port out to keep the client's")
		}
		return ap, nil
	}
	ip, err := netip.ParseAddr(strings.TrimSuffix(strings.TrimPrefix(s, "["), "]"))
	if err != nil || ip.Zone() != "" {
		return netip.AddrPort{}, errors.New("want IP or IP:PORT, such as 198.51.100.7 or [2001:db8::7]:40000")
	}
	return netip.AddrPortFrom(ip, 0), nil
}

// parseTLV reads TYPE=HEX, TYPE being 0-255 in decimal or 0x hex.
func parseTLV(s string) (proxyproto.TLV, error) {
	typ, val, ok := strings.Cut(s, "=")
	if !ok {
		return proxyproto.TLV{}, errors.New("want TYPE=HEX, such as 0x05=6964")
	}
	t, err := strconv.ParseUint(strings.TrimSpace(typ), 0, 8)
	if err != nil {
		return proxyproto.TLV{}, fmt.Errorf("type %q: want 0-255", typ)
	}
	v, err := hex.DecodeString(strings.TrimSpace(val))
	if err != nil {
		return proxyproto.TLV{}, fmt.Errorf("value %q: want hex digits", val)
	}
	return proxyproto.TLV{Type: proxyproto.PP2Type(t), Value: v}, nil
}

// runProxy serves until ctx is cancelled, then drains for up to
// --drain-timeout and prints the final counters.
func runProxy(ctx context.Context, p *proxy.Proxy, opts *proxyOptions, ios *ioStreams) error {
	// No TCP keepalive: idle deadlines already bound dead peers, and it costs four
	// setsockopt calls per accepted connection.
	lc := net.ListenConfig{KeepAlive: -1}
	ln, err := lc.Listen(ctx, "tcp", opts.listen)
	if err != nil {
		return fmt.Errorf("proxy: listen: %w", err)
	}
	fmt.Fprintf(ios.ErrOut, "listening on %s\n", ln.Addr())
	served := make(chan error, 1)
	go func() { served <- p.Serve(ln) }()

	var serveErr error
	select {
	case <-ctx.Done():
		fmt.Fprintf(ios.ErrOut, "stopping: draining open connections for up to %s\n", opts.drainTimeout)
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), opts.drainTimeout)
		if err := p.Shutdown(sctx); err != nil {
			fmt.Fprintf(ios.ErrOut, "drain timeout: cut the remaining connections\n")
		}
		cancel()
		serveErr = <-served
	case serveErr = <-served:
		// The listener failed: cut what is open and report it.
		p.Close()
	}
	printProxyStats(ios, p.Stats())
	return serveErr
}

// printProxyStats writes the counters on stdout: a sentence on a terminal,
// one JSON object otherwise.
func printProxyStats(ios *ioStreams, s proxy.Stats) {
	if ios.StdoutTTY {
		fmt.Fprintf(ios.Out, "proxy: %d connections accepted, %d failed, %d bytes up, %d bytes down\n",
			s.Accepted, s.Failed, s.BytesUp, s.BytesDown)
		return
	}
	b, _ := json.Marshal(struct {
		Accepted  uint64 `json:"accepted"`
		Active    uint64 `json:"active"`
		Failed    uint64 `json:"failed"`
		BytesUp   uint64 `json:"bytes_up"`
		BytesDown uint64 `json:"bytes_down"`
	}{s.Accepted, s.Active, s.Failed, s.BytesUp, s.BytesDown})
	fmt.Fprintf(ios.Out, "%s\n", b)
}
