package fakesource_test

import (
	"bytes"
	"io"
	"net"
	"net/textproto"
	"testing"
	"time"

	"github.com/pires/go-proxyproto"

	"github.com/splitcheck/splitcheck/fakesource"
)

func formatHeader(t *testing.T, h *proxyproto.Header) []byte {
	t.Helper()
	b, err := h.Format()
	if err != nil {
		t.Fatalf("Format(%v) = %v", h, err)
	}
	return b
}

func TestAcceptProxy(t *testing.T) {
	dst4 := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 25}
	src4 := &net.TCPAddr{IP: net.IPv4(198, 51, 100, 7), Port: 40001}
	src6 := &net.TCPAddr{IP: net.ParseIP("2001:db8::7"), Port: 40002}
	dst6 := &net.TCPAddr{IP: net.ParseIP("2001:db8::25"), Port: 25}
	local := &proxyproto.Header{Version: 2, Command: proxyproto.LOCAL, TransportProtocol: proxyproto.UNSPEC}

	for _, tt := range []struct {
		name   string
		header []byte
		after  string // bytes written with the header, before the banner
		remote string // "" = the client's real address
	}{
		{name: "v1 TCP4", header: formatHeader(t, proxyproto.HeaderProxyFromAddrs(1, src4, dst4)), remote: "198.51.100.7:40001"},
		{name: "v2 TCP4", header: formatHeader(t, proxyproto.HeaderProxyFromAddrs(2, src4, dst4)), remote: "198.51.100.7:40001"},
		{name: "v2 TCP6", header: formatHeader(t, proxyproto.HeaderProxyFromAddrs(2, src6, dst6)), remote: "[2001:db8::7]:40002"},
		{name: "v1 UNKNOWN keeps the real address", header: []byte("PROXY UNKNOWN\r\n")},
		{name: "v2 LOCAL keeps the real address", header: formatHeader(t, local)},
		{name: "v2 with a command in the same segment", header: formatHeader(t, proxyproto.HeaderProxyFromAddrs(2, src4, dst4)),
			after: "EHLO early.example\r\n", remote: "198.51.100.7:40001"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s := start(t, func(s *fakesource.Server) { s.AcceptProxy = true })
			nc, err := net.Dial("tcp", s.Addr)
			if err != nil {
				t.Fatal(err)
			}
			defer nc.Close()
			if err := nc.SetDeadline(time.Now().Add(30 * time.Second)); err != nil {
				t.Fatal(err)
			}
			if _, err := nc.Write(append(append([]byte(nil), tt.header...), tt.after...)); err != nil {
				t.Fatal(err)
			}
			want := tt.remote
			if want == "" {
				want = nc.LocalAddr().String()
			}
			tc := textproto.NewConn(nc)
			expect(t, tc, 220)
			steps := []string{"EHLO probe.example", "MAIL FROM:<a@source.example>", "RCPT TO:<b@corp.example>"}
			if tt.after != "" {
				expect(t, tc, 250) // the EHLO sent with the header
				steps = steps[1:]
			}
			for _, cmd := range steps {
				if err := tc.PrintfLine("%s", cmd); err != nil {
					t.Fatal(err)
				}
				expect(t, tc, 250)
			}
			if err := tc.PrintfLine("DATA"); err != nil {
				t.Fatal(err)
			}
			expect(t, tc, 354)
			w := tc.DotWriter()
			if _, err := io.WriteString(w, message("ap")); err != nil {
				t.Fatal(err)
			}
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
			expect(t, tc, 250)
			if err := tc.PrintfLine("QUIT"); err != nil {
				t.Fatal(err)
			}
			expect(t, tc, 221)
			msgs := s.Messages()
			if len(msgs) != 1 {
				t.Fatalf("messages = %d; want 1", len(msgs))
			}
			m := msgs[0]
			if got := m.RemoteAddr; got != want {
				t.Errorf("Message.RemoteAddr = %q; want %q", got, want)
			}
			if !m.ProxyHeader || !bytes.HasPrefix(m.FirstBytes, tt.header[:min(len(tt.header), 100)]) {
				t.Errorf("ProxyHeader = %v, FirstBytes = %q; want true and the header", m.ProxyHeader, m.FirstBytes)
			}
			if got, want := verbs(m.Replies)[0], "CONNECT 220"; got != want {
				t.Errorf("first reply = %q; want %q (the header gets no reply)", got, want)
			}
			if wantHelo := map[bool]string{true: "early.example", false: "probe.example"}[tt.after != ""]; m.Helo != wantHelo {
				t.Errorf("Helo = %q; want %q", m.Helo, wantHelo)
			}
			conns := s.Connections()
			if len(conns) != 1 || conns[0].RemoteAddr != want || !conns[0].ProxyHeader {
				t.Errorf("Connections() = %+v; want one from %s with ProxyHeader", conns, want)
			}
		})
	}
}

func TestAcceptProxyRefused(t *testing.T) {
	for _, tt := range []struct {
		name  string
		first []byte // nil: send nothing and wait for the read timeout
		proxy bool
	}{
		{name: "plain EHLO", first: []byte("EHLO x\r\n")},
		{name: "malformed v1", first: []byte("PROXY TCP4 not-an-ip 127.0.0.1 1 25\r\n"), proxy: true},
		{name: "nothing before the read timeout"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s := start(t, func(s *fakesource.Server) {
				s.AcceptProxy = true
				s.ReadTimeout = 300 * time.Millisecond
			})
			nc, err := net.Dial("tcp", s.Addr)
			if err != nil {
				t.Fatal(err)
			}
			defer nc.Close()
			if err := nc.SetDeadline(time.Now().Add(30 * time.Second)); err != nil {
				t.Fatal(err)
			}
			if tt.first != nil {
				if _, err := nc.Write(tt.first); err != nil {
					t.Fatal(err)
				}
			}
			got, err := io.ReadAll(nc)
			if err != nil {
				t.Fatalf("read until close: %v", err)
			}
			if len(got) != 0 {
				t.Errorf("server sent %q; want the connection closed without a banner", got)
			}
			conns := s.Connections()
			if len(conns) != 1 {
				t.Fatalf("connections = %d; want 1", len(conns))
			}
			if !bytes.Equal(conns[0].FirstBytes, tt.first) || conns[0].ProxyHeader != tt.proxy {
				t.Errorf("FirstBytes = %q, ProxyHeader = %v; want %q, %v", conns[0].FirstBytes, conns[0].ProxyHeader, tt.first, tt.proxy)
			}
			if n := len(s.Messages()); n != 0 {
				t.Errorf("messages = %d; want 0", n)
			}
		})
	}
}
