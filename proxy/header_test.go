package proxy_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"net"
	"net/netip"
	"testing"

	"github.com/pires/go-proxyproto"

	"github.com/splitcheck/splitcheck/proxy"
)

func TestHeaderBytes(t *testing.T) {
	ap := netip.MustParseAddrPort
	for _, tt := range []struct {
		name string
		got  []byte
		want []byte
	}{
		{"v1 TCP4", proxy.HeaderV1(ap("198.51.100.7:40000"), ap("127.0.0.1:25")),
			[]byte("PROXY TCP4 198.51.100.7 127.0.0.1 40000 25\r\n")},
		{"v1 TCP6", proxy.HeaderV1(ap("[2001:db8::7]:40000"), ap("[::1]:25")),
			[]byte("PROXY TCP6 2001:db8::7 ::1 40000 25\r\n")},
		{"v1 v4-mapped is TCP4", proxy.HeaderV1(ap("[::ffff:198.51.100.7]:1"), ap("127.0.0.1:25")),
			[]byte("PROXY TCP4 198.51.100.7 127.0.0.1 1 25\r\n")},
		{"v1 mixed families is TCP6", proxy.HeaderV1(ap("198.51.100.7:1"), ap("[::1]:25")),
			[]byte("PROXY TCP6 ::ffff:198.51.100.7 ::1 1 25\r\n")},
		{"v1 invalid address is UNKNOWN", proxy.HeaderV1(netip.AddrPort{}, ap("[::1]:25")),
			[]byte("PROXY UNKNOWN\r\n")},
		{"v1 UNKNOWN", proxy.HeaderV1Unknown(), []byte("PROXY UNKNOWN\r\n")},
		{"v1 malformed", proxy.HeaderMalformed(), []byte("PROXY TCP4 999.1.1.1 127.0.0.1 40000 25\r\n")},
		{"v2 TCP4", proxy.HeaderV2(ap("198.51.100.7:40000"), ap("127.0.0.1:25")), []byte{
			0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A,
			0x21, 0x11, 0x00, 0x0C,
			198, 51, 100, 7, 127, 0, 0, 1,
			0x9C, 0x40, 0x00, 0x19,
		}},
		{"v2 TCP4 with TLV", proxy.HeaderV2(ap("198.51.100.7:40000"), ap("127.0.0.1:25"),
			proxyproto.TLV{Type: proxyproto.PP2_TYPE_AUTHORITY, Value: []byte("mx")}), []byte{
			0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A,
			0x21, 0x11, 0x00, 0x11, // 12 address bytes + 5 TLV bytes
			198, 51, 100, 7, 127, 0, 0, 1,
			0x9C, 0x40, 0x00, 0x19,
			0x02, 0x00, 0x02, 'm', 'x',
		}},
		{"v2 TCP6", proxy.HeaderV2(ap("[2001:db8::7]:40000"), ap("[::1]:25")),
			v2Bytes(ap("[2001:db8::7]:40000"), ap("[::1]:25"))},
		{"v2 LOCAL", proxy.HeaderV2Local(), []byte{
			0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A, 0x20, 0x00, 0x00, 0x00}},
		{"v2 invalid address is LOCAL", proxy.HeaderV2(netip.AddrPort{}, netip.AddrPort{}), proxy.HeaderV2Local()},
		{"v2 UNSPEC", proxy.HeaderV2Unspec(), []byte{
			0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A, 0x21, 0x00, 0x00, 0x00}},
		{"v2 UDP4", proxy.HeaderV2UDP(ap("198.51.100.7:40000"), ap("127.0.0.1:25")), []byte{
			0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A,
			0x21, 0x12, 0x00, 0x0C,
			198, 51, 100, 7, 127, 0, 0, 1,
			0x9C, 0x40, 0x00, 0x19,
		}},
		{"v2 truncated", proxy.HeaderTruncated(), []byte{
			0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A,
			0x21, 0x11, 0x00, 0x0C,
			198, 51, 100, 7,
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if !bytes.Equal(tt.got, tt.want) {
				t.Errorf("header = %q; want %q", tt.got, tt.want)
			}
		})
	}
}

// TestHeaderParse checks how proxyproto.Read sees each header we emit.
func TestHeaderParse(t *testing.T) {
	ap := netip.MustParseAddrPort
	for _, tt := range []struct {
		name    string
		hdr     []byte
		wantErr bool
		wantCmd proxyproto.ProtocolVersionAndCommand
		wantSrc string
	}{
		{"v1", proxy.HeaderV1(ap("198.51.100.7:40000"), ap("127.0.0.1:25")), false, proxyproto.PROXY, "198.51.100.7:40000"},
		{"v2", proxy.HeaderV2(ap("[2001:db8::7]:40000"), ap("[::1]:25")), false, proxyproto.PROXY, "[2001:db8::7]:40000"},
		{"v1 UNKNOWN", proxy.HeaderV1Unknown(), false, proxyproto.LOCAL, "<nil>"},
		{"v2 LOCAL", proxy.HeaderV2Local(), false, proxyproto.LOCAL, "<nil>"},
		{"v2 UDP", proxy.HeaderV2UDP(ap("198.51.100.7:40000"), ap("127.0.0.1:25")), false, proxyproto.PROXY, "198.51.100.7:40000"},
		{"malformed", proxy.HeaderMalformed(), true, 0, ""},
		{"truncated", proxy.HeaderTruncated(), true, 0, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			h, err := proxyproto.Read(bufio.NewReader(bytes.NewReader(tt.hdr)))
			if tt.wantErr {
				if err == nil {
					t.Errorf("proxyproto.Read(%q) = %+v, nil; want an error", tt.hdr, h)
				}
				return
			}
			if err != nil {
				t.Fatalf("proxyproto.Read(%q) = %v", tt.hdr, err)
			}
			if h.Command != tt.wantCmd {
				t.Errorf("command = %#x; want %#x", h.Command, tt.wantCmd)
			}
			if got := addrString(h.SourceAddr); got != tt.wantSrc {
				t.Errorf("source = %s; want %s", got, tt.wantSrc)
			}
		})
	}
}

func addrString(a net.Addr) string {
	if a == nil {
		return "<nil>"
	}
	return a.String()
}

func TestHeaderFuncs(t *testing.T) {
	client := &net.TCPAddr{IP: net.ParseIP("127.0.0.1"), Port: 50000}
	up4 := &net.TCPAddr{IP: net.ParseIP("127.0.0.1"), Port: 2525}
	up6 := &net.TCPAddr{IP: net.ParseIP("::1"), Port: 2525}
	tlv := proxyproto.TLV{Type: proxyproto.PP2_TYPE_NOOP}
	ap := netip.MustParseAddrPort
	for _, tt := range []struct {
		name     string
		f        proxy.HeaderFunc
		upstream net.Addr
		want     string // rendered header, or "" when an error is expected
		wantErr  error
	}{
		{"real v1", proxy.RealClient(1), up4, "PROXY TCP4 127.0.0.1 127.0.0.1 50000 2525\r\n", nil},
		{"real v1 mixed families", proxy.RealClient(1), up6, "PROXY TCP6 ::ffff:127.0.0.1 ::1 50000 2525\r\n", nil},
		{"announce keeps port", proxy.Announce(1, ap("198.51.100.7:0")), up4, "PROXY TCP4 198.51.100.7 127.0.0.1 50000 2525\r\n", nil},
		{"announce port", proxy.Announce(1, ap("198.51.100.7:1")), up4, "PROXY TCP4 198.51.100.7 127.0.0.1 1 2525\r\n", nil},
		{"announce to keeps upstream port", proxy.AnnounceTo(1, ap("198.51.100.7:1"), ap("127.0.0.2:0")), up4,
			"PROXY TCP4 198.51.100.7 127.0.0.2 1 2525\r\n", nil},
		{"version 0", proxy.RealClient(0), up4, "", proxy.ErrVersion},
		{"version 3", proxy.Announce(3, ap("198.51.100.7:1")), up4, "", proxy.ErrVersion},
		{"v1 with TLV", proxy.RealClient(1, tlv), up4, "", proxy.ErrTLVNeedsV2},
		{"invalid announce", proxy.Announce(2, netip.AddrPort{}), up4, "", proxy.ErrAddr},
		{"non-TCP upstream", proxy.RealClient(2), &net.UnixAddr{Name: "/x", Net: "unix"}, "", proxy.ErrAddr},
		{"nil upstream", proxy.RealClient(2), nil, "", proxy.ErrAddr},
	} {
		t.Run(tt.name, func(t *testing.T) {
			h, err := tt.f(client, tt.upstream)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Errorf("HeaderFunc = %v, %v; want error %v", h, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("HeaderFunc = %v", err)
			}
			b, err := h.Format()
			if err != nil || string(b) != tt.want {
				t.Errorf("Format() = %q, %v; want %q", b, err, tt.want)
			}
		})
	}
	if h, err := proxy.NoHeader(client, up4); h != nil || err != nil {
		t.Errorf("NoHeader = %v, %v; want nil, nil", h, err)
	}
}

// TestDialerHeaders writes each kind of header with the Dialer and checks the
// backend's single recv holds exactly those bytes.
func TestDialerHeaders(t *testing.T) {
	ap := netip.MustParseAddrPort
	for _, tt := range []struct {
		name    string
		network string
		hdr     []byte
	}{
		{"v1 TCP4", "tcp4", []byte("PROXY TCP4 198.51.100.7 127.0.0.1 40000 25\r\n")},
		{"v1 TCP6", "tcp6", proxy.HeaderV1(ap("[2001:db8::7]:40000"), ap("[::1]:25"))},
		{"v2 TCP4", "tcp4", proxy.HeaderV2(ap("198.51.100.7:40000"), ap("127.0.0.1:25"))},
		{"v2 TCP6 with TLVs", "tcp6", proxy.HeaderV2(ap("[2001:db8::7]:40000"), ap("[::1]:25"),
			proxyproto.TLV{Type: proxyproto.PP2_TYPE_UNIQUE_ID, Value: []byte("x")})},
		{"v1 UNKNOWN", "tcp4", proxy.HeaderV1Unknown()},
		{"v2 LOCAL", "tcp4", proxy.HeaderV2Local()},
		{"malformed", "tcp4", proxy.HeaderMalformed()},
		{"truncated", "tcp4", proxy.HeaderTruncated()},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got := make(chan []byte, 1)
			be := startBackend(t, tt.network, headerEcho(got))
			ctx, cancel := context.WithTimeout(context.Background(), testDeadline)
			defer cancel()
			c, err := (&proxy.Dialer{}).DialContext(ctx, tt.network, be.addr(), tt.hdr)
			if err != nil {
				t.Fatalf("DialContext: %v", err)
			}
			defer c.Close()
			if raw := <-got; !bytes.Equal(raw, tt.hdr) {
				t.Errorf("single recv = %q; want %q", raw, tt.hdr)
			}
		})
	}
}

func TestDialerLocalAddr(t *testing.T) {
	peer := make(chan string, 1)
	be := startBackend(t, "tcp4", func(c net.Conn) {
		peer <- c.RemoteAddr().(*net.TCPAddr).IP.String()
	})
	ctx, cancel := context.WithTimeout(context.Background(), testDeadline)
	defer cancel()
	c, err := (&proxy.Dialer{LocalAddr: "127.0.0.10"}).DialContext(ctx, "tcp", be.addr(), proxy.HeaderV2Local())
	if err != nil {
		t.Fatalf("DialContext: %v", err)
	}
	defer c.Close()
	if got := <-peer; got != "127.0.0.10" {
		t.Errorf("backend saw peer %s; want 127.0.0.10", got)
	}
	if _, err := (&proxy.Dialer{LocalAddr: "nope"}).DialContext(ctx, "tcp", be.addr(), nil); !errors.Is(err, proxy.ErrLocalAddr) {
		t.Errorf("DialContext with LocalAddr %q = %v; want %v", "nope", err, proxy.ErrLocalAddr)
	}
}

func TestDialerCancelled(t *testing.T) {
	be := startBackend(t, "tcp4", func(c net.Conn) {})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if c, err := (&proxy.Dialer{}).DialContext(ctx, "tcp", be.addr(), proxy.HeaderV2Local()); err == nil {
		c.Close()
		t.Errorf("DialContext with cancelled ctx = nil error; want one")
	}
}
