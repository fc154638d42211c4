package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	tclog "github.com/testcontainers/testcontainers-go/log"

	"github.com/splitcheck/splitcheck/harness"
	"github.com/splitcheck/splitcheck/harness/config"
	"github.com/splitcheck/splitcheck/harness/hermetic"
	"github.com/splitcheck/splitcheck/harness/stalwart"
	"github.com/splitcheck/splitcheck/harness/stalwart/stalwarttest"
	"github.com/splitcheck/splitcheck/harness/stalwartobs"
	"github.com/splitcheck/splitcheck/scenarios"
)

// The addresses in swConfigTemplate: the real source and the fake one.
const (
	runRealSource = "source.internal.example.org"
	runFakeSource = "127.0.0.4"
)

// runStub stands in for harness.Verify: it records the server's state when the
// checks would run, and answers with res and err, or ends the run first.
type runStub struct {
	srv      *stalwarttest.Server
	snapPath string
	res      *harness.Result
	err      error
	// cancel, when set, interrupts the run (as SIGINT does) and waits for the end.
	cancel context.CancelFunc
	// block waits for the verify context to end (a timeout).
	block bool
	// during runs inside verify, for checks that need the live options.
	during func(ctx context.Context, opts harness.VerifyOptions)
	// judge, when set, makes the result instead of res (from the config and
	// options verify was given).
	judge func(ctx context.Context, cfg *config.Config, opts harness.VerifyOptions) *harness.Result

	called      int
	relay       map[string]any
	cfg         *config.Config
	opts        harness.VerifyOptions
	snapExisted bool
	callsBefore int
}

func (s *runStub) verify(ctx context.Context, cfg *config.Config, opts harness.VerifyOptions) (*harness.Result, error) {
	s.called++
	s.cfg, s.opts = cfg, opts
	_, s.relay = s.srv.Find("x:MtaRoute", "name", "source")
	s.callsBefore = len(s.srv.Calls())
	if s.snapPath != "" {
		_, err := os.Stat(s.snapPath)
		s.snapExisted = err == nil
	}
	if s.during != nil {
		s.during(ctx, opts)
	}
	switch {
	case s.judge != nil:
		return s.judge(ctx, cfg, opts), s.err
	case s.cancel != nil:
		s.cancel()
		<-ctx.Done()
		return s.res, fmt.Errorf("verify: no verdict before the run ended: %w", context.Cause(ctx))
	case s.block:
		<-ctx.Done()
		return nil, fmt.Errorf("verify: no verdict before the run ended: %w", context.Cause(ctx))
	}
	return s.res, s.err
}

// runRunCmd runs `splitcheck run ARGS` with verify (and hermetic runs) faked,
// through the real root command and exit-code mapping.
func runRunCmd(t *testing.T, ctx context.Context, stub *runStub, herm *fakeHermetic, args ...string) cmdRun {
	t.Helper()
	var out, errOut bytes.Buffer
	ios := &ioStreams{In: strings.NewReader(""), Out: &out, ErrOut: &errOut}
	root := newRootCmd(ios)
	for _, c := range root.Commands() {
		if c.Name() == "run" {
			root.RemoveCommand(c)
		}
	}
	var hr hermeticRunFunc
	if herm != nil {
		hr = herm.run
	}
	verify := harness.Verify
	if stub != nil {
		verify = stub.verify
	}
	root.AddCommand(newRunCmdWith(ios, verify, hr))
	root.SetArgs(append([]string{"run"}, args...))
	err := root.ExecuteContext(ctx)
	if err != nil {
		errOut.WriteString("splitcheck: " + err.Error() + "\n")
	}
	return cmdRun{code: exitCode(err), stdout: out.String(), stderr: errOut.String()}
}

// editConfig rewrites the env's config with each old -> new replacement.
func editConfig(t *testing.T, e *swEnv, pairs ...string) {
	t.Helper()
	data, err := os.ReadFile(e.config)
	if err != nil {
		t.Fatal(err)
	}
	text := string(data)
	for i := 0; i < len(pairs); i += 2 {
		if !strings.Contains(text, pairs[i]) {
			t.Fatalf("config has no %q", pairs[i])
		}
		text = strings.Replace(text, pairs[i], pairs[i+1], 1)
	}
	if err := os.WriteFile(e.config, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
}

// realConfigPlan is what plan says against the server: 0 once the migration's
// real configuration (the real source) is in place.
func realConfigPlan(t *testing.T, e *swEnv) *stalwart.Plan {
	t.Helper()
	cfg, err := config.Load(e.config)
	if err != nil {
		t.Fatal(err)
	}
	d, err := stalwart.DesiredFromConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	c := &stalwart.Client{URL: e.srv.URL, Credentials: stalwart.BasicAuth("admin", swAdminPassword)}
	p, err := c.Plan(context.Background(), d)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

var (
	bobSource = scenarios.Check{Name: "route/unmigrated/bob@example.org", Kind: scenarios.KindRoute,
		Recipient: "bob@example.org", Expect: scenarios.RouteSource, Deadline: 30 * time.Second}
	passBob = scenarios.Verdict{Check: bobSource, Status: scenarios.StatusPass,
		Observed: []scenarios.Observation{{Place: scenarios.RouteSource, Where: "fake source", Evidence: "fake source: RCPT <bob@example.org>"}}}
	failBob = scenarios.Verdict{Check: bobSource, Status: scenarios.StatusFail,
		Detail: "want source, got none: not seen anywhere within 30s"}
)

// TestRunRehearsal: plan, apply (snapshot first), the source route pointed at
// the fake source while verify runs, and the real source restored afterwards on
// success, on failed checks, on a verify error, on a timeout and on an interrupt;
// --rollback-after leaves the server as it was.
func TestRunRehearsal(t *testing.T) {
	for _, tt := range []struct {
		name          string
		rollbackAfter bool
		res           *harness.Result
		err           error
		cancel        bool
		block         bool
		wantCode      int
		wantOut       []string
		wantErr       string
		junit         map[string]string
	}{
		{name: "checks pass", res: result(passBob), wantCode: 0,
			wantOut: []string{"Verdicts (mode rehearsal):", "PASS    route/unmigrated/bob@example.org",
				"Rollback: not requested; to undo the apply: splitcheck rollback --config "},
			junit: map[string]string{bobSource.Name: "pass"}},
		{name: "checks fail, rollback after", rollbackAfter: true, res: result(failBob), wantCode: 1,
			wantOut: []string{"FAIL    route/unmigrated/bob@example.org", "Stalwart queue (missing): nothing for bob@example.org",
				"Rollback: restored 8 change(s) from "},
			wantErr: "1 check(s) failed", junit: map[string]string{bobSource.Name: "failure"}},
		{name: "verify error", err: errors.New("target port 25 (target.smtp) 127.0.0.1:25 unreachable"), wantCode: 3,
			wantErr: "run: verify: target port 25", junit: map[string]string{"run": "error: run: verify: target port 25 (target.smtp) 127.0.0.1:25 unreachable"}},
		{name: "interrupted, rollback after", rollbackAfter: true, cancel: true, wantCode: 3,
			wantOut: []string{"Rollback: restored 8 change(s)"}, wantErr: "run: verify interrupted"},
		{name: "timeout", block: true, wantCode: 3, wantErr: "no verdict within 200ms"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e := newSwEnv(t, true, false)
			before := e.srv.Dump()
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			snap := e.path("snap.json")
			stub := &runStub{srv: e.srv, snapPath: snap, res: tt.res, err: tt.err, block: tt.block}
			if tt.cancel {
				stub.cancel = cancel
			}
			args := []string{"--config", e.config, "--snapshot", snap, "--junit", e.path("junit.xml"), "--timeout", "200ms"}
			if tt.rollbackAfter {
				args = append(args, "--rollback-after")
			}
			got := runRunCmd(t, ctx, stub, nil, args...)
			if got.code != tt.wantCode {
				t.Errorf("exit %d; want %d\nstdout:\n%s\nstderr:\n%s", got.code, tt.wantCode, got.stdout, got.stderr)
			}
			// The order: plan (reads), apply (snapshot first), swap, verify.
			if stub.called != 1 || !stub.snapExisted {
				t.Fatalf("verify called %d times, snapshot written before it: %v; want once, after the snapshot", stub.called, stub.snapExisted)
			}
			if stub.relay["address"] != runFakeSource || fmt.Sprint(stub.relay["port"]) != "2525" || stub.relay["authUsername"] != nil {
				t.Errorf("source route during verify = %v; want the fake source 127.0.0.4:2525 without auth", stub.relay)
			}
			calls := e.srv.Calls()
			if len(calls) == 0 || strings.HasSuffix(calls[0].Name, "/set") {
				t.Errorf("first call %v; want the plan's reads before any write", calls)
			}
			var setsAfter int
			for _, c := range calls[stub.callsBefore:] {
				if strings.HasSuffix(c.Name, "/set") {
					setsAfter++
				}
			}
			if setsAfter == 0 {
				t.Error("no write after verify; want the real source restored")
			}
			// After: the real source is back (a fresh plan of the real
			// configuration is empty), or everything with --rollback-after.
			if tt.rollbackAfter {
				if after := e.srv.Dump(); after != before {
					t.Errorf("after run --rollback-after the server differs from before:\nbefore %s\nafter  %s", before, after)
				}
			} else {
				checkRealSource(t, e, "after run")
			}
			if _, err := os.Stat(e.path("snap.rehearsal.json")); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("the rehearsal snapshot was left behind after a successful restore: %v", err)
			}
			for _, want := range append([]string{
				"splitcheck run against Stalwart at " + e.srv.URL + ", mode rehearsal",
				"Plan: 9 change(s)", "Apply: applied 9 change(s); snapshot " + snap,
				"Rehearsal: the source route pointed at the fake source 127.0.0.4:2525 while verifying (the real source is source.internal.example.org:25)",
				"Rehearsal: the source route was restored to the real source source.internal.example.org:25",
			}, tt.wantOut...) {
				if !strings.Contains(got.stdout, want) {
					t.Errorf("stdout lacks %q:\n%s", want, got.stdout)
				}
			}
			if !strings.Contains(got.stderr, tt.wantErr) {
				t.Errorf("stderr lacks %q:\n%s", tt.wantErr, got.stderr)
			}
			if tt.junit != nil {
				if j := readHermeticJUnit(t, e.path("junit.xml")); fmt.Sprint(j) != fmt.Sprint(tt.junit) {
					t.Errorf("junit = %v; want %v", j, tt.junit)
				}
			}
			s, err := stalwart.ReadSnapshotFile(snap)
			if err != nil {
				t.Fatal(err)
			}
			noSecrets(t, []string{got.stdout, got.stderr}, s.Accounts[0].Password)
			if v := e.srv.Violations(); len(v) > 0 {
				t.Errorf("requests the real server would refuse: %q", v)
			}
		})
	}
}

// TestRunLive: in live mode the route stays on the real source, the source
// route is observed in the queue, JMAP mailboxes are read with the snapshot's
// password, the public URL is a check, and every verdict says live.
func TestRunLive(t *testing.T) {
	e := newSwEnv(t, true, false)
	editConfig(t, e,
		"migration:\n", "migration:\n  mode: live\n  public_url: "+e.srv.URL+"\n",
		"plan:\n  domains: [example.org]\n", fmt.Sprintf(`plan:
  domains: [example.org, migrated.test]
  local:
    - address: probe@migrated.test
      mailbox: {protocol: jmap, address: %q, password: Placeholder-Not-Used-1}
`, e.srv.URL))
	if _, err := e.srv.Seed("x:QueuedMessage", map[string]any{"returnPath": "probe@splitcheck.test",
		"recipients": map[string]any{"bob@example.org": map[string]any{"retryDue": "2026-08-21T10:00:00Z", "notifyDue": "2026-08-21T10:00:00Z",
			"status": map[string]any{"@type": "TemporaryFailure", "errorType": "connectionError", "errorMessage": "connection refused",
				"responseHostname": runRealSource}}}}); err != nil {
		t.Fatal(err)
	}
	var localSeen []scenarios.Observation
	var localErr error
	stub := &runStub{srv: e.srv, res: result(failBob), during: func(ctx context.Context, opts harness.VerifyOptions) {
		if _, err := e.srv.Deliver("probe@migrated.test", "junk",
			[]byte("Message-ID: <run-01@splitcheck.test>\r\nX-Splitcheck-Probe: run-01\r\n\r\nbody\r\n")); err != nil {
			t.Error(err)
		}
		if opts.LocalObserver != nil {
			localSeen, localErr = opts.LocalObserver.Observe(ctx, "run-01", "probe@migrated.test")
		}
	}}
	for _, asJSON := range []bool{false, true} {
		t.Run(fmt.Sprintf("json=%v", asJSON), func(t *testing.T) {
			localSeen, localErr = nil, nil
			args := []string{"--config", e.config, "--snapshot", e.path(fmt.Sprintf("snap-%v.json", asJSON))}
			if asJSON {
				// The second run changes nothing: the test account's password
				// is in the first run's snapshot.
				args = append(args, "--json", "--accounts-from", e.path("snap-false.json"))
			}
			got := runRunCmd(t, context.Background(), stub, nil, args...)
			if got.code != 1 {
				t.Errorf("exit %d; want 1 (bob failed)\nstdout:\n%s\nstderr:\n%s", got.code, got.stdout, got.stderr)
			}
			if stub.relay["address"] != runRealSource {
				t.Errorf("source route during verify = %v; want the real source", stub.relay)
			}
			q, ok := stub.opts.Observers[scenarios.RouteSource].(*stalwartobs.Queue)
			if !ok || q.Host != runRealSource || q.Sender != "probe@splitcheck.test" || q.Since.IsZero() {
				t.Errorf("source observer = %#v; want the queue observer for the real source", stub.opts.Observers[scenarios.RouteSource])
			}
			if _, ok := stub.opts.LocalObserver.(*stalwartobs.Local); !ok || localErr != nil || len(localSeen) == 0 ||
				!strings.Contains(localSeen[0].Evidence, "(role junk)") {
				t.Errorf("local observer %T saw %+v, %v; want the JMAP observer to find the probe in Junk", stub.opts.LocalObserver, localSeen, localErr)
			}
			if !asJSON {
				for _, want := range []string{
					"mode live",
					"Live: the source route stays on the real source source.internal.example.org:25; source verdicts come from Stalwart's queue",
					"Verdicts (mode live):",
					"Stalwart queue (missing): queue ", "bob@example.org TemporaryFailure at source.internal.example.org (connectionError: connection refused)",
					"PASS    public-url", "JMAP autodiscovery advertises apiUrl " + e.srv.URL + "/jmap/",
				} {
					if !strings.Contains(got.stdout, want) {
						t.Errorf("stdout lacks %q:\n%s", want, got.stdout)
					}
				}
				if strings.Contains(got.stdout, "Rehearsal") {
					t.Errorf("a live run mentions a rehearsal:\n%s", got.stdout)
				}
			} else {
				checkRunJSON(t, got.stdout, "live", map[string]scenarios.Status{bobSource.Name: scenarios.StatusFail, publicURLCheck: scenarios.StatusPass})
			}
			noSecrets(t, []string{got.stdout, got.stderr}, "Placeholder-Not-Used-1")
		})
	}
	if v := e.srv.Violations(); len(v) > 0 {
		t.Errorf("requests the real server would refuse: %q", v)
	}
}

// checkRunJSON checks run --json: a run object, one object per check (with the
// mode), a summary last.
func checkRunJSON(t *testing.T, out, mode string, want map[string]scenarios.Status) {
	t.Helper()
	sc := bufio.NewScanner(strings.NewReader(out))
	var types []string
	got := map[string]scenarios.Status{}
	for sc.Scan() {
		var obj map[string]any
		if err := json.Unmarshal(sc.Bytes(), &obj); err != nil {
			t.Fatalf("line %q is not JSON: %v", sc.Text(), err)
		}
		types = append(types, fmt.Sprint(obj["type"]))
		switch obj["type"] {
		case "run":
			if obj["mode"] != mode || obj["plan_changes"] == nil || obj["server"] == "" {
				t.Errorf("run object = %v; want mode %s, plan_changes and the server", obj, mode)
			}
		case "check":
			if obj["mode"] != mode {
				t.Errorf("check %v has mode %v; want %s", obj["name"], obj["mode"], mode)
			}
			got[fmt.Sprint(obj["name"])] = scenarios.Status(fmt.Sprint(obj["status"]))
		}
	}
	if len(types) < 2 || types[0] != "run" || types[len(types)-1] != "summary" {
		t.Errorf("object types %v; want run first and summary last", types)
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("checks %v; want %v", got, want)
	}
}

// TestRunPublicURLMismatch: a public URL that autodiscovery does not advertise
// fails the run (exit 1) although every routing check passed.
func TestRunPublicURLMismatch(t *testing.T) {
	e := newSwEnv(t, true, false)
	editConfig(t, e, "migration:\n", "migration:\n  public_url: https://mail.example.org\n")
	got := runRunCmd(t, context.Background(), &runStub{srv: e.srv, res: result(passBob)}, nil,
		"--config", e.config, "--snapshot", e.path("s.json"), "--rollback-after")
	if got.code != 1 || !strings.Contains(got.stdout, "FAIL    public-url") ||
		!strings.Contains(got.stdout, "set STALWART_PUBLIC_URL=https://mail.example.org and restart Stalwart") {
		t.Errorf("exit %d; want 1 and a failed public-url check:\n%s%s", got.code, got.stdout, got.stderr)
	}
}

// TestRunApplyFailure: a failing apply is restored by apply, verify never runs,
// nothing is left changed, and the exit code is 3.
func TestRunApplyFailure(t *testing.T) {
	e := newSwEnv(t, true, false)
	before := e.srv.Dump()
	e.srv.InjectFault(stalwarttest.Fault{Kind: stalwarttest.FaultHTTP500, Method: "x:SystemSettings/set", Commit: true})
	stub := &runStub{srv: e.srv, res: result(passBob)}
	got := runRunCmd(t, context.Background(), stub, nil, "--config", e.config, "--snapshot", e.path("s.json"), "--junit", e.path("j.xml"))
	if got.code != 3 || stub.called != 0 {
		t.Errorf("exit %d, verify called %d times; want 3 and never", got.code, stub.called)
	}
	for _, want := range []string{"Plan: 9 change(s)", "Apply failed after", "Restored from the snapshot"} {
		if !strings.Contains(got.stdout, want) {
			t.Errorf("stdout lacks %q:\n%s", want, got.stdout)
		}
	}
	if !strings.Contains(got.stderr, "apply failed at step systemSettings") {
		t.Errorf("stderr %q; want the failed step", got.stderr)
	}
	if e.srv.Dump() != before {
		t.Error("the server was left changed")
	}
	if j := readHermeticJUnit(t, e.path("j.xml")); !strings.HasPrefix(j["run"], "error: ") {
		t.Errorf("junit = %v; want one error case saying why", j)
	}
	noSecrets(t, []string{got.stdout, got.stderr})
}

// TestRunRestoreFailure: when the real source cannot be restored the run exits
// 3, keeps the rehearsal snapshot and says how to restore it by hand; that
// command works.
func TestRunRestoreFailure(t *testing.T) {
	e := newSwEnv(t, true, false)
	stub := &runStub{srv: e.srv, res: result(passBob), during: func(context.Context, harness.VerifyOptions) {
		e.srv.InjectFault(stalwarttest.Fault{Kind: stalwarttest.FaultSetError, Method: "x:MtaRoute/set"})
	}}
	snap := e.path("s.json")
	got := runRunCmd(t, context.Background(), stub, nil, "--config", e.config, "--snapshot", snap)
	rehearsalSnap := e.path("s.rehearsal.json")
	if got.code != 3 || !strings.Contains(got.stderr, "splitcheck rollback --config "+e.config+" --snapshot "+rehearsalSnap+" --yes") {
		t.Errorf("exit %d; want 3 and how to restore by hand:\n%s%s", got.code, got.stdout, got.stderr)
	}
	if !strings.Contains(got.stdout, "Rehearsal: FAILED to restore the real source source.internal.example.org:25") {
		t.Errorf("stdout lacks the failed restore:\n%s", got.stdout)
	}
	if _, err := os.Stat(rehearsalSnap); err != nil {
		t.Fatalf("rehearsal snapshot: %v; want it kept", err)
	}
	if code, _, errOut := runSw(t, "rollback", "--config", e.config, "--snapshot", rehearsalSnap, "--yes"); code != 0 {
		t.Fatalf("rollback of the rehearsal snapshot exit %d: %s", code, errOut)
	}
	checkRealSource(t, e, "after the manual rollback")
}

// checkRealSource fails unless the server holds the real configuration: a fresh
// plan has nothing to change but the relay's secret, which the server masks, so
// the fake's store is read for that.
func checkRealSource(t *testing.T, e *swEnv, when string) {
	t.Helper()
	if p := realConfigPlan(t, e); p.Verifiable() != 0 {
		t.Errorf("%s, plan of the real configuration has %d change(s): %+v; want the real source restored", when, p.Verifiable(), p.Changes)
	}
	if _, r := e.srv.Find("x:MtaRoute", "name", "source"); !hasSecret(r, swRelaySecret) {
		t.Errorf("%s, the source route's authSecret = %v; want the configured secret", when, r["authSecret"])
	}
}

func TestRunUsageErrors(t *testing.T) {
	e := newSwEnv(t, false, false)
	for _, tt := range []struct {
		name    string
		args    []string
		wantErr string
	}{
		{"no config", nil, "--config FILE is required"},
		{"argument", []string{e.config}, "takes no arguments"},
		{"negative timeout", []string{"--config", e.config, "--timeout", "-1s"}, "must not be negative"},
		{"image without hermetic", []string{"--config", e.config, "--image", "x"}, "--image needs --hermetic"},
		{"hermetic with snapshot", []string{"--hermetic", "--snapshot", "s.json"}, "--snapshot has no meaning with --hermetic"},
		{"hermetic with rollback", []string{"--hermetic", "--rollback-after"}, "--rollback-after has no meaning"},
		{"rollback after without yes", []string{"--config", e.config, "--rollback-after"}, "pass --yes"},
		{"replace without scenarios", []string{"--config", e.config, "--replace-builtin", "--yes"}, "--replace-builtin needs probes"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			stub := &runStub{srv: e.srv, res: result(passBob)}
			got := runRunCmd(t, context.Background(), stub, nil, tt.args...)
			if got.code != 2 || !strings.Contains(got.stderr, tt.wantErr) {
				t.Errorf("exit %d, stderr %q; want 2 and %q", got.code, got.stderr, tt.wantErr)
			}
			if stub.called != 0 || len(e.srv.Calls()) != 0 {
				t.Errorf("verify called %d times, %d server calls; want none", stub.called, len(e.srv.Calls()))
			}
		})
	}
	// A destructive apply on a server not marked hermetic needs --yes.
	if _, err := e.srv.Seed("x:MtaRoute", map[string]any{"@type": "Relay", "name": "source", "address": "old.example.org"}); err != nil {
		t.Fatal(err)
	}
	before := e.srv.Dump()
	stub := &runStub{srv: e.srv, res: result(passBob)}
	got := runRunCmd(t, context.Background(), stub, nil, "--config", e.config, "--snapshot", e.path("s.json"))
	if got.code != 2 || !strings.Contains(got.stderr, "pass --yes") || stub.called != 0 || e.srv.Dump() != before {
		t.Errorf("destructive run without --yes: exit %d, verify called %d: %s; want 2, nothing changed", got.code, stub.called, got.stderr)
	}
}

// TestRunHermeticDelegates: run --hermetic hands the shared flags to the
// hermetic runner.
func TestRunHermeticDelegates(t *testing.T) {
	defer tclog.SetDefault(tclog.Default()) // hermeticRunE reroutes testcontainers' logger
	dir := t.TempDir()
	f := &fakeHermetic{res: hermeticResult(hermeticVerdict("route/x", scenarios.StatusFail, "want source, got none"))}
	got := runRunCmd(t, context.Background(), nil, f, "--hermetic", "--image", "stalwartlabs/stalwart:v0.16.99",
		"--junit", dir+"/j.xml", "--timeout", "3m")
	if got.code != 1 || f.got.Image != "stalwartlabs/stalwart:v0.16.99" || f.got.Timeout != 3*time.Minute {
		t.Errorf("exit %d, options %+v; want 1 with the image and timeout passed on:\n%s%s", got.code, f.got, got.stdout, got.stderr)
	}
	if j := readHermeticJUnit(t, dir+"/j.xml"); j["route/x"] != "failure" {
		t.Errorf("junit = %v; want the failed check", j)
	}
	f = &fakeHermetic{err: &hermetic.DockerError{Tried: []string{"DOCKER_HOST is not set"}}}
	if got := runRunCmd(t, context.Background(), nil, f, "--hermetic"); got.code != 3 {
		t.Errorf("run --hermetic without Docker exit %d; want 3", got.code)
	}
}

// TestRunJMAPPasswordHint: a second run finds the JMAP test account already
// created; without --accounts-from it cannot log in and says how to fix that.
func TestRunJMAPPasswordHint(t *testing.T) {
	e := newSwEnv(t, true, false)
	editConfig(t, e, "plan:\n  domains: [example.org]\n", fmt.Sprintf(`plan:
  domains: [example.org, migrated.test]
  local:
    - address: probe@migrated.test
      mailbox: {protocol: jmap, address: %q, password: Placeholder-Not-Used-1}
`, e.srv.URL))
	stub := &runStub{srv: e.srv, res: result(passBob)}
	if got := runRunCmd(t, context.Background(), stub, nil, "--config", e.config, "--snapshot", e.path("first.json")); got.code != 0 {
		t.Fatalf("first run exit %d:\n%s%s", got.code, got.stdout, got.stderr)
	}
	got := runRunCmd(t, context.Background(), stub, nil, "--config", e.config, "--snapshot", e.path("second.json"))
	if got.code != 3 || !strings.Contains(got.stderr, "test account(s) probe@migrated.test existed already") ||
		!strings.Contains(got.stderr, "--accounts-from") || stub.called != 1 {
		t.Errorf("second run exit %d, verify called %d times:\n%s; want 3 and the hint, before verify", got.code, stub.called, got.stderr)
	}
	checkRealSource(t, e, "after the failed second run")
	got = runRunCmd(t, context.Background(), stub, nil, "--config", e.config, "--accounts-from", e.path("missing.json"))
	if got.code != 2 || !strings.Contains(got.stderr, "--accounts-from") {
		t.Errorf("missing --accounts-from file: exit %d %s; want 2", got.code, got.stderr)
	}
	first, err := stalwart.ReadSnapshotFile(e.path("first.json"))
	if err != nil {
		t.Fatal(err)
	}
	got = runRunCmd(t, context.Background(), stub, nil, "--config", e.config, "--snapshot", e.path("third.json"),
		"--accounts-from", e.path("first.json"))
	if got.code != 0 || stub.called != 2 {
		t.Errorf("third run with --accounts-from exit %d:\n%s", got.code, got.stderr)
	}
	noSecrets(t, []string{got.stdout, got.stderr}, first.Accounts[0].Password, "Placeholder-Not-Used-1")
}
