package proxy_test

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/pires/go-proxyproto"

	"github.com/splitcheck/splitcheck/proxy"
)

// testDeadline bounds every socket operation in the tests; it is a safety net
// against hangs, never an assertion about speed.
const testDeadline = 20 * time.Second

// postfixPeek is the size of Postfix's single recv(MSG_PEEK) for the header.
const postfixPeek = 536

// backend is a loopback TCP server running handle for each connection.
type backend struct {
	ln    net.Listener
	wg    sync.WaitGroup
	mu    sync.Mutex
	conns map[net.Conn]struct{}
}

// listenLoopback listens on a free port of network's loopback address (tcp4 or
// tcp6); what names the listener in a failure.
func listenLoopback(t testing.TB, network, what string) net.Listener {
	t.Helper()
	host := "127.0.0.1:0"
	if network == "tcp6" {
		host = "[::1]:0"
	}
	ln, err := net.Listen(network, host)
	if err != nil {
		t.Fatalf("listen %s: %v", what, err)
	}
	return ln
}

// startBackend listens on network's loopback and serves each connection
// with handle; cleanup closes everything and waits for the handlers.
func startBackend(t testing.TB, network string, handle func(net.Conn)) *backend {
	t.Helper()
	ln := listenLoopback(t, network, "backend")
	b := &backend{ln: ln, conns: make(map[net.Conn]struct{})}
	b.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			b.mu.Lock()
			b.conns[c] = struct{}{}
			b.mu.Unlock()
			_ = c.SetDeadline(time.Now().Add(testDeadline))
			b.wg.Go(func() {
				defer func() {
					b.mu.Lock()
					delete(b.conns, c)
					b.mu.Unlock()
					c.Close()
				}()
				handle(c)
			})
		}
	})
	t.Cleanup(func() {
		ln.Close()
		b.mu.Lock()
		for c := range b.conns {
			c.Close()
		}
		b.mu.Unlock()
		b.wg.Wait()
	})
	return b
}

func (b *backend) addr() string { return b.ln.Addr().String() }

func (b *backend) addrPort() netip.AddrPort { return b.ln.Addr().(*net.TCPAddr).AddrPort() }

// startProxy serves p on a fresh loopback listener and returns its address
// and a func that waits for Serve to return (callable many times); cleanup
// closes p and checks Serve returned nil.
func startProxy(t testing.TB, network string, p *proxy.Proxy) (addr string, served func() error) {
	t.Helper()
	ln := listenLoopback(t, network, "proxy")
	ch := make(chan error, 1)
	go func() { ch <- p.Serve(ln) }()
	served = sync.OnceValue(func() error { return <-ch })
	t.Cleanup(func() {
		p.Close()
		if err := served(); err != nil {
			t.Errorf("Serve = %v; want nil after Close", err)
		}
	})
	return ln.Addr().String(), served
}

// dial connects to addr with the test deadline set.
func dial(t testing.TB, addr string) *net.TCPConn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, testDeadline)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(testDeadline))
	return c.(*net.TCPConn)
}

// recvOnce does what Postfix does: one read of at most 536 bytes.
func recvOnce(c net.Conn) ([]byte, error) {
	buf := make([]byte, postfixPeek)
	n, err := c.Read(buf)
	return buf[:n], err
}

// parseWhole parses a PROXY header from exactly the bytes of one read, and
// fails unless the header is complete and nothing follows it.
func parseWhole(raw []byte) (*proxyproto.Header, error) {
	br := bufio.NewReader(bytes.NewReader(raw))
	h, err := proxyproto.Read(br)
	if err != nil {
		return nil, err
	}
	if br.Buffered() != 0 {
		return h, errors.New("bytes after header")
	}
	return h, nil
}

// headerEcho reads the header with a single recv, reports it, writes "ok\n",
// then echoes until EOF and half-closes.
func headerEcho(got chan<- []byte) func(net.Conn) {
	return func(c net.Conn) {
		raw, err := recvOnce(c)
		got <- raw
		if err != nil {
			return
		}
		if _, err := io.WriteString(c, "ok\n"); err != nil {
			return
		}
		if _, err := io.Copy(c, c); err != nil {
			return
		}
		_ = c.(*net.TCPConn).CloseWrite()
	}
}

// parsingEcho parses the header with proxyproto.Read (through a buffered
// reader), then echoes the rest until EOF and half-closes.
func parsingEcho(c net.Conn) {
	br := bufio.NewReader(c)
	if _, err := proxyproto.Read(br); err != nil {
		return
	}
	if _, err := io.Copy(c, br); err != nil {
		return
	}
	_ = c.(*net.TCPConn).CloseWrite()
}

// exchange reads the backend's "ok\n", sends msg, half-closes, and returns
// everything echoed back.
func exchange(t *testing.T, c *net.TCPConn, msg string) string {
	t.Helper()
	br := bufio.NewReader(c)
	ok, err := br.ReadString('\n')
	if err != nil || ok != "ok\n" {
		t.Fatalf("read greeting = %q, %v; want %q", ok, err, "ok\n")
	}
	if _, err := io.WriteString(c, msg); err != nil {
		t.Fatalf("write: %v", err)
	}
	if err := c.CloseWrite(); err != nil {
		t.Fatalf("CloseWrite: %v", err)
	}
	rest, err := io.ReadAll(br)
	if err != nil {
		t.Fatalf("read echo: %v", err)
	}
	return string(rest)
}

// v1Line is an independent rendering of a v1 TCP header line.
func v1Line(proto string, src, dst netip.AddrPort) []byte {
	return []byte("PROXY " + proto + " " + src.Addr().String() + " " + dst.Addr().String() + " " +
		itoa(src.Port()) + " " + itoa(dst.Port()) + "\r\n")
}

func itoa(p uint16) string { return strconv.Itoa(int(p)) }

// v2Bytes is an independent rendering of a v2 PROXY/TCP header with TLVs.
func v2Bytes(src, dst netip.AddrPort, tlvs ...proxyproto.TLV) []byte {
	sig := []byte{0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A}
	var addrs []byte
	fam := byte(0x11)
	if src.Addr().Is4() && dst.Addr().Is4() {
		a, b := src.Addr().As4(), dst.Addr().As4()
		addrs = append(append(addrs, a[:]...), b[:]...)
	} else {
		fam = 0x21
		a, b := src.Addr().As16(), dst.Addr().As16()
		addrs = append(append(addrs, a[:]...), b[:]...)
	}
	addrs = binary.BigEndian.AppendUint16(addrs, src.Port())
	addrs = binary.BigEndian.AppendUint16(addrs, dst.Port())
	for _, tlv := range tlvs {
		addrs = append(addrs, byte(tlv.Type))
		addrs = binary.BigEndian.AppendUint16(addrs, uint16(len(tlv.Value)))
		addrs = append(addrs, tlv.Value...)
	}
	out := append(sig, 0x21, fam)
	out = binary.BigEndian.AppendUint16(out, uint16(len(addrs)))
	return append(out, addrs...)
}
