package hermetic

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/splitcheck/splitcheck/harness/report"
)

// SkipWithoutDocker skips the test when no Docker engine answers, with a message
// that says exactly what is missing (CheckDocker's), or fails it instead when
// SPLITCHECK_REQUIRE_DOCKER=1. It returns within DefaultDockerCheckTimeout.
func SkipWithoutDocker(tb testing.TB) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(tb.Context(), DefaultDockerCheckTimeout)
	defer cancel()
	skipOrFail(tb, CheckDocker(ctx), os.Getenv(RequireDockerEnv) == "1")
}

// skipFailer is the part of testing.TB skipOrFail uses.
type skipFailer interface {
	Helper()
	Skipf(format string, args ...any)
	Fatalf(format string, args ...any)
}

// skipOrFail skips (or, when required, fails) tb because of err; nil does nothing.
func skipOrFail(tb skipFailer, err error, required bool) {
	tb.Helper()
	if err == nil {
		return
	}
	if required {
		tb.Fatalf("%v (%s=1: this run requires Docker)", err, RequireDockerEnv)
		return
	}
	tb.Skipf("%v (set %s=1 to fail instead of skipping)", err, RequireDockerEnv)
}

// RunT is Run for a Go test, with testify: it runs the whole hermetic suite with
// opts (the run's log goes to the test log), and
//   - skips the test when no Docker engine answers, saying what is missing (fails
//     it instead when SPLITCHECK_REQUIRE_DOCKER=1);
//   - fails it with the report (the table of checks, the tail of Stalwart's and the
//     relays' output) when the run cannot complete, or a check fails or cannot be
//     judged.
//
// It returns the result for further assertions. The containers are gone by then.
func RunT(t testing.TB, opts Options) *Result {
	t.Helper()
	return runT(t, opts, os.Getenv(RequireDockerEnv) == "1")
}

// runT is RunT with the environment read by the caller, for tests.
func runT(t testing.TB, opts Options, required bool) *Result {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(&testLogWriter{t: t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	res, err := Run(t.Context(), opts)
	if errors.Is(err, ErrNoDocker) {
		skipOrFail(t, err, required)
		return res
	}
	require.NoError(t, err, "hermetic run failed\n%s", Report(res))
	// Mismatch covers failed checks and checks that could not be judged.
	require.NoError(t, res.Mismatch(), "hermetic checks failed\n%s", Report(res))
	// A run whose every check was skipped proved nothing: never a pass.
	require.Positive(t, report.Summarize(res.Verify.Verdicts).Passed, "hermetic run verified nothing: every check was skipped\n%s", Report(res))
	return res
}

// Report renders what a run found for a person reading a failed test or CI log:
// the table of checks (when the checks ran), where everything listened, and the
// tail of Stalwart's and the relays' output.
func Report(res *Result) string {
	if res == nil {
		return "(no result)"
	}
	var b bytes.Buffer
	if res.Verify != nil {
		if err := report.Table(&b, res.Verify.Verdicts, report.TableOptions{}); err != nil {
			fmt.Fprintf(&b, "(table: %v)\n", err)
		}
	} else {
		b.WriteString("The checks did not run.\n")
	}
	writeFacts(&b, res)
	return b.String()
}

// writeFacts writes the layout and the log tails.
func writeFacts(w io.Writer, res *Result) {
	if res.Layout.Gateway.IsValid() {
		l := res.Layout
		fmt.Fprintf(w, "\nimage %s; gateway %v; trusted proxy %v; fake source %v; fake MX %v via %v:25; fake DNS %v\n",
			res.Image, l.Gateway, l.TrustedProxy, l.FakeSource, l.FakeMX, l.MXHost, l.FakeDNS)
	}
	if res.StalwartLog != "" {
		fmt.Fprintf(w, "\n--- last lines of Stalwart's output ---\n%s", res.StalwartLog)
	}
	for _, role := range []string{"proxy-relay", "mx-relay"} {
		if tail := res.RelayLogs[role]; tail != "" {
			fmt.Fprintf(w, "\n--- last lines of the %s's output ---\n%s", role, tail)
		}
	}
}

// WriteDiagnostics writes the layout and the log tails (the part of Report after
// the table), for a command that prints the table itself.
func WriteDiagnostics(w io.Writer, res *Result) {
	if res != nil {
		writeFacts(w, res)
	}
}

// testLogWriter sends each line written to it to t.Log.
type testLogWriter struct {
	t testing.TB
}

func (w *testLogWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	for line := range strings.Lines(string(p)) {
		w.t.Log(strings.TrimRight(line, "\n"))
	}
	return len(p), nil
}
