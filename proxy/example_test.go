package proxy_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"

	"github.com/pires/go-proxyproto"

	"github.com/splitcheck/splitcheck/proxy"
)

// ExampleProxy puts a proxy in front of a backend that reads the PROXY
// header. The proxy claims the client is 198.51.100.7:40000.
func ExampleProxy() {
	backend, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	defer backend.Close()
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Go(func() {
		c, err := backend.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		br := bufio.NewReader(c)
		h, err := proxyproto.Read(br)
		if err != nil {
			fmt.Fprintf(c, "bad header: %v\n", err)
			return
		}
		line, _ := br.ReadString('\n')
		fmt.Fprintf(c, "hello %v, you said %q\n", h.SourceAddr, line)
	})

	p := &proxy.Proxy{
		Upstream: backend.Addr().String(),
		Header:   proxy.Announce(2, netip.MustParseAddrPort("198.51.100.7:40000")),
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	served := make(chan error, 1)
	go func() { served <- p.Serve(ln) }()

	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		panic(err)
	}
	fmt.Fprintf(c, "EHLO client.example\r\n")
	reply, _ := io.ReadAll(c)
	c.Close()
	fmt.Print(string(reply))

	_ = p.Shutdown(context.Background())
	fmt.Println("serve:", <-served)
	fmt.Printf("%+v\n", p.Stats())
	// Output:
	// hello 198.51.100.7:40000, you said "EHLO client.example\r\n"
	// serve: <nil>
	// {Accepted:1 Active:0 Failed:0 BytesUp:21 BytesDown:61}
}

// ExampleDialer sends a hand-picked header straight to a server, as a probe
// that checks the server rejects a malformed one would.
func ExampleDialer() {
	server, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	defer server.Close()
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Go(func() {
		c, err := server.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		_, err = proxyproto.Read(bufio.NewReader(c))
		fmt.Println("server:", err)
	})

	d := &proxy.Dialer{LocalAddr: "127.0.0.1"}
	c, err := d.DialContext(context.Background(), "tcp", server.Addr().String(), proxy.HeaderMalformed())
	if err != nil {
		panic(err)
	}
	defer c.Close()
	wg.Wait()
	// Output:
	// server: proxyproto: invalid address: ParseAddr("999.1.1.1"): IPv4 field has value >255
}

func ExampleHeaderV1() {
	fmt.Printf("%q\n", proxy.HeaderV1(
		netip.MustParseAddrPort("198.51.100.7:40000"),
		netip.MustParseAddrPort("127.0.0.1:25"),
	))
	// Output: "PROXY TCP4 198.51.100.7 127.0.0.1 40000 25\r\n"
}

func ExampleHeaderV2() {
	fmt.Printf("% x\n", proxy.HeaderV2(
		netip.MustParseAddrPort("198.51.100.7:40000"),
		netip.MustParseAddrPort("127.0.0.1:25"),
	))
	// Output: 0d 0a 0d 0a 00 0d 0a 51 55 49 54 0a 21 11 00 0c c6 33 64 07 7f 00 00 01 9c 40 00 19
}
