// Command splitcheck proves that a mail server routes every recipient exactly as a
// migration plan says. See the README for the commands and their exit codes.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"golang.org/x/term"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	ios := &ioStreams{In: os.Stdin, Out: os.Stdout, ErrOut: os.Stderr,
		StdoutTTY: term.IsTerminal(int(os.Stdout.Fd())), StderrTTY: term.IsTerminal(int(os.Stderr.Fd()))}
	code := run(ctx, os.Args[1:], ios)
	stop()
	os.Exit(code)
}
