package proxy_test

import (
	"io"
	"net"
	"testing"
	"time"

	"github.com/splitcheck/splitcheck/proxy"
)

// BenchmarkProxyConn measures one client connection through the proxy over
// loopback: connect, PROXY v2 header to the backend, a 6-byte exchange each
// way, half-close and close.
func BenchmarkProxyConn(b *testing.B) {
	be := startBackend(b, "tcp4", parsingEcho)
	addr, _ := startProxy(b, "tcp4", &proxy.Proxy{Upstream: be.addr(), Header: proxy.RealClient(2)})
	msg := []byte("QUIT\r\n")
	buf := make([]byte, 64)
	b.ReportAllocs()
	for b.Loop() {
		c, err := net.DialTimeout("tcp", addr, testDeadline)
		if err != nil {
			b.Fatal(err)
		}
		_ = c.SetDeadline(time.Now().Add(testDeadline))
		if _, err := c.Write(msg); err != nil {
			b.Fatal(err)
		}
		_ = c.(*net.TCPConn).CloseWrite()
		n, err := io.ReadFull(c, buf[:len(msg)])
		if err != nil || string(buf[:n]) != string(msg) {
			b.Fatalf("echo = %q, %v; want %q", buf[:n], err, msg)
		}
		if n, err := c.Read(buf); err != io.EOF {
			b.Fatalf("read after echo = %d, %v; want EOF", n, err)
		}
		c.Close()
	}
}
