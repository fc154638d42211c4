package harness

import (
	"net"
	"slices"
	"strconv"
	"testing"

	"github.com/pires/go-proxyproto"
)

func TestFirstLine(t *testing.T) {
	src, dst := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 40000}, &net.TCPAddr{IP: net.IPv4(127, 0, 0, 4), Port: 2525}
	v2, err := proxyproto.HeaderProxyFromAddrs(2, src, dst).Format()
	if err != nil {
		t.Fatal(err)
	}
	if len(v2) != 28 {
		t.Fatalf("v2 header is %d bytes; want 28 (16 + 12 for TCP over IPv4)", len(v2))
	}
	long := make([]byte, 200)
	for i := range long {
		long[i] = 'x'
	}
	for _, tt := range []struct {
		name string
		in   []byte
		want string
	}{
		{"v1 then SMTP", []byte("PROXY TCP4 127.0.0.1 127.0.0.4 40000 2525\r\nEHLO a\r\n"), `"PROXY TCP4 127.0.0.1 127.0.0.4 40000 2525\r\n"...`},
		{"v2 whole header", append(slices.Clone(v2), "EHLO a\r\n"...), strconv.Quote(string(v2)) + "..."},
		{"one line exactly", []byte("EHLO mx.example.org\r\n"), `"EHLO mx.example.org\r\n"`},
		{"no line end", []byte("EHLO"), `"EHLO"`},
		{"bounded", long, `"` + string(long[:maxShown]) + `"...`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := firstLine(tt.in); got != tt.want {
				t.Errorf("firstLine(%q) = %s; want %s", tt.in, got, tt.want)
			}
		})
	}
}
