// Command reftarget runs a command against a freshly started reference target
// (Postfix + Dovecot, see package reftarget) and tears the target down after.
//
// Usage:
//
//	reftarget exec [--mutation M] [--accounts alice@example.org,dave@example.org] [-v] -- COMMAND ARGS...
//
// Each account gets a random strong password, exported to the command as
// REFTARGET_PASSWORD_<LOCALPART> (upper-cased, other characters as "_"), for
// example REFTARGET_PASSWORD_ALICE. The command also sees REFTARGET_DOMAIN,
// REFTARGET_ACCOUNTS, REFTARGET_MUTATION and the listen addresses
// (REFTARGET_PROXY, REFTARGET_PLAIN, REFTARGET_SUBMISSION, REFTARGET_IMAP,
// REFTARGET_SOURCE, REFTARGET_NAMESERVER).
//
// The target is torn down on every path, including SIGINT and SIGTERM (which
// are passed on to the command). reftarget exits with the command's exit
// code (128+N if it died of signal N); 2 on bad usage; 3 if the target does
// not start (the reason and the log tail go to stderr) or the command cannot
// be run; 128+N if signal N arrived while the target was starting.
package main

import (
	"context"
	"crypto/rand"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/splitcheck/splitcheck/internal/reftarget"
)

const (
	exitUsage = 2
	exitEnv   = 3
)

func main() {
	os.Exit(run(os.Args[1:], os.Stderr, reftarget.Options{}))
}

type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

type execOptions struct {
	mutation reftarget.Mutation
	accounts []string
	verbose  bool
	startTO  time.Duration
	command  []string
}

func parseArgs(args []string, stderr io.Writer) (execOptions, error) {
	var o execOptions
	if len(args) == 0 || args[0] != "exec" {
		return o, &usageError{"usage: reftarget exec [--mutation M] [--accounts a@dom,b@dom] [-v] -- COMMAND ARGS..."}
	}
	fs := flag.NewFlagSet("reftarget exec", flag.ContinueOnError)
	fs.SetOutput(stderr)
	mutation := fs.String("mutation", "", "deliberate misconfiguration: one of "+mutationList())
	accounts := fs.String("accounts", "alice@example.org,dave@example.org", "comma-separated local accounts (all in one domain)")
	fs.BoolVar(&o.verbose, "v", false, "log target progress to stderr")
	fs.DurationVar(&o.startTO, "start-timeout", 60*time.Second, "deadline for the target to become ready")
	if err := fs.Parse(args[1:]); err != nil {
		return o, &usageError{err.Error()}
	}
	o.command = fs.Args()
	if len(o.command) == 0 {
		return o, &usageError{"reftarget exec: missing command after --"}
	}
	o.mutation = reftarget.Mutation(*mutation)
	valid := o.mutation == reftarget.MutationNone
	for _, m := range reftarget.Mutations() {
		valid = valid || m == o.mutation
	}
	if !valid {
		return o, &usageError{fmt.Sprintf("reftarget exec: unknown mutation %q (want one of %s)", *mutation, mutationList())}
	}
	for _, a := range strings.Split(*accounts, ",") {
		if a = strings.TrimSpace(a); a != "" {
			o.accounts = append(o.accounts, a)
		}
	}
	return o, nil
}

func mutationList() string {
	var names []string
	for _, m := range reftarget.Mutations() {
		names = append(names, string(m))
	}
	return strings.Join(names, ", ")
}

// envName turns a local part into REFTARGET_PASSWORD_<LOCALPART>.
func envName(address string) string {
	lp, _, _ := strings.Cut(address, "@")
	var b strings.Builder
	for _, r := range strings.ToUpper(lp) {
		if (r >= 'A' && r <= 'Z') || (r >= '0' && r <= '9') {
			b.WriteRune(r)
		} else {
			b.WriteByte('_')
		}
	}
	return "REFTARGET_PASSWORD_" + b.String()
}

// run executes the command line; base supplies the target options the flags
// do not set (tests use it to move the listeners).
func run(args []string, stderr io.Writer, base reftarget.Options) int {
	o, err := parseArgs(args, stderr)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return exitUsage
	}
	domain := ""
	accts := make([]reftarget.Account, 0, len(o.accounts))
	env := os.Environ()
	seenEnv := map[string]string{}
	for _, a := range o.accounts {
		_, dom, ok := strings.Cut(a, "@")
		if !ok || (domain != "" && !strings.EqualFold(dom, domain)) {
			fmt.Fprintf(stderr, "reftarget exec: account %q: every account must be an address in the same domain\n", a)
			return exitUsage
		}
		domain = strings.ToLower(dom)
		name := envName(a)
		if prev, dup := seenEnv[name]; dup {
			fmt.Fprintf(stderr, "reftarget exec: accounts %q and %q share %s\n", prev, a, name)
			return exitUsage
		}
		seenEnv[name] = a
		pw := rand.Text() // 26 base32 characters, 130 bits
		accts = append(accts, reftarget.Account{Address: a, Password: pw})
		env = append(env, name+"="+pw)
	}

	var handler slog.Handler = slog.DiscardHandler
	if o.verbose {
		handler = slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelDebug})
	}
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)

	startCtx, cancelStart := context.WithTimeout(context.Background(), o.startTO)
	defer cancelStart()
	stopWatch := make(chan struct{})
	startSig := make(chan os.Signal, 1)
	go func() { // a signal during start cancels it
		defer close(startSig)
		select {
		case sig := <-sigs:
			startSig <- sig
			cancelStart()
		case <-stopWatch:
		}
	}()
	opts := base
	opts.Domain, opts.Accounts, opts.Mutation, opts.Logger = domain, accts, o.mutation, slog.New(handler)
	tgt, err := reftarget.Start(startCtx, opts)
	close(stopWatch)
	sig, interrupted := <-startSig
	if err != nil {
		fmt.Fprintf(stderr, "reftarget: %v\n", err)
		var se *reftarget.StartError
		if errors.As(err, &se) && se.Maillog != "" {
			fmt.Fprintf(stderr, "--- log tail ---\n%s", se.Maillog)
		}
		if interrupted {
			return 128 + int(sig.(syscall.Signal))
		}
		return exitEnv
	}
	code := 0
	if interrupted {
		fmt.Fprintf(stderr, "reftarget: %v during start, not running the command\n", sig)
		code = 128 + int(sig.(syscall.Signal))
	} else {
		code = runCommand(tgt, o, env, sigs, stderr)
	}
	closeCtx, cancelClose := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancelClose()
	if err := tgt.Close(closeCtx); err != nil {
		fmt.Fprintf(stderr, "reftarget: %v\n", err)
		if code == 0 {
			code = exitEnv
		}
	}
	return code
}

// runCommand runs the child, passing SIGINT/SIGTERM on, and returns its exit code.
func runCommand(tgt *reftarget.Target, o execOptions, env []string, sigs <-chan os.Signal, stderr io.Writer) int {
	opts := tgt.Options()
	var addrs []string
	for _, a := range opts.Accounts {
		addrs = append(addrs, a.Address)
	}
	env = append(env,
		"REFTARGET_DOMAIN="+opts.Domain,
		"REFTARGET_ACCOUNTS="+strings.Join(addrs, ","),
		"REFTARGET_MUTATION="+string(opts.Mutation),
		"REFTARGET_PROXY="+opts.ProxyListen,
		"REFTARGET_PLAIN="+opts.PlainListen,
		"REFTARGET_SUBMISSION="+opts.SubmissionListen,
		"REFTARGET_IMAP="+opts.IMAPListen,
		"REFTARGET_SOURCE="+opts.SourceRelay,
		"REFTARGET_NAMESERVER="+opts.Nameserver,
	)
	cmd := exec.Command(o.command[0], o.command[1:]...)
	cmd.Env = env
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	if err := cmd.Start(); err != nil {
		fmt.Fprintf(stderr, "reftarget: start command: %v\n", err)
		return exitEnv
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	for {
		select {
		case sig := <-sigs:
			_ = cmd.Process.Signal(sig)
		case err := <-done:
			var ee *exec.ExitError
			switch {
			case err == nil:
				return 0
			case errors.As(err, &ee):
				if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
					return 128 + int(ws.Signal())
				}
				return ee.ExitCode()
			default:
				fmt.Fprintf(stderr, "reftarget: wait for command: %v\n", err)
				return exitEnv
			}
		}
	}
}
