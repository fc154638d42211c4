package hermetic

import (
	"fmt"
	"net/netip"
	"strconv"
	"time"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/network"
	"github.com/testcontainers/testcontainers-go"
	"github.com/testcontainers/testcontainers-go/wait"

	"github.com/splitcheck/splitcheck/harness/stalwart"
)

// DefaultRelayImage is the image of the two TCP relays of a hermetic run: socat on
// Alpine, pinned like the Stalwart image.
const DefaultRelayImage = "alpine/socat:1.8.0.3"

// Network aliases and ports inside the run's network.
const (
	// StalwartAlias is Stalwart's name on the run's network.
	StalwartAlias = "stalwart"
	// proxyRelayPort is where the proxy relay listens; it is published on 127.0.0.1.
	proxyRelayPort = 2525
	// mxPort is the only port Stalwart's MX delivery uses.
	mxPort = 25
	// relayStartup bounds the wait for socat's "listening on".
	relayStartup = 60 * time.Second
)

// roleLabel marks every container of a hermetic run with its role.
const roleLabel = "org.splitcheck.hermetic.role"

// relaySpec is one socat relay: it listens on Listen inside its container and
// opens a new connection to Target for each client, copying bytes both ways. It
// adds and removes nothing, so a PROXY header written by the harness's proxy
// reaches Stalwart intact, from the relay's own address.
type relaySpec struct {
	Role    string // "proxy-relay" or "mx-relay"; also its network alias
	Listen  uint16
	Target  string // host:port; a network alias or an IP
	Publish bool   // publish Listen on 127.0.0.1 for the host to connect to
}

// proxyRelaySpec forwards the harness's PROXY-protocol connections to Stalwart's
// port 25, so Stalwart sees them come from the relay, not from the gateway.
func proxyRelaySpec() relaySpec {
	return relaySpec{Role: "proxy-relay", Listen: proxyRelayPort, Target: StalwartAlias + ":25", Publish: true}
}

// mxRelaySpec answers on port 25 (the MX port) for the fake MX on the host.
func mxRelaySpec(fakeMX netip.AddrPort) relaySpec {
	return relaySpec{Role: "mx-relay", Listen: mxPort, Target: fakeMX.String()}
}

// port is Listen in testcontainers' "port/tcp" form.
func (s relaySpec) port() string { return strconv.Itoa(int(s.Listen)) + "/tcp" }

// relayRequest is the container request for one relay on the named network.
func relayRequest(img, networkName string, spec relaySpec, logs *stalwart.LogTail) testcontainers.GenericContainerRequest {
	req := testcontainers.GenericContainerRequest{
		ContainerRequest: testcontainers.ContainerRequest{
			Image:      img,
			Entrypoint: []string{"socat"},
			Cmd: []string{"-d", "-d",
				fmt.Sprintf("TCP4-LISTEN:%d,fork,reuseaddr", spec.Listen),
				"TCP4:" + spec.Target},
			Labels:         map[string]string{roleLabel: spec.Role},
			Networks:       []string{networkName},
			NetworkAliases: map[string][]string{networkName: {spec.Role}},
			WaitingFor:     wait.ForLog("listening on").WithStartupTimeout(relayStartup),
			LogConsumerCfg: &testcontainers.LogConsumerConfig{Consumers: []testcontainers.LogConsumer{logs}},
		},
		Started: true,
	}
	if spec.Publish {
		p := network.MustParsePort(spec.port())
		req.ExposedPorts = []string{spec.port()}
		req.HostConfigModifier = func(hc *container.HostConfig) {
			hc.PortBindings = network.PortMap{p: {{HostIP: netip.MustParseAddr("127.0.0.1")}}}
		}
	}
	return req
}
