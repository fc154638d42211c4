package main

import (
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/splitcheck/splitcheck/harness/stalwart"
)

// applyOptions are the flags of `splitcheck apply`.
type applyOptions struct {
	configPath string
	snapshot   string
	dryRun     bool
	yes        bool
	verify     bool
	json       bool
	now        func() time.Time
}

func newApplyCmd(ios *ioStreams) *cobra.Command {
	opts := &applyOptions{now: time.Now}
	cmd := &cobra.Command{
		Use:   "apply --config FILE [--snapshot FILE] [--dry-run] [--yes] [--verify] [--json]",
		Short: "Configure Stalwart for split delivery (snapshot first, undo on failure)",
		Long: `apply brings the Stalwart server named in the config to the migration section, as the
migration guide's "configure the new deployment" step does with stalwart-cli: it creates
the domains and sets allowRelaying, creates the "source" relay route, sets the outbound
route expression (local accounts -> 'local', other addresses in local domains ->
'source', the rest -> 'mx'; match and else both sent, every route name quoted), sets
proxyTrustedNetworks (with defaultHostname and defaultDomainId on a server whose
settings were never saved), creates the test accounts with random passwords, then
runs ReloadSettings (and InvalidateCaches after account changes).

Before the first write it saves every value it will change to the snapshot file (mode
0600; it also holds the test accounts' passwords) and it never overwrites an existing
one. If a step fails, or the run is interrupted, it restores the snapshot before
exiting and says what it restored. A second apply changes nothing, except that the
relay's auth secret is written every time: Stalwart never reveals a secret, so it can
be neither compared nor restored by rollback. Changes that replace or delete something
on a server not marked hermetic need --yes. --verify re-reads the server afterwards and
checks the public URL JMAP autodiscovery advertises; proxy trust and STALWART_PUBLIC_URL
take effect only after a Stalwart restart.

Exit codes: 0 applied (or nothing to do), 2 bad usage or configuration (including
destructive changes without --yes), 3 Stalwart unreachable, refusing the credentials,
its configuration in the way of the migration (a route named as the relay that is not a
relay route), a step failed (after the restore), or --verify failed.`,
		Example: `  splitcheck apply --config staging.yaml --dry-run
  splitcheck apply --config staging.yaml --snapshot before-migration.json --verify
  splitcheck rollback --config staging.yaml --snapshot before-migration.json`,
		Args: noArgs("apply", "--config"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runApply(cmd, ios, opts)
		},
	}
	f := cmd.Flags()
	f.StringVarP(&opts.configPath, "config", "c", "", "the run's configuration file (YAML; required)")
	f.StringVar(&opts.snapshot, "snapshot", "", "write the snapshot to `FILE` (must not exist; default splitcheck-snapshot-<time>.json)")
	f.BoolVar(&opts.dryRun, "dry-run", false, "show the plan and write nothing")
	f.BoolVarP(&opts.yes, "yes", "y", false, "allow changes that replace or delete existing configuration")
	f.BoolVar(&opts.verify, "verify", false, "re-read the server afterwards and check the changes took effect")
	f.BoolVar(&opts.json, "json", false, "print the result as one JSON object")
	return cmd
}

// applyReport is apply's --json output.
type applyReport struct {
	DryRun   bool              `json:"dryRun"`
	Plan     *stalwart.Plan    `json:"plan"`
	Applied  []stalwart.Change `json:"applied"`
	Snapshot string            `json:"snapshot,omitempty"`
	Restart  []string          `json:"restart,omitempty"`
	Verified []string          `json:"verified,omitempty"`
	Pending  []string          `json:"pending,omitempty"`
	// Error, Restored, Kept and RestoreError describe a failed apply and its restore.
	Error        string            `json:"error,omitempty"`
	Restored     []stalwart.Change `json:"restored,omitempty"`
	Kept         []string          `json:"kept,omitempty"`
	RestoreError string            `json:"restoreError,omitempty"`
	// InPlace is set when every change was applied and what failed came after
	// (--verify): the changes stay until a rollback.
	InPlace bool `json:"inPlace,omitempty"`
	config  string
}

func runApply(cmd *cobra.Command, ios *ioStreams, opts *applyOptions) error {
	st, err := loadStalwart(cmd, ios, "apply", opts.configPath, true)
	if err != nil {
		return err
	}
	path := opts.snapshot
	if path == "" && !opts.dryRun {
		path = "splitcheck-snapshot-" + opts.now().UTC().Format("20060102T150405Z") + ".json"
	}
	res, err := st.client.Apply(cmdContext(cmd), st.desired, stalwart.ApplyOptions{
		SnapshotPath: path,
		DryRun:       opts.dryRun,
		Confirmed:    opts.yes,
		Hermetic:     st.hermetic,
		Verify:       opts.verify,
	})
	rep := applyReport{DryRun: opts.dryRun, config: opts.configPath}
	if res != nil {
		rep.Plan, rep.Applied, rep.Snapshot = res.Plan, res.Applied, res.SnapshotPath
		rep.Restart, rep.Verified, rep.Pending = res.Restart, res.Verified, res.Pending
	}
	var ae *stalwart.ApplyError
	if errors.As(err, &ae) {
		rep.Restored, rep.Kept = ae.Restored, ae.Kept
		if ae.RestoreErr != nil {
			rep.RestoreError = ae.RestoreErr.Error()
		}
	} else if err != nil && len(rep.Applied) > 0 {
		rep.InPlace = true
	}
	if err != nil {
		rep.Error = err.Error()
	}
	if opts.json {
		if rep.Plan != nil || err == nil {
			if werr := stalwartJSON(ios.Out, rep); werr != nil {
				return errors.Join(err, werr)
			}
		}
	} else {
		printApply(ios, rep, res, err)
	}
	var ce *stalwart.ConfirmationError
	if errors.As(err, &ce) {
		return usageErrorf("apply: %d change(s) replace or delete configuration on %s, which is not marked hermetic: "+
			"review them (splitcheck plan) and pass --yes", len(ce.Changes), st.client.URL)
	}
	if err != nil {
		return st.wrap("apply", err)
	}
	return nil
}

func printApply(ios *ioStreams, rep applyReport, res *stalwart.ApplyResult, err error) {
	w := ios.Out
	switch {
	case rep.Plan == nil:
		return // failed before reading the server: the error says why
	case rep.DryRun:
		printStalwartPlan(w, rep.Plan, "apply would make")
		fmt.Fprintln(w, "\nDry run: nothing was written.")
		return
	}
	var ce *stalwart.ConfirmationError
	if errors.As(err, &ce) {
		fmt.Fprintf(ios.ErrOut, "Not applied. These changes replace or delete existing configuration:\n")
		printStalwartChanges(ios.ErrOut, ce.Changes)
		return
	}
	if rep.Error != "" {
		printFailedApply(ios.ErrOut, rep)
		return
	}
	if len(rep.Plan.Changes) == 0 {
		printStalwartPlan(w, rep.Plan, "")
	} else {
		fmt.Fprintf(w, "Applied %d change(s) to Stalwart at %s:\n\n", len(rep.Applied), rep.Plan.Server)
		printStalwartChanges(w, rep.Applied)
		fmt.Fprintf(w, "\nSnapshot (needed for rollback; it holds the test accounts' passwords): %s\n", rep.Snapshot)
		if res != nil && res.Snapshot != nil {
			for _, a := range res.Snapshot.Accounts {
				fmt.Fprintf(w, "Test account %s created (password in the snapshot)\n", a.Address)
			}
		}
		if len(rep.Restart) > 0 {
			fmt.Fprintf(w, "Restart Stalwart for these to take effect: %s\n", strings.Join(rep.Restart, ", "))
		}
		for _, n := range rep.Plan.Notes {
			fmt.Fprintf(w, "Note: %s\n", n)
		}
	}
	for _, v := range rep.Verified {
		fmt.Fprintf(w, "Verified: %s\n", v)
	}
	for _, p := range rep.Pending {
		fmt.Fprintf(w, "Not in effect yet: %s\n", p)
	}
}

func printFailedApply(w io.Writer, rep applyReport) {
	rollback := fmt.Sprintf("splitcheck rollback --config %s --snapshot %s --yes", rep.config, rep.Snapshot)
	switch {
	case rep.InPlace:
		fmt.Fprintf(w, "Applied %d change(s); they are in place, but what followed failed (see the error).\n", len(rep.Applied))
		fmt.Fprintf(w, "To undo them: %s\n", rollback)
		return
	case rep.RestoreError != "":
		fmt.Fprintf(w, "Apply failed after %d change(s), and restoring the snapshot FAILED: %s\n", len(rep.Applied), rep.RestoreError)
		fmt.Fprintf(w, "The server may be half-changed. Once it answers: %s\n", rollback)
		return
	}
	fmt.Fprintf(w, "Apply failed after %d change(s).\n", len(rep.Applied))
	if len(rep.Restored) > 0 {
		fmt.Fprintf(w, "Restored from the snapshot %s:\n", rep.Snapshot)
		printStalwartChanges(w, rep.Restored)
	} else if rep.Snapshot != "" {
		fmt.Fprintf(w, "Nothing needed restoring (snapshot %s).\n", rep.Snapshot)
	}
	for _, k := range rep.Kept {
		fmt.Fprintf(w, "Kept: %s\n", k)
	}
}
