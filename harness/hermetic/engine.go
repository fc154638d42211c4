package hermetic

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"

	"github.com/moby/moby/client"
	"github.com/testcontainers/testcontainers-go"
	tcnetwork "github.com/testcontainers/testcontainers-go/network"

	"github.com/splitcheck/splitcheck/harness/stalwart"
)

// engine is what a run needs from the container engine. dockerEngine is the real
// one; the tests use a fake that records what was started and removed.
type engine interface {
	// check fails with a *DockerError when no engine answers.
	check(ctx context.Context) error
	// hostAddrs lists this machine's interface addresses.
	hostAddrs() ([]netip.Addr, error)
	// reservePorts finds free ports for the fakes on ip.
	reservePorts(ip netip.Addr) (Ports, error)
	// newNetwork creates the run's own bridge network. A non-nil handle comes back
	// even with an error when something was created and must be removed.
	newNetwork(ctx context.Context) (netHandle, error)
	// startRelay starts a relay on n; the handle may come back with an error.
	startRelay(ctx context.Context, n netHandle, img string, spec relaySpec) (relayHandle, error)
	// startStalwart starts Stalwart on n, reachable there as StalwartAlias; the
	// handle may come back with an error.
	startStalwart(ctx context.Context, n netHandle, img string, opts []testcontainers.ContainerCustomizer) (server, error)
}

// netHandle is the run's network.
type netHandle interface {
	Name() string
	// topology returns the network's IPv4 subnet and gateway.
	topology(ctx context.Context) (netip.Prefix, netip.Addr, error)
	remove(ctx context.Context) error
}

// relayHandle is a started relay.
type relayHandle interface {
	// addr is the relay's address on the run's network.
	addr(ctx context.Context) (netip.Addr, error)
	// endpoint is host:port of the published listen port ("" if not published).
	endpoint(ctx context.Context) (string, error)
	logTail() string
	terminate(ctx context.Context) error
}

// server is a started Stalwart.
type server interface {
	addr(ctx context.Context) (netip.Addr, error)
	AdminCredentials() (user, password string)
	ManagementClient(ctx context.Context) (*stalwart.Client, error)
	SMTPEndpoint(ctx context.Context) (string, error)
	SubmissionEndpoint(ctx context.Context) (string, error)
	IMAPSEndpoint(ctx context.Context) (string, error)
	Restart(ctx context.Context) error
	LogTail() string
	terminate(ctx context.Context) error
}

// dockerEngine runs the containers with testcontainers-go. The reaper (Ryuk) stays
// on: it removes everything of this session even if the process is killed.
type dockerEngine struct {
	logger *slog.Logger
}

// tcLogger routes testcontainers' own progress lines to slog at debug level.
type tcLogger struct{ l *slog.Logger }

func (t tcLogger) Printf(format string, v ...any) {
	t.l.Debug(strings.TrimSpace(fmt.Sprintf(format, v...)), "component", "testcontainers")
}

func (e dockerEngine) check(ctx context.Context) error { return CheckDocker(ctx) }

func (e dockerEngine) hostAddrs() ([]netip.Addr, error) {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return nil, fmt.Errorf("list interface addresses: %w", err)
	}
	var out []netip.Addr
	for _, a := range addrs {
		if p, err := netip.ParsePrefix(a.String()); err == nil {
			out = append(out, p.Addr())
		}
	}
	return out, nil
}

func (e dockerEngine) reservePorts(ip netip.Addr) (Ports, error) { return reservePorts(ip) }

func (e dockerEngine) newNetwork(ctx context.Context) (netHandle, error) {
	nw, err := tcnetwork.New(ctx, tcnetwork.WithLabels(map[string]string{roleLabel: "network"}))
	if nw == nil || nw.ID == "" {
		if err == nil {
			err = errors.New("no network returned")
		}
		return nil, fmt.Errorf("create network: %w", err)
	}
	h := &dockerNetwork{nw: nw}
	if err != nil {
		return h, fmt.Errorf("create network: %w", err)
	}
	return h, nil
}

type dockerNetwork struct{ nw *testcontainers.DockerNetwork }

func (n *dockerNetwork) Name() string { return n.nw.Name }

func (n *dockerNetwork) topology(ctx context.Context) (netip.Prefix, netip.Addr, error) {
	cli, err := testcontainers.NewDockerClientWithOpts(ctx)
	if err != nil {
		return netip.Prefix{}, netip.Addr{}, fmt.Errorf("inspect network %s: %w", n.nw.Name, err)
	}
	defer cli.Close()
	res, err := cli.NetworkInspect(ctx, n.nw.ID, client.NetworkInspectOptions{})
	if err != nil {
		return netip.Prefix{}, netip.Addr{}, fmt.Errorf("inspect network %s: %w", n.nw.Name, err)
	}
	for _, c := range res.Network.IPAM.Config {
		if c.Subnet.Addr().Is4() {
			return c.Subnet, c.Gateway, nil
		}
	}
	return netip.Prefix{}, netip.Addr{}, fmt.Errorf("inspect network %s: %w: no IPv4 subnet in %+v", n.nw.Name, ErrBadAddress, res.Network.IPAM.Config)
}

func (n *dockerNetwork) remove(ctx context.Context) error { return n.nw.Remove(ctx) }

func (e dockerEngine) startRelay(ctx context.Context, n netHandle, img string, spec relaySpec) (relayHandle, error) {
	logs := stalwart.NewLogTail(stalwart.DefaultLogTailLines)
	req := relayRequest(img, n.Name(), spec, logs)
	req.Logger = tcLogger{e.logger}
	ctr, err := testcontainers.GenericContainer(ctx, req)
	var h *dockerRelay
	if ctr != nil {
		h = &dockerRelay{ctr: ctr, network: n.Name(), spec: spec, logs: logs}
	}
	if err != nil {
		err = fmt.Errorf("start %s: %w", spec.Role, err)
		if h == nil {
			return nil, err
		}
		return h, err
	}
	return h, nil
}

type dockerRelay struct {
	ctr     testcontainers.Container
	network string
	spec    relaySpec
	logs    *stalwart.LogTail
}

func (r *dockerRelay) addr(ctx context.Context) (netip.Addr, error) {
	return containerAddr(ctx, r.ctr, r.network)
}

func (r *dockerRelay) endpoint(ctx context.Context) (string, error) {
	if !r.spec.Publish {
		return "", nil
	}
	p, err := r.ctr.MappedPort(ctx, r.spec.port())
	if err != nil {
		return "", fmt.Errorf("%s endpoint: %w", r.spec.Role, err)
	}
	return net.JoinHostPort("127.0.0.1", p.Port()), nil
}

func (r *dockerRelay) logTail() string { return r.logs.String() }

func (r *dockerRelay) terminate(ctx context.Context) error { return r.ctr.Terminate(ctx) }

func (e dockerEngine) startStalwart(ctx context.Context, n netHandle, img string, opts []testcontainers.ContainerCustomizer) (server, error) {
	all := append([]testcontainers.ContainerCustomizer{
		testcontainers.WithLogger(tcLogger{e.logger}),
		tcnetwork.WithNetworkName([]string{StalwartAlias}, n.Name()),
		testcontainers.WithLabels(map[string]string{roleLabel: "stalwart"}),
	}, opts...)
	ctr, err := stalwart.Run(ctx, img, all...)
	var h *dockerServer
	if ctr != nil {
		h = &dockerServer{Container: ctr, network: n.Name()}
	}
	if err != nil {
		if h == nil {
			return nil, err
		}
		return h, err
	}
	return h, nil
}

type dockerServer struct {
	*stalwart.Container
	network string
}

func (s *dockerServer) addr(ctx context.Context) (netip.Addr, error) {
	return containerAddr(ctx, s.Container, s.network)
}

func (s *dockerServer) terminate(ctx context.Context) error { return s.Terminate(ctx) }

// containerAddr is a container's IPv4 address on the named network.
func containerAddr(ctx context.Context, ctr testcontainers.Container, networkName string) (netip.Addr, error) {
	info, err := ctr.Inspect(ctx)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("inspect container: %w", err)
	}
	if info.NetworkSettings == nil {
		return netip.Addr{}, fmt.Errorf("inspect container: no network settings")
	}
	ep, ok := info.NetworkSettings.Networks[networkName]
	if !ok || ep == nil || !ep.IPAddress.IsValid() {
		return netip.Addr{}, fmt.Errorf("inspect container: %w: no address on network %s", ErrBadAddress, networkName)
	}
	return ep.IPAddress, nil
}
