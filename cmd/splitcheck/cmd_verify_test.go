package main

import (
	"bytes"
	"context"
	"encoding/json"
	"encoding/xml"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/splitcheck/splitcheck/harness"
	"github.com/splitcheck/splitcheck/harness/config"
	"github.com/splitcheck/splitcheck/scenarios"
)

// exampleEnv are the variables the examples take their secrets from.
var exampleEnv = map[string]string{
	"REFTARGET_PASSWORD_ALICE": "example-alice-pw",
	"REFTARGET_PASSWORD_DAVE":  "example-dave-pw",
	"ALICE_PASSWORD":           "example-pw-1",
	"SUBMITTER_PASSWORD":       "example-pw-2",
	"STALWART_ADMIN_PASSWORD":  "example-pw-3",
	"SOURCE_RELAY_SECRET":      "example-pw-4",
	"BULK_MASTER_PASSWORD":     "example-pw-5",
	"SOURCE_TEST_PASSWORD":     "example-pw-6",
}

func setExampleEnv(t *testing.T) {
	for k, v := range exampleEnv {
		t.Setenv(k, v)
	}
	for _, k := range []string{config.EnvStalwartURL, config.EnvStalwartUser, config.EnvStalwartPassword, config.EnvStalwartToken} {
		t.Setenv(k, "")
	}
}

// TestExamplesLoad keeps examples/ from rotting: every config loads, every scenario file
// parses, and the config's scenario files resolve against its folder.
func TestExamplesLoad(t *testing.T) {
	setExampleEnv(t)
	for _, tt := range []struct {
		file          string
		wantScenarios int // probes from the config's scenario files
	}{
		{"reftarget.yaml", 0},
		{"verify.yaml", 3},
	} {
		t.Run(tt.file, func(t *testing.T) {
			cfg, err := config.Load(filepath.Join("..", "..", "examples", tt.file))
			if err != nil {
				t.Fatalf("config.Load(examples/%s): %v", tt.file, err)
			}
			probes, err := loadScenarioFiles(cfg, nil)
			if err != nil {
				t.Fatalf("scenario files of examples/%s: %v", tt.file, err)
			}
			if len(probes) != tt.wantScenarios {
				t.Errorf("examples/%s: %d probes from scenario files; want %d", tt.file, len(probes), tt.wantScenarios)
			}
		})
	}
	t.Run("scenarios.yaml", func(t *testing.T) {
		data, err := os.ReadFile(filepath.Join("..", "..", "examples", "scenarios.yaml"))
		if err != nil {
			t.Fatal(err)
		}
		probes, err := scenarios.ParseFile("scenarios.yaml", data)
		if err != nil {
			t.Fatalf("ParseFile(examples/scenarios.yaml): %v", err)
		}
		if err := scenarios.Validate(probes); err != nil {
			t.Errorf("examples/scenarios.yaml: %v", err)
		}
	})
	t.Run("reftarget.yaml matches the reference target", func(t *testing.T) {
		cfg, err := config.Load(filepath.Join("..", "..", "examples", "reftarget.yaml"))
		if err != nil {
			t.Fatal(err)
		}
		var local []string
		for _, a := range cfg.Plan.Local {
			local = append(local, a.Address)
			env := "REFTARGET_PASSWORD_" + strings.ToUpper(strings.Split(a.Address, "@")[0])
			if a.Mailbox.Password.Env != env {
				t.Errorf("%s: password from $%s; want $%s (what reftarget exec exports)", a.Address, a.Mailbox.Password.Env, env)
			}
		}
		if want := []string{"alice@example.org", "dave@example.org"}; !slices.Equal(local, want) {
			t.Errorf("local accounts = %v; want %v (reftarget exec's default accounts)", local, want)
		}
		if cfg.Submitter.Username != "alice@example.org" || cfg.Submitter.Password.Env != "REFTARGET_PASSWORD_ALICE" {
			t.Errorf("submitter = %s from $%s; want alice@example.org from $REFTARGET_PASSWORD_ALICE",
				cfg.Submitter.Username, cfg.Submitter.Password.Env)
		}
	})
}

// TestExampleDocumentsEveryKey fails when a config key is added without being shown in
// examples/verify.yaml.
func TestExampleDocumentsEveryKey(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("..", "..", "examples", "verify.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		t.Fatal(err)
	}
	have := map[string]bool{}
	yamlKeys("", &root, have)
	var want []string
	structKeys("", reflect.TypeFor[config.Config](), &want)
	if len(want) < 40 {
		t.Fatalf("found only %d config keys by reflection; the walk is broken", len(want))
	}
	// Keys that exclude others are shown commented out, as "# key:".
	for k, line := range map[string]string{"stalwart.token": "# token:"} {
		if strings.Contains(string(data), line) {
			have[k] = true
		}
	}
	for _, k := range want {
		if !have[k] {
			t.Errorf("examples/verify.yaml does not show the config key %s: add it with a comment", k)
		}
	}
}

func yamlKeys(path string, n *yaml.Node, out map[string]bool) {
	switch n.Kind {
	case yaml.DocumentNode, yaml.SequenceNode:
		for _, c := range n.Content {
			yamlKeys(path, c, out)
		}
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			p := n.Content[i].Value
			if path != "" {
				p = path + "." + p
			}
			out[p] = true
			yamlKeys(p, n.Content[i+1], out)
		}
	}
}

func structKeys(path string, typ reflect.Type, out *[]string) {
	for typ.Kind() == reflect.Pointer || typ.Kind() == reflect.Slice {
		typ = typ.Elem()
	}
	if typ.Kind() != reflect.Struct || typ == reflect.TypeFor[config.Secret]() {
		return
	}
	for i := range typ.NumField() {
		f := typ.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "" || name == "-" || !f.IsExported() {
			continue
		}
		p := name
		if path != "" {
			p = path + "." + name
		}
		*out = append(*out, p)
		structKeys(p, f.Type, out)
	}
}

// testConfig is a valid config whose addresses are never dialled (verify is faked).
const testConfig = `target:
  smtp: 127.0.0.1:1
plan:
  domains: [example.org]
  unmigrated: [bob@example.org]
fakes:
  source: 127.0.0.1:0
proxy:
  announce: 198.51.100.7
timeouts:
  run: 1m
scenarios: [extra.yaml]
`

const testScenarios = `probes:
  - name: extra
    entry: proxy
    recipients:
      - address: carol@example.org
        expect: source
`

var testVerdicts = []scenarios.Verdict{
	{
		Check:    scenarios.Check{Name: "route/unmigrated/bob@example.org", Kind: scenarios.KindRoute, Recipient: "bob@example.org", Expect: scenarios.RouteSource},
		Status:   scenarios.StatusPass,
		Observed: []scenarios.Observation{{Place: scenarios.RouteSource, Where: "127.0.0.4:2525", Evidence: "RCPT <bob@example.org>", After: 9 * time.Millisecond}},
	},
	{
		Check:  scenarios.Check{Name: "plain", Kind: scenarios.KindPlain},
		Status: scenarios.StatusSkip,
		Detail: "no plain listener configured (target.plain_smtp)",
	},
}

var failVerdict = scenarios.Verdict{
	Check:    scenarios.Check{Name: "route/extra", Kind: scenarios.KindRoute, Recipient: "carol@example.org", Expect: scenarios.RouteSource},
	Status:   scenarios.StatusFail,
	Observed: []scenarios.Observation{{Place: scenarios.RouteReject, Evidence: "RCPT 550 5.1.1 <carol@example.org>: User unknown"}},
	Detail:   "want source, got reject",
}

func result(vs ...scenarios.Verdict) *harness.Result {
	return &harness.Result{Verdicts: vs, Started: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), Elapsed: 1500 * time.Millisecond, RunID: "run-1"}
}

// fakeVerify records what verify was asked and answers with res and err.
type fakeVerify struct {
	res   *harness.Result
	err   error
	block bool // wait for ctx to end, then return its error

	called bool
	opts   harness.VerifyOptions
	cfg    *config.Config
}

func (f *fakeVerify) verify(ctx context.Context, cfg *config.Config, opts harness.VerifyOptions) (*harness.Result, error) {
	f.called, f.cfg, f.opts = true, cfg, opts
	if opts.Progress != nil {
		opts.Progress(harness.ProgressEvent{Check: "route/unmigrated/bob@example.org", Stage: harness.StageWaiting, Total: 2})
		opts.Progress(harness.ProgressEvent{Check: "route/unmigrated/bob@example.org", Stage: harness.StageJudged, Status: scenarios.StatusPass, Done: 1, Total: 2})
	}
	if opts.Logger != nil {
		opts.Logger.Info("fake verify running", "checks", 2)
	}
	if f.block {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	return f.res, f.err
}

type cmdRun struct {
	code           int
	stdout, stderr string
}

// runVerifyCmd runs `splitcheck ARGS` with verify faked, through the real root command
// and exit-code mapping.
func runVerifyCmd(t *testing.T, fake *fakeVerify, args ...string) cmdRun {
	t.Helper()
	return runVerifyCmdTTY(t, false, fake, args...)
}

// runVerifyCmdTTY is runVerifyCmd with stdout and stderr claiming to be terminals.
func runVerifyCmdTTY(t *testing.T, tty bool, fake *fakeVerify, args ...string) cmdRun {
	t.Helper()
	var out, errOut bytes.Buffer
	ios := &ioStreams{In: strings.NewReader(""), Out: &out, ErrOut: &errOut, StdoutTTY: tty, StderrTTY: tty}
	root := newRootCmd(ios)
	for _, c := range root.Commands() {
		if c.Name() == "verify" {
			root.RemoveCommand(c)
		}
	}
	root.AddCommand(newVerifyCmdWith(ios, fake.verify))
	root.SetArgs(args)
	err := root.ExecuteContext(context.Background())
	if err != nil {
		errOut.WriteString("splitcheck: " + err.Error() + "\n")
	}
	return cmdRun{code: exitCode(err), stdout: out.String(), stderr: errOut.String()}
}

// writeConfig writes testConfig (or text) and its scenario file into a fresh folder.
func writeConfig(t *testing.T, text string) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "extra.yaml"), []byte(testScenarios), 0o600); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "run.yaml")
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestVerifyReports(t *testing.T) {
	cfgPath := writeConfig(t, testConfig)
	for _, tt := range []struct {
		name       string
		fake       *fakeVerify
		json       bool
		wantCode   int
		wantStdout *regexp.Regexp
		wantStderr *regexp.Regexp
		junitCases int
		junitFail  int
		junitErr   int
	}{
		{
			name: "pass and skip", fake: &fakeVerify{res: result(testVerdicts...)}, wantCode: 0,
			wantStdout: regexp.MustCompile(`(?s)PASS +route/unmigrated/bob@example\.org.*SKIP +plain.*\n1 passed, 0 failed, 1 skipped, 0 errors\n$`),
			wantStderr: regexp.MustCompile(`^\[1/2\] PASS route/unmigrated/bob@example\.org\n$`),
			junitCases: 2,
		},
		{
			// Every check skipped: exit 0 would claim a pass nothing earned.
			name: "all skipped", fake: &fakeVerify{res: result(testVerdicts[1])}, wantCode: 2,
			wantStdout: regexp.MustCompile(`(?s)SKIP +plain.*\n0 passed, 0 failed, 1 skipped, 0 errors\n$`),
			wantStderr: regexp.MustCompile(`run\.yaml: nothing was verified: all 1 check\(s\) were skipped`),
			junitCases: 1,
		},
		{
			name: "mismatch", fake: &fakeVerify{res: result(append(slices.Clone(testVerdicts), failVerdict)...)}, wantCode: 1,
			wantStdout: regexp.MustCompile(`FAIL +route/extra +carol@example\.org +source +reject .*RCPT 550 5\.1\.1`),
			wantStderr: regexp.MustCompile(`1 check\(s\) failed`),
			junitCases: 3, junitFail: 1,
		},
		{
			name: "json", json: true, fake: &fakeVerify{res: result(append(slices.Clone(testVerdicts), failVerdict)...)}, wantCode: 1,
			wantStdout: regexp.MustCompile(`^(\{"type":"check"[^\n]*\n){3}\{"type":"summary","passed":1,"failed":1,"skipped":1,"errors":0,"total":3,"ok":false,"elapsed_ms":1500,"run_id":"run-1","started":"2026-01-02T03:04:05Z"\}\n$`),
			junitCases: 3, junitFail: 1,
		},
		{
			name: "environment error, no verdicts", fake: &fakeVerify{err: errors.New("dial 127.0.0.1:1: connection refused")}, wantCode: 3,
			wantStdout: regexp.MustCompile(`^$`),
			wantStderr: regexp.MustCompile(`verify: dial 127\.0\.0\.1:1: connection refused`),
			junitCases: 1, junitErr: 1,
		},
		{
			name:       "errored checks without a mismatch",
			fake:       &fakeVerify{res: result(testVerdicts[0], scenarios.Verdict{Check: scenarios.Check{Name: "headerless", Kind: scenarios.KindHeaderless}, Status: scenarios.StatusError, Detail: "dial: refused"})},
			wantCode:   3,
			wantStdout: regexp.MustCompile(`ERROR +headerless`),
			wantStderr: regexp.MustCompile(`1 check\(s\) could not be judged`),
			junitCases: 2, junitErr: 1,
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			junit := filepath.Join(t.TempDir(), "out.xml")
			args := []string{"verify", "--config", cfgPath, "--junit", junit}
			if tt.json {
				args = append(args, "--json")
			}
			r := runVerifyCmd(t, tt.fake, args...)
			if r.code != tt.wantCode {
				t.Errorf("exit code = %d; want %d\nstderr:\n%s", r.code, tt.wantCode, r.stderr)
			}
			if !tt.wantStdout.MatchString(r.stdout) {
				t.Errorf("stdout = %q; want it to match %s", r.stdout, tt.wantStdout)
			}
			if tt.wantStderr != nil && !tt.wantStderr.MatchString(r.stderr) {
				t.Errorf("stderr = %q; want it to match %s", r.stderr, tt.wantStderr)
			}
			if strings.Contains(r.stdout+r.stderr, "\x1b[") {
				t.Errorf("escape sequences written to a non-terminal:\n%q\n%q", r.stdout, r.stderr)
			}
			data, err := os.ReadFile(junit)
			if err != nil {
				t.Fatalf("--junit file: %v", err)
			}
			var doc struct {
				Tests    int `xml:"tests,attr"`
				Failures int `xml:"failures,attr"`
				Errors   int `xml:"errors,attr"`
			}
			if err := xml.Unmarshal(data, &doc); err != nil {
				t.Fatalf("--junit file does not parse: %v", err)
			}
			if got, want := [3]int{doc.Tests, doc.Failures, doc.Errors}, [3]int{tt.junitCases, tt.junitFail, tt.junitErr}; got != want {
				t.Errorf("junit (tests, failures, errors) = %v; want %v", got, want)
			}
			if tt.json {
				for i, line := range strings.Split(strings.TrimSpace(r.stdout), "\n") {
					if !json.Valid([]byte(line)) {
						t.Errorf("--json line %d is not JSON: %s", i+1, line)
					}
				}
			}
		})
	}
}

func TestVerifyPassesOptions(t *testing.T) {
	cfgPath := writeConfig(t, testConfig)
	more := filepath.Join(t.TempDir(), "more.yaml")
	if err := os.WriteFile(more, []byte(strings.ReplaceAll(testScenarios, "name: extra", "name: more")), 0o600); err != nil {
		t.Fatal(err)
	}
	fake := &fakeVerify{res: result(testVerdicts...)}
	r := runVerifyCmd(t, fake, "verify", "--config", cfgPath, "--scenarios", more, "--replace-builtin")
	if r.code != 0 {
		t.Fatalf("exit code = %d; want 0\n%s", r.code, r.stderr)
	}
	var names []string
	for _, p := range fake.opts.Extra {
		names = append(names, p.Name)
	}
	if want := []string{"extra", "more"}; !slices.Equal(names, want) {
		t.Errorf("Extra probes = %v; want %v (config's files first, then --scenarios)", names, want)
	}
	if !fake.opts.Replace || fake.opts.Logger == nil || fake.opts.Progress == nil {
		t.Errorf("options = Replace %v, Logger %v, Progress set %v; want all set", fake.opts.Replace, fake.opts.Logger, fake.opts.Progress != nil)
	}
	if fake.cfg == nil || fake.cfg.File != cfgPath {
		t.Errorf("config passed = %+v; want the one loaded from %s", fake.cfg, cfgPath)
	}
}

func TestVerifyTerminal(t *testing.T) {
	cfgPath := writeConfig(t, testConfig)
	r := runVerifyCmdTTY(t, true, &fakeVerify{res: result(testVerdicts...)}, "verify", "--config", cfgPath)
	if r.code != 0 {
		t.Fatalf("exit code = %d; want 0\n%s", r.code, r.stderr)
	}
	if want := "\x1b[32mPASS\x1b[0m"; !strings.Contains(r.stdout, want) {
		t.Errorf("stdout on a terminal = %q; want the coloured %q", r.stdout, want)
	}
	// The live line is drawn, redrawn, and erased before the report.
	if want := "\r\x1b[K[0/2] waiting: route/unmigrated/bob@example.org\r\x1b[K[1/2] PASS route/unmigrated/bob@example.org\r\x1b[K"; r.stderr != want {
		t.Errorf("stderr on a terminal = %q; want %q", r.stderr, want)
	}
}

func TestVerifyLogLevel(t *testing.T) {
	cfgPath := writeConfig(t, testConfig)
	for _, tt := range []struct {
		name string
		args []string
		want bool // the fake's info record shows
	}{
		{"default is warn", nil, false},
		{"asked for info", []string{"--log-level", "info"}, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			args := append(slices.Clone(tt.args), "verify", "--config", cfgPath)
			r := runVerifyCmd(t, &fakeVerify{res: result(testVerdicts...)}, args...)
			if got := strings.Contains(r.stderr, "fake verify running"); got != tt.want {
				t.Errorf("info record in stderr = %v; want %v\n%s", got, tt.want, r.stderr)
			}
		})
	}
}

func TestVerifyTimeout(t *testing.T) {
	cfgPath := writeConfig(t, testConfig)
	r := runVerifyCmd(t, &fakeVerify{block: true}, "verify", "--config", cfgPath, "--timeout", "50ms")
	if r.code != 3 {
		t.Errorf("exit code = %d; want 3", r.code)
	}
	if want := "no verdict within 50ms"; !strings.Contains(r.stderr, want) {
		t.Errorf("stderr = %q; want %q", r.stderr, want)
	}
}

func TestVerifyUsageAndConfigErrors(t *testing.T) {
	good := writeConfig(t, testConfig)
	badScenario := writeConfig(t, testConfig)
	if err := os.WriteFile(filepath.Join(filepath.Dir(badScenario), "extra.yaml"),
		[]byte("probes:\n  - name: x\n    entry: proxy\n    recipients:\n      - address: carol@example.org\n        expect: elsewhere\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name string
		args []string
		want *regexp.Regexp
	}{
		{"no config", []string{"verify"}, regexp.MustCompile(`--config FILE is required`)},
		{"positional argument", []string{"verify", good}, regexp.MustCompile(`takes no arguments`)},
		{"unknown flag", []string{"verify", "--config", good, "--jsn"}, regexp.MustCompile(`unknown flag: --jsn`)},
		{"negative timeout", []string{"verify", "--config", good, "--timeout", "-1s"}, regexp.MustCompile(`--timeout -1s`)},
		{"missing config file", []string{"verify", "--config", filepath.Join(t.TempDir(), "nope.yaml")}, regexp.MustCompile(`nope\.yaml: .*no such file`)},
		{"bad config", []string{"verify", "--config", writeConfig(t, strings.Replace(testConfig, "127.0.0.1:1", "127.0.0.1", 1))},
			regexp.MustCompile(`run\.yaml:2: field target\.smtp: "127\.0\.0\.1" is not host:port`)},
		{"bad scenario file", []string{"verify", "--config", badScenario},
			regexp.MustCompile(`extra\.yaml:6: field probes\.0\.recipients\.0\.expect: "elsewhere" is not one of`)},
		{"missing scenario file", []string{"verify", "--config", good, "--scenarios", "/nonexistent/s.yaml"},
			regexp.MustCompile(`--scenarios: .*s\.yaml`)},
		{"missing scenario file from the config", []string{"verify", "--config", writeConfig(t, strings.Replace(testConfig, "[extra.yaml]", "[gone.yaml]", 1))},
			regexp.MustCompile(`run\.yaml: field scenarios\.0: read scenario file: .*gone\.yaml`)},
		{"replace without scenario files", []string{"verify", "--config", writeConfig(t, strings.Replace(testConfig, "scenarios: [extra.yaml]\n", "", 1)), "--replace-builtin"},
			regexp.MustCompile(`--replace-builtin needs probes`)},
	} {
		t.Run(tt.name, func(t *testing.T) {
			fake := &fakeVerify{res: result(testVerdicts...)}
			r := runVerifyCmd(t, fake, tt.args...)
			if r.code != 2 {
				t.Errorf("exit code = %d; want 2\nstderr:\n%s", r.code, r.stderr)
			}
			if !tt.want.MatchString(r.stderr) {
				t.Errorf("stderr = %q; want it to match %s", r.stderr, tt.want)
			}
			if fake.called {
				t.Errorf("verify ran despite the error")
			}
		})
	}
}

func TestVerifyHarnessConfigError(t *testing.T) {
	cfgPath := writeConfig(t, testConfig)
	fake := &fakeVerify{err: fmt.Errorf("%w: check \"route/extra\" is produced twice", harness.ErrConfig)}
	r := runVerifyCmd(t, fake, "verify", "--config", cfgPath)
	if r.code != 2 {
		t.Errorf("exit code = %d; want 2", r.code)
	}
	if want := cfgPath + `: check "route/extra" is produced twice`; !strings.Contains(r.stderr, want) {
		t.Errorf("stderr = %q; want %q", r.stderr, want)
	}
}
