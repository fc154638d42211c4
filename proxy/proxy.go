// Package proxy is a small TCP proxy that announces the client with a PROXY
// protocol (v1 or v2) header, plus a Dialer and header builders for probes
// that send a chosen header, valid or deliberately broken.
//
// A Proxy accepts a client, connects to its Upstream, writes one PROXY header
// in a single Write (before any client byte), then copies bytes both ways,
// passing half-closes through so a client's QUIT-then-close flow works. It
// knows nothing of SMTP or any other protocol spoken inside the connection.
// Headers are built with github.com/pires/go-proxyproto.
//
// Goroutines: Serve runs in the caller's goroutine; each accepted connection
// gets two copy goroutines owned by the Proxy, which Close and Shutdown wait
// for.
package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/pires/go-proxyproto"
)

const (
	defaultIdleTimeout = 2 * time.Minute
	copyBufSize        = 16 << 10
)

// Proxy is a TCP proxy that sends a PROXY header to its backend. Configure
// the exported fields before calling Serve; the zero value (with Upstream
// set) sends a v1 header announcing the real client.
type Proxy struct {
	// Upstream is the backend "host:port". Required.
	Upstream string
	// Header picks the header for each connection; nil means RealClient(1).
	Header HeaderFunc
	// LocalAddr is an optional source IP address (no port) the proxy dials the
	// backend from, such as "127.0.0.9".
	LocalAddr string
	// DialTimeout bounds the connect to the backend; 0 means 5s.
	DialTimeout time.Duration
	// IdleTimeout closes a connection pair when no bytes have moved in either
	// direction for this long; it also bounds each write. 0 means 2m.
	IdleTimeout time.Duration
	// Logger receives one line per connection; nil means silent.
	Logger *slog.Logger

	mu        sync.Mutex
	draining  bool // no new listeners or connections (Shutdown or Close called)
	cut       bool // connections are being closed (Close, or Shutdown past its deadline)
	done      chan struct{}
	listeners map[net.Listener]struct{}
	conns     map[*pair]struct{}
	addr      net.Addr
	wg        sync.WaitGroup // one per connection handler
	bufs      sync.Pool

	nextID    atomic.Uint64
	accepted  atomic.Uint64
	active    atomic.Int64
	failed    atomic.Uint64
	bytesUp   atomic.Uint64
	bytesDown atomic.Uint64
}

// Stats are the Proxy's counters since it was created.
type Stats struct {
	Accepted  uint64 // client connections accepted
	Active    uint64 // connections currently open (dialing or copying)
	Failed    uint64 // connections closed before copying: backend dial, header build or header write failed
	BytesUp   uint64 // client-to-backend payload bytes, PROXY headers excluded
	BytesDown uint64 // backend-to-client bytes
}

// pair is one client connection and, once dialed, its backend connection.
type pair struct {
	id       uint64
	client   net.Conn
	upstream net.Conn
	cancel   context.CancelFunc // aborts the backend dial
}

// Stats returns a snapshot of the counters.
func (p *Proxy) Stats() Stats {
	return Stats{
		Accepted:  p.accepted.Load(),
		Active:    uint64(max(p.active.Load(), 0)),
		Failed:    p.failed.Load(),
		BytesUp:   p.bytesUp.Load(),
		BytesDown: p.bytesDown.Load(),
	}
}

// Addr returns the address of the listener Serve most recently started on,
// or nil before that.
func (p *Proxy) Addr() net.Addr {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.addr
}

// ListenAndServe listens on the TCP address addr and serves until ctx is
// cancelled (then it calls Close) or Close/Shutdown is called. It returns nil
// after a clean close. To drain connections instead of cutting them, call
// Shutdown before cancelling ctx.
func (p *Proxy) ListenAndServe(ctx context.Context, addr string) error {
	if err := p.check(); err != nil {
		return err
	}
	// No TCP keepalive: idle deadlines already bound dead peers, and it costs four
	// setsockopt calls per accepted connection.
	lc := net.ListenConfig{KeepAlive: -1}
	ln, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return fmt.Errorf("proxy: listen: %w", err)
	}
	closed := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		defer close(closed)
		p.Close()
	})
	err = p.Serve(ln)
	if !stop() {
		<-closed
	}
	if errors.Is(err, ErrClosed) && ctx.Err() != nil {
		return nil // ctx was cancelled before Serve started
	}
	return err
}

// Serve accepts connections on ln and proxies each to Upstream. It blocks
// until ln fails or Close/Shutdown is called, closes ln, and returns nil after
// Close/Shutdown (ErrClosed if they came before Serve). Connections still open
// when Serve returns keep running until Close or Shutdown.
func (p *Proxy) Serve(ln net.Listener) error {
	if err := p.check(); err != nil {
		ln.Close()
		return err
	}
	if !p.trackListener(ln) {
		ln.Close()
		return ErrClosed
	}
	defer p.untrackListener(ln)
	var delay time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			if p.isDraining() {
				return nil
			}
			if !isTemporary(err) {
				return fmt.Errorf("proxy: accept: %w", err)
			}
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			p.logger().Warn("accept failed; retrying", "err", err, "delay", delay)
			t := time.NewTimer(delay)
			select {
			case <-t.C:
			case <-p.doneCh():
				t.Stop()
				return nil
			}
			continue
		}
		delay = 0
		p.start(c)
	}
}

// Close stops accepting, closes every connection, and waits for the copy
// goroutines to finish. It is safe to call more than once.
func (p *Proxy) Close() error {
	p.stopAccepting()
	p.cutAll()
	p.wg.Wait()
	return nil
}

// Shutdown stops accepting and waits for open connections to end by
// themselves. If ctx ends first it closes them as Close does and returns the
// context's error, wrapped.
func (p *Proxy) Shutdown(ctx context.Context) error {
	p.stopAccepting()
	drained := make(chan struct{})
	go func() {
		defer close(drained)
		p.wg.Wait()
	}()
	select {
	case <-drained:
		return nil
	case <-ctx.Done():
		p.cutAll()
		<-drained
		return fmt.Errorf("proxy: shutdown: %w", ctx.Err())
	}
}

func (p *Proxy) check() error {
	if p.Upstream == "" {
		return ErrNoUpstream
	}
	if _, err := localTCPAddr(p.LocalAddr); err != nil {
		return err
	}
	return nil
}

func (p *Proxy) logger() *slog.Logger {
	if p.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return p.Logger
}

// doneCh returns the channel closed when the Proxy stops accepting.
func (p *Proxy) doneCh() chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.doneLocked()
}

func (p *Proxy) doneLocked() chan struct{} {
	if p.done == nil {
		p.done = make(chan struct{})
	}
	return p.done
}

func (p *Proxy) isDraining() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.draining
}

func (p *Proxy) trackListener(ln net.Listener) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.draining {
		return false
	}
	if p.listeners == nil {
		p.listeners = make(map[net.Listener]struct{})
	}
	p.listeners[ln] = struct{}{}
	p.addr = ln.Addr()
	return true
}

func (p *Proxy) untrackListener(ln net.Listener) {
	p.mu.Lock()
	delete(p.listeners, ln)
	p.mu.Unlock()
	ln.Close()
}

// stopAccepting marks the Proxy draining and closes its listeners.
func (p *Proxy) stopAccepting() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.draining {
		p.draining = true
		close(p.doneLocked())
	}
	for ln := range p.listeners {
		ln.Close()
	}
}

// cutAll closes every open connection and aborts backend dials.
func (p *Proxy) cutAll() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut = true
	for pr := range p.conns {
		pr.closeLocked()
	}
}

func (pr *pair) closeLocked() {
	pr.cancel()
	pr.client.Close()
	if pr.upstream != nil {
		pr.upstream.Close()
	}
}

// start registers an accepted connection and starts its handler.
func (p *Proxy) start(c net.Conn) {
	ctx, cancel := context.WithCancel(context.Background())
	pr := &pair{id: p.nextID.Add(1), client: c, cancel: cancel}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.draining {
		cancel()
		c.Close()
		return
	}
	if p.conns == nil {
		p.conns = make(map[*pair]struct{})
	}
	p.conns[pr] = struct{}{}
	p.accepted.Add(1)
	p.active.Add(1)
	p.wg.Go(func() { p.handle(ctx, pr) })
}

// attach records the backend conn; false if the Proxy is cutting connections.
func (p *Proxy) attach(pr *pair, up net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cut {
		return false
	}
	pr.upstream = up
	return true
}

func (p *Proxy) finish(pr *pair) {
	p.mu.Lock()
	delete(p.conns, pr)
	pr.closeLocked()
	p.mu.Unlock()
	p.active.Add(-1)
}

func (p *Proxy) idleTimeout() time.Duration {
	if p.IdleTimeout > 0 {
		return p.IdleTimeout
	}
	return defaultIdleTimeout
}

// handle dials the backend, sends the header and copies until both sides end.
func (p *Proxy) handle(ctx context.Context, pr *pair) {
	defer p.finish(pr)
	began := time.Now()
	// Log attributes are built only when the line is logged: they cost time
	// on every connection's path to the backend's first byte.
	lg := p.logger()
	up, h, err := p.open(ctx, pr)
	if err != nil {
		p.failed.Add(1)
		lg.Warn("proxy connection failed", "conn_id", pr.id, "remote", pr.client.RemoteAddr().String(), "upstream", p.Upstream, "err", err)
		return
	}
	var log *slog.Logger
	if lg.Enabled(context.Background(), slog.LevelInfo) {
		log = lg.With("conn_id", pr.id, "remote", pr.client.RemoteAddr().String())
		hdr := "none"
		if h != nil {
			hdr = describe(h)
		}
		log.Info("proxy connection open", "upstream", up.RemoteAddr().String(), "header", hdr)
	}

	nUp, nDown, err := p.pipe(pr.client, up)
	if log == nil {
		return
	}
	attrs := []any{"bytes_up", nUp, "bytes_down", nDown, "duration", time.Since(began).Round(time.Millisecond)}
	if err != nil {
		attrs = append(attrs, "err", err)
	}
	log.Info("proxy connection closed", attrs...)
}

// open dials the backend and writes the PROXY header. It returns the
// backend conn and the header sent (nil for none).
func (p *Proxy) open(ctx context.Context, pr *pair) (net.Conn, *proxyproto.Header, error) {
	la, _ := localTCPAddr(p.LocalAddr) // checked in Serve
	timeout := p.DialTimeout
	if timeout <= 0 {
		timeout = defaultDialTimeout
	}
	// No TCP keepalive: IdleTimeout ends dead pairs, and keepalive costs
	// four setsockopt calls before the header can be sent.
	nd := net.Dialer{Timeout: timeout, KeepAlive: -1}
	if la != nil {
		nd.LocalAddr = la
	}
	up, err := nd.DialContext(ctx, "tcp", p.Upstream)
	if err != nil {
		return nil, nil, fmt.Errorf("dial upstream: %w", err)
	}
	if !p.attach(pr, up) {
		up.Close()
		return nil, nil, ErrClosed
	}
	hf := p.Header
	if hf == nil {
		hf = RealClient(1)
	}
	h, err := hf(pr.client.RemoteAddr(), up.RemoteAddr())
	if err != nil {
		return nil, nil, fmt.Errorf("build PROXY header: %w", err)
	}
	if h == nil {
		return up, nil, nil
	}
	b, err := h.Format()
	if err != nil {
		return nil, nil, fmt.Errorf("format PROXY header: %w", err)
	}
	if err := writeHeader(ctx, up, b, time.Now().Add(p.idleTimeout())); err != nil {
		return nil, nil, err
	}
	return up, h, nil
}

// describe renders a header for logs.
func describe(h *proxyproto.Header) string {
	if h.Command.IsLocal() {
		return fmt.Sprintf("v%d LOCAL", h.Version)
	}
	fam := "?"
	switch h.TransportProtocol {
	case proxyproto.TCPv4:
		fam = "TCP4"
	case proxyproto.TCPv6:
		fam = "TCP6"
	}
	return fmt.Sprintf("v%d %s %v > %v", h.Version, fam, h.SourceAddr, h.DestinationAddr)
}

// pipe copies both ways until each direction has ended (the caller closes both).
func (p *Proxy) pipe(client, up net.Conn) (nUp, nDown uint64, err error) {
	var last atomic.Int64
	last.Store(time.Now().UnixNano())
	var upErr error
	var wg sync.WaitGroup
	wg.Go(func() { nUp, upErr = p.copyDir(up, client, &p.bytesUp, &last) })
	nDown, err = p.copyDir(client, up, &p.bytesDown, &last)
	wg.Wait() // both conns are closed by the caller (finish)
	return nUp, nDown, errors.Join(upErr, err)
}

// copyDir copies src to dst. On EOF it half-closes dst; on any other error it
// closes both conns so the other direction ends too.
func (p *Proxy) copyDir(dst, src net.Conn, total *atomic.Uint64, last *atomic.Int64) (uint64, error) {
	idle := p.idleTimeout()
	bp, _ := p.bufs.Get().(*[]byte)
	if bp == nil {
		b := make([]byte, copyBufSize)
		bp = &b
	}
	defer p.bufs.Put(bp)
	buf := *bp
	abort := func(err error) error {
		src.Close()
		dst.Close()
		if errors.Is(err, net.ErrClosed) {
			return nil // closed by the other direction or by Close
		}
		return err
	}
	var n uint64
	for {
		deadline := time.Unix(0, last.Load()).Add(idle)
		if !deadline.After(time.Now()) {
			return n, abort(ErrIdle)
		}
		if err := src.SetReadDeadline(deadline); err != nil {
			return n, abort(err)
		}
		nr, rerr := src.Read(buf)
		if nr > 0 {
			last.Store(time.Now().UnixNano())
			if err := dst.SetWriteDeadline(time.Now().Add(idle)); err != nil {
				return n, abort(err)
			}
			nw, werr := dst.Write(buf[:nr])
			n += uint64(nw)
			total.Add(uint64(nw))
			if werr != nil {
				return n, abort(werr)
			}
		}
		switch {
		case rerr == nil:
		case errors.Is(rerr, io.EOF):
			if cw, ok := dst.(interface{ CloseWrite() error }); ok {
				if err := cw.CloseWrite(); err != nil {
					return n, abort(err)
				}
				return n, nil
			}
			return n, abort(nil)
		case errors.Is(rerr, os.ErrDeadlineExceeded):
			// The loop re-checks activity in both directions.
		default:
			return n, abort(rerr)
		}
	}
}

// isTemporary reports accept errors worth retrying after a pause.
func isTemporary(err error) bool {
	return errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) ||
		errors.Is(err, syscall.ENOBUFS) || errors.Is(err, syscall.ENOMEM) ||
		errors.Is(err, syscall.ECONNABORTED) || errors.Is(err, os.ErrDeadlineExceeded)
}
