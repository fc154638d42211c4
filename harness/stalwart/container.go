package stalwart

// This file is the testcontainers-go module for Stalwart: Run starts a pinned image
// headless (a pre-written config.json and STALWART_RECOVERY_ADMIN, no setup wizard),
// waits for /healthz/ready, and keeps the tail of the container's output for the
// report. The configuration the hermetic mode needs on top (domain, first
// SystemSettings write, submission listener, stdout tracer, DNS resolver, restart)
// is Bootstrap's job.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/network"
	"github.com/testcontainers/testcontainers-go"
	"github.com/testcontainers/testcontainers-go/wait"
)

// Container is a running Stalwart started by Run.
type Container struct {
	testcontainers.Container
	settings options
	logs     *LogTail
}

// Run starts Stalwart from img (normally DefaultImage) and waits until
// /healthz/ready answers 200 on port 8080. The module's defaults come first (the
// headless config.json, the recovery administrator, the exposed ports 25, 587, 993
// and 8080, the readiness wait and the log tail); opts apply after them, so a
// caller's testcontainers options win. Options of this package (WithAdmin,
// WithPublicURL, ...) may be mixed in.
//
// Like the official modules, Run returns the container even when it also returns
// an error, so the caller can terminate it (testcontainers.CleanupContainer in
// tests). Errors are wrapped "run stalwart: ...".
func Run(ctx context.Context, img string, opts ...testcontainers.ContainerCustomizer) (*Container, error) {
	req, settings, logs, err := build(img, opts)
	if err != nil {
		return nil, fmt.Errorf("run stalwart: %w", err)
	}
	ctr, err := testcontainers.GenericContainer(ctx, req)
	var c *Container
	if ctr != nil {
		c = &Container{Container: ctr, settings: settings, logs: logs}
	}
	if err != nil {
		return c, fmt.Errorf("run stalwart: %w", err)
	}
	return c, nil
}

// Request returns the container request Run would send for img and opts, without
// contacting Docker: the image, environment, files, exposed ports, wait strategy
// and log consumers, after every customizer has run. Each call generates a new
// admin password unless WithAdmin is given.
func Request(img string, opts ...testcontainers.ContainerCustomizer) (testcontainers.GenericContainerRequest, error) {
	req, _, _, err := build(img, opts)
	if err != nil {
		return req, fmt.Errorf("stalwart request: %w", err)
	}
	return req, nil
}

// build applies the module defaults, then opts, then finalCustomizer.
func build(img string, opts []testcontainers.ContainerCustomizer) (testcontainers.GenericContainerRequest, options, *LogTail, error) {
	req := testcontainers.GenericContainerRequest{
		ContainerRequest: testcontainers.ContainerRequest{Image: img},
		Started:          true,
	}
	settings := defaultOptions()
	for _, opt := range opts {
		if o, ok := opt.(Option); ok {
			if err := o(&settings); err != nil {
				return req, settings, nil, err
			}
		}
	}
	if settings.adminPassword == "" {
		pw, err := GeneratePassword(32)
		if err != nil {
			return req, settings, nil, err
		}
		settings.adminPassword = pw
	}
	logs := NewLogTail(settings.logTailLines)

	env := map[string]string{envRecoveryAdmin: settings.adminUser + ":" + settings.adminPassword}
	if settings.publicURL != "" {
		env[envPublicURL] = settings.publicURL
	}
	all := []testcontainers.ContainerCustomizer{
		testcontainers.WithExposedPorts(SMTPPort, SubmissionPort, IMAPSPort, HTTPPort),
		testcontainers.WithEnv(env),
		testcontainers.WithFiles(testcontainers.ContainerFile{
			Reader:            strings.NewReader(headlessConfig),
			ContainerFilePath: configPath,
			FileMode:          0o644,
		}),
		testcontainers.WithWaitStrategyAndDeadline(settings.startupTimeout,
			wait.ForHTTP(readyPath).
				WithPort(HTTPPort).
				WithStartupTimeout(settings.startupTimeout).
				WithPollInterval(500*time.Millisecond)),
	}
	all = append(all, opts...)
	// Applied last, so a caller's WithLogConsumers or WithExposedPorts cannot drop
	// the log tail or leave a port published on every interface.
	all = append(all, finalCustomizer(settings, logs))
	for _, opt := range all {
		if err := opt.Customize(&req); err != nil {
			return req, settings, nil, fmt.Errorf("customize: %w", err)
		}
	}
	return req, settings, logs, nil
}

// finalCustomizer adds the log tail to the log consumers and, with WithHostIP, binds
// every exposed port to that host address.
func finalCustomizer(settings options, logs *LogTail) testcontainers.CustomizeRequestOption {
	return func(req *testcontainers.GenericContainerRequest) error {
		if req.LogConsumerCfg == nil {
			req.LogConsumerCfg = &testcontainers.LogConsumerConfig{}
		}
		req.LogConsumerCfg.Consumers = append(req.LogConsumerCfg.Consumers, logs)
		if !settings.hostIP.IsValid() {
			return nil
		}
		ports := make([]network.Port, 0, len(req.ExposedPorts))
		for _, s := range req.ExposedPorts {
			p, err := network.ParsePort(s)
			if err != nil {
				return fmt.Errorf("exposed port %q: %w", s, err)
			}
			ports = append(ports, p)
		}
		hostIP := settings.hostIP
		return testcontainers.WithHostConfigModifier(func(hc *container.HostConfig) {
			if hc.PortBindings == nil {
				hc.PortBindings = network.PortMap{}
			}
			for _, p := range ports {
				hc.PortBindings[p] = []network.PortBinding{{HostIP: hostIP}}
			}
		})(req)
	}
}

// AdminCredentials returns the recovery administrator's name and password, for the
// management API (HTTP Basic).
func (c *Container) AdminCredentials() (user, password string) {
	return c.settings.adminUser, c.settings.adminPassword
}

// PublicURL is the STALWART_PUBLIC_URL the container was started with ("" if none).
func (c *Container) PublicURL() string { return c.settings.publicURL }

// TrustedProxies are the networks given with WithTrustedProxy.
func (c *Container) TrustedProxies() []netip.Prefix {
	return append([]netip.Prefix(nil), c.settings.trustedProxies...)
}

// SMTPEndpoint is "host:port" of port 25 as published on the host.
func (c *Container) SMTPEndpoint(ctx context.Context) (string, error) {
	return c.endpoint(ctx, SMTPPort)
}

// SubmissionEndpoint is "host:port" of port 587 as published on the host. The
// listener exists only after Bootstrap (Stalwart seeds none on 587).
func (c *Container) SubmissionEndpoint(ctx context.Context) (string, error) {
	return c.endpoint(ctx, SubmissionPort)
}

// IMAPSEndpoint is "host:port" of port 993 (implicit TLS, self-signed) as published
// on the host.
func (c *Container) IMAPSEndpoint(ctx context.Context) (string, error) {
	return c.endpoint(ctx, IMAPSPort)
}

// ManagementURL is the base URL of the plain-HTTP listener (8080) as published on
// the host, e.g. "http://127.0.0.1:32771": the JMAP management API and /healthz.
// Published ports may change when the container restarts: ask again afterwards.
func (c *Container) ManagementURL(ctx context.Context) (string, error) {
	ep, err := c.endpoint(ctx, HTTPPort)
	if err != nil {
		return "", err
	}
	return "http://" + ep, nil
}

func (c *Container) endpoint(ctx context.Context, port string) (string, error) {
	if !c.settings.hostIP.IsValid() || c.settings.hostIP.IsUnspecified() {
		ep, err := c.PortEndpoint(ctx, port, "")
		if err != nil {
			return "", fmt.Errorf("stalwart endpoint %s: %w", port, err)
		}
		return ep, nil
	}
	p, err := c.MappedPort(ctx, port)
	if err != nil {
		return "", fmt.Errorf("stalwart endpoint %s: %w", port, err)
	}
	return net.JoinHostPort(c.settings.hostIP.String(), p.Port()), nil
}

// LogTail is the last lines the container wrote to stdout and stderr, for a report
// when something fails. It is empty before the container has produced output.
func (c *Container) LogTail() string { return c.logs.String() }

// Restart stops the container (waiting up to 10 s for a clean shutdown) and starts
// it again, waiting for /healthz/ready as on the first start. Stalwart reads its
// listeners, the proxy-trusted networks and STALWART_PUBLIC_URL only at start.
func (c *Container) Restart(ctx context.Context) error {
	stop := 10 * time.Second
	if err := c.Stop(ctx, &stop); err != nil {
		return fmt.Errorf("restart stalwart: %w", err)
	}
	if err := c.Start(ctx); err != nil {
		return fmt.Errorf("restart stalwart: %w", err)
	}
	return nil
}

// LogTail is a testcontainers.LogConsumer that keeps the last lines of a
// container's output. It is safe for concurrent use.
type LogTail struct {
	mu    sync.Mutex
	max   int
	lines []string // ring buffer, next write at start+len (mod max)
	start int
	part  []byte // an unterminated last line
}

// NewLogTail returns a LogTail keeping at most lines lines (at least 1).
func NewLogTail(lines int) *LogTail {
	return &LogTail{max: max(lines, 1)}
}

// Accept records one chunk of output; it implements testcontainers.LogConsumer.
func (t *LogTail) Accept(l testcontainers.Log) {
	t.mu.Lock()
	defer t.mu.Unlock()
	data := append(t.part, l.Content...)
	for {
		i := bytes.IndexByte(data, '\n')
		if i < 0 {
			break
		}
		t.push(string(bytes.TrimRight(data[:i], "\r")))
		data = data[i+1:]
	}
	t.part = append([]byte(nil), data...)
}

func (t *LogTail) push(line string) {
	if len(t.lines) < t.max {
		t.lines = append(t.lines, line)
		return
	}
	t.lines[t.start] = line
	t.start = (t.start + 1) % t.max
}

// Lines returns the kept lines, oldest first, including an unterminated last line.
func (t *LogTail) Lines() []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]string, 0, len(t.lines)+1)
	out = append(out, t.lines[t.start:]...)
	out = append(out, t.lines[:t.start]...)
	if len(t.part) > 0 {
		out = append(out, string(t.part))
		if len(out) > t.max {
			out = out[1:]
		}
	}
	return out
}

// String is Lines joined with newlines.
func (t *LogTail) String() string {
	lines := t.Lines()
	if len(lines) == 0 {
		return ""
	}
	return strings.Join(lines, "\n") + "\n"
}

// The registry objects Bootstrap writes besides those of apply.
const (
	objNetworkListener = "x:NetworkListener"
	objTracer          = "x:Tracer"
	objDNSResolver     = "x:DnsResolver"
	objInboundThrottle = "x:MtaInboundThrottle"
)

// SubmissionListenerName is the listener Bootstrap creates on port 587.
const SubmissionListenerName = "submission"

// BootstrapConfig is what Bootstrap writes on a fresh headless Stalwart, before
// apply brings it to the migration's configuration.
type BootstrapConfig struct {
	// Domains are created when missing; the first is SystemSettings.defaultDomainId.
	Domains []string
	// Hostname is SystemSettings.defaultHostname (the first SystemSettings write
	// must carry it together with defaultDomainId), e.g. "mx.migrated.test".
	Hostname string
	// TrustedProxies, when not empty, replace SystemSettings.proxyTrustedNetworks.
	TrustedProxies []netip.Prefix
	// DNS, when set, makes the resolver Custom with this one UDP server (any port).
	DNS netip.AddrPort
	// Accounts are User accounts created with these passwords (or given them, when
	// they exist), for local-delivery probes and authenticated submission.
	Accounts []BootstrapAccount
	// DisableInboundThrottles turns off every enabled MtaInboundThrottle. The
	// seeded ones allow 5 connections a second per client address, which a
	// burst of probes announcing one address exceeds; a throwaway server checks
	// routing, not rate limits.
	DisableInboundThrottles bool
}

// BootstrapAccount is one account Bootstrap creates.
type BootstrapAccount struct {
	// Address is name@domain; the domain must be one of BootstrapConfig.Domains.
	Address string
	// Password must be strong (Stalwart refuses weak ones); see GeneratePassword.
	Password string
}

// Bootstrap configures a freshly started Stalwart through the management API, in
// this order: the domains; the first SystemSettings write (defaultHostname,
// defaultDomainId and proxyTrustedNetworks together); a submission listener on
// port 587 when no listener binds it; a Stdout tracer when there is none (so the
// container's output carries the server's log); the Custom DNS resolver; the
// accounts; the inbound throttles when asked; then ReloadSettings and
// InvalidateCaches. Each step reads first and
// writes only what is missing or different, so a second Bootstrap writes nothing
// new.
//
// Listeners and proxy trust take effect only after a restart, which this function
// does not do: (*Container).Bootstrap does.
func Bootstrap(ctx context.Context, cl *Client, cfg BootstrapConfig) error {
	if len(cfg.Domains) == 0 {
		return errors.New("bootstrap: no domains")
	}
	if cfg.Hostname == "" {
		return errors.New("bootstrap: no hostname (SystemSettings.defaultHostname is required)")
	}
	domainIDs := map[string]string{}
	for _, dom := range cfg.Domains {
		dom = strings.ToLower(strings.TrimSuffix(dom, "."))
		id, err := ensureDomain(ctx, cl, dom)
		if err != nil {
			return fmt.Errorf("bootstrap: %w", err)
		}
		domainIDs[dom] = id
	}
	first := domainIDs[strings.ToLower(strings.TrimSuffix(cfg.Domains[0], "."))]
	if err := ensureSystemSettings(ctx, cl, cfg.Hostname, first, cfg.TrustedProxies); err != nil {
		return fmt.Errorf("bootstrap: %w", err)
	}
	if err := ensureSubmissionListener(ctx, cl); err != nil {
		return fmt.Errorf("bootstrap: %w", err)
	}
	if err := ensureStdoutTracer(ctx, cl); err != nil {
		return fmt.Errorf("bootstrap: %w", err)
	}
	if cfg.DNS.IsValid() {
		if err := setResolver(ctx, cl, cfg.DNS); err != nil {
			return fmt.Errorf("bootstrap: %w", err)
		}
	}
	for _, a := range cfg.Accounts {
		if err := ensureAccount(ctx, cl, a, domainIDs); err != nil {
			return fmt.Errorf("bootstrap: %w", err)
		}
	}
	if cfg.DisableInboundThrottles {
		if err := disableInboundThrottles(ctx, cl); err != nil {
			return fmt.Errorf("bootstrap: %w", err)
		}
	}
	for _, action := range []string{ActionReload, ActionInvalidate} {
		if err := runAction(ctx, cl, action); err != nil {
			return fmt.Errorf("bootstrap: %w", err)
		}
	}
	return nil
}

// ManagementClient returns a client for the container's management API, logged in
// as the recovery administrator. Ask for a new one after a restart: the published
// port may have changed.
func (c *Container) ManagementClient(ctx context.Context) (*Client, error) {
	u, err := c.ManagementURL(ctx)
	if err != nil {
		return nil, err
	}
	user, pass := c.AdminCredentials()
	return &Client{URL: u, Credentials: BasicAuth(user, pass)}, nil
}

// Bootstrap runs Bootstrap against the container, adding the networks given with
// WithTrustedProxy to cfg.TrustedProxies, and restarts the container so the
// submission listener and the proxy trust take effect.
func (c *Container) Bootstrap(ctx context.Context, cfg BootstrapConfig) error {
	cl, err := c.ManagementClient(ctx)
	if err != nil {
		return fmt.Errorf("bootstrap: %w", err)
	}
	cfg.TrustedProxies = append(slices.Clone(cfg.TrustedProxies), c.settings.trustedProxies...)
	if err := Bootstrap(ctx, cl, cfg); err != nil {
		return err
	}
	if err := c.Restart(ctx); err != nil {
		return fmt.Errorf("bootstrap: %w", err)
	}
	return nil
}

func ensureDomain(ctx context.Context, cl *Client, name string) (string, error) {
	list, err := cl.QueryGet(ctx, ObjDomain, map[string]any{"name": name}, "id", "name")
	if err != nil {
		return "", fmt.Errorf("find domain %s: %w", name, err)
	}
	for _, raw := range list {
		var d Domain
		if json.Unmarshal(raw, &d) == nil && strings.EqualFold(d.Name, name) && d.ID != "" {
			return d.ID, nil
		}
	}
	req := SetRequest{Create: map[string]any{"d0": map[string]any{"name": name}}}
	resp, err := cl.Set(ctx, ObjDomain, req)
	if err != nil {
		return "", fmt.Errorf("create domain %s: %w", name, err)
	}
	id, _ := resp.CreatedID("d0")
	return id, nil
}

func ensureSystemSettings(ctx context.Context, cl *Client, hostname, domainID string, trusted []netip.Prefix) error {
	g, err := cl.Get(ctx, ObjSystemSettings, []string{SingletonID}, "defaultHostname", "defaultDomainId", "proxyTrustedNetworks")
	if err != nil {
		return fmt.Errorf("read system settings: %w", err)
	}
	var cur SystemSettings
	if len(g.List) == 1 {
		_ = json.Unmarshal(g.List[0], &cur)
	}
	patch := map[string]any{}
	if cur.DefaultHostname == "" || cur.DefaultDomainID == "" {
		// The first write must carry both (api-notes §1.2f).
		patch["defaultHostname"] = hostname
		patch["defaultDomainId"] = domainID
	}
	if len(trusted) > 0 {
		want := make([]string, len(trusted))
		for i, p := range trusted {
			want[i] = p.String()
		}
		if !slices.Equal(NormalizeNetworks(want), NormalizeNetworks(setKeys(cur.ProxyTrustedNetworks))) {
			patch["proxyTrustedNetworks"] = SetOf(want...)
		}
	}
	if len(patch) == 0 {
		return nil
	}
	if _, err := cl.Set(ctx, ObjSystemSettings, SetRequest{Update: map[string]any{SingletonID: patch}}); err != nil {
		return fmt.Errorf("write system settings: %w", err)
	}
	return nil
}

// listener is the part of an x:NetworkListener Bootstrap reads.
type listener struct {
	ID   string          `json:"id"`
	Name string          `json:"name"`
	Bind map[string]bool `json:"bind"`
}

func ensureSubmissionListener(ctx context.Context, cl *Client) error {
	list, err := cl.QueryGet(ctx, objNetworkListener, nil, "id", "name", "bind")
	if err != nil {
		return fmt.Errorf("list listeners: %w", err)
	}
	for _, raw := range list {
		var l listener
		if json.Unmarshal(raw, &l) != nil {
			continue
		}
		if l.Name == SubmissionListenerName {
			return nil
		}
		for addr, on := range l.Bind {
			if ap, err := netip.ParseAddrPort(addr); on && err == nil && ap.Port() == 587 {
				return nil
			}
		}
	}
	req := SetRequest{Create: map[string]any{"l0": map[string]any{
		"name":        SubmissionListenerName,
		"bind":        SetOf("[::]:587"),
		"protocol":    "smtp",
		"tlsImplicit": false,
	}}}
	if _, err := cl.Set(ctx, objNetworkListener, req); err != nil {
		return fmt.Errorf("create submission listener: %w", err)
	}
	return nil
}

func ensureStdoutTracer(ctx context.Context, cl *Client) error {
	list, err := cl.QueryGet(ctx, objTracer, nil, "id", "@type")
	if err != nil {
		return fmt.Errorf("list tracers: %w", err)
	}
	for _, raw := range list {
		var t struct {
			Type string `json:"@type"`
		}
		if json.Unmarshal(raw, &t) == nil && t.Type == "Stdout" {
			return nil
		}
	}
	req := SetRequest{Create: map[string]any{"t0": map[string]any{
		"@type":    "Stdout",
		"enable":   true,
		"level":    "info",
		"ansi":     false,
		"buffered": false,
	}}}
	if _, err := cl.Set(ctx, objTracer, req); err != nil {
		return fmt.Errorf("create stdout tracer: %w", err)
	}
	return nil
}

func setResolver(ctx context.Context, cl *Client, dns netip.AddrPort) error {
	patch := map[string]any{
		"@type": "Custom",
		"servers": ListOf(map[string]any{
			"address":  dns.Addr().String(),
			"port":     int(dns.Port()),
			"protocol": "udp",
		}),
	}
	if _, err := cl.Set(ctx, objDNSResolver, SetRequest{Update: map[string]any{SingletonID: patch}}); err != nil {
		return fmt.Errorf("set dns resolver %s: %w", dns, err)
	}
	return nil
}

func ensureAccount(ctx context.Context, cl *Client, a BootstrapAccount, domainIDs map[string]string) error {
	addr := strings.ToLower(a.Address)
	local, dom, ok := strings.Cut(addr, "@")
	domainID := domainIDs[dom]
	if !ok || local == "" || domainID == "" {
		return fmt.Errorf("account %s: not an address in one of the bootstrap domains", a.Address)
	}
	if a.Password == "" {
		return fmt.Errorf("account %s: no password", a.Address)
	}
	creds := ListOf(map[string]any{"@type": "Password", "secret": a.Password})
	list, err := cl.QueryGet(ctx, ObjAccount, map[string]any{"name": local}, "id", "@type", "name", "domainId", "emailAddress")
	if err != nil {
		return fmt.Errorf("find account %s: %w", a.Address, err)
	}
	for _, raw := range list {
		var acc Account
		if json.Unmarshal(raw, &acc) == nil && strings.EqualFold(acc.EmailAddress, addr) {
			req := SetRequest{Update: map[string]any{acc.ID: map[string]any{"credentials": creds}}}
			if _, err := cl.Set(ctx, ObjAccount, req); err != nil {
				return fmt.Errorf("set password of account %s: %w", a.Address, err)
			}
			return nil
		}
	}
	req := SetRequest{Create: map[string]any{"a0": map[string]any{
		"@type":            accountVariantUser,
		"name":             local,
		"domainId":         domainID,
		"credentials":      creds,
		"roles":            map[string]any{"@type": "User"},
		"permissions":      map[string]any{"@type": "Inherit"},
		"encryptionAtRest": map[string]any{"@type": "Disabled"},
	}}}
	if _, err := cl.Set(ctx, ObjAccount, req); err != nil {
		return fmt.Errorf("create account %s: %w", a.Address, err)
	}
	return nil
}

func disableInboundThrottles(ctx context.Context, cl *Client) error {
	list, err := cl.QueryGet(ctx, objInboundThrottle, nil, "id", "enable")
	if err != nil {
		return fmt.Errorf("list inbound throttles: %w", err)
	}
	update := map[string]any{}
	for _, raw := range list {
		var t struct {
			ID     string `json:"id"`
			Enable *bool  `json:"enable"`
		}
		if json.Unmarshal(raw, &t) == nil && t.ID != "" && (t.Enable == nil || *t.Enable) {
			update[t.ID] = map[string]any{"enable": false}
		}
	}
	if len(update) == 0 {
		return nil
	}
	if _, err := cl.Set(ctx, objInboundThrottle, SetRequest{Update: update}); err != nil {
		return fmt.Errorf("disable inbound throttles: %w", err)
	}
	return nil
}

func runAction(ctx context.Context, cl *Client, action string) error {
	req := SetRequest{Create: map[string]any{"x0": map[string]any{"@type": action}}}
	if _, err := cl.Set(ctx, ObjAction, req); err != nil {
		return fmt.Errorf("%s: %w", action, err)
	}
	return nil
}
