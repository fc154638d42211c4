package hermetic

import (
	"context"
	"errors"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// envFrom returns a lookupEnv over m.
func envFrom(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

// noDockerProbe is a probe on a machine with nothing set and no sockets, except
// that /var/run/docker.sock and /run/user/UID are whatever this machine has: the
// test skips when the machine has a Docker socket.
func noDockerProbe(t *testing.T, env map[string]string) dockerProbe {
	t.Helper()
	if _, err := os.Stat("/var/run/docker.sock"); err == nil {
		t.Skip("this machine has /var/run/docker.sock; the no-Docker messages cannot be checked here")
	}
	return dockerProbe{
		lookupEnv: envFrom(env),
		home:      t.TempDir(),
		uid:       4242,
		ping:      pingDocker,
		timeout:   5 * time.Second,
	}
}

func TestCheckDockerSaysWhatIsMissing(t *testing.T) {
	p := noDockerProbe(t, map[string]string{})
	err := p.check(t.Context())
	var de *DockerError
	if !errors.As(err, &de) || !errors.Is(err, ErrNoDocker) {
		t.Fatalf("check = %v; want a *DockerError that is ErrNoDocker", err)
	}
	msg := err.Error()
	for _, want := range []string{
		"no Docker engine reachable",
		"DOCKER_HOST is not set",
		"no socket at /var/run/docker.sock",
		"no socket at " + filepath.Join(p.home, ".docker", "run", "docker.sock"),
		"no socket at /run/user/4242/docker.sock",
		"start one, or point DOCKER_HOST at it",
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("error %q does not say %q", msg, want)
		}
	}
}

func TestCheckDockerMissingSocketInDockerHost(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "docker.sock")
	p := noDockerProbe(t, map[string]string{"DOCKER_HOST": "unix://" + sock})
	err := p.check(t.Context())
	if !errors.Is(err, ErrNoDocker) || !strings.Contains(err.Error(), "no socket at "+sock) {
		t.Errorf("check = %v; want it to name the missing socket %s", err, sock)
	}
	if strings.Contains(err.Error(), "DOCKER_HOST is not set") {
		t.Errorf("check = %v; says DOCKER_HOST is not set although it is", err)
	}
}

// TestCheckDockerSilentEngineIsBounded points DOCKER_HOST at a loopback listener
// that accepts and never answers: the check must give up at its deadline and say so.
func TestCheckDockerSilentEngineIsBounded(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	host := "tcp://" + ln.Addr().String()
	p := noDockerProbe(t, map[string]string{"DOCKER_HOST": host})
	p.timeout = 300 * time.Millisecond

	err = p.check(t.Context())
	if !errors.Is(err, ErrNoDocker) {
		t.Fatalf("check = %v; want ErrNoDocker", err)
	}
	if want := host + ": no answer within 300ms"; !strings.Contains(err.Error(), want) {
		t.Errorf("check = %v; want it to say %q", err, want)
	}
}

func TestCheckDockerHonoursCancel(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	p := noDockerProbe(t, map[string]string{"DOCKER_HOST": "tcp://127.0.0.1:1"})
	p.ping = func(context.Context, string) error {
		t.Error("ping called after the context was cancelled")
		return nil
	}
	err := p.check(ctx)
	if !errors.Is(err, ErrNoDocker) || !strings.Contains(err.Error(), "not tried") {
		t.Errorf("check(cancelled) = %v; want ErrNoDocker saying the host was not tried", err)
	}
}

// TestCheckDockerFindsEngine serves a minimal Docker API (/_ping) on a unix socket
// and checks that the real client finds it through DOCKER_HOST.
func TestCheckDockerFindsEngine(t *testing.T) {
	dir, err := os.MkdirTemp("", "dk") // short: unix socket paths are limited to ~108 bytes
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "docker.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	var pings atomic.Int32
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if !strings.HasSuffix(r.URL.Path, "/_ping") {
				http.NotFound(w, r)
				return
			}
			pings.Add(1)
			w.Header().Set("Api-Version", "1.47")
			w.Header().Set("Ostype", "linux")
			_, _ = w.Write([]byte("OK"))
		}),
		ReadHeaderTimeout: 5 * time.Second,
	}
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(ln) }()
	t.Cleanup(func() { srv.Close(); ln.Close(); <-done }) // ln too: Serve may not have registered it yet

	p := noDockerProbe(t, map[string]string{"DOCKER_HOST": "unix://" + sock})
	if err := p.check(t.Context()); err != nil {
		t.Fatalf("check = %v; want nil (an engine answers on %s)", err, sock)
	}
	if pings.Load() == 0 {
		t.Errorf("the engine was never pinged")
	}
}

func TestCheckDockerTriesTestcontainersPropertiesFirst(t *testing.T) {
	var order []string
	p := dockerProbe{
		lookupEnv: envFrom(map[string]string{"DOCKER_HOST": "tcp://127.0.0.1:2", "XDG_RUNTIME_DIR": "/nonexistent-xdg"}),
		home:      "",
		uid:       7,
		tcHost:    "tcp://127.0.0.1:1",
		propsHost: "tcp://127.0.0.1:3",
		ping: func(_ context.Context, host string) error {
			order = append(order, host)
			return errors.New("refused")
		},
		timeout: time.Second,
	}
	err := p.check(t.Context())
	if !errors.Is(err, ErrNoDocker) {
		t.Fatalf("check = %v; want ErrNoDocker", err)
	}
	want := []string{"tcp://127.0.0.1:1", "tcp://127.0.0.1:2"}
	if _, statErr := os.Stat("/var/run/docker.sock"); statErr == nil {
		want = append(want, "unix:///var/run/docker.sock")
	}
	want = append(want, "tcp://127.0.0.1:3")
	if strings.Join(order, " ") != strings.Join(want, " ") {
		t.Errorf("pinged %v; want %v", order, want)
	}
	if !strings.Contains(err.Error(), "no socket at /nonexistent-xdg/docker.sock") {
		t.Errorf("check = %v; want the XDG_RUNTIME_DIR socket named", err)
	}
}
