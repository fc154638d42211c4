// Package e2e runs the real splitcheck binary against the reference target (Postfix +
// Dovecot from Debian's packages, see internal/reftarget): the whole built-in matrix must
// pass on the correct configuration, each deliberate misconfiguration must be flagged
// precisely, and the exit codes must say what kind of failure happened.
//
// The tests need root and the packages. Where the target cannot run they fail with the
// reason, unless SPLITCHECK_SKIP_E2E=1 is set by hand (CI never sets it). The reference
// target listens on fixed loopback ports, so the tests run one after another, never in
// parallel, and no other package's tests may start a target at the same time
// (`go test -p 1`, as `make e2e` does).
package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"encoding/xml"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/splitcheck/splitcheck/harness/report"
	"github.com/splitcheck/splitcheck/internal/reftarget"
	"github.com/splitcheck/splitcheck/internal/reftarget/reftargettest"
)

// bins are the binaries TestMain builds; set once before any test runs.
type bins struct {
	splitcheck string // cmd/splitcheck
	reftarget  string // internal/reftarget/cmd/reftarget
	root       string // the module's root folder
}

var built bins

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "splitcheck-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		os.Exit(1)
	}
	cleanup := func(code int) {
		os.RemoveAll(dir)
		os.Exit(code)
	}
	b, err := build(dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		cleanup(1)
	}
	built = b
	goleak.VerifyTestMain(m, goleak.Cleanup(cleanup))
}

// build compiles the two binaries the tests run.
func build(dir string) (bins, error) {
	root, err := filepath.Abs("..")
	if err != nil {
		return bins{}, fmt.Errorf("find module root: %w", err)
	}
	b := bins{
		splitcheck: filepath.Join(dir, "splitcheck"),
		reftarget:  filepath.Join(dir, "reftarget"),
		root:       root,
	}
	for out, pkg := range map[string]string{b.splitcheck: "./cmd/splitcheck", b.reftarget: "./internal/reftarget/cmd/reftarget"} {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		cmd := exec.CommandContext(ctx, "go", "build", "-o", out, pkg)
		cmd.Dir = root
		msg, err := cmd.CombinedOutput()
		cancel()
		if err != nil {
			return bins{}, fmt.Errorf("go build %s: %w\n%s", pkg, err, msg)
		}
	}
	return b, nil
}

// target is a running reference target and the environment verify needs for it.
type target struct {
	tgt       *reftarget.Target
	env       []string // REFTARGET_PASSWORD_ALICE=..., REFTARGET_PASSWORD_DAVE=...
	passwords []string
}

// startTarget starts the reference target with mutation m and random passwords for
// alice and dave (the accounts examples/reftarget.yaml names). It is closed when the
// test ends; a failed test gets the maillog tail.
func startTarget(t *testing.T, m reftarget.Mutation) *target {
	t.Helper()
	reftargettest.Require(t)
	tt := &target{}
	var accts []reftarget.Account
	for _, name := range []string{"alice", "dave"} {
		pw := randomPassword()
		accts = append(accts, reftarget.Account{Address: name + "@example.org", Password: pw})
		tt.env = append(tt.env, "REFTARGET_PASSWORD_"+strings.ToUpper(name)+"="+pw)
		tt.passwords = append(tt.passwords, pw)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	tgt, err := reftarget.Start(ctx, reftarget.Options{Accounts: accts, Mutation: m})
	if err != nil {
		var se *reftarget.StartError
		if errors.As(err, &se) && se.Maillog != "" {
			t.Logf("reftarget log tail:\n%s", se.Maillog)
		}
		t.Fatalf("start reference target (mutation %q): %v", m, err)
	}
	tt.tgt = tgt
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("reference target log tail:\n%s", tgt.Maillog())
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := tgt.Close(ctx); err != nil {
			t.Errorf("close reference target: %v", err)
		}
	})
	return tt
}

// randomPassword is 26 base32 characters (130 bits): never found by accident in output.
func randomPassword() string { return rand.Text() }

// runResult is one run of the splitcheck binary.
type runResult struct {
	code           int
	stdout, stderr string
	elapsed        time.Duration
}

// runSplitcheck runs the binary from the module root with env added to this process's
// environment. limit bounds the run; reaching it fails the test.
func runSplitcheck(t *testing.T, env []string, limit time.Duration, args ...string) runResult {
	t.Helper()
	return runBinary(t, env, limit, built.splitcheck, args...)
}

// runBinary runs bin like runSplitcheck does.
func runBinary(t *testing.T, env []string, limit time.Duration, bin string, args ...string) runResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Dir = built.root
	cmd.Env = append(os.Environ(), env...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	start := time.Now()
	err := cmd.Run()
	r := runResult{stdout: out.String(), stderr: errOut.String(), elapsed: time.Since(start)}
	var ee *exec.ExitError
	switch {
	case ctx.Err() != nil:
		t.Fatalf("%s %s: still running after %s, killed\nstdout:\n%s\nstderr:\n%s",
			filepath.Base(bin), strings.Join(args, " "), limit, r.stdout, r.stderr)
	case err == nil:
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
	default:
		t.Fatalf("run %s: %v", filepath.Base(bin), err)
	}
	t.Logf("%s %s: exit %d in %s", filepath.Base(bin), strings.Join(args, " "), r.code, r.elapsed.Round(time.Millisecond))
	return r
}

// jsonReport is the decoded output of verify --json.
type jsonReport struct {
	checks  []report.CheckRecord
	summary report.SummaryRecord
}

func (j jsonReport) byName() map[string]report.CheckRecord {
	m := map[string]report.CheckRecord{}
	for _, c := range j.checks {
		m[c.Name] = c
	}
	return m
}

// parseJSON decodes verify --json output strictly: check objects, then exactly one
// summary, the last line.
func parseJSON(t *testing.T, stdout string) jsonReport {
	t.Helper()
	var j jsonReport
	lines := strings.Split(strings.TrimRight(stdout, "\n"), "\n")
	for i, line := range lines {
		var head struct{ Type string }
		if err := json.Unmarshal([]byte(line), &head); err != nil {
			t.Fatalf("--json line %d is not JSON: %v\n%s", i+1, err, line)
		}
		switch head.Type {
		case "check":
			var c report.CheckRecord
			dec := json.NewDecoder(strings.NewReader(line))
			dec.DisallowUnknownFields()
			if err := dec.Decode(&c); err != nil {
				t.Fatalf("--json line %d: %v", i+1, err)
			}
			j.checks = append(j.checks, c)
		case "summary":
			if i != len(lines)-1 {
				t.Fatalf("--json: summary on line %d of %d; want it last", i+1, len(lines))
			}
			if err := json.Unmarshal([]byte(line), &j.summary); err != nil {
				t.Fatalf("--json summary: %v", err)
			}
		default:
			t.Fatalf("--json line %d has type %q; want check or summary", i+1, head.Type)
		}
	}
	if j.summary.Type != "summary" {
		t.Fatalf("--json output has no summary line:\n%s", stdout)
	}
	if len(j.checks) != j.summary.Total {
		t.Errorf("--json: %d check lines, summary total %d", len(j.checks), j.summary.Total)
	}
	return j
}

// junitFile is what a CI system reads from --junit.
type junitFile struct {
	Tests    int `xml:"tests,attr"`
	Failures int `xml:"failures,attr"`
	Errors   int `xml:"errors,attr"`
	Skipped  int `xml:"skipped,attr"`
	Suites   []struct {
		Cases []struct {
			Name    string    `xml:"name,attr"`
			Failure *struct{} `xml:"failure"`
			Error   *struct{} `xml:"error"`
			Skipped *struct{} `xml:"skipped"`
		} `xml:"testcase"`
	} `xml:"testsuite"`
}

func readJUnit(t *testing.T, path string) (junitFile, string) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read --junit file: %v", err)
	}
	var j junitFile
	if err := xml.Unmarshal(data, &j); err != nil {
		t.Fatalf("--junit file is not valid XML: %v\n%s", err, data)
	}
	return j, string(data)
}

// noSecrets fails if any password shows up in any of the texts.
func noSecrets(t *testing.T, passwords []string, texts map[string]string) {
	t.Helper()
	for name, text := range texts {
		for _, pw := range passwords {
			if pw != "" && strings.Contains(text, pw) {
				t.Errorf("a password appears in %s", name)
			}
		}
	}
}
