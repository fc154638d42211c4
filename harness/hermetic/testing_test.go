package hermetic

import (
	"context"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"testing"

	"github.com/splitcheck/splitcheck/scenarios"
)

// recordingTB is a testing.TB that records instead of failing the real test.
// FailNow and Skipf end the calling goroutine, as the real ones do; call the code
// under test through do.
type recordingTB struct {
	testing.TB // nil: any method not overridden here panics
	ctx        context.Context

	mu      sync.Mutex
	failed  bool
	skipped bool
	msgs    []string
	logs    int
}

func (r *recordingTB) Helper()                  {}
func (r *recordingTB) Name() string             { return "recordingTB" }
func (r *recordingTB) Context() context.Context { return r.ctx }
func (r *recordingTB) Log(args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.logs++
}
func (r *recordingTB) Errorf(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.failed = true
	r.msgs = append(r.msgs, fmt.Sprintf(format, args...))
}
func (r *recordingTB) FailNow() {
	r.mu.Lock()
	r.failed = true
	r.mu.Unlock()
	runtime.Goexit()
}
func (r *recordingTB) Fatalf(format string, args ...any) {
	r.Errorf(format, args...)
	r.FailNow()
}
func (r *recordingTB) Skipf(format string, args ...any) {
	r.mu.Lock()
	r.skipped = true
	r.msgs = append(r.msgs, fmt.Sprintf(format, args...))
	r.mu.Unlock()
	runtime.Goexit()
}

// do runs fn on its own goroutine (so FailNow and Skipf can end it) and waits.
func (r *recordingTB) do(fn func(testing.TB)) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		fn(r)
	}()
	<-done
}

func (r *recordingTB) text() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return strings.Join(r.msgs, "\n")
}

func TestSkipOrFail(t *testing.T) {
	noDocker := &DockerError{Tried: []string{"DOCKER_HOST is not set", "no socket at /var/run/docker.sock"}}
	for _, tt := range []struct {
		name          string
		err           error
		required      bool
		skip, fail    bool
		want, notWant string
	}{
		{name: "docker present", err: nil},
		{name: "absent skips", err: noDocker, skip: true,
			want: "no socket at /var/run/docker.sock); hermetic mode needs a running Docker engine", notWant: "requires Docker"},
		{name: "absent and required fails", err: noDocker, required: true, fail: true,
			want: "SPLITCHECK_REQUIRE_DOCKER=1: this run requires Docker"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := &recordingTB{ctx: t.Context()}
			r.do(func(tb testing.TB) { skipOrFail(tb, tt.err, tt.required) })
			if r.skipped != tt.skip || r.failed != tt.fail {
				t.Errorf("skipped, failed = %v, %v; want %v, %v", r.skipped, r.failed, tt.skip, tt.fail)
			}
			if got := r.text(); !strings.Contains(got, tt.want) || (tt.notWant != "" && strings.Contains(got, tt.notWant)) {
				t.Errorf("message %q; want it to contain %q (and not %q)", got, tt.want, tt.notWant)
			}
			if tt.skip && !strings.Contains(r.text(), "set SPLITCHECK_REQUIRE_DOCKER=1 to fail instead") {
				t.Errorf("skip message %q does not say how to make it a failure", r.text())
			}
		})
	}
}

func TestRunT(t *testing.T) {
	failing := []scenarios.Verdict{{
		Check:  scenarios.Check{Name: "route/unmigrated/bob@migrated.test", Kind: scenarios.KindRoute, Expect: scenarios.RouteSource},
		Status: scenarios.StatusFail, Detail: "want source, got local",
	}}
	errored := []scenarios.Verdict{{Check: scenarios.Check{Name: "received/x"}, Status: scenarios.StatusError, Detail: "no Received header"}}
	for _, tt := range []struct {
		name       string
		noDocker   bool
		required   bool
		verdicts   []scenarios.Verdict
		failStep   string
		skip, fail bool
		want       []string
	}{
		{name: "pass", verdicts: passing()},
		{name: "no docker skips", noDocker: true, skip: true, want: []string{"DOCKER_HOST is not set"}},
		{name: "no docker required fails", noDocker: true, required: true, fail: true, want: []string{"requires Docker"}},
		{name: "mismatch fails with the report", verdicts: failing, fail: true,
			want: []string{"hermetic checks failed", "want source, got local", "bob@migrated.test", "last lines of Stalwart's output", "stalwart: server started"}},
		{name: "unjudged check fails", verdicts: errored, fail: true, want: []string{"hermetic checks failed", "received/x: no Received header"}},
		{name: "all skipped fails", verdicts: []scenarios.Verdict{{Check: scenarios.Check{Name: "plain"}, Status: scenarios.StatusSkip, Detail: "no plain listener"}},
			fail: true, want: []string{"verified nothing: every check was skipped"}},
		{name: "environment failure fails with the logs", verdicts: passing(), failStep: "restart", fail: true,
			want: []string{"hermetic run failed", "restart: injected failure", "The checks did not run", "proxy-relay listening"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e := newFakeEngine(t)
			e.fail = tt.failStep
			if tt.noDocker {
				e.checkErr = &DockerError{Tried: []string{"DOCKER_HOST is not set"}}
			}
			r := &recordingTB{ctx: t.Context()}
			var res *Result
			r.do(func(tb testing.TB) {
				res = runT(tb, options(e, &fakeVerify{verdicts: tt.verdicts}), tt.required)
			})
			if r.skipped != tt.skip || r.failed != tt.fail {
				t.Errorf("skipped, failed = %v, %v; want %v, %v (messages: %s)", r.skipped, r.failed, tt.skip, tt.fail, r.text())
			}
			for _, w := range tt.want {
				if !strings.Contains(r.text(), w) {
					t.Errorf("messages %q do not contain %q", r.text(), w)
				}
			}
			if !tt.skip && !tt.fail && (res == nil || res.Verify == nil) {
				t.Errorf("RunT returned %+v; want the result", res)
			}
			if !tt.noDocker && r.logs == 0 {
				t.Errorf("the run logged nothing to the test log")
			}
			wantAllRemoved(t, e)
		})
	}
}
