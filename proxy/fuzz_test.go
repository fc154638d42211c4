package proxy_test

import (
	"bufio"
	"bytes"
	"io"
	"net/netip"
	"testing"

	"github.com/pires/go-proxyproto"

	"github.com/splitcheck/splitcheck/proxy"
)

// FuzzHeaderRoundTrip checks that every header we emit parses back with
// proxyproto.Read to the same addresses, ports and TLVs, with nothing left over.
func FuzzHeaderRoundTrip(f *testing.F) {
	seeds := []struct {
		src, dst string
		v2       bool
		tlvType  byte
		tlv      []byte
	}{
		{"198.51.100.7:40000", "127.0.0.1:25", false, 0, nil},
		{"198.51.100.8:40001", "127.0.0.1:25", true, 0, nil},
		{"[2001:db8::7]:1", "[::1]:25", false, 0, nil},
		{"[2001:db8::7]:65535", "[::1]:0", true, byte(proxyproto.PP2_TYPE_UNIQUE_ID), []byte("id-1")},
		{"[::ffff:198.51.100.7]:1", "127.0.0.1:25", false, 0, nil},
		{"198.51.100.7:1", "[::1]:25", true, byte(proxyproto.PP2_TYPE_AUTHORITY), []byte("mx.example.org")},
		{"[fe80::1%eth0]:1", "[::1]:25", false, 0, nil},
		{"0.0.0.0:0", "255.255.255.255:65535", true, byte(proxyproto.PP2_TYPE_NOOP), nil},
	}
	for _, s := range seeds {
		src, dst := netip.MustParseAddrPort(s.src), netip.MustParseAddrPort(s.dst)
		f.Add(addrBytes(src), src.Port(), addrBytes(dst), dst.Port(), s.v2, s.tlvType, s.tlv)
	}
	f.Fuzz(func(t *testing.T, srcIP []byte, srcPort uint16, dstIP []byte, dstPort uint16, v2 bool, tlvType byte, tlv []byte) {
		sa, ok1 := netip.AddrFromSlice(srcIP)
		da, ok2 := netip.AddrFromSlice(dstIP)
		if !ok1 || !ok2 {
			return
		}
		src, dst := netip.AddrPortFrom(sa, srcPort), netip.AddrPortFrom(da, dstPort)
		var hdr []byte
		var tlvs []proxyproto.TLV
		if v2 {
			if len(tlv) > 1000 {
				tlv = tlv[:1000]
			}
			tlvs = []proxyproto.TLV{{Type: proxyproto.PP2Type(tlvType), Value: tlv}}
			hdr = proxy.HeaderV2(src, dst, tlvs...)
		} else {
			hdr = proxy.HeaderV1(src, dst)
			if len(hdr) > 107 {
				t.Fatalf("v1 header is %d bytes; the limit is 107", len(hdr))
			}
		}
		br := bufio.NewReader(bytes.NewReader(hdr))
		h, err := proxyproto.Read(br)
		if err != nil {
			t.Fatalf("proxyproto.Read(%q) = %v", hdr, err)
		}
		if br.Buffered() != 0 {
			t.Fatalf("%d bytes left after the header %q", br.Buffered(), hdr)
		}
		gotSrc, gotDst, ok := h.TCPAddrs()
		if !ok {
			t.Fatalf("header %q has no TCP addresses", hdr)
		}
		wantSrc, wantDst := normalize(src, dst)
		if got := gotSrc.AddrPort(); got != wantSrc {
			t.Errorf("source = %v; want %v", got, wantSrc)
		}
		if got := gotDst.AddrPort(); got != wantDst {
			t.Errorf("destination = %v; want %v", got, wantDst)
		}
		if v2 {
			want := tlvs[0]
			if want.Type == proxyproto.PP2_TYPE_NOOP {
				want.Value = nil // proxyproto drops the content of no-op padding
			}
			got, err := h.TLVs()
			if err != nil || len(got) != 1 || got[0].Type != want.Type || !bytes.Equal(got[0].Value, want.Value) {
				t.Errorf("TLVs = %v, %v; want [%v]", got, err, want)
			}
		}
	})
}

func addrBytes(ap netip.AddrPort) []byte { return ap.Addr().AsSlice() }

// normalize is what the wire can carry: no zones; both ends IPv4 when both are
// IPv4 or v4-mapped, otherwise both 16-byte IPv6 (v4 ends v4-mapped).
func normalize(src, dst netip.AddrPort) (netip.AddrPort, netip.AddrPort) {
	s, d := src.Addr().WithZone("").Unmap(), dst.Addr().WithZone("").Unmap()
	if !s.Is4() || !d.Is4() {
		s, d = netip.AddrFrom16(s.As16()), netip.AddrFrom16(d.As16())
	}
	return netip.AddrPortFrom(s, src.Port()), netip.AddrPortFrom(d, dst.Port())
}

// FuzzProxyForward sends arbitrary client bytes (PROXY-header look-alikes
// included) through a real proxy: the backend must parse the proxy's header,
// naming the real client, and then receive the client's bytes unchanged.
func FuzzProxyForward(f *testing.F) {
	for _, seed := range [][]byte{
		nil,
		[]byte("EHLO client.example\r\nQUIT\r\n"),
		proxy.HeaderV1(netip.MustParseAddrPort("203.0.113.66:1"), netip.MustParseAddrPort("127.0.0.1:25")),
		proxy.HeaderV2(netip.MustParseAddrPort("203.0.113.66:1"), netip.MustParseAddrPort("127.0.0.1:25")),
		proxy.HeaderTruncated(),
		proxy.HeaderMalformed(),
		bytes.Repeat([]byte{0}, 70000),
	} {
		f.Add(seed, true)
		f.Add(seed, false)
	}
	be := startBackend(f, "tcp4", addrEcho)
	addr1, _ := startProxy(f, "tcp4", &proxy.Proxy{Upstream: be.addr(), Header: proxy.RealClient(1)})
	addr2, _ := startProxy(f, "tcp4", &proxy.Proxy{Upstream: be.addr(), Header: proxy.RealClient(2)})
	f.Fuzz(func(t *testing.T, payload []byte, v2 bool) {
		addr := addr1
		if v2 {
			addr = addr2
		}
		c := dial(t, addr)
		// Write concurrently with reading, so a large payload cannot deadlock
		// on full socket buffers.
		wrote := make(chan error, 1)
		go func() {
			_, err := c.Write(payload)
			if err == nil {
				err = c.CloseWrite()
			}
			wrote <- err
		}()
		out, err := io.ReadAll(c)
		if werr := <-wrote; werr != nil {
			t.Fatalf("write: %v", werr)
		}
		if err != nil {
			t.Fatalf("read: %v", err)
		}
		want := append([]byte(c.LocalAddr().String()+"\n"), payload...)
		if !bytes.Equal(out, want) {
			t.Errorf("backend got %d bytes %.80q; want %d bytes %.80q", len(out), out, len(want), want)
		}
	})
}

// FuzzParseWhole checks the single-recv check used by the split test never
// accepts a strict prefix of one of our headers.
func FuzzParseWhole(f *testing.F) {
	f.Add([]byte("198.51.100.7"), uint16(40000), 20)
	f.Add([]byte("2001:db8::7"), uint16(1), 5)
	f.Fuzz(func(t *testing.T, ip []byte, port uint16, cut int) {
		a, err := netip.ParseAddr(string(ip))
		if err != nil {
			return
		}
		src := netip.AddrPortFrom(a, port)
		dst := netip.MustParseAddrPort("127.0.0.1:25")
		for _, hdr := range [][]byte{proxy.HeaderV1(src, dst), proxy.HeaderV2(src, dst)} {
			if cut <= 0 || cut >= len(hdr) {
				continue
			}
			if h, err := parseWhole(hdr[:cut]); err == nil {
				t.Errorf("parseWhole(%q) = %v, nil; want an error for a split header", hdr[:cut], h)
			}
		}
	})
}
