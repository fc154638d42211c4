package main

// `splitcheck run --hermetic`: the whole matrix against a throwaway Stalwart in
// Docker (package harness/hermetic). The integrator's run command calls
// addHermeticFlags on its flag set and, when --hermetic is given, hermeticRunE
// from its RunE with the shared flags (--config, --json, --junit, --timeout,
// --scenarios, --replace-builtin) copied into hermeticOptions.

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	tclog "github.com/testcontainers/testcontainers-go/log"

	"github.com/splitcheck/splitcheck/harness/config"
	"github.com/splitcheck/splitcheck/harness/hermetic"
	"github.com/splitcheck/splitcheck/harness/report"
	"github.com/splitcheck/splitcheck/harness/stalwart"
	"github.com/splitcheck/splitcheck/scenarios"
)

// hermeticRunFunc runs the hermetic suite; tests replace hermetic.Run with a fake.
type hermeticRunFunc func(ctx context.Context, opts hermetic.Options) (*hermetic.Result, error)

// hermeticOptions are the flags of `splitcheck run --hermetic`.
type hermeticOptions struct {
	// image and relayImage are --image and --relay-image.
	image      string
	relayImage string
	// configPath (--config, optional) supplies the plan, scenario files, timeouts
	// and proxy settings; its target, fakes, stalwart and migration sections are
	// replaced by the hermetic run's own.
	configPath    string
	json          bool
	junit         string
	timeout       time.Duration
	scenarioFiles []string
	replace       bool

	// logger (nil: silent) and progress (nil: none) are set by hermeticRunE.
	logger   *slog.Logger
	progress *report.Progress
	// run is hermetic.Run unless a test replaces it.
	run hermeticRunFunc
}

// addHermeticFlags registers the flags only hermetic mode has.
func addHermeticFlags(f *pflag.FlagSet, opts *hermeticOptions) {
	f.StringVar(&opts.image, "image", stalwart.DefaultImage, "with --hermetic: the Stalwart `IMAGE` to run")
	f.StringVar(&opts.relayImage, "relay-image", hermetic.DefaultRelayImage, "with --hermetic: the socat `IMAGE` of the two TCP relays")
}

// hermeticRunE runs `run --hermetic` for a cobra command: it sets up the progress
// line and the logger (through the progress writer, so logs never overwrite the
// live line) and calls runHermetic.
func hermeticRunE(cmd *cobra.Command, ios *ioStreams, opts hermeticOptions) error {
	progress, logger, err := newProgressLogger(cmd, ios)
	if err != nil {
		return err
	}
	opts.logger, opts.progress = logger, progress
	// testcontainers-go prints its own progress (network, reaper) through a
	// process-wide logger: send it to ours, at debug level, for this command.
	tclog.SetDefault(tcSlog{logger})
	return runHermetic(cmdContext(cmd), ios, opts)
}

// tcSlog is testcontainers' logger interface on top of slog, at debug level.
type tcSlog struct{ l *slog.Logger }

func (t tcSlog) Printf(format string, args ...any) {
	t.l.Debug(strings.TrimSpace(fmt.Sprintf(format, args...)), "component", "testcontainers")
}

// runHermetic starts Stalwart and everything around it in Docker, runs every check,
// prints the report (the table, or JSON with --json; JUnit with --junit, even when
// the run fails), and removes everything. Exit codes through exitCode: 1 for a
// routing mismatch, 2 for a bad --config or flag, 3 for everything else, among it
// "no Docker engine reachable" (said in those words, naming where it looked).
func runHermetic(ctx context.Context, ios *ioStreams, opts hermeticOptions) error {
	if opts.timeout < 0 {
		return usageErrorf("run --hermetic: --timeout %s: must not be negative", opts.timeout)
	}
	if opts.image == "" {
		return usageErrorf("run --hermetic: --image must not be empty")
	}
	if opts.run == nil {
		opts.run = hermetic.Run
	}
	ho := hermetic.Options{
		Image:      opts.image,
		RelayImage: opts.relayImage,
		Timeout:    opts.timeout,
		Logger:     opts.logger,
	}
	// Scenario files: those of --config (relative to its folder), then --scenarios.
	cfg := &config.Config{File: "."}
	if opts.configPath != "" {
		var err error
		if cfg, err = config.Load(opts.configPath); err != nil {
			return err // names file:line:field; exit 2
		}
		ho.Plan = hermetic.PlanFromConfig(cfg)
		ho.Timeouts = cfg.Timeouts
		ho.ProxyVersion = cfg.Proxy.Version
		ho.Announce = cfg.Proxy.Announce
		if cfg.Migration != nil && cfg.Migration.PublicURL != "" {
			ho.PublicURL = cfg.Migration.PublicURL
		}
	}
	extra, err := loadScenarioFiles(cfg, opts.scenarioFiles)
	if err != nil {
		return err
	}
	if opts.replace && len(extra) == 0 {
		return usageErrorf("run --hermetic: --replace-builtin needs probes from scenario files (scenarios: in the config, or --scenarios)")
	}
	ho.Extra, ho.Replace = extra, opts.replace
	if opts.progress != nil {
		ho.Progress = progressFunc(opts.progress)
	}

	res, err := opts.run(ctx, ho)
	if opts.progress != nil {
		opts.progress.Clear()
	}
	if err != nil && ctx.Err() != nil {
		err = fmt.Errorf("run --hermetic: interrupted (everything started was removed): %w", err)
	}

	var verdicts []scenarios.Verdict
	summary := report.Summary{}
	if res != nil && res.Verify != nil {
		verdicts = res.Verify.Verdicts
		summary = report.Summarize(verdicts)
		summary.Elapsed, summary.RunID, summary.Started = res.Verify.Elapsed, res.Verify.RunID, res.Verify.Started
		if werr := printReport(ios, &verifyOptions{json: opts.json}, verdicts, summary); werr != nil {
			return errors.Join(err, werr)
		}
	}
	if werr := writeJUnitReport(opts.junit, verdicts, summary.Elapsed, err, "hermetic", ""); werr != nil {
		return errors.Join(err, werr)
	}
	mismatch := res.Mismatch()
	if (err != nil && !errors.Is(err, hermetic.ErrNoDocker)) || mismatch != nil {
		// What a person needs to see why: where everything listened and the
		// tail of Stalwart's and the relays' output.
		hermetic.WriteDiagnostics(ios.ErrOut, res)
	}
	if err != nil {
		return err // environment: exit 3 (2 for a configuration error)
	}
	return verdictsErr("run --hermetic", "", summary, verdicts)
}
