package hermetic

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"time"

	"github.com/testcontainers/testcontainers-go"

	"github.com/splitcheck/splitcheck/harness"
	"github.com/splitcheck/splitcheck/harness/config"
	"github.com/splitcheck/splitcheck/harness/stalwart"
	"github.com/splitcheck/splitcheck/scenarios"
)

// Defaults of Options.
const (
	// DefaultTimeout bounds a whole run: image pulls, two Stalwart starts, the
	// configuration and the checks.
	DefaultTimeout = 15 * time.Minute
	// DefaultAnnounce is the client address the PROXY header claims (TEST-NET-3).
	DefaultAnnounce = "203.0.113.7"
)

// VerifyFunc runs the checks against the configuration a run prepared;
// harness.Verify is the real one.
type VerifyFunc func(ctx context.Context, cfg *config.Config, opts harness.VerifyOptions) (*harness.Result, error)

// Options configures a hermetic run. The zero value checks DefaultPlan against
// DefaultImage.
type Options struct {
	// Image is the Stalwart image; default stalwart.DefaultImage.
	Image string
	// RelayImage is the socat image of the two relays; default DefaultRelayImage.
	RelayImage string
	// Plan is what is checked; zero means DefaultPlan.
	Plan Plan
	// PublicURL is STALWART_PUBLIC_URL, checked through JMAP autodiscovery;
	// default Plan.PublicURL().
	PublicURL string
	// ProxyVersion is the PROXY protocol version, 1 or 2 (default 2).
	ProxyVersion int
	// Announce is the client address the PROXY header claims; default DefaultAnnounce.
	Announce string
	// Timeouts bound the checks' waits; zero fields take the config defaults.
	Timeouts config.Timeouts
	// StartupTimeout bounds each start of Stalwart (readiness); default
	// stalwart.DefaultStartupTimeout.
	StartupTimeout time.Duration
	// Timeout bounds the whole run; default DefaultTimeout.
	Timeout time.Duration
	// CleanupTimeout bounds the removal of the containers and the network, which
	// happens on every path (success, failure, timeout, cancellation); default
	// DefaultCleanupTimeout.
	CleanupTimeout time.Duration
	// Extra and Replace are passed to the checks as harness.VerifyOptions has them
	// (probes from scenario files).
	Extra   []scenarios.Probe
	Replace bool
	// Logger receives the run's progress (never secrets); nil is silent.
	Logger *slog.Logger
	// Progress is passed to the checks (harness.VerifyOptions.Progress).
	Progress func(harness.ProgressEvent)
	// Verify runs the checks; default harness.Verify.
	Verify VerifyFunc

	// engine runs the containers; default dockerEngine (tests use a fake).
	engine engine
}

// Result is what a hermetic run did and found. Run returns it even with an error,
// with whatever was known by then.
type Result struct {
	// Verify is the checks' result; nil when the run ended before them.
	Verify *harness.Result
	// Config is the configuration the checks ran with (secrets never print).
	Config *config.Config
	// Layout is where the fakes listened and what Stalwart was told.
	Layout Layout
	// Image is the Stalwart image that ran.
	Image string
	// Apply is what the migration's apply step changed.
	Apply *stalwart.ApplyResult
	// StalwartLog is the tail of Stalwart's output, for the report on failure.
	StalwartLog string
	// RelayLogs are the tails of the relays' output, by role.
	RelayLogs map[string]string
	// Removed lists what the clean-up removed, last started first.
	Removed []string
}

// Mismatch is the checks' *scenarios.MismatchError (nil when every check passed or
// was skipped, or when there are no checks).
func (r *Result) Mismatch() error {
	if r == nil || r.Verify == nil {
		return nil
	}
	return r.Verify.Mismatch()
}

// Run starts a pinned Stalwart and everything around it, configures it as the
// migration guide says, runs every check, and removes everything again:
//
//  1. checks that a Docker engine answers (a *DockerError, ErrNoDocker, if not);
//  2. creates a bridge network of its own and reserves the fakes' ports on the
//     host's address on it (the gateway);
//  3. starts two socat relays on it: the MX relay (port 25, which Stalwart's MX
//     delivery always uses, forwarded to the fake MX on the host) and the proxy
//     relay (forwarding the harness's PROXY-protocol connections to Stalwart's
//     port 25, so they arrive from an address that is not the gateway);
//  4. starts Stalwart headless with STALWART_PUBLIC_URL, and bootstraps it: the
//     domains, SystemSettings with proxyTrustedNetworks = the proxy relay's /32,
//     the submission listener, a stdout tracer, the Custom DNS resolver pointing at
//     the fake DNS, the local accounts with random passwords, and no inbound
//     throttles (the probes announce one client address and go out together);
//  5. applies the migration (allowRelaying, the "source" relay route to the fake
//     source, the route expression) as `splitcheck apply` does;
//  6. restarts Stalwart so the listener and the proxy trust take effect, and checks
//     the public URL through JMAP autodiscovery;
//  7. runs the checks (harness.Verify) against the published ports.
//
// The network, the containers and the temporary files are removed on every path,
// including a cancelled or timed-out ctx; testcontainers' reaper removes them if the
// process dies. A routing mismatch is not an error: see Result.Mismatch.
func Run(ctx context.Context, opts Options) (*Result, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.engine == nil {
		opts.engine = dockerEngine{logger: opts.Logger}
	}
	if opts.Verify == nil {
		opts.Verify = harness.Verify
	}
	if opts.Image == "" {
		opts.Image = stalwart.DefaultImage
	}
	if opts.RelayImage == "" {
		opts.RelayImage = DefaultRelayImage
	}
	if opts.Plan.IsZero() {
		opts.Plan = DefaultPlan()
	}
	if opts.PublicURL == "" {
		opts.PublicURL = opts.Plan.PublicURL()
	}
	if opts.ProxyVersion == 0 {
		opts.ProxyVersion = 2
	}
	if opts.Announce == "" {
		opts.Announce = DefaultAnnounce
	}
	if opts.StartupTimeout <= 0 {
		opts.StartupTimeout = stalwart.DefaultStartupTimeout
	}
	if opts.Timeout <= 0 {
		opts.Timeout = DefaultTimeout
	}
	if opts.CleanupTimeout <= 0 {
		opts.CleanupTimeout = DefaultCleanupTimeout
	}
	return run(ctx, opts)
}

func run(parent context.Context, o Options) (res *Result, err error) {
	res = &Result{Image: o.Image, RelayLogs: map[string]string{}}
	log := o.Logger
	ctx, cancel := context.WithTimeout(parent, o.Timeout)
	defer cancel()

	var cl cleanups
	defer func() {
		removed, cerr := cl.run(parent, o.CleanupTimeout)
		res.Removed = removed
		for _, what := range removed {
			log.Info("hermetic: removed", "what", what)
		}
		err = errors.Join(err, cerr)
		if err != nil && ctx.Err() != nil && parent.Err() == nil && errors.Is(ctx.Err(), context.DeadlineExceeded) {
			err = fmt.Errorf("hermetic: no result within %v: %w", o.Timeout, err)
		}
	}()

	log.Info("hermetic: checking for a Docker engine")
	if err := o.engine.check(ctx); err != nil {
		return res, err
	}

	log.Info("hermetic: creating the network")
	nw, err := o.engine.newNetwork(ctx)
	if nw != nil {
		cl.push("network "+nw.Name(), nw.remove)
	}
	if err != nil {
		return res, fmt.Errorf("hermetic: %w", err)
	}
	subnet, gateway, err := nw.topology(ctx)
	if err != nil {
		return res, fmt.Errorf("hermetic: %w", err)
	}
	hostAddrs, err := o.engine.hostAddrs()
	if err != nil {
		return res, fmt.Errorf("hermetic: %w", err)
	}
	bind, err := HostAddress(subnet, gateway, hostAddrs)
	if err != nil {
		return res, err
	}
	ports, err := o.engine.reservePorts(bind)
	if err != nil {
		return res, fmt.Errorf("hermetic: %w", err)
	}

	relays := map[string]relayHandle{}
	for _, spec := range []relaySpec{mxRelaySpec(netip.AddrPortFrom(bind, ports.MX)), proxyRelaySpec()} {
		log.Info("hermetic: starting relay", "role", spec.Role, "image", o.RelayImage, "target", spec.Target)
		r, err := o.engine.startRelay(ctx, nw, o.RelayImage, spec)
		if r != nil {
			role := spec.Role
			cl.push(role, func(ctx context.Context) error {
				res.RelayLogs[role] = r.logTail()
				return r.terminate(ctx)
			})
			relays[role] = r
		}
		if err != nil {
			return res, fmt.Errorf("hermetic: %w", err)
		}
	}
	topo := Topology{Subnet: subnet, Gateway: gateway}
	if topo.MXRelay, err = relays["mx-relay"].addr(ctx); err != nil {
		return res, fmt.Errorf("hermetic: mx relay: %w", err)
	}
	if topo.ProxyRelay, err = relays["proxy-relay"].addr(ctx); err != nil {
		return res, fmt.Errorf("hermetic: proxy relay: %w", err)
	}
	layout, err := PlanLayout(topo, hostAddrs, ports)
	if err != nil {
		return res, err
	}
	res.Layout = layout
	log.Info("hermetic: addresses", "gateway", layout.Gateway, "trusted_proxy", layout.TrustedProxy,
		"mx_host", layout.MXHost, "fake_source", layout.FakeSource, "fake_mx", layout.FakeMX, "fake_dns", layout.FakeDNS)

	accts, passwords, err := accounts(o.Plan)
	if err != nil {
		return res, fmt.Errorf("hermetic: %w", err)
	}

	log.Info("hermetic: starting Stalwart", "image", o.Image)
	srv, err := o.engine.startStalwart(ctx, nw, o.Image, []testcontainers.ContainerCustomizer{
		stalwart.WithPublicURL(o.PublicURL),
		stalwart.WithTrustedProxy(layout.TrustedProxy.String()),
		stalwart.WithStartupTimeout(o.StartupTimeout),
		stalwart.WithHostIP("127.0.0.1"),
	})
	if srv != nil {
		cl.push("stalwart", func(ctx context.Context) error {
			res.StalwartLog = srv.LogTail()
			return srv.terminate(ctx)
		})
	}
	if err != nil {
		return res, fmt.Errorf("hermetic: %w", err)
	}
	if topo.Stalwart, err = srv.addr(ctx); err != nil {
		return res, fmt.Errorf("hermetic: stalwart: %w", err)
	}
	if _, err := PlanLayout(topo, hostAddrs, ports); err != nil {
		return res, err
	}

	mgmt, err := srv.ManagementClient(ctx)
	if err != nil {
		return res, fmt.Errorf("hermetic: %w", err)
	}
	mgmt.Logger = log
	log.Info("hermetic: bootstrapping Stalwart")
	err = stalwart.Bootstrap(ctx, mgmt, stalwart.BootstrapConfig{
		Domains:        o.Plan.Domains,
		Hostname:       o.Plan.Hostname(),
		TrustedProxies: []netip.Prefix{layout.TrustedProxy},
		DNS:            layout.FakeDNS,
		Accounts:       accts,
		// The probes announce one client address and go out together.
		DisableInboundThrottles: true,
	})
	if err != nil {
		return res, fmt.Errorf("hermetic: %w", err)
	}

	s := settings{
		plan: o.Plan, layout: layout, hostname: o.Plan.Hostname(), publicURL: o.PublicURL,
		passwords: passwords, proxyVersion: o.ProxyVersion, announce: o.Announce, timeouts: o.Timeouts,
	}
	s.adminUser, s.adminPassword = srv.AdminCredentials()
	cfg, err := endpointsConfig(ctx, srv, relays["proxy-relay"], s)
	if err != nil {
		return res, err
	}
	desired, err := stalwart.DesiredFromConfig(cfg)
	if err == nil {
		desired, err = desired.Rehearsal(stalwart.RehearsalSource(cfg))
	}
	if err != nil {
		return res, fmt.Errorf("hermetic: %w", err)
	}
	dir, err := os.MkdirTemp("", "splitcheck-hermetic-")
	if err != nil {
		return res, fmt.Errorf("hermetic: %w", err)
	}
	cl.push("temporary directory "+dir, func(context.Context) error { return os.RemoveAll(dir) })
	log.Info("hermetic: applying the migration")
	res.Apply, err = mgmt.Apply(ctx, desired, stalwart.ApplyOptions{
		SnapshotPath: filepath.Join(dir, "snapshot.json"),
		Hermetic:     true,
	})
	if err != nil {
		return res, fmt.Errorf("hermetic: %w", err)
	}

	log.Info("hermetic: restarting Stalwart (listeners, proxy trust)")
	if err := srv.Restart(ctx); err != nil {
		return res, fmt.Errorf("hermetic: %w", err)
	}
	// Published ports may change across a restart: read them again.
	if cfg, err = endpointsConfig(ctx, srv, relays["proxy-relay"], s); err != nil {
		return res, err
	}
	res.Config = cfg
	if mgmt, err = srv.ManagementClient(ctx); err != nil {
		return res, fmt.Errorf("hermetic: %w", err)
	}
	chk, err := mgmt.CheckPublicURL(ctx, "", o.PublicURL)
	if err != nil {
		return res, fmt.Errorf("hermetic: public URL: %w", err)
	}
	if !chk.OK {
		return res, fmt.Errorf("hermetic: public URL: JMAP autodiscovery advertises apiUrl %q, which is not on STALWART_PUBLIC_URL %q", chk.APIURL, chk.Want)
	}
	log.Info("hermetic: public URL confirmed through autodiscovery", "api_url", chk.APIURL)

	log.Info("hermetic: running the checks")
	res.Verify, err = o.Verify(ctx, cfg, harness.VerifyOptions{
		Logger:   log,
		Progress: o.Progress,
		Extra:    o.Extra,
		Replace:  o.Replace,
	})
	if err != nil {
		return res, fmt.Errorf("hermetic: %w", err)
	}
	return res, nil
}

// endpointsConfig reads the published ports and builds the checks' configuration.
func endpointsConfig(ctx context.Context, srv server, proxyRelay relayHandle, s settings) (*config.Config, error) {
	var err error
	if s.proxySMTP, err = proxyRelay.endpoint(ctx); err != nil {
		return nil, fmt.Errorf("hermetic: %w", err)
	}
	for _, ep := range []struct {
		dst *string
		get func(context.Context) (string, error)
	}{{&s.plainSMTP, srv.SMTPEndpoint}, {&s.submission, srv.SubmissionEndpoint}, {&s.imaps, srv.IMAPSEndpoint}} {
		if *ep.dst, err = ep.get(ctx); err != nil {
			return nil, fmt.Errorf("hermetic: %w", err)
		}
	}
	mgmt, err := srv.ManagementClient(ctx)
	if err != nil {
		return nil, fmt.Errorf("hermetic: %w", err)
	}
	s.management = mgmt.URL
	return verifyConfig(s)
}
