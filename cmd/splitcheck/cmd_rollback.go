package main

import (
	"errors"
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/splitcheck/splitcheck/harness/stalwart"
)

// rollbackOptions are the flags of `splitcheck rollback`.
type rollbackOptions struct {
	configPath string
	snapshot   string
	dryRun     bool
	yes        bool
	json       bool
}

func newRollbackCmd(ios *ioStreams) *cobra.Command {
	opts := &rollbackOptions{}
	cmd := &cobra.Command{
		Use:   "rollback --config FILE --snapshot FILE [--dry-run] [--yes] [--json]",
		Short: "Restore what an apply changed on Stalwart, from its snapshot",
		Long: `rollback restores exactly what the snapshot file of an apply holds: the route
expression, the relay route's fields, allowRelaying and proxyTrustedNetworks get their
old values back, and the domains, relay route and test accounts apply created are
deleted. It never deletes what apply did not create, and reports what it had to keep
(for example defaultHostname, which Stalwart cannot unset, and a relay auth secret that
existed before apply, which Stalwart never reveals). It compares with the live
server first, so running it again changes nothing. Deleting on a server not marked
hermetic needs --yes.

Exit codes: 0 restored (or nothing to do), 2 bad usage or configuration (including
deletions without --yes), 3 Stalwart unreachable, refusing the credentials, or a
restore step failed.`,
		Example: `  splitcheck rollback --config staging.yaml --snapshot before-migration.json --dry-run
  splitcheck rollback --config staging.yaml --snapshot before-migration.json --yes`,
		Args: noArgs("rollback", "--config"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runRollback(cmd, ios, opts)
		},
	}
	f := cmd.Flags()
	f.StringVarP(&opts.configPath, "config", "c", "", "the run's configuration file (YAML; required)")
	f.StringVar(&opts.snapshot, "snapshot", "", "the snapshot `FILE` apply wrote (required)")
	f.BoolVar(&opts.dryRun, "dry-run", false, "show what would be restored and write nothing")
	f.BoolVarP(&opts.yes, "yes", "y", false, "allow deleting what apply created, and a snapshot taken on another URL")
	f.BoolVar(&opts.json, "json", false, "print the result as one JSON object")
	return cmd
}

// rollbackReport is rollback's --json output.
type rollbackReport struct {
	DryRun  bool              `json:"dryRun"`
	Server  string            `json:"server"`
	Changes []stalwart.Change `json:"changes"`
	Kept    []string          `json:"kept,omitempty"`
	Error   string            `json:"error,omitempty"`
}

func runRollback(cmd *cobra.Command, ios *ioStreams, opts *rollbackOptions) error {
	if opts.snapshot == "" {
		return usageErrorf("rollback: --snapshot FILE is required (the file apply wrote)")
	}
	st, err := loadStalwart(cmd, ios, "rollback", opts.configPath, false)
	if err != nil {
		return err
	}
	snap, err := stalwart.ReadSnapshotFile(opts.snapshot)
	if err != nil {
		return usageErrorf("rollback: %v", err)
	}
	if !sameServer(snap.Server, st.client.URL) && !opts.yes && !opts.dryRun {
		return usageErrorf("rollback: the snapshot was taken on %s, the config names %s: pass --yes if it is the same server",
			snap.Server, st.client.URL)
	}
	res, err := st.client.Rollback(cmdContext(cmd), snap, stalwart.RollbackOptions{
		DryRun: opts.dryRun, Confirmed: opts.yes, Hermetic: st.hermetic})
	rep := rollbackReport{DryRun: opts.dryRun, Server: st.client.URL, Changes: []stalwart.Change{}}
	if res != nil {
		rep.Changes, rep.Kept = res.Changes, res.Kept
		if rep.Changes == nil {
			rep.Changes = []stalwart.Change{}
		}
	}
	if err != nil {
		rep.Error = err.Error()
	}
	var ce *stalwart.ConfirmationError
	switch {
	case opts.json && res != nil:
		if werr := stalwartJSON(ios.Out, rep); werr != nil {
			return errors.Join(err, werr)
		}
	case errors.As(err, &ce):
		fmt.Fprintln(ios.ErrOut, "Not rolled back. These changes delete objects apply created:")
		printStalwartChanges(ios.ErrOut, ce.Changes)
	case res != nil:
		printRollback(ios, rep, err)
	}
	if errors.As(err, &ce) {
		return usageErrorf("rollback: %d change(s) delete objects on %s, which is not marked hermetic: pass --yes",
			len(ce.Changes), st.client.URL)
	}
	if err != nil {
		return st.wrap("rollback", err)
	}
	return nil
}

func printRollback(ios *ioStreams, rep rollbackReport, err error) {
	w := ios.Out
	switch {
	case len(rep.Changes) == 0 && err == nil:
		fmt.Fprintf(w, "Stalwart at %s already matches the snapshot: nothing to restore.\n", rep.Server)
	case rep.DryRun:
		fmt.Fprintf(w, "Stalwart at %s: rollback would make %d change(s):\n\n", rep.Server, len(rep.Changes))
		printStalwartChanges(w, rep.Changes)
		fmt.Fprintln(w, "\nDry run: nothing was written.")
	default:
		fmt.Fprintf(w, "Restored %d change(s) on Stalwart at %s:\n\n", len(rep.Changes), rep.Server)
		printStalwartChanges(w, rep.Changes)
	}
	for _, k := range rep.Kept {
		fmt.Fprintf(w, "Kept: %s\n", k)
	}
	for _, c := range rep.Changes {
		if c.Restart {
			fmt.Fprintf(w, "Restart Stalwart for %s %s to take effect.\n", c.Object, c.Field)
		}
	}
	if len(rep.Changes) > 0 && !rep.DryRun {
		fmt.Fprintln(w, "\nThe same with stalwart-cli:")
		printStalwartCLI(w, rep.Changes)
	}
}

// sameServer compares two base URLs loosely (scheme, host, port; no trailing slash).
func sameServer(a, b string) bool {
	return strings.EqualFold(strings.TrimSuffix(a, "/"), strings.TrimSuffix(b, "/"))
}
