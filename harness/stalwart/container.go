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
	"fmt"
	"net"
	"net/netip"
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
		settings.adminPassword = RandomPassword(32)
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
