package e2e

import (
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/splitcheck/splitcheck/harness/report"
	"github.com/splitcheck/splitcheck/internal/freeport"
	"github.com/splitcheck/splitcheck/internal/reftarget"
	"github.com/splitcheck/splitcheck/internal/reftarget/reftargettest"
	"github.com/splitcheck/splitcheck/scenarios"
)

// exampleConfig is the config the demo and these tests use, relative to the module root.
const exampleConfig = "examples/reftarget.yaml"

// verifyLimit bounds one verify run; examples/reftarget.yaml's own timeouts.run is 2m.
const verifyLimit = 3 * time.Minute

// builtinChecks are checks the built-in matrix must produce for examples/reftarget.yaml
// (a floor, so a matrix that silently lost probes cannot pass).
var builtinChecks = []string{
	"route/local/alice@example.org",
	"route/local/dave@example.org",
	"route/unmigrated/bob@example.org",
	"route/unmigrated/carol@example.org",
	"route/external/erin@external.test",
	"route/external/frank@other.test",
	"route/open-relay/erin@external.test",
	"route/open-relay/frank@other.test",
	"mixed/alice@example.org",
	"mixed/bob@example.org",
	"mixed/erin@external.test",
	"received/local/alice@example.org",
	"headerless",
	"plain",
	"relay/no-proxy-header",
}

func TestVerifyReferenceTarget(t *testing.T) {
	tgt := startTarget(t, reftarget.MutationNone)
	junit := filepath.Join(t.TempDir(), "report.xml")

	r := runSplitcheck(t, tgt.env, verifyLimit, "verify", "--config", exampleConfig, "--json", "--junit", junit)
	if r.code != 0 {
		t.Errorf("verify exit code = %d; want 0\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
	}
	j := parseJSON(t, r.stdout)
	names := j.byName()
	for _, want := range builtinChecks {
		if _, ok := names[want]; !ok {
			t.Errorf("check %q missing from the report", want)
		}
	}
	for _, c := range j.checks {
		if c.Status != scenarios.StatusPass {
			t.Errorf("check %s: status %s; want pass (observed %s; %s)", c.Name, c.Status, places(c), c.Detail)
			continue
		}
		if c.Kind == scenarios.KindRoute || c.Kind == scenarios.KindPlain {
			if got := places(c); got != string(c.Expected) {
				t.Errorf("check %s passed with observed %q; want exactly one sighting at %s", c.Name, got, c.Expected)
			}
		}
	}
	if s := j.summary; !s.OK || s.Passed != len(j.checks) || s.Failed+s.Skipped+s.Errors != 0 {
		t.Errorf("summary = %+v; want every one of %d checks passed", s, len(j.checks))
	}

	ju, junitText := readJUnit(t, junit)
	if ju.Tests != len(j.checks) || ju.Failures+ju.Errors+ju.Skipped != 0 {
		t.Errorf("junit tests=%d failures=%d errors=%d skipped=%d; want %d tests, all passed",
			ju.Tests, ju.Failures, ju.Errors, ju.Skipped, len(j.checks))
	}
	if len(ju.Suites) != 1 || len(ju.Suites[0].Cases) != len(j.checks) {
		t.Fatalf("junit has %d suites; want 1 with %d testcases", len(ju.Suites), len(j.checks))
	}
	for i, c := range ju.Suites[0].Cases {
		if c.Name != j.checks[i].Name || c.Failure != nil || c.Error != nil || c.Skipped != nil {
			t.Errorf("junit testcase %d = %s (failure %v, error %v, skipped %v); want %s, passed",
				i, c.Name, c.Failure != nil, c.Error != nil, c.Skipped != nil, j.checks[i].Name)
		}
	}
	noSecrets(t, tgt.passwords, map[string]string{"stdout": r.stdout, "stderr": r.stderr, "junit": junitText})

	// The table a person reads (what make demo prints), with debug logs: still no secrets.
	r = runSplitcheck(t, tgt.env, verifyLimit, "--log-level", "debug", "verify", "--config", exampleConfig)
	if r.code != 0 {
		t.Errorf("verify (table) exit code = %d; want 0\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
	}
	wantSummary := regexp.MustCompile(`(?m)^\d+ passed, 0 failed, 0 skipped, 0 errors$`)
	if !wantSummary.MatchString(r.stdout) || strings.Contains(r.stdout, "\x1b[") {
		t.Errorf("table output lacks an all-passed summary line or has colour on a pipe:\n%s", r.stdout)
	}
	noSecrets(t, tgt.passwords, map[string]string{"table stdout": r.stdout, "debug stderr": r.stderr})
}

// TestDemo runs what `make demo` runs: reftarget exec starts the target and hands the
// passwords to verify through REFTARGET_PASSWORD_*.
func TestDemo(t *testing.T) {
	reftargettest.Require(t)
	r := runBinary(t, nil, verifyLimit, built.reftarget, "exec", "--", built.splitcheck, "verify", "--config", exampleConfig)
	if r.code != 0 {
		t.Fatalf("reftarget exec -- splitcheck verify: exit %d; want 0\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
	}
	if !regexp.MustCompile(`(?m)^\d+ passed, 0 failed, 0 skipped, 0 errors$`).MatchString(r.stdout) {
		t.Errorf("demo output lacks an all-passed summary:\n%s", r.stdout)
	}
}

// outcome is how a check affected by a mutation must fail.
type outcome struct {
	// observed is the sightings the check must report ("+"-joined places, "none").
	observed string
	// evidence must match the check's evidence or detail.
	evidence *regexp.Regexp
}

// mutationCase says which checks a misconfiguration must fail, and how.
type mutationCase struct {
	mutation reftarget.Mutation
	// expect returns how check c must fail, or nil when c must pass.
	expect func(c report.CheckRecord) *outcome
}

func recipientIs(c report.CheckRecord, addrs ...string) bool {
	return c.Recipient != "" && slices.Contains(addrs, scenarios.Canonical(c.Recipient))
}

func isRoute(c report.CheckRecord) bool {
	return c.Kind == scenarios.KindRoute || c.Kind == scenarios.KindPlain
}

// multiRecipient reports whether c belongs to a probe with several recipients (its
// name is "<probe>/<recipient>" rather than "route/<probe>").
func multiRecipient(c report.CheckRecord) bool {
	return c.Kind == scenarios.KindRoute && c.Name != "route/"+c.Probe
}

func rcptRE(c report.CheckRecord) string { return regexp.QuoteMeta("<" + c.Recipient + ">") }

var mutationCases = []mutationCase{
	{
		// (a) unmigrated addresses delivered locally (a catch-all alias into alice's
		// mailbox) instead of relayed. In the mixed message bob's copy is folded into
		// alice's by Postfix's duplicate elimination, so it is seen nowhere on its own.
		mutation: reftarget.MutationUnmigratedLocal,
		expect: func(c report.CheckRecord) *outcome {
			switch {
			case !isRoute(c) || !recipientIs(c, "bob@example.org", "carol@example.org"):
				return nil
			case multiRecipient(c):
				return &outcome{"none", regexp.MustCompile(`not seen anywhere within 10s; the target accepted it`)}
			default:
				return &outcome{"local", regexp.MustCompile(`IMAP 127\.0\.0\.1:143: alice@example\.org INBOX uid \d+`)}
			}
		},
	},
	{
		// (a') unmigrated addresses rejected at RCPT instead of relayed.
		mutation: reftarget.MutationUnmigratedRejected,
		expect: func(c report.CheckRecord) *outcome {
			if !isRoute(c) || !recipientIs(c, "bob@example.org", "carol@example.org") {
				return nil
			}
			return &outcome{"reject", regexp.MustCompile(`RCPT 550 5\.1\.1 ` + rcptRE(c) + `: Recipient address rejected: User unknown in relay recipient table`)}
		},
	},
	{
		// (b) a local account (alice, in every form: plus-addressed, upper-cased, in the
		// mixed message, on the plain listener) relayed to the source.
		mutation: reftarget.MutationLocalRelayed,
		expect: func(c report.CheckRecord) *outcome {
			if !isRoute(c) || !recipientIs(c, "alice@example.org") {
				return nil
			}
			return &outcome{"source", regexp.MustCompile(`fake source 127\.0\.0\.4:2525: message \d+ RCPT ` + rcptRE(c))}
		},
	},
	{
		// (c) an open relay: unauthenticated mail to other domains accepted and delivered.
		mutation: reftarget.MutationOpenRelay,
		expect: func(c report.CheckRecord) *outcome {
			if !isRoute(c) || c.Entry != scenarios.EntryProxy || c.Expected != scenarios.RouteReject {
				return nil
			}
			return &outcome{"mx", regexp.MustCompile(`fake MX 127\.0\.0\.5:25: message \d+ RCPT ` + rcptRE(c))}
		},
	},
	{
		// (d) the PROXY header not honoured: a front that announces its own peer. The
		// Received header shows the proxy's address, and the front also lets a
		// headerless connection through.
		mutation: reftarget.MutationProxyIgnored,
		expect: func(c report.CheckRecord) *outcome {
			switch c.Kind {
			case scenarios.KindReceived:
				return &outcome{"local", regexp.MustCompile(`want a Received header with \[198\.51\.100\.7\].*Received: from \S+ \(unknown \[127\.0\.0\.9\]\)`)}
			case scenarios.KindHeaderless:
				return &outcome{"accepted", regexp.MustCompile(`from 127\.0\.0\.9: 220 .*without a header`)}
			}
			return nil
		},
	},
	{
		// (e) authenticated mail to other domains accepted but never delivered.
		mutation: reftarget.MutationExternalUndelivered,
		expect: func(c report.CheckRecord) *outcome {
			if !isRoute(c) || c.Expected != scenarios.RouteMX {
				return nil
			}
			return &outcome{"none", regexp.MustCompile(`want mx, got none: not seen anywhere within 10s; the target accepted it: DATA 250`)}
		},
	},
}

func TestMutations(t *testing.T) {
	for _, mc := range mutationCases {
		t.Run(string(mc.mutation), func(t *testing.T) {
			tgt := startTarget(t, mc.mutation)
			junit := filepath.Join(t.TempDir(), "report.xml")
			r := runSplitcheck(t, tgt.env, verifyLimit, "verify", "--config", exampleConfig, "--json", "--junit", junit)
			if r.code != 1 {
				t.Errorf("verify exit code = %d; want 1 (a routing mismatch)\nstderr:\n%s", r.code, r.stderr)
			}
			j := parseJSON(t, r.stdout)
			failed := 0
			for _, c := range j.checks {
				want := mc.expect(c)
				if want == nil {
					if c.Status != scenarios.StatusPass {
						t.Errorf("check %s: %s (observed %s: %s); want pass, the mutation does not affect it",
							c.Name, c.Status, places(c), c.Detail)
					}
					continue
				}
				failed++
				if c.Status != scenarios.StatusFail {
					t.Errorf("check %s: %s (observed %s); want fail under %s", c.Name, c.Status, places(c), mc.mutation)
					continue
				}
				if got := places(c); got != want.observed {
					t.Errorf("check %s: observed %q; want %q", c.Name, got, want.observed)
				}
				if ev := evidence(c); !want.evidence.MatchString(ev) {
					t.Errorf("check %s: evidence %q; want it to match %s", c.Name, ev, want.evidence)
				}
			}
			if failed == 0 {
				t.Errorf("no check is affected by %s; the expectation picks nothing", mc.mutation)
			}
			if j.summary.Failed != failed || j.summary.OK {
				t.Errorf("summary = %+v; want %d failed", j.summary, failed)
			}
			ju, _ := readJUnit(t, junit)
			if ju.Failures != failed || ju.Tests != len(j.checks) {
				t.Errorf("junit failures=%d tests=%d; want %d of %d", ju.Failures, ju.Tests, failed, len(j.checks))
			}
			if !strings.Contains(r.stderr, "check(s) failed") {
				t.Errorf("stderr does not name the failed checks:\n%s", r.stderr)
			}
			noSecrets(t, tgt.passwords, map[string]string{"stdout": r.stdout, "stderr": r.stderr})
		})
	}
}

func TestExitCodeBadConfig(t *testing.T) {
	for _, tt := range []struct {
		name    string
		yaml    string
		wantMsg *regexp.Regexp
	}{
		{"unknown key", "target:\n  smtp: 127.0.0.1:25\n  smpt: 127.0.0.1:26\n",
			regexp.MustCompile(`bad\.yaml:3: field smpt: unknown key`)},
		{"bad address", "target:\n  smtp: 127.0.0.1\nplan:\n  domains: [example.org]\n  unmigrated: [bob@example.org]\n" +
			"fakes:\n  source: 127.0.0.1:0\nproxy:\n  announce: 198.51.100.7\n",
			regexp.MustCompile(`bad\.yaml:2: field target\.smtp: "127\.0\.0\.1" is not host:port`)},
		{"secret from an unset variable", "target:\n  smtp: 127.0.0.1:25\nplan:\n  domains: [example.org]\n" +
			"  local:\n    - address: alice@example.org\n      mailbox:\n        address: 127.0.0.1:143\n" +
			"        password: {env: SPLITCHECK_E2E_UNSET}\nfakes:\n  source: 127.0.0.1:0\nproxy:\n  announce: 198.51.100.7\n",
			regexp.MustCompile(`bad\.yaml:9: field plan\.local\.0\.mailbox\.password: environment variable SPLITCHECK_E2E_UNSET is not set`)},
	} {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "bad.yaml")
			if err := os.WriteFile(path, []byte(tt.yaml), 0o600); err != nil {
				t.Fatal(err)
			}
			r := runSplitcheck(t, nil, time.Minute, "verify", "--config", path)
			if r.code != 2 {
				t.Errorf("exit code = %d; want 2\nstderr:\n%s", r.code, r.stderr)
			}
			if !tt.wantMsg.MatchString(r.stderr) {
				t.Errorf("stderr = %q; want it to match %s", r.stderr, tt.wantMsg)
			}
			if r.stdout != "" {
				t.Errorf("stdout = %q; want nothing before a verdict", r.stdout)
			}
		})
	}
	t.Run("no --config", func(t *testing.T) {
		r := runSplitcheck(t, nil, time.Minute, "verify")
		if r.code != 2 || !strings.Contains(r.stderr, "--config") {
			t.Errorf("exit %d, stderr %q; want 2 naming --config", r.code, r.stderr)
		}
	})
}

// TestExitCodeUnreachable points verify at closed ports: exit 3, within the short
// --timeout (the process is killed, and the test fails, if it runs past the limit).
func TestExitCodeUnreachable(t *testing.T) {
	closed := closedPort(t)
	const pw = "Unreachable-Secret-7f3a9c"
	cfg := `target:
  smtp: ` + closed + `
  submission: ` + closed + `
plan:
  domains: [example.org]
  local:
    - address: alice@example.org
      mailbox:
        address: ` + closed + `
        password: {env: SPLITCHECK_E2E_PW}
  unmigrated: [bob@example.org]
  external: [erin@external.test]
submitter:
  username: alice@example.org
  password: {env: SPLITCHECK_E2E_PW}
fakes:
  source: 127.0.0.1:0
  mx: 127.0.0.1:0
  dns: 127.0.0.1:0
proxy:
  announce: 198.51.100.7
timeouts:
  connect: 2s
  delivery: 3s
  absence: 500ms
`
	path := filepath.Join(t.TempDir(), "unreachable.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	junit := filepath.Join(t.TempDir(), "report.xml")
	r := runSplitcheck(t, []string{"SPLITCHECK_E2E_PW=" + pw}, time.Minute,
		"verify", "--config", path, "--timeout", "20s", "--junit", junit)
	if r.code != 3 {
		t.Errorf("exit code = %d; want 3 (target unreachable)\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
	}
	if !strings.Contains(r.stderr, closed) {
		t.Errorf("stderr does not name the unreachable address %s:\n%s", closed, r.stderr)
	}
	ju, junitText := readJUnit(t, junit)
	if ju.Errors == 0 {
		t.Errorf("junit errors = %d; want the environment error reported", ju.Errors)
	}
	noSecrets(t, []string{pw}, map[string]string{"stdout": r.stdout, "stderr": r.stderr, "junit": junitText})
}

// TestExitCodeSilentTarget points verify at a target that accepts connections and never
// answers: --timeout, not the generous timeouts.connect, must end the run, with exit 3.
func TestExitCodeSilentTarget(t *testing.T) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	held := make(chan net.Conn, 64)
	done := make(chan struct{})
	go func() { // owned here: ends when ln is closed, below
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			held <- c
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		<-done
		close(held)
		for c := range held {
			c.Close()
		}
	})
	addr := ln.Addr().String()
	cfg := `target:
  smtp: ` + addr + `
plan:
  domains: [example.org]
  unmigrated: [bob@example.org]
fakes:
  source: 127.0.0.1:0
proxy:
  announce: 198.51.100.7
timeouts:
  connect: 10m
  delivery: 10m
`
	path := filepath.Join(t.TempDir(), "silent.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	r := runSplitcheck(t, nil, time.Minute, "verify", "--config", path, "--timeout", "2s")
	if r.code != 3 {
		t.Errorf("exit code = %d; want 3\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
	}
	if want := "no verdict within 2s"; !strings.Contains(r.stderr, want) {
		t.Errorf("stderr = %q; want %q", r.stderr, want)
	}
}

// closedPort is a loopback address nothing listens on, below the ephemeral range
// so nothing binds it by chance.
func closedPort(t *testing.T) string {
	t.Helper()
	addr, err := freeport.TCP("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	return addr
}

// places is the "+"-joined places a check observed, "none" for no sighting.
func places(c report.CheckRecord) string {
	if len(c.Observed) == 0 {
		return "none"
	}
	var p []string
	for _, o := range c.Observed {
		p = append(p, string(o.Place))
	}
	return strings.Join(p, "+")
}

// evidence is everything a check offers as evidence, for matching.
func evidence(c report.CheckRecord) string {
	var parts []string
	for _, o := range c.Observed {
		parts = append(parts, o.Where, o.Evidence)
	}
	return strings.Join(append(parts, c.Detail), " | ")
}
