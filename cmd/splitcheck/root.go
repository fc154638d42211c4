package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"runtime/debug"
	"strings"

	"github.com/spf13/cobra"

	"github.com/splitcheck/splitcheck/harness/config"
	"github.com/splitcheck/splitcheck/scenarios"
)

// Exit codes; the README lists them and exitCode is the only place that picks one.
const (
	exitOK       = 0 // every check passed
	exitMismatch = 1 // a routing verdict failed
	exitUsage    = 2 // bad usage or configuration
	exitEnv      = 3 // target or environment unreachable or broken, or an unrecognised error
)

// ioStreams are the command's standard streams; tests pass buffers.
type ioStreams struct {
	In        io.Reader
	Out       io.Writer
	ErrOut    io.Writer
	StdoutTTY bool
	StderrTTY bool
}

// usageError is bad flags or arguments: exit 2 and a hint to read --help.
type usageError struct{ err error }

func (e *usageError) Error() string { return e.err.Error() }
func (e *usageError) Unwrap() error { return e.err }

func usageErrorf(format string, args ...any) error {
	return &usageError{fmt.Errorf(format, args...)}
}

func newRootCmd(ios *ioStreams) *cobra.Command {
	root := &cobra.Command{
		Use:   "splitcheck",
		Short: "Prove a mail server routes every recipient as the migration plan says",
		Long: `splitcheck sends tagged probe mail to a split-delivery mail server and checks that
every recipient is routed exactly as the migration plan says: "local" for accounts that
live on the server, "source" (relayed to the old server) for other addresses in migrated
domains, "mx" for the rest of the world, and never an open relay.

Exit codes: 0 all checks passed, 1 a routing mismatch, 2 bad usage or configuration,
3 target or environment unreachable.`,
		SilenceErrors: true,
		SilenceUsage:  true,
	}
	root.SetOut(ios.Out)
	root.SetErr(ios.ErrOut)
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return &usageError{err} })
	root.PersistentFlags().String("log-level", "info", "log level: debug, info, warn, error")
	root.PersistentFlags().String("log-format", "text", "log format on stderr: text or json")
	root.AddCommand(
		newVerifyCmd(ios),
		newPlanCmd(ios),
		newApplyCmd(ios),
		newRollbackCmd(ios),
		newRunCmd(ios),
		newBulkCmd(ios),
		newFakesourceCmd(ios),
		newProxyCmd(ios),
	)
	return root
}

// run executes the command line and returns the exit code.
func run(ctx context.Context, args []string, ios *ioStreams) (code int) {
	defer func() {
		if r := recover(); r != nil {
			fmt.Fprintf(ios.ErrOut, "splitcheck: internal error: %v\n%s", r, debug.Stack())
			code = exitEnv
		}
	}()
	root := newRootCmd(ios)
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	code = exitCode(err)
	if err != nil {
		fmt.Fprintf(ios.ErrOut, "splitcheck: %v\n", err)
		var ue *usageError
		if errors.As(err, &ue) {
			fmt.Fprintln(ios.ErrOut, "Run 'splitcheck --help' for usage.")
		}
	}
	return code
}

// exitCode maps an error to the process exit code.
func exitCode(err error) int {
	var mm *scenarios.MismatchError
	var ue *usageError
	var ce *config.Error
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, &mm):
		return exitMismatch
	case errors.As(err, &ue), errors.As(err, &ce):
		return exitUsage
	case isCobraUsage(err):
		return exitUsage
	default:
		return exitEnv
	}
}

// isCobraUsage recognises cobra's own argument errors, which are plain errors.
func isCobraUsage(err error) bool {
	msg := err.Error()
	for _, p := range []string{"unknown command", "unknown flag", "unknown shorthand", "accepts ", "requires at least", "required flag"} {
		if strings.Contains(msg, p) {
			return true
		}
	}
	return false
}

// newLogger builds the stderr logger from the persistent flags.
func newLogger(cmd *cobra.Command, ios *ioStreams) (*slog.Logger, error) {
	lvlName, _ := cmd.Flags().GetString("log-level")
	format, _ := cmd.Flags().GetString("log-format")
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(lvlName)); err != nil {
		return nil, usageErrorf("--log-level %q: want debug, info, warn or error", lvlName)
	}
	opts := &slog.HandlerOptions{Level: lvl}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(ios.ErrOut, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(ios.ErrOut, opts)), nil
	default:
		return nil, usageErrorf("--log-format %q: want text or json", format)
	}
}
