package hermetic

import (
	"errors"
	"fmt"
	"net/netip"
)

// Topology is what the Docker engine reports about the run's own bridge network:
// its subnet, the host's address on it (the gateway), and the addresses of the
// containers on it. Zero addresses are containers not started yet.
type Topology struct {
	Subnet  netip.Prefix
	Gateway netip.Addr
	// ProxyRelay is the container every PROXY-protocol connection reaches Stalwart
	// from: its address is the one Stalwart trusts.
	ProxyRelay netip.Addr
	// MXRelay is the container that answers on port 25 for the fake MX.
	MXRelay netip.Addr
	// Stalwart is the Stalwart container.
	Stalwart netip.Addr
}

// Ports are the host ports the fakes listen on, on the gateway address.
type Ports struct {
	Source uint16 // the fake source (the "source" relay route's target)
	MX     uint16 // the fake MX, reached through the MX relay's port 25
	DNS    uint16 // the fake DNS, UDP and TCP (Stalwart's Custom resolver allows any port)
}

// Layout is where every part of a hermetic run listens and what Stalwart is told.
type Layout struct {
	// Gateway is the host's address on the run's network; the fakes bind there.
	Gateway netip.Addr
	// FakeSource, FakeMX and FakeDNS are the fakes' listen addresses.
	FakeSource, FakeMX, FakeDNS netip.AddrPort
	// MXHost is the address the fake DNS gives for the external domains' MX host:
	// the MX relay, which Stalwart reaches on port 25 (the only port MX delivery uses).
	MXHost netip.Addr
	// TrustedProxy is SystemSettings.proxyTrustedNetworks: exactly the proxy relay.
	TrustedProxy netip.Prefix
}

// The address rules, as sentinels so tests and callers can tell them apart.
var (
	// ErrGatewayNotLocal means the network's gateway is not an address of this
	// machine: the engine runs elsewhere (Docker Desktop's VM, a remote DOCKER_HOST,
	// or splitcheck itself inside a container), so sockets bound here are not what
	// the containers reach at the gateway.
	ErrGatewayNotLocal = errors.New("hermetic: the Docker network's gateway is not an address of this machine")
	// ErrBadAddress means an address Docker reported cannot be used as it must be.
	ErrBadAddress = errors.New("hermetic: unusable address")
)

// HostAddress checks that the fakes can listen on the gateway and returns it. The
// gateway must be an IPv4 unicast address inside the subnet (never loopback, never
// unspecified: Stalwart drops loopback MX hosts, and 0.0.0.0 would expose the fakes
// on every interface), and one of this machine's own addresses.
func HostAddress(subnet netip.Prefix, gateway netip.Addr, hostAddrs []netip.Addr) (netip.Addr, error) {
	if err := checkOnNetwork("gateway", gateway, subnet); err != nil {
		return netip.Addr{}, err
	}
	for _, a := range hostAddrs {
		if a.Unmap().WithZone("") == gateway {
			return gateway, nil
		}
	}
	return netip.Addr{}, fmt.Errorf("%w: %v is not among this machine's addresses; run splitcheck on the Docker host itself (a local Linux engine)", ErrGatewayNotLocal, gateway)
}

// TrustedProxy returns the one network Stalwart must trust for PROXY headers: the
// proxy relay's address as a /32. Connections to published ports arrive from the
// gateway, so the relay must be a different address, and so must Stalwart and the
// MX relay; trusting the whole subnet would make every headerless connection from
// the host (the management API, submission, the plain probes) hang or be dropped.
func TrustedProxy(t Topology) (netip.Prefix, error) {
	if err := checkOnNetwork("proxy relay", t.ProxyRelay, t.Subnet); err != nil {
		return netip.Prefix{}, err
	}
	for _, other := range []struct {
		name string
		addr netip.Addr
	}{{"the gateway", t.Gateway}, {"the MX relay", t.MXRelay}, {"Stalwart", t.Stalwart}} {
		if other.addr == t.ProxyRelay {
			return netip.Prefix{}, fmt.Errorf("%w: the proxy relay has the address of %s (%v); trusting it would trust more than the proxy", ErrBadAddress, other.name, t.ProxyRelay)
		}
	}
	return netip.PrefixFrom(t.ProxyRelay, 32), nil
}

// PlanLayout chooses every address of a run from the topology, this machine's
// addresses and the fakes' ports, and checks the rules HostAddress and
// TrustedProxy state, plus: the MX relay is on the network and is neither the
// gateway nor the proxy relay, and the three ports are set and distinct.
func PlanLayout(t Topology, hostAddrs []netip.Addr, ports Ports) (Layout, error) {
	gw, err := HostAddress(t.Subnet, t.Gateway, hostAddrs)
	if err != nil {
		return Layout{}, err
	}
	trusted, err := TrustedProxy(t)
	if err != nil {
		return Layout{}, err
	}
	if err := checkOnNetwork("MX relay", t.MXRelay, t.Subnet); err != nil {
		return Layout{}, err
	}
	if t.MXRelay == t.Gateway {
		return Layout{}, fmt.Errorf("%w: the MX relay has the gateway's address %v", ErrBadAddress, t.MXRelay)
	}
	if err := checkPorts(ports); err != nil {
		return Layout{}, err
	}
	return Layout{
		Gateway:      gw,
		FakeSource:   netip.AddrPortFrom(gw, ports.Source),
		FakeMX:       netip.AddrPortFrom(gw, ports.MX),
		FakeDNS:      netip.AddrPortFrom(gw, ports.DNS),
		MXHost:       t.MXRelay,
		TrustedProxy: trusted,
	}, nil
}

// checkOnNetwork checks that a is a usable IPv4 unicast address inside subnet.
func checkOnNetwork(name string, a netip.Addr, subnet netip.Prefix) error {
	switch {
	case !subnet.IsValid() || !subnet.Addr().Is4():
		return fmt.Errorf("%w: the network has no IPv4 subnet (got %v)", ErrBadAddress, subnet)
	case !a.IsValid():
		return fmt.Errorf("%w: the %s has no address on the network", ErrBadAddress, name)
	case !a.Is4():
		return fmt.Errorf("%w: the %s address %v is not IPv4", ErrBadAddress, name, a)
	case a.IsLoopback(), a.IsUnspecified(), a.IsMulticast(), a.IsLinkLocalUnicast():
		return fmt.Errorf("%w: the %s address %v is loopback, unspecified, multicast or link-local", ErrBadAddress, name, a)
	case !subnet.Contains(a):
		return fmt.Errorf("%w: the %s address %v is outside the network %v", ErrBadAddress, name, a, subnet)
	case a == subnet.Masked().Addr():
		return fmt.Errorf("%w: the %s address %v is the network address of %v", ErrBadAddress, name, a, subnet)
	}
	return nil
}

func checkPorts(p Ports) error {
	if p.Source == 0 || p.MX == 0 || p.DNS == 0 {
		return fmt.Errorf("%w: a fake has no port (source %d, mx %d, dns %d)", ErrBadAddress, p.Source, p.MX, p.DNS)
	}
	if p.Source == p.MX || p.Source == p.DNS || p.MX == p.DNS {
		return fmt.Errorf("%w: the fakes' ports must differ (source %d, mx %d, dns %d)", ErrBadAddress, p.Source, p.MX, p.DNS)
	}
	return nil
}
