package hermetic_test

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"

	"github.com/splitcheck/splitcheck/harness/hermetic"
)

// PlanLayout turns what Docker reports about the run's network into where the fakes
// listen and what Stalwart trusts.
func ExamplePlanLayout() {
	topo := hermetic.Topology{
		Subnet:     netip.MustParsePrefix("172.18.0.0/16"),
		Gateway:    netip.MustParseAddr("172.18.0.1"), // the host's address on the network
		ProxyRelay: netip.MustParseAddr("172.18.0.2"),
		MXRelay:    netip.MustParseAddr("172.18.0.3"),
	}
	hostAddrs := []netip.Addr{netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("172.18.0.1")}
	l, err := hermetic.PlanLayout(topo, hostAddrs, hermetic.Ports{Source: 40001, MX: 40002, DNS: 40003})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("trust PROXY headers from:", l.TrustedProxy)
	fmt.Println("fake source:", l.FakeSource)
	fmt.Println("MX host for external domains:", l.MXHost, "port 25, relayed to", l.FakeMX)

	// Trusting the gateway would trust every connection from the host.
	topo.ProxyRelay = topo.Gateway
	_, err = hermetic.PlanLayout(topo, hostAddrs, hermetic.Ports{Source: 40001, MX: 40002, DNS: 40003})
	fmt.Println(errors.Is(err, hermetic.ErrBadAddress))
	// Output:
	// trust PROXY headers from: 172.18.0.2/32
	// fake source: 172.18.0.1:40001
	// MX host for external domains: 172.18.0.3 port 25, relayed to 172.18.0.1:40002
	// true
}

// Run is the whole hermetic suite; without a Docker engine it fails fast with
// ErrNoDocker and says where it looked.
func ExampleRun() {
	res, err := hermetic.Run(context.Background(), hermetic.Options{})
	switch {
	case errors.Is(err, hermetic.ErrNoDocker):
		fmt.Fprintln(os.Stderr, err) // exit 3 in the CLI
	case err != nil:
		fmt.Fprintln(os.Stderr, err, hermetic.Report(res))
	case res.Mismatch() != nil:
		fmt.Fprintln(os.Stderr, hermetic.Report(res)) // exit 1 in the CLI
	}
}
