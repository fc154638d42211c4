package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/splitcheck/splitcheck/harness/config"
	"github.com/splitcheck/splitcheck/harness/stalwart"
)

// planOptions are the flags of `splitcheck plan`.
type planOptions struct {
	configPath string
	json       bool
}

func newPlanCmd(ios *ioStreams) *cobra.Command {
	opts := &planOptions{}
	cmd := &cobra.Command{
		Use:   "plan --config FILE [--json]",
		Short: "Show what apply would change on Stalwart (current -> wanted), writing nothing",
		Long: `plan reads the live configuration of the Stalwart server named in the config's stalwart
section, through its JMAP management API, and prints what apply would change to reach
the migration section: per object and field the current and the wanted value, which
changes replace something the operator had (destructive) or need a server restart, and
the equivalent stalwart-cli commands. It writes nothing.

The connection comes from the config's stalwart section; STALWART_URL, STALWART_USER,
STALWART_PASSWORD and STALWART_TOKEN override it, as for stalwart-cli.

Exit codes: 0 the plan was printed, 2 bad usage or configuration, 3 Stalwart
unreachable or refusing the credentials, or its configuration in the way of the
migration (a route named as the relay that is not a relay route).`,
		Example: `  splitcheck plan --config staging.yaml
  STALWART_TOKEN=... splitcheck plan --config staging.yaml --json`,
		Args: noArgs("plan", "--config"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runPlan(cmd, ios, opts)
		},
	}
	cmd.Flags().StringVarP(&opts.configPath, "config", "c", "", "the run's configuration file (YAML; required)")
	cmd.Flags().BoolVar(&opts.json, "json", false, "print the plan as one JSON object")
	return cmd
}

func runPlan(cmd *cobra.Command, ios *ioStreams, opts *planOptions) error {
	st, err := loadStalwart(cmd, ios, "plan", opts.configPath, true)
	if err != nil {
		return err
	}
	p, err := st.client.Plan(cmdContext(cmd), st.desired)
	if err != nil {
		return st.wrap("plan", err)
	}
	if opts.json {
		return stalwartJSON(ios.Out, p)
	}
	printStalwartPlan(ios.Out, p, "")
	return nil
}

// stalwartSetup is what plan, apply and rollback share: the config, a client, the wanted state.
type stalwartSetup struct {
	cfg      *config.Config
	client   *stalwart.Client
	desired  stalwart.Desired
	hermetic bool
}

// loadStalwart loads the config, fills the stalwart section from STALWART_* when the
// file has none, and builds the client (and the wanted state when withMigration).
func loadStalwart(cmd *cobra.Command, ios *ioStreams, name, path string, withMigration bool) (*stalwartSetup, error) {
	if path == "" {
		return nil, usageErrorf("%s: --config FILE is required", name)
	}
	cfg, err := config.Load(path)
	if err != nil {
		return nil, err // names file:line:field; exit 2
	}
	sc := cfg.Stalwart
	if sc == nil {
		if sc, err = config.StalwartFromEnv(cfg.File, os.LookupEnv); err != nil {
			return nil, err
		}
		if sc == nil {
			return nil, &config.Error{File: cfg.File, Field: "stalwart",
				Msg: "required by " + name + " (or set STALWART_URL with STALWART_USER and STALWART_PASSWORD, or STALWART_TOKEN)"}
		}
	}
	logger, err := newLogger(cmd, ios)
	if err != nil {
		return nil, err
	}
	creds := stalwart.BasicAuth(sc.User, sc.Password.Value())
	if sc.Token.IsSet() {
		creds = stalwart.BearerToken(sc.Token.Value())
	}
	st := &stalwartSetup{cfg: cfg, hermetic: sc.Hermetic,
		client: &stalwart.Client{URL: sc.URL, Credentials: creds, Timeout: sc.Timeout, Logger: logger}}
	if withMigration {
		if st.desired, err = stalwart.DesiredFromConfig(cfg); err != nil {
			return nil, err
		}
	}
	return st, nil
}

// wrap turns the package's errors into the CLI's classes: configuration (exit 2)
// where the config can fix it, everything else environment (exit 3).
func (st *stalwartSetup) wrap(name string, err error) error {
	switch {
	case errors.Is(err, stalwart.ErrNoDefaultHostname):
		return &config.Error{File: st.cfg.File, Field: "migration.default_hostname", Msg: err.Error()}
	case errors.Is(err, stalwart.ErrSnapshotExists):
		return &usageError{err}
	case errors.As(err, new(*stalwart.ApplyError)):
		return err // "stalwart: apply failed at step ...: ...; restored the snapshot"
	}
	return fmt.Errorf("%s: %w", name, err)
}

func stalwartJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		return fmt.Errorf("print json: %w", err)
	}
	return nil
}

// printPlan writes a plan for people: each change with current -> wanted, what
// needs a restart, notes, and the stalwart-cli commands.
func printStalwartPlan(w io.Writer, p *stalwart.Plan, verb string) {
	if verb == "" {
		verb = "apply would make"
	}
	if len(p.Changes) == 0 {
		fmt.Fprintf(w, "Stalwart at %s already has the migration's configuration: nothing to change.\n", p.Server)
	} else {
		fmt.Fprintf(w, "Stalwart at %s: %s %d change(s):\n\n", p.Server, verb, len(p.Changes))
		printStalwartChanges(w, p.Changes)
	}
	if len(p.Restart) > 0 {
		fmt.Fprintf(w, "\nNeeds a Stalwart restart to take effect: %s\n", strings.Join(p.Restart, ", "))
	}
	if len(p.Notes) > 0 {
		fmt.Fprintln(w, "\nNotes:")
		for _, n := range p.Notes {
			fmt.Fprintf(w, "  - %s\n", n)
		}
	}
	if len(p.Changes) > 0 {
		fmt.Fprintln(w, "\nThe same with stalwart-cli (STALWART_URL, STALWART_USER and STALWART_PASSWORD set):")
		printStalwartCLI(w, p.Changes)
	}
}

func printStalwartChanges(w io.Writer, changes []stalwart.Change) {
	for i, c := range changes {
		head := c.Op + " " + c.Object + " " + c.Name
		if c.ID != "" && c.ID != c.Name {
			head += " (" + c.ID + ")"
		}
		if c.Field != "" {
			head += " " + c.Field
		}
		var tags []string
		if c.Destructive {
			tags = append(tags, "destructive")
		}
		if c.Restart {
			tags = append(tags, "needs restart")
		}
		if c.Unverifiable {
			tags = append(tags, "secret not readable: written every time")
		}
		if len(tags) > 0 {
			head += "  [" + strings.Join(tags, ", ") + "]"
		}
		fmt.Fprintf(w, "%3d. %s\n", i+1, head)
		if c.Op == stalwart.OpUpdate {
			cur := c.Current
			if cur == "" {
				cur = "(unset)"
			}
			fmt.Fprintf(w, "       current: %s\n", cur)
		}
		if c.Wanted != "" {
			fmt.Fprintf(w, "       wanted:  %s\n", c.Wanted)
		}
	}
}

func printStalwartCLI(w io.Writer, changes []stalwart.Change) {
	seen := map[string]bool{}
	for _, c := range changes {
		if c.CLI == "" || seen[c.CLI] {
			continue
		}
		seen[c.CLI] = true
		fmt.Fprintf(w, "  %s\n", c.CLI)
	}
}
