package main

import (
	"bytes"
	"context"
	"encoding/xml"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/cobra"
	tclog "github.com/testcontainers/testcontainers-go/log"

	"github.com/splitcheck/splitcheck/harness"
	"github.com/splitcheck/splitcheck/harness/hermetic"
	"github.com/splitcheck/splitcheck/harness/stalwart"
	"github.com/splitcheck/splitcheck/scenarios"
)

// fakeHermetic answers like hermetic.Run and records the options it got.
type fakeHermetic struct {
	got hermetic.Options
	res *hermetic.Result
	err error
}

func (f *fakeHermetic) run(_ context.Context, o hermetic.Options) (*hermetic.Result, error) {
	f.got = o
	return f.res, f.err
}

func hermeticIO() (*ioStreams, *bytes.Buffer, *bytes.Buffer) {
	var out, errOut bytes.Buffer
	return &ioStreams{Out: &out, ErrOut: &errOut}, &out, &errOut
}

func hermeticVerdict(name string, st scenarios.Status, detail string) scenarios.Verdict {
	return scenarios.Verdict{Check: scenarios.Check{Name: name, Kind: scenarios.KindRoute}, Status: st, Detail: detail}
}

func hermeticResult(vs ...scenarios.Verdict) *hermetic.Result {
	return &hermetic.Result{
		Verify:      &harness.Result{Verdicts: vs, RunID: "run-h"},
		Image:       stalwart.DefaultImage,
		StalwartLog: "INFO stalwart: listening on [::]:25\n",
		RelayLogs:   map[string]string{"proxy-relay": "socat listening on 2525\n"},
	}
}

// readHermeticJUnit parses the JUnit file and returns its test cases' names and statuses.
func readHermeticJUnit(t *testing.T, path string) map[string]string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read junit: %v", err)
	}
	var doc struct {
		Suites []struct {
			Cases []struct {
				Name    string    `xml:"name,attr"`
				Failure *struct{} `xml:"failure"`
				Error   *struct {
					Message string `xml:"message,attr"`
				} `xml:"error"`
				Skipped *struct{} `xml:"skipped"`
			} `xml:"testcase"`
		} `xml:"testsuite"`
	}
	if err := xml.Unmarshal(data, &doc); err != nil {
		t.Fatalf("junit does not parse: %v\n%s", err, data)
	}
	out := map[string]string{}
	for _, s := range doc.Suites {
		for _, c := range s.Cases {
			switch {
			case c.Failure != nil:
				out[c.Name] = "failure"
			case c.Error != nil:
				out[c.Name] = "error: " + c.Error.Message
			case c.Skipped != nil:
				out[c.Name] = "skipped"
			default:
				out[c.Name] = "pass"
			}
		}
	}
	return out
}

func TestRunHermeticExitCodes(t *testing.T) {
	noDocker := &hermetic.DockerError{Tried: []string{"DOCKER_HOST is not set", "no socket at /var/run/docker.sock"}}
	for _, tt := range []struct {
		name      string
		res       *hermetic.Result
		err       error
		code      int
		errText   string
		stdout    []string
		stderr    []string
		notStderr []string
		junit     map[string]string
	}{
		{name: "pass", res: hermeticResult(hermeticVerdict("route/local/alice@migrated.test", scenarios.StatusPass, "")),
			code: exitOK, stdout: []string{"PASS", "route/local/alice@migrated.test"}, notStderr: []string{"Stalwart's output"},
			junit: map[string]string{"route/local/alice@migrated.test": "pass"}},
		{name: "mismatch", res: hermeticResult(hermeticVerdict("route/unmigrated/bob@migrated.test", scenarios.StatusFail, "want source, got local")),
			code: exitMismatch, stdout: []string{"FAIL", "bob@migrated.test"},
			stderr: []string{"last lines of Stalwart's output", "listening on [::]:25", "proxy-relay"},
			junit:  map[string]string{"route/unmigrated/bob@migrated.test": "failure"}},
		// As verify and run: checks that could not be judged, none failed, are the
		// environment; a run whose every check was skipped verified nothing.
		{name: "errors only", res: hermeticResult(hermeticVerdict("route/local/alice@migrated.test", scenarios.StatusError, "imap: login refused")),
			code: exitEnv, stdout: []string{"ERROR", "route/local/alice@migrated.test"},
			junit: map[string]string{"route/local/alice@migrated.test": "error: imap: login refused"}},
		{name: "all skipped", res: hermeticResult(hermeticVerdict("plain", scenarios.StatusSkip, "no plain listener")),
			code: exitUsage, errText: "nothing was verified: all 1 check(s) were skipped", junit: map[string]string{"plain": "skipped"}},
		{name: "no docker", res: &hermetic.Result{}, err: noDocker, code: exitEnv,
			notStderr: []string{"Stalwart's output"},
			junit:     map[string]string{"hermetic": "error: hermetic: no Docker engine reachable (DOCKER_HOST is not set; no socket at /var/run/docker.sock); hermetic mode needs a running Docker engine on this machine: start one, or point DOCKER_HOST at it"}},
		{name: "environment failure", res: &hermetic.Result{StalwartLog: "ERROR stalwart: bind failed\n"},
			err: errors.New("hermetic: restart stalwart: wait until ready: deadline"), code: exitEnv,
			stderr: []string{"bind failed"}, junit: map[string]string{"hermetic": "error: hermetic: restart stalwart: wait until ready: deadline"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ios, out, errOut := hermeticIO()
			junit := filepath.Join(t.TempDir(), "report.xml")
			f := &fakeHermetic{res: tt.res, err: tt.err}
			err := runHermetic(t.Context(), ios, hermeticOptions{image: stalwart.DefaultImage, junit: junit, run: f.run})
			if got := exitCode(err); got != tt.code {
				t.Errorf("exit code = %d (err %v); want %d", got, err, tt.code)
			}
			if tt.err != nil && !errors.Is(err, tt.err) {
				t.Errorf("error = %v; want it to wrap %v", err, tt.err)
			}
			if tt.errText != "" && (err == nil || !strings.Contains(err.Error(), tt.errText)) {
				t.Errorf("error = %v; want it to say %q", err, tt.errText)
			}
			for _, w := range tt.stdout {
				if !strings.Contains(out.String(), w) {
					t.Errorf("stdout %q does not contain %q", out, w)
				}
			}
			for _, w := range tt.stderr {
				if !strings.Contains(errOut.String(), w) {
					t.Errorf("stderr %q does not contain %q", errOut, w)
				}
			}
			for _, w := range tt.notStderr {
				if strings.Contains(errOut.String(), w) {
					t.Errorf("stderr %q contains %q", errOut, w)
				}
			}
			got := readHermeticJUnit(t, junit)
			for name, want := range tt.junit {
				if got[name] != want {
					t.Errorf("junit case %q = %q; want %q", name, got[name], want)
				}
			}
		})
	}
}

// TestRunHermeticMessageWithoutDocker checks the words the root command prints
// (as "splitcheck: <error>") when no Docker engine answers.
func TestRunHermeticMessageWithoutDocker(t *testing.T) {
	f := &fakeHermetic{res: &hermetic.Result{}, err: &hermetic.DockerError{Tried: []string{"DOCKER_HOST is not set"}}}
	ios, _, _ := hermeticIO()
	err := runHermetic(t.Context(), ios, hermeticOptions{image: stalwart.DefaultImage, run: f.run})
	if code := exitCode(err); code != exitEnv {
		t.Errorf("exit code = %d; want %d", code, exitEnv)
	}
	if err == nil || !strings.Contains(err.Error(), "no Docker engine reachable") || !strings.Contains(err.Error(), "DOCKER_HOST is not set") {
		t.Errorf("error %v does not say that no Docker engine is reachable and why", err)
	}
}

// TestRunHermeticRealNoDocker runs the real hermetic.Run on a machine without a
// Docker engine: it must end quickly with exit 3 and say so.
func TestRunHermeticRealNoDocker(t *testing.T) {
	if _, err := os.Stat("/var/run/docker.sock"); err == nil {
		t.Skip("this machine has a Docker socket; the no-Docker path cannot be shown here")
	}
	t.Setenv("DOCKER_HOST", "unix://"+filepath.Join(t.TempDir(), "docker.sock"))
	ios, out, _ := hermeticIO()
	err := runHermetic(t.Context(), ios, hermeticOptions{image: stalwart.DefaultImage})
	if code := exitCode(err); code != exitEnv {
		t.Errorf("exit code = %d (err %v); want %d", code, err, exitEnv)
	}
	if !errors.Is(err, hermetic.ErrNoDocker) || !strings.Contains(err.Error(), "docker.sock") {
		t.Errorf("error = %v; want ErrNoDocker naming the socket", err)
	}
	if out.Len() != 0 {
		t.Errorf("stdout = %q; want nothing (no checks ran)", out)
	}
}

func TestRunHermeticConfig(t *testing.T) {
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "plan.yaml")
	scen := filepath.Join(dir, "extra.yaml")
	writeHermeticFile(t, scen, `probes:
  - name: extra unmigrated
    entry: proxy
    recipients:
      - address: erin@corp.test
        expect: source
`)
	writeHermeticFile(t, cfgPath, `target:
  smtp: 127.0.0.1:25
plan:
  domains: [corp.test]
  unmigrated: [erin@corp.test]
fakes:
  source: 127.0.0.1:2525
proxy:
  version: 1
  announce: 203.0.113.44
timeouts:
  delivery: 40s
scenarios: [extra.yaml]
`)
	f := &fakeHermetic{res: hermeticResult(hermeticVerdict("x", scenarios.StatusPass, ""))}
	ios, _, _ := hermeticIO()
	err := runHermetic(t.Context(), ios, hermeticOptions{image: "stalwartlabs/stalwart:v0.16", relayImage: "alpine/socat:latest",
		configPath: cfgPath, timeout: 7e9, run: f.run})
	if err != nil {
		t.Fatalf("runHermetic: %v", err)
	}
	o := f.got
	if o.Image != "stalwartlabs/stalwart:v0.16" || o.RelayImage != "alpine/socat:latest" || o.Timeout != 7e9 {
		t.Errorf("images/timeout = %q %q %v; want the flags", o.Image, o.RelayImage, o.Timeout)
	}
	if o.Plan.Domains[0] != "corp.test" || o.Plan.Unmigrated[0] != "erin@corp.test" || o.ProxyVersion != 1 || o.Announce != "203.0.113.44" {
		t.Errorf("options = %+v; want the config's plan and proxy", o)
	}
	if o.Timeouts.Delivery.String() != "40s" {
		t.Errorf("delivery timeout = %v; want 40s from the config", o.Timeouts.Delivery)
	}
	if len(o.Extra) != 1 || o.Extra[0].Name != "extra unmigrated" {
		t.Errorf("extra probes = %+v; want the config's scenario file", o.Extra)
	}
}

func TestRunHermeticUsageErrors(t *testing.T) {
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	writeHermeticFile(t, bad, "plan:\n  domainz: [x.test]\n")
	for _, tt := range []struct {
		name string
		opts hermeticOptions
	}{
		{"negative timeout", hermeticOptions{image: "x", timeout: -1}},
		{"empty image", hermeticOptions{}},
		{"bad config", hermeticOptions{image: "x", configPath: bad}},
		{"missing config", hermeticOptions{image: "x", configPath: filepath.Join(t.TempDir(), "none.yaml")}},
		{"replace without scenarios", hermeticOptions{image: "x", replace: true}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			f := &fakeHermetic{}
			tt.opts.run = f.run
			ios, _, _ := hermeticIO()
			err := runHermetic(t.Context(), ios, tt.opts)
			if code := exitCode(err); code != exitUsage {
				t.Errorf("exit code = %d (err %v); want %d", code, err, exitUsage)
			}
			if f.got.Image != "" {
				t.Errorf("the run started despite the usage error")
			}
		})
	}
}

func TestRunHermeticInterrupted(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	f := &fakeHermetic{res: &hermetic.Result{Removed: []string{"stalwart"}}, err: context.Canceled}
	run := func(c context.Context, o hermetic.Options) (*hermetic.Result, error) {
		cancel() // SIGINT arrives during the run
		return f.run(c, o)
	}
	ios, _, _ := hermeticIO()
	err := runHermetic(ctx, ios, hermeticOptions{image: "x", run: run})
	if code := exitCode(err); code != exitEnv || !strings.Contains(err.Error(), "interrupted (everything started was removed)") {
		t.Errorf("runHermetic = %v (exit %d); want exit %d saying it was interrupted", err, code, exitEnv)
	}
}

func TestHermeticFlagsAndRunE(t *testing.T) {
	opts := hermeticOptions{}
	cmd := &cobra.Command{Use: "run", RunE: func(cmd *cobra.Command, _ []string) error { return nil }}
	cmd.Flags().String("log-level", "info", "")
	cmd.Flags().String("log-format", "text", "")
	addHermeticFlags(cmd.Flags(), &opts)
	if err := cmd.Flags().Parse([]string{"--image", "stalwartlabs/stalwart:v0.16.17"}); err != nil {
		t.Fatal(err)
	}
	if opts.image != "stalwartlabs/stalwart:v0.16.17" || opts.relayImage != hermetic.DefaultRelayImage {
		t.Errorf("flags = %q %q; want the --image value and the default relay image", opts.image, opts.relayImage)
	}
	f := &fakeHermetic{res: hermeticResult(hermeticVerdict("x", scenarios.StatusPass, ""))}
	opts.run = f.run
	ios, out, _ := hermeticIO()
	cmd.SetContext(t.Context())
	defer tclog.SetDefault(tclog.Default()) // hermeticRunE reroutes testcontainers' logger
	if err := hermeticRunE(cmd, ios, opts); err != nil {
		t.Fatalf("hermeticRunE: %v", err)
	}
	if f.got.Logger == nil || f.got.Progress == nil {
		t.Errorf("the run got no logger or progress")
	}
	if !strings.Contains(out.String(), "PASS") {
		t.Errorf("stdout %q; want the table", out)
	}
}

func writeHermeticFile(t *testing.T, path, data string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}
