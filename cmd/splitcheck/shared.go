package main

// Plumbing the commands share: arguments, context, the progress line with the
// logger behind it, and the --junit file.

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/splitcheck/splitcheck/harness"
	"github.com/splitcheck/splitcheck/harness/config"
	"github.com/splitcheck/splitcheck/harness/report"
	"github.com/splitcheck/splitcheck/scenarios"
)

// junitSuite is the suite name in --junit reports (bulk has its own).
const junitSuite = "splitcheck"

// noArgs refuses positional arguments, guessing the flag they were meant for
// ("verify takes no arguments, got [x] (did you mean --config x?)").
func noArgs(name, flag string) cobra.PositionalArgs {
	return func(_ *cobra.Command, args []string) error {
		if len(args) > 0 {
			return usageErrorf("%s takes no arguments, got %q (did you mean %s %s?)", name, args, flag, args[0])
		}
		return nil
	}
}

// cmdContext is the command's context, or Background when it has none.
func cmdContext(cmd *cobra.Command) context.Context {
	if ctx := cmd.Context(); ctx != nil {
		return ctx
	}
	return context.Background()
}

// newProgressLogger is the progress line on stderr and the logger from the
// persistent flags, writing through it so logs never overwrite the live line.
func newProgressLogger(cmd *cobra.Command, ios *ioStreams) (*report.Progress, *slog.Logger, error) {
	progress := &report.Progress{W: ios.ErrOut, TTY: ios.StderrTTY, Width: termWidth(ios)}
	logIO := *ios
	logIO.ErrOut = progress
	logger, err := newLogger(cmd, &logIO)
	if err != nil {
		return nil, nil, err
	}
	return progress, logger, nil
}

// progressFunc shows the harness's progress events on p.
func progressFunc(p *report.Progress) func(harness.ProgressEvent) {
	return func(ev harness.ProgressEvent) {
		p.Update(report.Step{Check: ev.Check, Stage: ev.Stage, Status: ev.Status, Done: ev.Done, Total: ev.Total})
	}
}

// writeJUnitReport writes the --junit file (nothing when path is empty). A run that
// failed (runErr) before any verdict still leaves CI a report that says why: one
// error testcase named name, of the given mode.
func writeJUnitReport(path string, verdicts []scenarios.Verdict, elapsed time.Duration, runErr error, name, mode string) error {
	if path == "" {
		return nil
	}
	if runErr != nil && len(verdicts) == 0 {
		verdicts = []scenarios.Verdict{{
			Check:  scenarios.Check{Name: name, Kind: "environment"},
			Status: scenarios.StatusError,
			Detail: runErr.Error(),
			Mode:   mode,
		}}
	}
	return writeJUnit(path, verdicts, elapsed)
}

// writeJUnit writes the report next to its final name and renames it into place, so a
// CI system never reads half a file.
func writeJUnit(path string, verdicts []scenarios.Verdict, elapsed time.Duration) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("write junit %s: %w", path, err)
	}
	defer os.Remove(tmp.Name()) // fails harmlessly after the rename
	if err := report.JUnit(tmp, junitSuite, verdicts, elapsed); err != nil {
		tmp.Close()
		return fmt.Errorf("write junit %s: %w", path, err)
	}
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return fmt.Errorf("write junit %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write junit %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("write junit %s: %w", path, err)
	}
	return nil
}

// termWidth is stderr's width when it is a terminal, else 0 (the default).
func termWidth(ios *ioStreams) int {
	if !ios.StderrTTY {
		return 0
	}
	return writerWidth(ios.ErrOut)
}

// verdictsErr is the outcome of a run's verdicts, the same for verify, run and
// run --hermetic: a failed check is a mismatch (exit 1); checks that could not be
// judged, with none failed, are the environment (exit 3); a run whose every check
// was skipped verified nothing, and exit 0 would claim a pass nothing earned, so it
// is a configuration error (exit 2).
func verdictsErr(command, cfgPath string, s report.Summary, verdicts []scenarios.Verdict) error {
	switch {
	case s.Failed == 0 && s.Errors > 0:
		return fmt.Errorf("%s: %d check(s) could not be judged (see the report)", command, s.Errors)
	case s.Passed == 0 && s.Failed == 0 && s.Errors == 0:
		return &config.Error{File: cfgPath, Msg: fmt.Sprintf("nothing was verified: all %d check(s) were skipped", s.Skipped)}
	}
	return (&harness.Result{Verdicts: verdicts}).Mismatch() // nil, or exit 1
}
