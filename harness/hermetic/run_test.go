package hermetic

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/testcontainers/testcontainers-go"

	"github.com/splitcheck/splitcheck/harness"
	"github.com/splitcheck/splitcheck/harness/config"
	"github.com/splitcheck/splitcheck/harness/stalwart"
	"github.com/splitcheck/splitcheck/harness/stalwart/stalwarttest"
	"github.com/splitcheck/splitcheck/scenarios"
)

// fakeEngine stands in for Docker: its "containers" are records, and its Stalwart
// is the stalwarttest fake of the management API. Nothing in it dials the container
// addresses it reports; they only appear in the configuration.
type fakeEngine struct {
	mgmt    *stalwarttest.Server
	mgmtURL string
	// resolver returns the arguments of each x:DnsResolver/set the fake received.
	resolver func() []string

	checkErr error
	// fail makes a step fail: "network", "topology", "hostaddrs", "reserve",
	// "mx-relay", "proxy-relay", "stalwart", "stalwart-addr", "restart".
	fail string
	// created makes a failing start return its handle too (created, then failed),
	// as testcontainers does when a container was created but did not become ready.
	created bool
	// removeErr makes the removal of a resource fail.
	removeErr map[string]error

	mu       sync.Mutex
	started  []string
	removed  []string
	restarts int
}

var errInjected = errors.New("injected failure")

func (e *fakeEngine) failing(step string) error {
	if e.fail == step {
		return fmt.Errorf("%s: %w", step, errInjected)
	}
	return nil
}

func (e *fakeEngine) start(name string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.started = append(e.started, name)
}

func (e *fakeEngine) remove(name string) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.removed = append(e.removed, name)
	return e.removeErr[name]
}

func (e *fakeEngine) history() (started, removed []string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Clone(e.started), slices.Clone(e.removed)
}

func (e *fakeEngine) check(context.Context) error { return e.checkErr }

func (e *fakeEngine) hostAddrs() ([]netip.Addr, error) {
	if err := e.failing("hostaddrs"); err != nil {
		return nil, err
	}
	return []netip.Addr{netip.MustParseAddr("127.0.0.1"), gateway}, nil
}

func (e *fakeEngine) reservePorts(ip netip.Addr) (Ports, error) {
	if err := e.failing("reserve"); err != nil {
		return Ports{}, err
	}
	if ip != gateway {
		return Ports{}, fmt.Errorf("reserve on %v; want the gateway", ip)
	}
	return goodPorts, nil
}

func (e *fakeEngine) newNetwork(context.Context) (netHandle, error) {
	if err := e.failing("network"); err != nil {
		if e.created {
			e.start("network")
			return fakeNet{e}, err
		}
		return nil, err
	}
	e.start("network")
	return fakeNet{e}, nil
}

type fakeNet struct{ e *fakeEngine }

func (n fakeNet) Name() string { return "splitcheck-test-net" }
func (n fakeNet) topology(context.Context) (netip.Prefix, netip.Addr, error) {
	if err := n.e.failing("topology"); err != nil {
		return netip.Prefix{}, netip.Addr{}, err
	}
	return subnet, gateway, nil
}
func (n fakeNet) remove(context.Context) error { return n.e.remove("network") }

func (e *fakeEngine) startRelay(_ context.Context, n netHandle, img string, spec relaySpec) (relayHandle, error) {
	if n.Name() != "splitcheck-test-net" || img != DefaultRelayImage {
		return nil, fmt.Errorf("relay on %q from %q", n.Name(), img)
	}
	r := &fakeRelay{e: e, spec: spec}
	if err := e.failing(spec.Role); err != nil {
		if e.created {
			e.start(spec.Role)
			return r, err
		}
		return nil, err
	}
	e.start(spec.Role)
	return r, nil
}

type fakeRelay struct {
	e    *fakeEngine
	spec relaySpec
}

func (r *fakeRelay) addr(context.Context) (netip.Addr, error) {
	if r.spec.Role == "proxy-relay" {
		return proxyIP, nil
	}
	return mxIP, nil
}
func (r *fakeRelay) endpoint(context.Context) (string, error) {
	if r.spec.Publish {
		return "127.0.0.1:12525", nil
	}
	return "", nil
}
func (r *fakeRelay) logTail() string                   { return r.spec.Role + " listening on 0.0.0.0\n" }
func (r *fakeRelay) terminate(_ context.Context) error { return r.e.remove(r.spec.Role) }

func (e *fakeEngine) startStalwart(_ context.Context, n netHandle, img string, opts []testcontainers.ContainerCustomizer) (server, error) {
	// The options must build a valid request (trusted proxy, public URL, ...).
	if _, err := stalwart.Request(img, opts...); err != nil {
		return nil, err
	}
	s := &fakeServer{e: e}
	if err := e.failing("stalwart"); err != nil {
		if e.created {
			e.start("stalwart")
			return s, err
		}
		return nil, err
	}
	e.start("stalwart")
	return s, nil
}

type fakeServer struct{ e *fakeEngine }

func (s *fakeServer) addr(context.Context) (netip.Addr, error) {
	if err := s.e.failing("stalwart-addr"); err != nil {
		return netip.Addr{}, err
	}
	return stalIP, nil
}
func (s *fakeServer) AdminCredentials() (string, string) {
	return s.e.mgmt.AdminUser, s.e.mgmt.AdminPassword
}
func (s *fakeServer) ManagementClient(context.Context) (*stalwart.Client, error) {
	u, p := s.AdminCredentials()
	return &stalwart.Client{URL: s.e.mgmtURL, Credentials: stalwart.BasicAuth(u, p)}, nil
}

// port is the published port: it changes with each restart, as Docker's may.
func (s *fakeServer) port(base int) string {
	s.e.mu.Lock()
	defer s.e.mu.Unlock()
	return fmt.Sprintf("127.0.0.1:%d", base+1000*s.e.restarts)
}
func (s *fakeServer) SMTPEndpoint(context.Context) (string, error)       { return s.port(10025), nil }
func (s *fakeServer) SubmissionEndpoint(context.Context) (string, error) { return s.port(10587), nil }
func (s *fakeServer) IMAPSEndpoint(context.Context) (string, error)      { return s.port(10993), nil }
func (s *fakeServer) Restart(context.Context) error {
	if err := s.e.failing("restart"); err != nil {
		return err
	}
	s.e.mu.Lock()
	defer s.e.mu.Unlock()
	s.e.restarts++
	return nil
}
func (s *fakeServer) LogTail() string                   { return "stalwart: server started\n" }
func (s *fakeServer) terminate(_ context.Context) error { return s.e.remove("stalwart") }

// newFakeEngine starts the management fake with the public URL the run expects.
func newFakeEngine(t *testing.T) *fakeEngine {
	t.Helper()
	srv := stalwarttest.NewUnstartedServer()
	srv.PublicURL = DefaultPlan().PublicURL()
	srv.Start()
	t.Cleanup(srv.Close)
	return &fakeEngine{mgmt: srv, mgmtURL: srv.URL, resolver: resolverCalls(srv)}
}

// resolverCalls lists the arguments of each x:DnsResolver/set the fake received, as sent.
func resolverCalls(srv *stalwarttest.Server) func() []string {
	return func() []string {
		var out []string
		for _, c := range srv.Calls() {
			if c.Name == "x:DnsResolver/set" {
				out = append(out, string(c.Args))
			}
		}
		return out
	}
}

// fakeVerify records the configuration and answers with verdicts, an error, or
// (block) by waiting for the context to end.
type fakeVerify struct {
	mu       sync.Mutex
	cfg      *config.Config
	opts     harness.VerifyOptions
	verdicts []scenarios.Verdict
	err      error
	block    bool
	entered  chan struct{} // closed when Verify is called, if set
}

func (f *fakeVerify) verify(ctx context.Context, cfg *config.Config, opts harness.VerifyOptions) (*harness.Result, error) {
	f.mu.Lock()
	f.cfg, f.opts = cfg, opts
	f.mu.Unlock()
	if f.entered != nil {
		close(f.entered)
	}
	if f.block {
		<-ctx.Done()
		return nil, fmt.Errorf("verify: %w", context.Cause(ctx))
	}
	if f.err != nil {
		return nil, f.err
	}
	return &harness.Result{Verdicts: f.verdicts, RunID: "run-1"}, nil
}

func passing() []scenarios.Verdict {
	return []scenarios.Verdict{{Check: scenarios.Check{Name: "route/local/alice@migrated.test", Kind: scenarios.KindRoute}, Status: scenarios.StatusPass}}
}

func options(e *fakeEngine, v *fakeVerify) Options {
	return Options{engine: e, Verify: v.verify, CleanupTimeout: 30 * time.Second}
}

// wantAllRemoved checks that every started resource was removed once, last first.
func wantAllRemoved(t *testing.T, e *fakeEngine) {
	t.Helper()
	started, removed := e.history()
	want := slices.Clone(started)
	slices.Reverse(want)
	if !slices.Equal(removed, want) {
		t.Errorf("removed %v; want %v (everything started, last first)", removed, want)
	}
}

func TestRunSuccess(t *testing.T) {
	e := newFakeEngine(t)
	v := &fakeVerify{verdicts: passing()}
	res, err := Run(t.Context(), options(e, v))
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if res.Mismatch() != nil {
		t.Errorf("Mismatch = %v; want nil", res.Mismatch())
	}
	started, _ := e.history()
	if want := []string{"network", "mx-relay", "proxy-relay", "stalwart"}; !slices.Equal(started, want) {
		t.Errorf("started %v; want %v", started, want)
	}
	wantAllRemoved(t, e)
	if e.restarts != 1 {
		t.Errorf("restarts = %d; want 1 (listeners and proxy trust need it)", e.restarts)
	}
	if len(res.Removed) != 5 || !strings.HasPrefix(res.Removed[0], "temporary directory ") || res.Removed[4] != "network splitcheck-test-net" {
		t.Errorf("Removed = %q; want the temporary directory first and the network last", res.Removed)
	}
	dir := strings.TrimPrefix(res.Removed[0], "temporary directory ")
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("temporary directory %s still exists (stat: %v)", dir, err)
	}
	if res.StalwartLog == "" || res.RelayLogs["proxy-relay"] == "" || res.RelayLogs["mx-relay"] == "" {
		t.Errorf("log tails not captured before removal: stalwart %q, relays %q", res.StalwartLog, res.RelayLogs)
	}

	// The checks ran against the ports published after the restart.
	cfg := v.cfg
	if cfg != res.Config {
		t.Errorf("Result.Config is not the configuration the checks ran with")
	}
	for _, tt := range []struct{ field, got, want string }{
		{"target.smtp", cfg.Target.SMTP, "127.0.0.1:12525"},
		{"target.plain_smtp", cfg.Target.PlainSMTP, "127.0.0.1:11025"},
		{"target.submission", cfg.Target.Submission, "127.0.0.1:11587"},
		{"mailbox address", cfg.Plan.Local[0].Mailbox.Address, "127.0.0.1:11993"},
		{"mailbox tls", cfg.Plan.Local[0].Mailbox.TLS, "implicit"},
		{"fakes.source", cfg.Fakes.Source, "172.18.0.1:40001"},
		{"fakes.mx", cfg.Fakes.MX, "172.18.0.1:40002"},
		{"fakes.dns", cfg.Fakes.DNS, "172.18.0.1:40003"},
		{"fakes.mx_address", cfg.Fakes.MXAddress, "172.18.0.3"},
		{"proxy.listen", cfg.Proxy.Listen, "127.0.0.1:0"},
		{"proxy.announce", cfg.Proxy.Announce, DefaultAnnounce},
		{"submitter", cfg.Submitter.Username, "alice@migrated.test"},
		{"trusted", fmt.Sprint(cfg.Migration.ProxyTrustedNetworks), "[172.18.0.2/32]"},
		{"public url", cfg.Migration.PublicURL, "https://mail.migrated.test"},
		{"hostname", cfg.Target.Hostname, "mx.migrated.test"},
	} {
		if tt.got != tt.want {
			t.Errorf("%s = %q; want %q", tt.field, tt.got, tt.want)
		}
	}
	if !cfg.Target.InsecureSkipVerify || !cfg.Stalwart.Hermetic {
		t.Errorf("target.insecure_skip_verify = %v, stalwart.hermetic = %v; want both true", cfg.Target.InsecureSkipVerify, cfg.Stalwart.Hermetic)
	}
	if v.opts.Logger == nil {
		t.Errorf("the checks got no logger")
	}

	// The local account exists on the server with the password the checks use.
	pw := cfg.Plan.Local[0].Mailbox.Password.Value()
	if pw == "" || pw != cfg.Submitter.Password.Value() {
		t.Fatalf("mailbox and submitter passwords differ or are empty")
	}
	alice := &stalwart.Client{URL: e.mgmt.URL, Credentials: stalwart.BasicAuth("alice@migrated.test", pw)}
	if _, err := alice.Session(t.Context()); err != nil {
		t.Errorf("alice cannot log in with the configured password: %v", err)
	}
	if strings.Contains(fmt.Sprintf("%v %+v", cfg, cfg), pw) {
		t.Errorf("the configuration prints a secret")
	}

	// The migration was applied: the relay route points at the fake source.
	_, route := e.mgmt.Find("x:MtaRoute", "name", "source")
	if route == nil || route["address"] != "172.18.0.1" || fmt.Sprint(route["port"]) != "40001" {
		t.Errorf("source route = %v; want a relay to the fake source 172.18.0.1:40001", route)
	}
	_, dom := e.mgmt.Find("x:Domain", "name", "migrated.test")
	if dom == nil || dom["allowRelaying"] != true {
		t.Errorf("domain = %v; want allowRelaying", dom)
	}
	if route != nil && route["allowInvalidCerts"] != true {
		t.Errorf("source route allowInvalidCerts = %v; want true", route["allowInvalidCerts"])
	}
	sys, _ := e.mgmt.Singleton("x:SystemSettings")
	if got := fmt.Sprint(sys["proxyTrustedNetworks"]); got != "map[172.18.0.2:true]" {
		t.Errorf("proxyTrustedNetworks = %s; want exactly the proxy relay", got)
	}
	// Stalwart resolves through the fake DNS, on the gateway, at its own port.
	wantDNS := `{"update":{"singleton":{"@type":"Custom","servers":{"0":{"address":"172.18.0.1","port":40003,"protocol":"udp"}}}}}`
	if got := e.resolver(); len(got) != 1 || got[0] != wantDNS {
		t.Errorf("x:DnsResolver/set calls = %q; want %s", got, wantDNS)
	}
	if vs := e.mgmt.Violations(); len(vs) > 0 {
		t.Errorf("requests the real server would refuse: %q", vs)
	}
}

func TestRunCleansUpOnEveryFailure(t *testing.T) {
	for _, tt := range []struct {
		step    string
		created bool
		fault   *stalwarttest.Fault
		want    string
	}{
		{step: "network", want: "network: injected failure"},
		{step: "network", created: true, want: "network: injected failure"},
		{step: "topology", want: "topology: injected failure"},
		{step: "hostaddrs", want: "hostaddrs: injected failure"},
		{step: "reserve", want: "reserve: injected failure"},
		{step: "mx-relay", want: "mx-relay: injected failure"},
		{step: "mx-relay", created: true, want: "mx-relay: injected failure"},
		{step: "proxy-relay", created: true, want: "proxy-relay: injected failure"},
		{step: "stalwart", want: "stalwart: injected failure"},
		{step: "stalwart", created: true, want: "stalwart: injected failure"},
		{step: "stalwart-addr", want: "stalwart-addr: injected failure"},
		{step: "bootstrap", fault: &stalwarttest.Fault{Kind: stalwarttest.FaultHTTP500, Method: "x:Domain/set"}, want: "bootstrap: create domain"},
		{step: "apply", fault: &stalwarttest.Fault{Kind: stalwarttest.FaultSetError, Method: "x:MtaRoute/set"}, want: "x:MtaRoute/set"},
		{step: "restart", want: "restart: injected failure"},
		{step: "verify", want: "verify broke"},
	} {
		name := tt.step
		if tt.created {
			name += " created"
		}
		t.Run(name, func(t *testing.T) {
			e := newFakeEngine(t)
			e.fail, e.created = tt.step, tt.created
			if tt.fault != nil {
				e.mgmt.InjectFault(*tt.fault)
			}
			v := &fakeVerify{verdicts: passing()}
			if tt.step == "verify" {
				v.err = errors.New("verify broke")
			}
			res, err := Run(t.Context(), options(e, v))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Run = %v; want an error containing %q", err, tt.want)
			}
			if res == nil {
				t.Fatal("Run returned no result with its error")
			}
			if started, _ := e.history(); len(started) == 0 && tt.step != "network" {
				t.Fatalf("nothing was started before %s failed", tt.step)
			}
			wantAllRemoved(t, e)
		})
	}
}

func TestRunWithoutDocker(t *testing.T) {
	e := newFakeEngine(t)
	e.checkErr = &DockerError{Tried: []string{"DOCKER_HOST is not set", "no socket at /var/run/docker.sock"}}
	res, err := Run(t.Context(), options(e, &fakeVerify{}))
	if !errors.Is(err, ErrNoDocker) || !strings.Contains(err.Error(), "no socket at /var/run/docker.sock") {
		t.Errorf("Run = %v; want ErrNoDocker naming the missing socket", err)
	}
	if started, _ := e.history(); len(started) > 0 {
		t.Errorf("started %v without a Docker engine", started)
	}
	if res == nil || len(res.Removed) != 0 {
		t.Errorf("Removed = %v; want nothing", res)
	}
}

// TestRunInterrupted cancels the run's context while the checks run, as SIGINT
// does through signal.NotifyContext: everything must still be removed.
func TestRunInterrupted(t *testing.T) {
	e := newFakeEngine(t)
	v := &fakeVerify{block: true, entered: make(chan struct{})}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	go func() {
		<-v.entered
		cancel()
	}()
	_, err := Run(ctx, options(e, v))
	if !errors.Is(err, context.Canceled) {
		t.Errorf("Run = %v; want context.Canceled", err)
	}
	wantAllRemoved(t, e)
	if started, _ := e.history(); len(started) != 4 {
		t.Errorf("started %v; want the network, two relays and Stalwart", started)
	}
}

// TestRunTimeout gives the run a short deadline and checks that wherever it hits,
// the error says so and everything is removed.
func TestRunTimeout(t *testing.T) {
	e := newFakeEngine(t)
	o := options(e, &fakeVerify{block: true})
	o.Timeout = time.Second
	_, err := Run(t.Context(), o)
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "no result within 1s") {
		t.Errorf("Run = %v; want a deadline error saying \"no result within 1s\"", err)
	}
	wantAllRemoved(t, e)
}

func TestRunReportsFailedRemovals(t *testing.T) {
	e := newFakeEngine(t)
	e.removeErr = map[string]error{"proxy-relay": errors.New("device busy")}
	_, err := Run(t.Context(), options(e, &fakeVerify{verdicts: passing()}))
	if err == nil || !strings.Contains(err.Error(), "clean up: remove proxy-relay: device busy") {
		t.Errorf("Run = %v; want the failed removal reported", err)
	}
	wantAllRemoved(t, e) // the others are still removed
}

func TestRunPublicURLMismatch(t *testing.T) {
	e := newFakeEngine(t)
	_, err := Run(t.Context(), Options{engine: e, Verify: (&fakeVerify{}).verify, PublicURL: "https://proxy.migrated.test"})
	if err == nil || !strings.Contains(err.Error(), `not on STALWART_PUBLIC_URL "https://proxy.migrated.test"`) {
		t.Errorf("Run = %v; want the public URL mismatch", err)
	}
	wantAllRemoved(t, e)
}

func TestRunMismatchIsNotAnError(t *testing.T) {
	e := newFakeEngine(t)
	v := &fakeVerify{verdicts: []scenarios.Verdict{{
		Check:  scenarios.Check{Name: "route/unmigrated/bob@migrated.test", Kind: scenarios.KindRoute, Expect: scenarios.RouteSource},
		Status: scenarios.StatusFail, Detail: "want source, got local",
	}}}
	res, err := Run(t.Context(), options(e, v))
	if err != nil {
		t.Fatalf("Run = %v; want no error (a mismatch is a verdict)", err)
	}
	var mm *scenarios.MismatchError
	if !errors.As(res.Mismatch(), &mm) || !strings.Contains(mm.Error(), "want source, got local") {
		t.Errorf("Mismatch = %v; want the failed check", res.Mismatch())
	}
}
