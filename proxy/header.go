package proxy

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"

	"github.com/pires/go-proxyproto"
)

// Sentinel errors. Match them with errors.Is.
var (
	// ErrClosed is returned by Serve and ListenAndServe when the Proxy was
	// closed before they were called.
	ErrClosed = errors.New("proxy: closed")
	// ErrNoUpstream means Proxy.Upstream is empty.
	ErrNoUpstream = errors.New("proxy: no upstream address")
	// ErrVersion means a PROXY protocol version other than 1 or 2 was asked for.
	ErrVersion = errors.New("proxy: unsupported PROXY protocol version")
	// ErrTLVNeedsV2 means TLVs were given for a version 1 header, which cannot carry them.
	ErrTLVNeedsV2 = errors.New("proxy: TLVs need PROXY protocol version 2")
	// ErrAddr means an address cannot be announced in a PROXY header
	// (not TCP, not an IP address, or invalid).
	ErrAddr = errors.New("proxy: address cannot be announced")
	// ErrLocalAddr means a LocalAddr field is not a bare IP address.
	ErrLocalAddr = errors.New("proxy: bad local address")
	// ErrIdle means a connection pair was closed because no bytes moved in
	// either direction for the idle timeout.
	ErrIdle = errors.New("proxy: idle timeout")
)

// HeaderFunc picks the PROXY header to send for one client connection
// (nil header = send none). client is the address of the client that connected
// to the proxy; upstream is the backend address the proxy connected to, which
// the built-in funcs announce as the header's destination. An error fails the
// connection before any byte reaches the backend.
type HeaderFunc func(client, upstream net.Addr) (*proxyproto.Header, error)

// RealClient returns a HeaderFunc that announces the real client address as
// the source and the backend address as the destination. version is 1 or 2;
// tlvs are only allowed with version 2.
func RealClient(version byte, tlvs ...proxyproto.TLV) HeaderFunc {
	tlvs = slices.Clone(tlvs)
	return func(client, upstream net.Addr) (*proxyproto.Header, error) {
		return buildHeader(version, client, upstream, tlvs)
	}
}

// Announce returns a HeaderFunc that announces src as the source address
// instead of the real client (port 0 = keep the client's port), and the
// backend address as the destination. version is 1 or 2; tlvs are only
// allowed with version 2.
func Announce(version byte, src netip.AddrPort, tlvs ...proxyproto.TLV) HeaderFunc {
	return AnnounceTo(version, src, netip.AddrPort{}, tlvs...)
}

// AnnounceTo is Announce with a chosen destination too: dst replaces the
// backend address in the header (an invalid dst keeps the backend address,
// port 0 keeps the backend's port). A backend that keys behaviour on the
// local port (say, port 25) can be told the client came in on that port.
func AnnounceTo(version byte, src, dst netip.AddrPort, tlvs ...proxyproto.TLV) HeaderFunc {
	tlvs = slices.Clone(tlvs)
	return func(client, upstream net.Addr) (*proxyproto.Header, error) {
		if !src.Addr().IsValid() {
			return nil, fmt.Errorf("announce source %v: %w", src, ErrAddr)
		}
		s := src
		if s.Port() == 0 {
			c, err := addrPort(client)
			if err != nil {
				return nil, fmt.Errorf("client address: %w", err)
			}
			s = netip.AddrPortFrom(src.Addr(), c.Port())
		}
		var d net.Addr = upstream
		if dst.Addr().IsValid() {
			dp := dst
			if dp.Port() == 0 {
				u, err := addrPort(upstream)
				if err != nil {
					return nil, fmt.Errorf("upstream address: %w", err)
				}
				dp = netip.AddrPortFrom(dst.Addr(), u.Port())
			}
			d = net.TCPAddrFromAddrPort(dp)
		}
		return buildHeader(version, net.TCPAddrFromAddrPort(s), d, tlvs)
	}
}

// NoHeader is a HeaderFunc that sends no header: the backend sees a plain
// TCP connection from the proxy, as a misconfigured proxy would produce.
func NoHeader(client, upstream net.Addr) (*proxyproto.Header, error) { return nil, nil }

// buildHeader makes a PROXY header for a TCP connection from src to dst.
func buildHeader(version byte, src, dst net.Addr, tlvs []proxyproto.TLV) (*proxyproto.Header, error) {
	if version != 1 && version != 2 {
		return nil, fmt.Errorf("version %d: %w", version, ErrVersion)
	}
	if version == 1 && len(tlvs) > 0 {
		return nil, ErrTLVNeedsV2
	}
	s, err := addrPort(src)
	if err != nil {
		return nil, fmt.Errorf("source address: %w", err)
	}
	d, err := addrPort(dst)
	if err != nil {
		return nil, fmt.Errorf("destination address: %w", err)
	}
	h := headerFor(version, s, d)
	if len(tlvs) > 0 {
		if err := h.SetTLVs(tlvs); err != nil {
			return nil, fmt.Errorf("set TLVs: %w", err)
		}
	}
	return h, nil
}

// headerFor builds a TCP PROXY header; both addresses must be valid. IPv4 and
// v4-mapped IPv6 addresses are unmapped, so a pair of IPv4 ends is TCP4; a
// mixed pair is TCP6 with the IPv4 end v4-mapped.
func headerFor(version byte, src, dst netip.AddrPort) *proxyproto.Header {
	src = netip.AddrPortFrom(src.Addr().Unmap().WithZone(""), src.Port())
	dst = netip.AddrPortFrom(dst.Addr().Unmap().WithZone(""), dst.Port())
	return proxyproto.HeaderProxyFromAddrs(version, net.TCPAddrFromAddrPort(src), net.TCPAddrFromAddrPort(dst))
}

// addrPort converts a TCP-ish address to a valid netip.AddrPort.
func addrPort(a net.Addr) (netip.AddrPort, error) {
	var ap netip.AddrPort
	switch a := a.(type) {
	case *net.TCPAddr:
		ap = a.AddrPort()
	case nil:
		return ap, fmt.Errorf("nil address: %w", ErrAddr)
	default:
		var err error
		if ap, err = netip.ParseAddrPort(a.String()); err != nil {
			return ap, fmt.Errorf("%s address %q: %w", a.Network(), a.String(), ErrAddr)
		}
	}
	if !ap.Addr().IsValid() {
		return ap, fmt.Errorf("address %v: %w", a, ErrAddr)
	}
	return ap, nil
}

// mustFormat renders h; it panics only for headers whose TLVs overflow the
// 16-bit v2 length, a programming error in the caller.
func mustFormat(h *proxyproto.Header) []byte {
	b, err := h.Format()
	if err != nil {
		panic(fmt.Sprintf("proxy: format PROXY header: %v", err))
	}
	return b
}

// HeaderV1 returns a PROXY v1 header line for a TCP connection from src to dst:
// "PROXY TCP4 ..." when both are IPv4 (v4-mapped counts as IPv4), else
// "PROXY TCP6 ...". If either address is invalid it returns "PROXY UNKNOWN\r\n".
func HeaderV1(src, dst netip.AddrPort) []byte {
	if !src.Addr().IsValid() || !dst.Addr().IsValid() {
		return HeaderV1Unknown()
	}
	return mustFormat(headerFor(1, src, dst))
}

// HeaderV2 returns a binary PROXY v2 header (command PROXY, TCP over IPv4 or
// IPv6, chosen as in HeaderV1) carrying tlvs. If either address is invalid it
// returns the LOCAL form with the TLVs. It panics if the TLVs do not fit in
// the 16-bit length field.
func HeaderV2(src, dst netip.AddrPort, tlvs ...proxyproto.TLV) []byte {
	var h *proxyproto.Header
	if src.Addr().IsValid() && dst.Addr().IsValid() {
		h = headerFor(2, src, dst)
	} else {
		h = &proxyproto.Header{Version: 2, Command: proxyproto.LOCAL, TransportProtocol: proxyproto.UNSPEC}
	}
	if len(tlvs) > 0 {
		if err := h.SetTLVs(tlvs); err != nil {
			panic(fmt.Sprintf("proxy: set TLVs: %v", err))
		}
	}
	return mustFormat(h)
}

// HeaderV1Unknown returns "PROXY UNKNOWN\r\n", which Postfix rejects and
// Stalwart treats as "keep the TCP peer address".
func HeaderV1Unknown() []byte { return []byte("PROXY UNKNOWN\r\n") }

// HeaderV2Local returns a v2 header with the LOCAL command and no addresses
// (16 bytes): the receiver keeps the TCP peer address.
func HeaderV2Local() []byte {
	return mustFormat(&proxyproto.Header{Version: 2, Command: proxyproto.LOCAL, TransportProtocol: proxyproto.UNSPEC})
}

// HeaderV2Unspec returns a v2 header with the PROXY command but the UNSPEC
// address family and no addresses, which Postfix rejects.
func HeaderV2Unspec() []byte {
	return mustFormat(&proxyproto.Header{Version: 2, Command: proxyproto.PROXY, TransportProtocol: proxyproto.UNSPEC})
}

// HeaderV2UDP returns a well-formed v2 header for a UDP flow from src to dst,
// which a stream server such as Postfix rejects. Invalid addresses give the
// LOCAL form, as in HeaderV2.
func HeaderV2UDP(src, dst netip.AddrPort) []byte {
	if !src.Addr().IsValid() || !dst.Addr().IsValid() {
		return HeaderV2Local()
	}
	src = netip.AddrPortFrom(src.Addr().Unmap().WithZone(""), src.Port())
	dst = netip.AddrPortFrom(dst.Addr().Unmap().WithZone(""), dst.Port())
	return mustFormat(proxyproto.HeaderProxyFromAddrs(2, net.UDPAddrFromAddrPort(src), net.UDPAddrFromAddrPort(dst)))
}

// HeaderMalformed returns a deliberately invalid v1 header with an impossible
// source address: "PROXY TCP4 999.1.1.1 127.0.0.1 40000 25\r\n".
func HeaderMalformed() []byte { return []byte("PROXY TCP4 999.1.1.1 127.0.0.1 40000 25\r\n") }

// HeaderTruncated returns the first 20 bytes of a 28-byte v2 TCP4 header: the
// signature, command, family and a length promising 12 more bytes, of which
// only 4 are present.
func HeaderTruncated() []byte {
	full := HeaderV2(netip.MustParseAddrPort("198.51.100.7:40000"), netip.MustParseAddrPort("127.0.0.1:25"))
	return full[:20]
}
