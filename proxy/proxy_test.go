package proxy_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pires/go-proxyproto"
	"go.uber.org/goleak"

	"github.com/splitcheck/splitcheck/proxy"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// TestProxyHeaders checks the exact bytes the proxy writes before any client
// byte, that they arrive in one read of at most 536 bytes, that they parse
// with proxyproto.Read, and that the payload then flows both ways.
func TestProxyHeaders(t *testing.T) {
	tlvs := []proxyproto.TLV{
		{Type: proxyproto.PP2_TYPE_UNIQUE_ID, Value: []byte("conn-42")},
		{Type: proxyproto.PP2_TYPE_MIN_CUSTOM, Value: []byte{0x01, 0x02}},
	}
	for _, tt := range []struct {
		name    string
		network string
		header  proxy.HeaderFunc
		// want builds the expected header from the client's and backend's addresses.
		want func(client, backend netip.AddrPort) []byte
	}{
		{"default is v1 real client", "tcp4", nil,
			func(c, b netip.AddrPort) []byte { return v1Line("TCP4", c, b) }},
		{"v1 real client TCP4", "tcp4", proxy.RealClient(1),
			func(c, b netip.AddrPort) []byte { return v1Line("TCP4", c, b) }},
		{"v1 real client TCP6", "tcp6", proxy.RealClient(1),
			func(c, b netip.AddrPort) []byte { return v1Line("TCP6", c, b) }},
		{"v2 real client TCP4", "tcp4", proxy.RealClient(2),
			func(c, b netip.AddrPort) []byte { return v2Bytes(c, b) }},
		{"v2 real client TCP6 with TLVs", "tcp6", proxy.RealClient(2, tlvs...),
			func(c, b netip.AddrPort) []byte { return v2Bytes(c, b, tlvs...) }},
		{"v1 announce keeps client port", "tcp4", proxy.Announce(1, netip.MustParseAddrPort("198.51.100.7:0")),
			func(c, b netip.AddrPort) []byte {
				return v1Line("TCP4", netip.AddrPortFrom(netip.MustParseAddr("198.51.100.7"), c.Port()), b)
			}},
		{"v2 announce with TLVs", "tcp4", proxy.Announce(2, netip.MustParseAddrPort("203.0.113.9:4242"), tlvs...),
			func(c, b netip.AddrPort) []byte {
				return v2Bytes(netip.MustParseAddrPort("203.0.113.9:4242"), b, tlvs...)
			}},
		{"v1 announce to, literal", "tcp4",
			proxy.AnnounceTo(1, netip.MustParseAddrPort("198.51.100.7:40000"), netip.MustParseAddrPort("127.0.0.1:25")),
			func(c, b netip.AddrPort) []byte { return []byte("PROXY TCP4 198.51.100.7 127.0.0.1 40000 25\r\n") }},
		{"v2 announce to, literal", "tcp4",
			proxy.AnnounceTo(2, netip.MustParseAddrPort("203.0.113.9:4242"), netip.MustParseAddrPort("127.0.0.1:25")),
			func(c, b netip.AddrPort) []byte {
				return []byte{
					0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A, // signature
					0x21, 0x11, 0x00, 0x0C, // v2 PROXY, TCP over IPv4, 12 address bytes
					203, 0, 113, 9, 127, 0, 0, 1, // source, destination
					0x10, 0x92, 0x00, 0x19, // ports 4242, 25
				}
			}},
		{"v1 IPv6 announce over IPv4 sockets", "tcp4", proxy.Announce(1, netip.MustParseAddrPort("[2001:db8::7]:1234")),
			func(c, b netip.AddrPort) []byte {
				return []byte("PROXY TCP6 2001:db8::7 ::ffff:127.0.0.1 1234 " + itoa(b.Port()) + "\r\n")
			}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got := make(chan []byte, 1)
			be := startBackend(t, tt.network, headerEcho(got))
			addr, _ := startProxy(t, tt.network, &proxy.Proxy{Upstream: be.addr(), Header: tt.header})
			c := dial(t, addr)

			raw := <-got
			want := tt.want(c.LocalAddr().(*net.TCPAddr).AddrPort(), be.addrPort())
			if !bytes.Equal(raw, want) {
				t.Errorf("first backend read = %q; want %q", raw, want)
			}
			if _, err := parseWhole(raw); err != nil {
				t.Errorf("proxyproto.Read(first read %q) = %v; want a whole header", raw, err)
			}
			if got, want := exchange(t, c, "QUIT\r\n"), "QUIT\r\n"; got != want {
				t.Errorf("echo = %q; want %q", got, want)
			}
		})
	}
}

func TestProxyNoHeader(t *testing.T) {
	got := make(chan []byte, 1)
	be := startBackend(t, "tcp4", func(c net.Conn) {
		raw, _ := recvOnce(c)
		got <- raw
	})
	addr, _ := startProxy(t, "tcp4", &proxy.Proxy{Upstream: be.addr(), Header: proxy.NoHeader})
	c := dial(t, addr)
	if _, err := io.WriteString(c, "EHLO x\r\n"); err != nil {
		t.Fatal(err)
	}
	raw := <-got
	if string(raw) != "EHLO x\r\n" {
		t.Errorf("first backend read = %q; want %q", raw, "EHLO x\r\n")
	}
	if _, err := parseWhole(raw); !errors.Is(err, proxyproto.ErrNoProxyProtocol) {
		t.Errorf("proxyproto.Read = %v; want ErrNoProxyProtocol", err)
	}
}

// TestProxyClientCannotSpoof sends a PROXY header as client data: the backend
// must see the proxy's header, with the client's forged one as payload.
func TestProxyClientCannotSpoof(t *testing.T) {
	be := startBackend(t, "tcp4", addrEcho)
	addr, _ := startProxy(t, "tcp4", &proxy.Proxy{Upstream: be.addr(), Header: proxy.RealClient(2)})
	c := dial(t, addr)
	forged := proxy.HeaderV1(netip.MustParseAddrPort("203.0.113.66:1"), netip.MustParseAddrPort("127.0.0.1:25"))
	if _, err := c.Write(forged); err != nil {
		t.Fatal(err)
	}
	_ = c.CloseWrite()
	out, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	want := c.LocalAddr().String() + "\n" + string(forged)
	if string(out) != want {
		t.Errorf("backend reply = %q; want %q", out, want)
	}
}

// addrEcho parses the header, writes the announced source address and a
// newline, then echoes the rest and half-closes.
func addrEcho(c net.Conn) {
	br := bufio.NewReader(c)
	h, err := proxyproto.Read(br)
	if err != nil {
		fmt.Fprintf(c, "error: %v\n", err)
		return
	}
	fmt.Fprintf(c, "%v\n", h.SourceAddr)
	if _, err := io.Copy(c, br); err != nil {
		return
	}
	_ = c.(*net.TCPConn).CloseWrite()
}

// TestHeaderSplitDetection shows that a backend reading like Postfix (one
// recv of 536 bytes) gets the whole header from the proxy and the dialer,
// and catches a header deliberately written in two pieces.
func TestHeaderSplitDetection(t *testing.T) {
	src := netip.MustParseAddrPort("198.51.100.7:40000")
	dst := netip.MustParseAddrPort("127.0.0.1:25")
	for _, tt := range []struct {
		name  string
		hdr   []byte
		split bool
	}{
		{"v1 whole", proxy.HeaderV1(src, dst), false},
		{"v2 whole", proxy.HeaderV2(src, dst, proxyproto.TLV{Type: proxyproto.PP2_TYPE_NOOP, Value: make([]byte, 300)}), false},
		{"v1 split", proxy.HeaderV1(src, dst), true},
		{"v2 split", proxy.HeaderV2(src, dst), true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got := make(chan []byte, 1)
			be := startBackend(t, "tcp4", func(c net.Conn) {
				raw, _ := recvOnce(c)
				got <- raw
				_, _ = io.Copy(io.Discard, c)
			})
			var d proxy.Dialer
			ctx, cancel := context.WithTimeout(context.Background(), testDeadline)
			defer cancel()
			var (
				c   net.Conn
				err error
			)
			if tt.split {
				c, err = d.DialContext(ctx, "tcp", be.addr(), nil)
			} else {
				c, err = d.DialContext(ctx, "tcp", be.addr(), tt.hdr)
			}
			if err != nil {
				t.Fatalf("DialContext: %v", err)
			}
			defer c.Close()
			if tt.split {
				half := len(tt.hdr) / 2
				if _, err := c.Write(tt.hdr[:half]); err != nil {
					t.Fatal(err)
				}
				raw := <-got // the backend's single recv has happened
				if _, err := c.Write(tt.hdr[half:]); err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(raw, tt.hdr[:half]) {
					t.Errorf("single recv = %q; want the first %d bytes", raw, half)
				}
				if h, err := parseWhole(raw); err == nil {
					t.Errorf("parse of split header = %v, nil; want an error", h)
				}
				return
			}
			raw := <-got
			if !bytes.Equal(raw, tt.hdr) {
				t.Errorf("single recv = %d bytes %q; want the whole %d-byte header", len(raw), raw, len(tt.hdr))
			}
			if _, err := parseWhole(raw); err != nil {
				t.Errorf("parse of single recv = %v; want nil", err)
			}
		})
	}
}

// TestProxyConcurrent pushes 1,000 simultaneous connections through one
// proxy, each with a distinct payload, and checks every byte comes back.
func TestProxyConcurrent(t *testing.T) {
	const n = 1000
	be := startBackend(t, "tcp4", parsingEcho)
	p := &proxy.Proxy{Upstream: be.addr(), Header: proxy.RealClient(2)}
	addr, _ := startProxy(t, "tcp4", p)

	payload := func(i int) []byte {
		return bytes.Repeat([]byte(fmt.Sprintf("conn %04d payload;", i)), 64+i%64)
	}
	var total uint64
	for i := range n {
		total += uint64(len(payload(i)))
	}
	var (
		wg    sync.WaitGroup
		ready sync.WaitGroup
		start = make(chan struct{})
		errs  = make(chan error, n)
	)
	ready.Add(n)
	for i := range n {
		wg.Go(func() {
			c, err := net.DialTimeout("tcp", addr, testDeadline)
			ready.Done()
			if err != nil {
				errs <- fmt.Errorf("conn %d: dial: %w", i, err)
				return
			}
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(testDeadline))
			<-start // every connection is open before any sends
			want := payload(i)
			if _, err := c.Write(want); err != nil {
				errs <- fmt.Errorf("conn %d: write: %w", i, err)
				return
			}
			_ = c.(*net.TCPConn).CloseWrite()
			got, err := io.ReadAll(c)
			if err != nil {
				errs <- fmt.Errorf("conn %d: read: %w", i, err)
				return
			}
			if !bytes.Equal(got, want) {
				errs <- fmt.Errorf("conn %d: echoed %d bytes; want %d identical bytes", i, len(got), len(want))
			}
		})
	}
	ready.Wait()
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if err := p.Shutdown(context.Background()); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	want := proxy.Stats{Accepted: n, BytesUp: total, BytesDown: total}
	if got := p.Stats(); got != want {
		t.Errorf("Stats() = %+v; want %+v", got, want)
	}
}

func TestProxyStats(t *testing.T) {
	be := startBackend(t, "tcp4", headerEcho(make(chan []byte, 10)))
	p := &proxy.Proxy{Upstream: be.addr()}
	addr, _ := startProxy(t, "tcp4", p)
	for _, msg := range []string{"one\r\n", "two two\r\n"} {
		c := dial(t, addr)
		if got := exchange(t, c, msg); got != msg {
			t.Errorf("echo = %q; want %q", got, msg)
		}
	}

	// A backend that is gone: the dial fails and the client is closed.
	gone, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gone.Close()
	pf := &proxy.Proxy{Upstream: gone.Addr().String()}
	faddr, _ := startProxy(t, "tcp4", pf)
	c := dial(t, faddr)
	if b, err := io.ReadAll(c); err != nil || len(b) != 0 {
		t.Errorf("read from proxy with dead backend = %q, %v; want EOF", b, err)
	}

	p.Close()
	pf.Close()
	// "ok\n" is written by the backend for each connection, and counted down.
	for _, tt := range []struct {
		name      string
		got, want proxy.Stats
	}{
		{"working", p.Stats(), proxy.Stats{Accepted: 2, BytesUp: 14, BytesDown: 3 + 5 + 3 + 9}},
		{"dead backend", pf.Stats(), proxy.Stats{Accepted: 1, Failed: 1}},
	} {
		if tt.got != tt.want {
			t.Errorf("%s: Stats() = %+v; want %+v", tt.name, tt.got, tt.want)
		}
	}
}

// TestProxyActiveCount checks Active while a connection is open.
func TestProxyActiveCount(t *testing.T) {
	got := make(chan []byte, 1)
	be := startBackend(t, "tcp4", headerEcho(got))
	p := &proxy.Proxy{Upstream: be.addr()}
	addr, _ := startProxy(t, "tcp4", p)
	c := dial(t, addr)
	<-got // the header reached the backend: the pair is open
	if got := p.Stats().Active; got != 1 {
		t.Errorf("Stats().Active with one open connection = %d; want 1", got)
	}
	if got := exchange(t, c, "x"); got != "x" {
		t.Errorf("echo = %q; want %q", got, "x")
	}
	p.Close()
	if got := p.Stats().Active; got != 0 {
		t.Errorf("Stats().Active after Close = %d; want 0", got)
	}
}

// syncBuffer is a goroutine-safe log sink.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestProxyIdleTimeout(t *testing.T) {
	backendEOF := make(chan error, 1)
	be := startBackend(t, "tcp4", func(c net.Conn) {
		br := bufio.NewReader(c)
		if _, err := proxyproto.Read(br); err != nil {
			backendEOF <- err
			return
		}
		_, err := br.ReadByte() // the client never sends: this ends when the proxy closes
		backendEOF <- err
	})
	var logs syncBuffer
	p := &proxy.Proxy{
		Upstream:    be.addr(),
		IdleTimeout: 50 * time.Millisecond,
		Logger:      slog.New(slog.NewTextHandler(&logs, nil)),
	}
	addr, _ := startProxy(t, "tcp4", p)
	c := dial(t, addr)
	var one [1]byte
	if n, err := c.Read(one[:]); err != io.EOF {
		t.Errorf("client Read = %d, %v; want 0, EOF (closed by idle timeout)", n, err)
	}
	if err := <-backendEOF; err != io.EOF {
		t.Errorf("backend read = %v; want EOF", err)
	}
	p.Close()
	if out := logs.String(); !strings.Contains(out, proxy.ErrIdle.Error()) {
		t.Errorf("log = %q; want it to contain %q", out, proxy.ErrIdle.Error())
	}
}

func TestProxyShutdownDrains(t *testing.T) {
	be := startBackend(t, "tcp4", headerEcho(make(chan []byte, 1)))
	p := &proxy.Proxy{Upstream: be.addr()}
	addr, served := startProxy(t, "tcp4", p)
	c := dial(t, addr)
	br := bufio.NewReader(c)
	if line, err := br.ReadString('\n'); line != "ok\n" {
		t.Fatalf("greeting = %q, %v; want %q", line, err, "ok\n")
	}

	shutdown := make(chan error, 1)
	go func() { shutdown <- p.Shutdown(context.Background()) }()
	if err := served(); err != nil {
		t.Errorf("Serve after Shutdown = %v; want nil", err)
	}
	if c2, err := net.DialTimeout("tcp", addr, testDeadline); err == nil {
		c2.Close()
		t.Errorf("dial after Shutdown succeeded; want refused")
	}

	// The in-flight connection still works.
	if _, err := io.WriteString(c, "QUIT\r\n"); err != nil {
		t.Fatal(err)
	}
	if line, err := br.ReadString('\n'); line != "QUIT\r\n" {
		t.Errorf("echo during Shutdown = %q, %v; want %q", line, err, "QUIT\r\n")
	}
	select {
	case err := <-shutdown:
		t.Fatalf("Shutdown returned %v with a connection open; want it to wait", err)
	default:
	}
	_ = c.CloseWrite()
	if rest, err := io.ReadAll(br); err != nil || len(rest) != 0 {
		t.Errorf("read after CloseWrite = %q, %v; want EOF", rest, err)
	}
	if err := <-shutdown; err != nil {
		t.Errorf("Shutdown = %v; want nil", err)
	}
	if got := p.Stats().Active; got != 0 {
		t.Errorf("Stats().Active after Shutdown = %d; want 0", got)
	}
}

func TestProxyCloseCuts(t *testing.T) {
	for _, tt := range []struct {
		name string
		stop func(*proxy.Proxy) error
		want error
	}{
		{"Close", (*proxy.Proxy).Close, nil},
		{"Shutdown past deadline", func(p *proxy.Proxy) error {
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			return p.Shutdown(ctx)
		}, context.Canceled},
	} {
		t.Run(tt.name, func(t *testing.T) {
			be := startBackend(t, "tcp4", headerEcho(make(chan []byte, 1)))
			p := &proxy.Proxy{Upstream: be.addr()}
			addr, served := startProxy(t, "tcp4", p)
			c := dial(t, addr)
			br := bufio.NewReader(c)
			if line, err := br.ReadString('\n'); line != "ok\n" {
				t.Fatalf("greeting = %q, %v; want %q", line, err, "ok\n")
			}
			if err := tt.stop(p); !errors.Is(err, tt.want) {
				t.Errorf("stop = %v; want %v", err, tt.want)
			}
			if err := served(); err != nil {
				t.Errorf("Serve = %v; want nil", err)
			}
			// The connection was cut: the read ends (EOF or reset), not by our deadline.
			_, err := br.ReadByte()
			var ne net.Error
			if err == nil || (errors.As(err, &ne) && ne.Timeout()) {
				t.Errorf("read after stop = %v; want EOF or reset", err)
			}
			if got := p.Stats().Active; got != 0 {
				t.Errorf("Stats().Active = %d; want 0", got)
			}
		})
	}
}

func TestProxyLocalAddr(t *testing.T) {
	peer := make(chan string, 1)
	be := startBackend(t, "tcp4", func(c net.Conn) {
		peer <- c.RemoteAddr().(*net.TCPAddr).IP.String()
	})
	addr, _ := startProxy(t, "tcp4", &proxy.Proxy{Upstream: be.addr(), LocalAddr: "127.0.0.9"})
	dial(t, addr)
	if got := <-peer; got != "127.0.0.9" {
		t.Errorf("backend saw peer %s; want 127.0.0.9", got)
	}
}

func TestServeErrors(t *testing.T) {
	for _, tt := range []struct {
		name string
		p    *proxy.Proxy
		want error
	}{
		{"no upstream", &proxy.Proxy{}, proxy.ErrNoUpstream},
		{"bad local addr", &proxy.Proxy{Upstream: "127.0.0.1:1", LocalAddr: "127.0.0.9:25"}, proxy.ErrLocalAddr},
		{"closed", func() *proxy.Proxy { p := &proxy.Proxy{Upstream: "127.0.0.1:1"}; p.Close(); return p }(), proxy.ErrClosed},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			if err := tt.p.Serve(ln); !errors.Is(err, tt.want) {
				t.Errorf("Serve = %v; want %v", err, tt.want)
			}
		})
	}
}

func TestProxyHeaderFuncError(t *testing.T) {
	be := startBackend(t, "tcp4", func(c net.Conn) { _, _ = io.Copy(io.Discard, c) })
	p := &proxy.Proxy{Upstream: be.addr(), Header: proxy.RealClient(1, proxyproto.TLV{Type: 1, Value: []byte("h2")})}
	addr, _ := startProxy(t, "tcp4", p)
	c := dial(t, addr)
	if b, err := io.ReadAll(c); err != nil || len(b) != 0 {
		t.Errorf("read = %q, %v; want EOF", b, err)
	}
	p.Close()
	if got := p.Stats().Failed; got != 1 {
		t.Errorf("Stats().Failed = %d; want 1", got)
	}
}

func TestListenAndServe(t *testing.T) {
	be := startBackend(t, "tcp4", headerEcho(make(chan []byte, 1)))
	p := &proxy.Proxy{Upstream: be.addr()}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// Reserve a port, then hand it to ListenAndServe.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	done := make(chan error, 1)
	go func() { done <- p.ListenAndServe(ctx, addr) }()

	// Retry the dial until ListenAndServe is listening, bounded by testDeadline.
	dctx, dcancel := context.WithTimeout(ctx, testDeadline)
	defer dcancel()
	var c net.Conn
	for backoff := time.Millisecond; ; backoff *= 2 {
		if c, err = (&proxy.Dialer{}).DialContext(dctx, "tcp", addr, nil); err == nil {
			break
		}
		timer := time.NewTimer(backoff)
		select {
		case err := <-done:
			timer.Stop()
			t.Fatalf("ListenAndServe = %v before serving", err)
		case <-dctx.Done():
			timer.Stop()
			t.Fatalf("proxy never listened on %s: %v", addr, err)
		case <-timer.C:
		}
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(testDeadline))
	if got := exchange(t, c.(*net.TCPConn), "hi"); got != "hi" {
		t.Errorf("echo = %q; want %q", got, "hi")
	}
	if got := p.Addr(); got == nil || got.String() != addr {
		t.Errorf("Addr() = %v; want %s", got, addr)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("ListenAndServe after cancel = %v; want nil", err)
	}

	// The port is free again; a busy port is an error.
	busy := &proxy.Proxy{Upstream: be.addr()}
	if err := busy.ListenAndServe(context.Background(), be.addr()); err == nil {
		t.Errorf("ListenAndServe(busy %s) = nil; want an error", be.addr())
	}
}
