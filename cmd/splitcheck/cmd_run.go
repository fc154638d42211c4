package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/splitcheck/splitcheck/harness"
	"github.com/splitcheck/splitcheck/harness/config"
	"github.com/splitcheck/splitcheck/harness/report"
	"github.com/splitcheck/splitcheck/harness/stalwart"
	"github.com/splitcheck/splitcheck/harness/stalwartobs"
	"github.com/splitcheck/splitcheck/scenarios"
)

// runOptions are the flags of `splitcheck run`.
type runOptions struct {
	configPath    string
	rollbackAfter bool
	yes           bool
	snapshot      string
	accountsFrom  []string
	json          bool
	junit         string
	timeout       time.Duration
	scenarioFiles []string
	replace       bool
	hermetic      bool
	// herm holds --image and --relay-image (addHermeticFlags) and, in tests, the
	// hermetic runner.
	herm hermeticOptions

	now    func() time.Time
	verify verifyFunc
}

// The check the public URL adds to the report.
const (
	publicURLCheck = "public-url"
	publicURLKind  = scenarios.Kind("public-url")
)

func newRunCmd(ios *ioStreams) *cobra.Command {
	return newRunCmdWith(ios, harness.Verify, nil)
}

// newRunCmdWith is newRunCmd with verify (and, when not nil, the hermetic
// runner) replaced, for tests.
func newRunCmdWith(ios *ioStreams, verify verifyFunc, hermeticRun hermeticRunFunc) *cobra.Command {
	opts := &runOptions{verify: verify, now: time.Now}
	opts.herm.run = hermeticRun
	cmd := &cobra.Command{
		Use:   "run --config FILE [--rollback-after] [--yes] [--snapshot FILE] [--json] [--junit FILE] [--timeout D] [--hermetic [--image IMAGE]]",
		Short: "Plan, apply, verify and (optionally) roll back a Stalwart migration in one go, with one report",
		Long: `run does what plan, apply, verify and rollback do, in that order, against the Stalwart
server named in the config, and prints one report: the plan's change count, what apply
did (its snapshot is written first, as with apply), the verify table (or JSON, or
JUnit), the public URL check when migration.public_url is set, and what was restored.

migration.mode says how the "source" route is checked:
  rehearsal (default)  while verify runs, the source relay route points at the
                       harness's fake source (migration.rehearsal_source, else
                       fakes.source); the real source's address is restored
                       afterwards on every path: success, failed checks, errors,
                       timeout and Ctrl-C.
  live                 the route stays on the real source; a source probe counts
                       when Stalwart's queue shows its recipient completed with
                       the real source as the responding host. With
                       migration.source_test_address and source_mailbox set,
                       that address is probed too and its verdict comes from
                       its mailbox on the source, read over IMAP (a message
                       relayed at once leaves the queue before it is seen).
The report names the mode that produced the verdicts. Local accounts whose
mailbox protocol is jmap are read through Stalwart's JMAP mail API (the passwords
of test accounts apply creates come from its snapshot). For source and mx probes
that are late or missing, the report adds what Stalwart's queue holds.

Test accounts that an earlier apply created are not created again, so their
passwords are only in that apply's snapshot: name it with --accounts-from.

--rollback-after restores the snapshot afterwards (also when checks fail); on a
server not marked hermetic it needs --yes, as apply's destructive changes do.
--timeout bounds the verify step (default: the config's timeouts.run).
--hermetic runs the whole matrix against a throwaway Stalwart in Docker instead
(see the hermetic flags); --config is then optional.

Exit codes: 0 every check passed, 1 a routing mismatch (or the public URL check
failed), 2 bad usage or configuration, 3 Stalwart or the environment unreachable,
apply failed (after restoring), or the rehearsal route or the rollback could not
be restored.`,
		Example: `  splitcheck run --config staging.yaml --junit report.xml
  splitcheck run --config staging.yaml --rollback-after --yes
  splitcheck run --hermetic --junit report.xml`,
		Args: noArgs("run", "--config"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runRun(cmd, ios, opts)
		},
	}
	f := cmd.Flags()
	f.StringVarP(&opts.configPath, "config", "c", "", "the run's configuration file (YAML; required unless --hermetic)")
	f.BoolVar(&opts.rollbackAfter, "rollback-after", false, "restore the snapshot after verifying")
	f.BoolVarP(&opts.yes, "yes", "y", false, "allow changes that replace or delete existing configuration")
	f.StringVar(&opts.snapshot, "snapshot", "", "write apply's snapshot to `FILE` (must not exist; default splitcheck-snapshot-<time>.json)")
	f.StringArrayVar(&opts.accountsFrom, "accounts-from", nil, "read test account passwords from an earlier apply's snapshot `FILE` (repeatable)")
	f.BoolVar(&opts.json, "json", false, "print a run object, one JSON object per check and a summary object")
	f.StringVar(&opts.junit, "junit", "", "also write a JUnit XML report to `FILE`")
	f.DurationVar(&opts.timeout, "timeout", 0, "bound the verify step (default: the config's timeouts.run)")
	f.StringArrayVar(&opts.scenarioFiles, "scenarios", nil, "a scenario `FILE` adding probes (repeatable)")
	f.BoolVar(&opts.replace, "replace-builtin", false, "run only the scenario files' probes, not the built-in matrix")
	f.BoolVar(&opts.hermetic, "hermetic", false, "run against a throwaway Stalwart in Docker")
	addHermeticFlags(f, &opts.herm)
	return cmd
}

// runRecord is the first object of run's --json output (type "run"): what
// happened to the server around the checks.
type runRecord struct {
	Type        string   `json:"type"` // always "run"
	Server      string   `json:"server"`
	Mode        string   `json:"mode"`
	PlanChanges int      `json:"plan_changes"`
	Destructive int      `json:"destructive,omitempty"`
	Restart     []string `json:"restart,omitempty"`
	Applied     int      `json:"applied"`
	Snapshot    string   `json:"snapshot,omitempty"`
	// ApplyError, Restored and Kept describe a failed apply and its restore.
	ApplyError string            `json:"apply_error,omitempty"`
	Restored   []stalwart.Change `json:"restored,omitempty"`
	Kept       []string          `json:"kept,omitempty"`
	Rehearsal  *rehearsalRecord  `json:"rehearsal,omitempty"`
	Live       *liveRecord       `json:"live,omitempty"`
	Rollback   *rollbackRecord   `json:"rollback,omitempty"`
	Error      string            `json:"error,omitempty"`
}

// rehearsalRecord is the source route's swap to the fake source and back.
type rehearsalRecord struct {
	FakeSource string `json:"fake_source"`
	RealSource string `json:"real_source"`
	// Swapped is how many fields changed to point at the fake source (0: it
	// already did), Restored how many were put back.
	Swapped  int    `json:"swapped"`
	Restored int    `json:"restored"`
	Snapshot string `json:"snapshot,omitempty"` // kept only when the restore failed
	Error    string `json:"error,omitempty"`
}

// liveRecord says where the live-mode source evidence came from.
type liveRecord struct {
	RealSource string `json:"real_source"`
	Observer   string `json:"observer"`
	// SourceMailbox is the source test address whose verdicts come from its
	// mailbox on the source, and the IMAP server ("" without one).
	SourceMailbox string `json:"source_mailbox,omitempty"`
}

// rollbackRecord is --rollback-after's result.
type rollbackRecord struct {
	Requested bool     `json:"requested"`
	Changes   int      `json:"changes"`
	Kept      []string `json:"kept,omitempty"`
	Error     string   `json:"error,omitempty"`
}

// runState is one `splitcheck run`.
type runState struct {
	cmd      *cobra.Command
	ios      *ioStreams
	opts     *runOptions
	st       *stalwartSetup
	cfg      *config.Config
	log      *slog.Logger
	progress *report.Progress
	extra    []scenarios.Probe
	timeout  time.Duration
	snapPath string
	// earlier are the snapshots of --accounts-from.
	earlier []*stalwart.Snapshot
	// planned is set once the plan was read: the report has something to say.
	planned bool

	rec      runRecord
	res      *harness.Result
	verdicts []scenarios.Verdict
	// envErr is why the run could not finish (exit 3, or 2 for configuration);
	// failed checks are not errors.
	envErr error
}

func runRun(cmd *cobra.Command, ios *ioStreams, opts *runOptions) error {
	if err := checkRunFlags(cmd, opts); err != nil {
		return err
	}
	if opts.hermetic {
		h := opts.herm
		h.configPath, h.json, h.junit, h.timeout = opts.configPath, opts.json, opts.junit, opts.timeout
		h.scenarioFiles, h.replace = opts.scenarioFiles, opts.replace
		return hermeticRunE(cmd, ios, h)
	}
	if f := cmd.Flags().Lookup("log-level"); f != nil && !f.Changed {
		// The report says what info logs would; ask for them by name.
		if err := f.Value.Set("warn"); err != nil {
			return err
		}
	}
	st, err := loadStalwart(cmd, ios, "run", opts.configPath, true)
	if err != nil {
		return err
	}
	r := &runState{cmd: cmd, ios: ios, opts: opts, st: st, cfg: st.cfg}
	if opts.rollbackAfter && !opts.yes && !st.hermetic {
		return usageErrorf("run: --rollback-after deletes what apply created on %s, which is not marked hermetic: pass --yes", st.client.URL)
	}
	if r.extra, err = loadScenarioFiles(r.cfg, opts.scenarioFiles); err != nil {
		return err
	}
	if opts.replace && len(r.extra) == 0 {
		return usageErrorf("run: --replace-builtin needs probes from scenario files (scenarios: in the config, or --scenarios)")
	}
	for _, path := range opts.accountsFrom {
		snap, err := stalwart.ReadSnapshotFile(path)
		if err != nil {
			return usageErrorf("run: --accounts-from: %v", err)
		}
		r.earlier = append(r.earlier, snap)
	}
	r.timeout = r.cfg.Timeouts.Run
	if opts.timeout > 0 {
		r.timeout = opts.timeout
	}
	r.snapPath = opts.snapshot
	if r.snapPath == "" {
		r.snapPath = "splitcheck-snapshot-" + opts.now().UTC().Format("20060102T150405Z") + ".json"
	}
	if r.progress, r.log, err = newProgressLogger(cmd, ios); err != nil {
		return err
	}
	st.client.Logger = r.log
	r.rec = runRecord{Type: "run", Server: st.client.URL, Mode: r.cfg.Migration.Mode}

	r.envErr = r.execute(cmdContext(cmd))
	return r.finish()
}

// checkRunFlags refuses flag combinations that mean nothing.
func checkRunFlags(cmd *cobra.Command, opts *runOptions) error {
	if opts.timeout < 0 {
		return usageErrorf("run: --timeout %s: must not be negative", opts.timeout)
	}
	if opts.hermetic {
		for _, name := range []string{"rollback-after", "snapshot"} {
			if cmd.Flags().Changed(name) {
				return usageErrorf("run: --%s has no meaning with --hermetic (the server is thrown away)", name)
			}
		}
		return nil
	}
	for _, name := range []string{"image", "relay-image"} {
		if cmd.Flags().Changed(name) {
			return usageErrorf("run: --%s needs --hermetic", name)
		}
	}
	if opts.configPath == "" {
		return usageErrorf("run: --config FILE is required (or --hermetic)")
	}
	return nil
}

// execute plans, applies, swaps the route for a rehearsal, verifies, and undoes
// what it must. The rehearsal route and --rollback-after are restored in defers,
// with a context of their own, so that a failure or an interrupt cannot skip
// them. It returns what stopped the run, if anything.
func (r *runState) execute(parent context.Context) (err error) {
	c, cfg := r.st.client, r.cfg

	// Apply reads the state and plans once; its plan is the run's.
	applied, err := c.Apply(parent, r.st.desired, stalwart.ApplyOptions{
		SnapshotPath: r.snapPath, Confirmed: r.opts.yes, Hermetic: r.st.hermetic})
	if applied != nil && applied.Plan != nil {
		plan := applied.Plan
		r.rec.PlanChanges, r.rec.Destructive, r.rec.Restart = len(plan.Changes), len(plan.Destructive()), plan.Restart
		r.planned = true
	}
	if applied != nil {
		r.rec.Applied, r.rec.Snapshot = len(applied.Applied), applied.SnapshotPath
	}
	if err != nil {
		r.rec.ApplyError = err.Error()
		var ae *stalwart.ApplyError
		if errors.As(err, &ae) {
			r.rec.Restored, r.rec.Kept = ae.Restored, ae.Kept
		}
		var ce *stalwart.ConfirmationError
		if errors.As(err, &ce) {
			return usageErrorf("run: %d change(s) replace or delete configuration on %s, which is not marked hermetic: "+
				"review them (splitcheck plan) and pass --yes", len(ce.Changes), c.URL)
		}
		return r.st.wrap("run: apply", err)
	}
	if r.opts.rollbackAfter {
		r.rec.Rollback = &rollbackRecord{Requested: true}
		if applied.Snapshot != nil {
			defer func() { err = errors.Join(err, r.rollbackAfter(parent, applied.Snapshot)) }()
		}
	}

	realSource := fmt.Sprintf("%s:%d", cfg.Migration.Source.Address, cfg.Migration.Source.Port)
	if cfg.Migration.Mode == config.ModeLive {
		r.rec.Live = &liveRecord{RealSource: realSource,
			Observer: "Stalwart's queue (recipient completed at " + cfg.Migration.Source.Address + ")"}
		return r.verifyStep(parent, applied)
	}
	fake := stalwart.RehearsalSource(cfg)
	r.rec.Rehearsal = &rehearsalRecord{FakeSource: fake, RealSource: realSource}
	swapped, swapErr := r.swap(parent, fake)
	if swapped != nil {
		defer func() { err = errors.Join(err, r.restore(parent, swapped)) }()
	}
	if swapErr != nil {
		return swapErr
	}
	return r.verifyStep(parent, applied)
}

// swapPath is where the rehearsal swap's own snapshot goes.
func (r *runState) swapPath() string {
	return strings.TrimSuffix(r.snapPath, ".json") + ".rehearsal.json"
}

// swap points the source route at the fake source with an apply of its own
// (snapshot first). It returns that snapshot when something changed.
func (r *runState) swap(ctx context.Context, fake string) (*stalwart.Snapshot, error) {
	d, err := r.st.desired.Rehearsal(fake)
	if err != nil {
		return nil, &config.Error{File: r.cfg.File, Field: "migration.rehearsal_source", Msg: err.Error()}
	}
	// The swap replaces fields of the route apply just wrote, and is always
	// undone: it needs no --yes of its own. The route's secret is the configured
	// one apply just wrote: the server masks it, so the swap is told it, for its
	// snapshot and whatever restores it.
	res, err := r.st.client.Apply(ctx, d, stalwart.ApplyOptions{SnapshotPath: r.swapPath(), Confirmed: true, Hermetic: r.st.hermetic,
		KnownRelaySecret: r.st.desired.Relay.AuthSecret})
	if res != nil {
		r.rec.Rehearsal.Swapped = len(res.Applied)
	}
	if err != nil {
		r.rec.Rehearsal.Error = err.Error()
		var ae *stalwart.ApplyError
		switch {
		case errors.As(err, &ae) && ae.RestoreErr == nil:
			_ = os.Remove(r.swapPath()) // the failed swap restored itself
		case errors.As(err, &ae):
			r.rec.Rehearsal.Snapshot = r.swapPath()
		case res != nil && res.Snapshot != nil:
			// Written, then failed outside the steps: restore it.
			return res.Snapshot, fmt.Errorf("run: point the source route at the fake source %s: %w", fake, err)
		}
		return nil, fmt.Errorf("run: point the source route at the fake source %s: %w", fake, err)
	}
	r.log.Info("run: the source route points at the fake source", "fake_source", fake, "changes", len(res.Applied))
	return res.Snapshot, nil
}

// restore puts the real source back from the swap's snapshot; it runs even
// when ctx has ended.
func (r *runState) restore(parent context.Context, snap *stalwart.Snapshot) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(parent), stalwart.DefaultRestoreTimeout)
	defer cancel()
	res, err := r.st.client.Rollback(ctx, snap, stalwart.RollbackOptions{Confirmed: true, Hermetic: r.st.hermetic})
	if res != nil {
		r.rec.Rehearsal.Restored = len(res.Changes)
		if err == nil && len(res.Kept) > 0 {
			// The swap only changes the route's fields: anything not put back
			// leaves the real source misconfigured.
			err = fmt.Errorf("not restored: %s", strings.Join(res.Kept, "; "))
		}
	}
	if err != nil {
		r.rec.Rehearsal.Error = err.Error()
		r.rec.Rehearsal.Snapshot = r.swapPath()
		return fmt.Errorf("run: restore the source route to %s: %w (it may still point at the fake source: "+
			"splitcheck rollback --config %s --snapshot %s --yes)", r.rec.Rehearsal.RealSource, err, r.cfg.File, r.swapPath())
	}
	if rmErr := os.Remove(r.swapPath()); rmErr != nil && !errors.Is(rmErr, os.ErrNotExist) {
		r.log.Warn("run: could not remove the rehearsal snapshot", "path", r.swapPath(), "err", rmErr)
	}
	return nil
}

// rollbackAfter restores apply's snapshot (--rollback-after); it runs even when
// ctx has ended.
func (r *runState) rollbackAfter(parent context.Context, snap *stalwart.Snapshot) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(parent), stalwart.DefaultRestoreTimeout)
	defer cancel()
	res, err := r.st.client.Rollback(ctx, snap, stalwart.RollbackOptions{Confirmed: r.opts.yes, Hermetic: r.st.hermetic})
	if res != nil {
		r.rec.Rollback.Changes, r.rec.Rollback.Kept = len(res.Changes), res.Kept
	}
	if err != nil {
		r.rec.Rollback.Error = err.Error()
		return fmt.Errorf("run: roll back %s: %w", r.rec.Snapshot, err)
	}
	return nil
}

// verifyStep runs the checks with the Stalwart observers, then adds the queue
// evidence, the mode and the public URL check to the verdicts.
func (r *runState) verifyStep(parent context.Context, applied *stalwart.ApplyResult) error {
	cfg, c := r.cfg, r.st.client
	vo := harness.VerifyOptions{
		Logger:   r.log,
		Progress: progressFunc(r.progress),
		Extra:    r.extra,
		Replace:  r.opts.replace,
	}
	if stalwartobs.UsesJMAP(cfg) {
		local, err := stalwartobs.NewLocal(cfg, stalwartobs.LocalOptions{Snapshot: r.accounts(applied.Snapshot), Logger: r.log})
		if err != nil {
			return err
		}
		defer local.Close()
		cctx, cancel := context.WithTimeout(parent, 2*cfg.Timeouts.Connect)
		err = local.Check(cctx)
		cancel()
		if err != nil {
			return fmt.Errorf("run: %w%s", err, r.passwordHint(applied.Snapshot))
		}
		vo.LocalObserver = local
	}
	vcfg := cfg
	var src *sourceObserver
	if cfg.Migration.Mode == config.ModeLive {
		queue := &stalwartobs.Queue{Client: c, Host: cfg.Migration.Source.Address, Sender: cfg.Probe.Sender, Since: r.opts.now()}
		vo.Observers = map[scenarios.Route]harness.Observer{scenarios.RouteSource: queue}
		if m := cfg.Migration.SourceMailbox; m != nil {
			addr := cfg.Migration.SourceTestAddress
			mailbox := newSourceMailbox(addr, m, cfg.Timeouts.Connect, r)
			defer mailbox.Close()
			cctx, cancel := context.WithTimeout(parent, 2*cfg.Timeouts.Connect)
			err := mailbox.Check(cctx)
			cancel()
			if err != nil {
				return fmt.Errorf("run: source mailbox (migration.source_mailbox): %w", err)
			}
			src = &sourceObserver{addr: addr, server: m.Address, mailbox: mailbox, fallback: queue}
			vo.Observers[scenarios.RouteSource] = src
			vcfg = withSourceTestAddress(cfg)
			if r.rec.Live != nil {
				r.rec.Live.Observer = src.describe(r.rec.Live.Observer)
				r.rec.Live.SourceMailbox = addr + " at " + m.Address
			}
		}
	}

	ctx, cancel := context.WithTimeout(parent, r.timeout)
	defer cancel()
	res, err := r.opts.verify(ctx, vcfg, vo)
	r.progress.Clear()
	if err != nil {
		switch {
		case errors.Is(err, harness.ErrConfig):
			err = &config.Error{File: cfg.File, Msg: strings.TrimPrefix(err.Error(), harness.ErrConfig.Error()+": ")}
		case parent.Err() != nil:
			err = fmt.Errorf("run: verify interrupted: %w", err)
		case errors.Is(ctx.Err(), context.DeadlineExceeded):
			err = fmt.Errorf("run: verify: no verdict within %s (--timeout, or timeouts.run in %s): %w", r.timeout, cfg.File, err)
		default:
			err = fmt.Errorf("run: verify: %w", err)
		}
	}
	if res == nil {
		return err
	}
	r.res = res
	r.verdicts = res.Verdicts
	if src != nil {
		src.addMailboxEvidence(r.verdicts)
	}
	if parent.Err() == nil {
		qctx, cancel := context.WithTimeout(parent, 4*cfg.Timeouts.Connect) // for every late or missing probe
		stalwartobs.AddQueueEvidence(qctx, c, r.verdicts, cfg.Probe.Sender, 0)
		cancel()
		if u := cfg.Migration.PublicURL; u != "" {
			r.verdicts = append(r.verdicts, r.publicURL(parent, u))
		}
	}
	for i := range r.verdicts {
		r.verdicts[i].Mode = cfg.Migration.Mode
	}
	return err
}

// accounts merges the test accounts of --accounts-from and of this run's apply
// (which wins), for the JMAP observer's logins.
func (r *runState) accounts(current *stalwart.Snapshot) *stalwart.Snapshot {
	merged := &stalwart.Snapshot{}
	for _, s := range append(slices.Clone(r.earlier), current) {
		if s == nil {
			continue
		}
		for _, a := range s.Accounts {
			merged.Accounts = slices.DeleteFunc(merged.Accounts, func(b stalwart.AccountSnapshot) bool {
				return strings.EqualFold(a.Address, b.Address)
			})
			merged.Accounts = append(merged.Accounts, a)
		}
	}
	return merged
}

// passwordHint explains a refused JMAP login for a test account this run did
// not create.
func (r *runState) passwordHint(current *stalwart.Snapshot) string {
	var missing []string
	for _, a := range r.cfg.Migration.TestAccounts {
		if _, ok := r.accounts(current).Account(a.Address); !ok && r.isJMAP(a.Address) {
			missing = append(missing, a.Address)
		}
	}
	if len(missing) == 0 {
		return ""
	}
	return fmt.Sprintf(" (test account(s) %s existed already, so this run has no password for them: "+
		"pass --accounts-from with the snapshot of the apply that created them)", strings.Join(missing, ", "))
}

func (r *runState) isJMAP(addr string) bool {
	for _, a := range r.cfg.Plan.Local {
		if strings.EqualFold(a.Address, addr) && strings.EqualFold(a.Mailbox.Protocol, stalwartobs.ProtocolJMAP) {
			return true
		}
	}
	return false
}

// publicURL is the public URL check as a verdict: JMAP autodiscovery on the
// server must lead to a session whose apiUrl is on the public URL.
func (r *runState) publicURL(parent context.Context, want string) scenarios.Verdict {
	start := time.Now()
	ctx, cancel := context.WithTimeout(parent, 2*r.cfg.Timeouts.Connect)
	defer cancel()
	v := scenarios.Verdict{Check: scenarios.Check{Name: publicURLCheck, Kind: publicURLKind}}
	chk, err := r.st.client.CheckPublicURL(ctx, "", want)
	v.Elapsed = time.Since(start)
	switch {
	case err != nil:
		v.Status, v.Detail = scenarios.StatusError, fmt.Sprintf("JMAP autodiscovery on %s: %v", r.st.client.URL, err)
	case chk.OK:
		v.Status, v.Detail = scenarios.StatusPass, "JMAP autodiscovery advertises apiUrl "+chk.APIURL
	default:
		v.Status = scenarios.StatusFail
		v.Detail = fmt.Sprintf("JMAP autodiscovery advertises apiUrl %s, which is not on %s: set STALWART_PUBLIC_URL=%s and restart Stalwart",
			chk.APIURL, want, want)
	}
	return v
}

// finish prints the report, writes the JUnit file and picks the exit status.
func (r *runState) finish() error {
	err := r.envErr
	if err != nil {
		r.rec.Error = err.Error()
	}
	summary := report.Summarize(r.verdicts)
	if r.res != nil {
		summary.Elapsed, summary.RunID, summary.Started = r.res.Elapsed, r.res.RunID, r.res.Started
	}
	var werr error
	if r.opts.json {
		werr = r.printJSON(summary)
	} else {
		werr = r.printText()
	}
	if werr != nil {
		return errors.Join(err, werr)
	}
	if werr := writeJUnitReport(r.opts.junit, r.verdicts, summary.Elapsed, err, "run", r.rec.Mode); werr != nil {
		return errors.Join(err, werr)
	}
	if err != nil {
		return err // usage or configuration (2), environment (3)
	}
	return verdictsErr("run", r.opts.configPath, summary, r.verdicts)
}

func (r *runState) printJSON(summary report.Summary) error {
	enc := json.NewEncoder(r.ios.Out)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(r.rec); err != nil {
		return fmt.Errorf("print report: %w", err)
	}
	if r.res == nil && len(r.verdicts) == 0 {
		return nil
	}
	if err := report.JSON(r.ios.Out, r.verdicts, summary); err != nil {
		return fmt.Errorf("print report: %w", err)
	}
	return nil
}

func (r *runState) printText() error {
	w, rec := r.ios.Out, r.rec
	fmt.Fprintf(w, "splitcheck run against Stalwart at %s, mode %s\n", rec.Server, rec.Mode)
	if !r.planned {
		fmt.Fprintln(w, "Stopped before reading the plan; nothing was changed.")
		return nil
	}
	line := fmt.Sprintf("Plan: %d change(s)", rec.PlanChanges)
	if rec.Destructive > 0 {
		line += fmt.Sprintf(", %d replacing or deleting configuration", rec.Destructive)
	}
	if len(rec.Restart) > 0 {
		line += "; need a Stalwart restart to take effect: " + strings.Join(rec.Restart, ", ")
	}
	fmt.Fprintln(w, line)
	switch {
	case rec.ApplyError != "":
		printFailedApply(w, applyReport{Applied: make([]stalwart.Change, rec.Applied), Snapshot: rec.Snapshot,
			Restored: rec.Restored, Kept: rec.Kept})
		return nil
	case rec.Snapshot == "":
		fmt.Fprintln(w, "Apply: nothing to change.")
	default:
		fmt.Fprintf(w, "Apply: applied %d change(s); snapshot %s (needed for rollback; it holds the test accounts' passwords)\n",
			rec.Applied, rec.Snapshot)
	}
	if h := rec.Rehearsal; h != nil {
		switch {
		case h.Swapped == 0 && h.Error == "":
			fmt.Fprintf(w, "Rehearsal: the source route already pointed at the fake source %s (the real source is %s)\n", h.FakeSource, h.RealSource)
		case h.Swapped > 0:
			fmt.Fprintf(w, "Rehearsal: the source route pointed at the fake source %s while verifying (the real source is %s)\n",
				h.FakeSource, h.RealSource)
		}
	}
	if l := rec.Live; l != nil {
		fmt.Fprintf(w, "Live: the source route stays on the real source %s; source verdicts come from %s\n", l.RealSource, l.Observer)
	}
	if len(r.verdicts) > 0 {
		fmt.Fprintf(w, "\nVerdicts (mode %s):\n", rec.Mode)
		opt := report.TableOptions{Color: r.ios.StdoutTTY}
		if r.ios.StdoutTTY {
			opt.Width = writerWidth(r.ios.Out)
		}
		if err := report.Table(w, r.verdicts, opt); err != nil {
			return fmt.Errorf("print report: %w", err)
		}
		fmt.Fprintln(w)
	}
	if h := rec.Rehearsal; h != nil && (h.Swapped > 0 || h.Error != "") {
		if h.Error != "" {
			fmt.Fprintf(w, "Rehearsal: FAILED to restore the real source %s: %s\n", h.RealSource, h.Error)
		} else {
			fmt.Fprintf(w, "Rehearsal: the source route was restored to the real source %s (%d change(s))\n", h.RealSource, h.Restored)
		}
	}
	printRunRollback(w, rec, r.cfg.File)
	return nil
}

func printRunRollback(w io.Writer, rec runRecord, cfgFile string) {
	rb := rec.Rollback
	switch {
	case rb == nil && rec.Snapshot != "":
		fmt.Fprintf(w, "Rollback: not requested; to undo the apply: splitcheck rollback --config %s --snapshot %s\n", cfgFile, rec.Snapshot)
	case rb == nil:
	case rb.Error != "":
		fmt.Fprintf(w, "Rollback: FAILED: %s\n", rb.Error)
	case rec.Snapshot == "":
		fmt.Fprintln(w, "Rollback: nothing to roll back (apply changed nothing)")
	default:
		fmt.Fprintf(w, "Rollback: restored %d change(s) from %s\n", rb.Changes, rec.Snapshot)
	}
	if rb != nil {
		for _, k := range rb.Kept {
			fmt.Fprintf(w, "Kept: %s\n", k)
		}
	}
}
