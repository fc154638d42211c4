package hermetic

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/moby/moby/client"
	"github.com/testcontainers/testcontainers-go"
)

// RequireDockerEnv names the environment variable that, set to "1", turns "no
// Docker engine" from a skipped test into a failed one (for CI jobs that must run
// the hermetic suite).
const RequireDockerEnv = "SPLITCHECK_REQUIRE_DOCKER"

// DefaultDockerCheckTimeout bounds CheckDocker when the context has no earlier
// deadline.
const DefaultDockerCheckTimeout = 10 * time.Second

// ErrNoDocker means no Docker engine answered. The *DockerError that wraps it says
// where the engine was looked for and what happened there.
var ErrNoDocker = errors.New("hermetic: no Docker engine reachable")

// DockerError is returned by CheckDocker: every place an engine was looked for, in
// the order testcontainers-go looks, and why it was not usable.
type DockerError struct {
	Tried []string
}

func (e *DockerError) Error() string {
	return fmt.Sprintf("%v (%s); hermetic mode needs a running Docker engine on this machine: start one, or point DOCKER_HOST at it",
		ErrNoDocker, strings.Join(e.Tried, "; "))
}

// Is makes errors.Is(err, ErrNoDocker) true.
func (e *DockerError) Is(target error) bool { return target == ErrNoDocker }

// CheckDocker reports whether a Docker engine answers, within the context's
// deadline or DefaultDockerCheckTimeout, whichever is earlier. It looks where
// testcontainers-go looks (tc.host in ~/.testcontainers.properties, DOCKER_HOST,
// /var/run/docker.sock, docker.host, the rootless sockets) and pings each candidate
// with the deadline applied, so an unreachable DOCKER_HOST cannot hang the caller.
// The error is a *DockerError naming every candidate and what was wrong with it.
func CheckDocker(ctx context.Context) error {
	cfg := testcontainers.ReadConfig().Config
	home, _ := os.UserHomeDir()
	p := dockerProbe{
		lookupEnv: os.LookupEnv,
		home:      home,
		uid:       os.Getuid(),
		tcHost:    cfg.TestcontainersHost,
		propsHost: cfg.Host,
		ping:      pingDocker,
		timeout:   DefaultDockerCheckTimeout,
	}
	return p.check(ctx)
}

// dockerProbe is CheckDocker with its environment injected, for tests.
type dockerProbe struct {
	lookupEnv func(string) (string, bool)
	home      string
	uid       int
	tcHost    string // tc.host from ~/.testcontainers.properties
	propsHost string // docker.host from ~/.testcontainers.properties
	ping      func(ctx context.Context, host string) error
	timeout   time.Duration
}

// candidate is one place an engine may be.
type candidate struct {
	host string // a DOCKER_HOST-style URL; "" when the place is not set
	why  string // what was looked at, for the message when host is ""
}

func (p dockerProbe) candidates() []candidate {
	var cs []candidate
	add := func(host, unset string) {
		cs = append(cs, candidate{host: host, why: unset})
	}
	if p.tcHost != "" {
		add(p.tcHost, "")
	}
	if h, ok := p.lookupEnv("DOCKER_HOST"); ok && h != "" {
		add(h, "")
	} else {
		add("", "DOCKER_HOST is not set")
	}
	add("unix:///var/run/docker.sock", "")
	if p.propsHost != "" {
		add(p.propsHost, "")
	}
	if dir, ok := p.lookupEnv("XDG_RUNTIME_DIR"); ok && dir != "" {
		add("unix://"+filepath.Join(dir, "docker.sock"), "")
	}
	if p.home != "" {
		add("unix://"+filepath.Join(p.home, ".docker", "run", "docker.sock"), "")
		add("unix://"+filepath.Join(p.home, ".docker", "desktop", "docker.sock"), "")
	}
	add(fmt.Sprintf("unix:///run/user/%d/docker.sock", p.uid), "")
	return cs
}

func (p dockerProbe) check(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, p.timeout)
	defer cancel()
	var tried []string
	seen := map[string]bool{}
	for _, c := range p.candidates() {
		if c.host == "" {
			tried = append(tried, c.why)
			continue
		}
		if seen[c.host] {
			continue
		}
		seen[c.host] = true
		if path, ok := unixPath(c.host); ok {
			if _, err := os.Stat(path); err != nil {
				tried = append(tried, "no socket at "+path)
				continue
			}
		}
		if err := ctx.Err(); err != nil {
			tried = append(tried, fmt.Sprintf("%s: not tried, %v", c.host, context.Cause(ctx)))
			continue
		}
		err := p.ping(ctx, c.host)
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			err = fmt.Errorf("no answer within %v", p.timeout)
		}
		tried = append(tried, fmt.Sprintf("%s: %v", c.host, err))
	}
	return &DockerError{Tried: tried}
}

// unixPath returns the socket path of a unix:// host.
func unixPath(host string) (string, bool) {
	u, err := url.Parse(host)
	if err != nil || u.Scheme != "unix" {
		return "", false
	}
	return u.Path, true
}

// pingDocker asks the engine at host for /_ping, honouring ctx for the dial and
// the reply. DOCKER_TLS_VERIFY and DOCKER_CERT_PATH apply as for the docker CLI.
func pingDocker(ctx context.Context, host string) error {
	cli, err := client.New(client.FromEnv, client.WithHost(host))
	if err != nil {
		return err
	}
	defer cli.Close()
	_, err = cli.Ping(ctx, client.PingOptions{})
	return err
}
