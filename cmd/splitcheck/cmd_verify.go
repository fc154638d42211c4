package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/splitcheck/splitcheck/harness"
	"github.com/splitcheck/splitcheck/harness/config"
	"github.com/splitcheck/splitcheck/harness/report"
	"github.com/splitcheck/splitcheck/scenarios"
)

// verifyFunc runs the checks; tests replace harness.Verify with a fake.
type verifyFunc func(ctx context.Context, cfg *config.Config, opts harness.VerifyOptions) (*harness.Result, error)

// verifyOptions are the flags of `splitcheck verify`.
type verifyOptions struct {
	configPath    string
	json          bool
	junit         string
	scenarioFiles []string
	replace       bool
	timeout       time.Duration

	verify verifyFunc
}

func newVerifyCmd(ios *ioStreams) *cobra.Command {
	return newVerifyCmdWith(ios, harness.Verify)
}

func newVerifyCmdWith(ios *ioStreams, verify verifyFunc) *cobra.Command {
	opts := &verifyOptions{verify: verify}
	cmd := &cobra.Command{
		Use:   "verify --config FILE [--json] [--junit FILE] [--scenarios FILE ...]",
		Short: "Send probe mail and check every recipient is routed as the plan says",
		Long: `verify sends uniquely tagged probe mail to the target named in the config and checks,
for every recipient, that it arrives exactly once and exactly where the migration plan
says: "local" (in the account's mailbox), "source" (at the fake source), "mx" (at the
fake MX), or refused in the SMTP dialogue. It also checks the Received header carries the
client address the PROXY header announced, that a headerless connection on the PROXY
listener is refused, and that headerless mail on the plain listener still works.

The report goes to stdout: a table, or one JSON object per check and a summary with
--json. Progress (a live line on a terminal, a line per judged check otherwise) and
logs go to stderr; verify logs only warnings unless --log-level is given. --junit FILE
also writes JUnit XML, even when checks fail.

Scenario files add probes to the built-in matrix (or replace it with --replace-builtin):
those listed under "scenarios:" in the config (relative to the config's folder) and
those given with --scenarios (relative to the working directory).

Exit codes: 0 every check passed (skipped checks are reported, never counted as
passed), 1 a routing mismatch, 2 bad usage or configuration, 3 the target or the
environment was unreachable or the run timed out before a verdict.`,
		Example: `  splitcheck verify --config examples/reftarget.yaml
  splitcheck verify --config staging.yaml --json --junit report.xml --timeout 2m`,
		Args: noArgs("verify", "--config"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runVerify(cmd, ios, opts)
		},
	}
	f := cmd.Flags()
	f.StringVarP(&opts.configPath, "config", "c", "", "the run's configuration file (YAML; required)")
	f.BoolVar(&opts.json, "json", false, "print one JSON object per check and a summary object instead of the table")
	f.StringVar(&opts.junit, "junit", "", "also write a JUnit XML report to `FILE`")
	f.StringArrayVar(&opts.scenarioFiles, "scenarios", nil, "a scenario `FILE` adding probes (repeatable)")
	f.BoolVar(&opts.replace, "replace-builtin", false, "run only the scenario files' probes, not the built-in matrix")
	f.DurationVar(&opts.timeout, "timeout", 0, "bound the whole run (default: the config's timeouts.run)")
	return cmd
}

func runVerify(cmd *cobra.Command, ios *ioStreams, opts *verifyOptions) error {
	if opts.configPath == "" {
		return usageErrorf("verify: --config FILE is required")
	}
	if opts.timeout < 0 {
		return usageErrorf("verify: --timeout %s: must not be negative", opts.timeout)
	}
	cfg, err := config.Load(opts.configPath)
	if err != nil {
		return err // names file:line:field; exit 2
	}
	extra, err := loadScenarioFiles(cfg, opts.scenarioFiles)
	if err != nil {
		return err
	}
	if opts.replace && len(extra) == 0 {
		return usageErrorf("verify: --replace-builtin needs probes from scenario files (scenarios: in the config, or --scenarios)")
	}
	timeout := cfg.Timeouts.Run
	if opts.timeout > 0 {
		timeout = opts.timeout
	}

	if f := cmd.Flags().Lookup("log-level"); f != nil && !f.Changed {
		// The report and the progress say what info logs would; ask for them by name.
		if err := f.Value.Set("warn"); err != nil {
			return err
		}
	}
	progress, logger, err := newProgressLogger(cmd, ios)
	if err != nil {
		return err
	}

	parent := cmdContext(cmd)
	ctx, cancel := context.WithTimeout(parent, timeout)
	defer cancel()
	res, err := opts.verify(ctx, cfg, harness.VerifyOptions{
		Logger:   logger,
		Progress: progressFunc(progress),
		Extra:    extra,
		Replace:  opts.replace,
	})
	progress.Clear()
	if err != nil {
		switch {
		case errors.Is(err, harness.ErrConfig):
			// The probes contradict each other or the plan: the config's fault (exit 2).
			return &config.Error{File: cfg.File, Msg: strings.TrimPrefix(err.Error(), harness.ErrConfig.Error()+": ")}
		case parent.Err() != nil:
			err = fmt.Errorf("verify: interrupted: %w", err)
		case errors.Is(ctx.Err(), context.DeadlineExceeded):
			err = fmt.Errorf("verify: no verdict within %s (--timeout, or timeouts.run in %s): %w", timeout, cfg.File, err)
		default:
			err = fmt.Errorf("verify: %w", err)
		}
	}

	var verdicts []scenarios.Verdict
	summary := report.Summary{}
	if res != nil {
		verdicts = res.Verdicts
		summary = report.Summarize(verdicts)
		summary.Elapsed, summary.RunID, summary.Started = res.Elapsed, res.RunID, res.Started
		if werr := printReport(ios, opts, verdicts, summary); werr != nil {
			return errors.Join(err, werr)
		}
	}
	if werr := writeJUnitReport(opts.junit, verdicts, summary.Elapsed, err, "verify", ""); werr != nil {
		return errors.Join(err, werr)
	}
	if err != nil {
		return err // environment: exit 3
	}
	return verdictsErr("verify", opts.configPath, summary, verdicts)
}

func printReport(ios *ioStreams, opts *verifyOptions, verdicts []scenarios.Verdict, summary report.Summary) error {
	if opts.json {
		if err := report.JSON(ios.Out, verdicts, summary); err != nil {
			return fmt.Errorf("print report: %w", err)
		}
		return nil
	}
	opt := report.TableOptions{Color: ios.StdoutTTY}
	if ios.StdoutTTY {
		opt.Width = writerWidth(ios.Out)
	}
	if err := report.Table(ios.Out, verdicts, opt); err != nil {
		return fmt.Errorf("print report: %w", err)
	}
	return nil
}

// loadScenarioFiles reads the config's scenario files (relative to the config's folder)
// and then those from --scenarios (relative to the working directory). A file that is
// missing or does not parse is a configuration error (exit 2).
func loadScenarioFiles(cfg *config.Config, flagFiles []string) ([]scenarios.Probe, error) {
	var probes []scenarios.Probe
	load := func(path string, fromConfig int) error {
		data, err := os.ReadFile(path)
		if err != nil {
			if fromConfig >= 0 {
				return &config.Error{File: cfg.File, Field: fmt.Sprintf("scenarios.%d", fromConfig),
					Msg: fmt.Sprintf("read scenario file: %v", err)}
			}
			return usageErrorf("--scenarios: %v", err)
		}
		ps, err := scenarios.ParseFile(path, data)
		if err != nil {
			return scenarioFileError(path, err)
		}
		probes = append(probes, ps...)
		return nil
	}
	dir := filepath.Dir(cfg.File)
	for i, f := range cfg.Scenarios {
		if !filepath.IsAbs(f) {
			f = filepath.Join(dir, f)
		}
		if err := load(f, i); err != nil {
			return nil, err
		}
	}
	for _, f := range flagFiles {
		if err := load(f, -1); err != nil {
			return nil, err
		}
	}
	return probes, nil
}

// scenarioFileError turns scenario file errors into config errors (exit 2) that keep
// their file, line and field.
func scenarioFileError(path string, err error) error {
	var fes scenarios.FileErrors
	var fe *scenarios.FileError
	switch {
	case errors.As(err, &fes):
		out := make(config.Errors, len(fes))
		for i, e := range fes {
			out[i] = &config.Error{File: e.File, Line: e.Line, Field: e.Field, Msg: e.Msg}
		}
		return out
	case errors.As(err, &fe):
		return &config.Error{File: fe.File, Line: fe.Line, Field: fe.Field, Msg: fe.Msg}
	default:
		return &config.Error{File: path, Msg: err.Error()}
	}
}

// writerWidth is w's width in columns when it is a terminal, else 0 (unknown).
func writerWidth(w io.Writer) int {
	f, ok := w.(*os.File)
	if !ok {
		return 0
	}
	width, _, err := term.GetSize(int(f.Fd()))
	if err != nil {
		return 0
	}
	return width
}
