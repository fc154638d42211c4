package hermetic

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
)

var (
	subnet   = netip.MustParsePrefix("172.18.0.0/16")
	gateway  = netip.MustParseAddr("172.18.0.1")
	proxyIP  = netip.MustParseAddr("172.18.0.2")
	mxIP     = netip.MustParseAddr("172.18.0.3")
	stalIP   = netip.MustParseAddr("172.18.0.4")
	hostAddr = []netip.Addr{
		netip.MustParseAddr("127.0.0.1"),
		netip.MustParseAddr("10.20.30.40"),
		netip.MustParseAddr("172.17.0.1"),
		gateway,
	}
	goodTopo  = Topology{Subnet: subnet, Gateway: gateway, ProxyRelay: proxyIP, MXRelay: mxIP, Stalwart: stalIP}
	goodPorts = Ports{Source: 40001, MX: 40002, DNS: 40003}
)

func TestPlanLayout(t *testing.T) {
	got, err := PlanLayout(goodTopo, hostAddr, goodPorts)
	if err != nil {
		t.Fatalf("PlanLayout: %v", err)
	}
	want := Layout{
		Gateway:      gateway,
		FakeSource:   netip.MustParseAddrPort("172.18.0.1:40001"),
		FakeMX:       netip.MustParseAddrPort("172.18.0.1:40002"),
		FakeDNS:      netip.MustParseAddrPort("172.18.0.1:40003"),
		MXHost:       mxIP,
		TrustedProxy: netip.MustParsePrefix("172.18.0.2/32"),
	}
	if got != want {
		t.Errorf("PlanLayout = %+v; want %+v", got, want)
	}
	// The trust is exactly one address: never the gateway, never the subnet.
	if got.TrustedProxy.Contains(gateway) || got.TrustedProxy.Bits() != 32 {
		t.Errorf("TrustedProxy %v trusts more than the proxy relay", got.TrustedProxy)
	}
}

func TestPlanLayoutRefuses(t *testing.T) {
	with := func(f func(*Topology)) Topology {
		tp := goodTopo
		f(&tp)
		return tp
	}
	for _, tt := range []struct {
		name  string
		topo  Topology
		host  []netip.Addr
		ports Ports
		is    error
		want  string
	}{
		{"gateway not on this machine", goodTopo, hostAddr[:3], goodPorts, ErrGatewayNotLocal, "172.18.0.1 is not among"},
		{"no gateway", with(func(tp *Topology) { tp.Gateway = netip.Addr{} }), hostAddr, goodPorts, ErrBadAddress, "gateway has no address"},
		{"loopback gateway", with(func(tp *Topology) {
			tp.Subnet, tp.Gateway = netip.MustParsePrefix("127.0.0.0/8"), netip.MustParseAddr("127.0.0.1")
		}), hostAddr, goodPorts, ErrBadAddress, "loopback"},
		{"unspecified gateway", with(func(tp *Topology) { tp.Gateway = netip.MustParseAddr("0.0.0.0") }), hostAddr, goodPorts, ErrBadAddress, "unspecified"},
		{"gateway outside subnet", with(func(tp *Topology) { tp.Gateway = netip.MustParseAddr("172.19.0.1") }), hostAddr, goodPorts, ErrBadAddress, "outside the network"},
		{"IPv6 only network", with(func(tp *Topology) { tp.Subnet = netip.MustParsePrefix("fd00::/64") }), hostAddr, goodPorts, ErrBadAddress, "no IPv4 subnet"},
		{"proxy relay is the gateway", with(func(tp *Topology) { tp.ProxyRelay = gateway }), hostAddr, goodPorts, ErrBadAddress, "address of the gateway"},
		{"proxy relay is stalwart", with(func(tp *Topology) { tp.ProxyRelay = stalIP }), hostAddr, goodPorts, ErrBadAddress, "address of Stalwart"},
		{"proxy relay is the mx relay", with(func(tp *Topology) { tp.MXRelay = proxyIP }), hostAddr, goodPorts, ErrBadAddress, "address of the MX relay"},
		{"proxy relay missing", with(func(tp *Topology) { tp.ProxyRelay = netip.Addr{} }), hostAddr, goodPorts, ErrBadAddress, "proxy relay has no address"},
		{"proxy relay outside subnet", with(func(tp *Topology) { tp.ProxyRelay = netip.MustParseAddr("10.0.0.2") }), hostAddr, goodPorts, ErrBadAddress, "outside the network"},
		{"network address", with(func(tp *Topology) { tp.ProxyRelay = netip.MustParseAddr("172.18.0.0") }), hostAddr, goodPorts, ErrBadAddress, "network address"},
		{"mx relay missing", with(func(tp *Topology) { tp.MXRelay = netip.Addr{} }), hostAddr, goodPorts, ErrBadAddress, "MX relay has no address"},
		{"mx relay is the gateway", with(func(tp *Topology) { tp.MXRelay = gateway }), hostAddr, goodPorts, ErrBadAddress, "MX relay has the gateway"},
		{"no dns port", goodTopo, hostAddr, Ports{Source: 1, MX: 2}, ErrBadAddress, "has no port"},
		{"same ports", goodTopo, hostAddr, Ports{Source: 5, MX: 5, DNS: 6}, ErrBadAddress, "must differ"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, err := PlanLayout(tt.topo, tt.host, tt.ports)
			if !errors.Is(err, tt.is) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("PlanLayout = %+v, %v; want %v containing %q", got, err, tt.is, tt.want)
			}
		})
	}
}

func TestHostAddressMatchesMappedAndZoned(t *testing.T) {
	mapped := netip.AddrFrom16(gateway.As16()) // ::ffff:172.18.0.1, as some interface listings give it
	got, err := HostAddress(subnet, gateway, []netip.Addr{mapped})
	if err != nil || got != gateway {
		t.Errorf("HostAddress with a 4in6 host address = %v, %v; want %v", got, err, gateway)
	}
}

func TestTrustedProxyIsSlash32(t *testing.T) {
	p, err := TrustedProxy(goodTopo)
	if err != nil {
		t.Fatal(err)
	}
	if p.String() != "172.18.0.2/32" {
		t.Errorf("TrustedProxy = %v; want 172.18.0.2/32", p)
	}
	// Before Stalwart and the MX relay start, only the gateway is known: still fine.
	early := Topology{Subnet: subnet, Gateway: gateway, ProxyRelay: proxyIP}
	if p, err := TrustedProxy(early); err != nil || p.String() != "172.18.0.2/32" {
		t.Errorf("TrustedProxy(before other containers) = %v, %v; want 172.18.0.2/32", p, err)
	}
}
