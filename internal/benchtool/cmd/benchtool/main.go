// Command benchtool is the helper of scripts/bench.sh (`make bench`).
//
// Usage:
//
//	benchtool ports N
//	    print N free TCP ports on 127.0.0.1, space-separated
//	benchtool wait [-timeout 15s] ADDR...
//	    wait until every ADDR accepts a TCP connection
//	benchtool sink -listen ADDR [-accept-proxy | -bare] [-cpuprofile FILE]
//	    run a fakesource sink (default limits, silent), or with -bare go-smtp
//	    with a backend that keeps nothing; on SIGINT or SIGTERM print
//	    "messages N proxy_headers M" on stdout and exit 0
//	benchtool latency [-n 2000] [-timeout 5s] -o FILE NAME=[v2@]ADDR...
//	    measure connect-to-banner time over N sequential connections per
//	    target, interleaved; the first target is the baseline; write JSON.
//	    With v2@ the client sends a PROXY v2 header itself (to measure a
//	    PROXY-aware sink without a proxy in front)
//	benchtool report -runs FILE [-latency FILE] [-preamble FILE] [-commands FILE] -doc FILE
//	    render the figures as Markdown between the bench markers of FILE;
//	    exit 3 if a goal is missed (after writing)
//
// It exits 2 on bad usage and 1 on any other failure.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/splitcheck/splitcheck/internal/benchtool"
)

const (
	exitFail   = 1
	exitUsage  = 2
	exitMissed = 3 // report: written, but a goal was missed
)

type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err == nil {
		return
	}
	fmt.Fprintln(os.Stderr, "benchtool:", err)
	var ue *usageError
	var ge *goalError
	switch {
	case errors.As(err, &ue):
		os.Exit(exitUsage)
	case errors.As(err, &ge):
		os.Exit(exitMissed)
	}
	os.Exit(exitFail)
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return &usageError{"usage: benchtool ports|wait|sink|latency|report ..."}
	}
	switch args[0] {
	case "ports":
		return cmdPorts(args[1:], stdout)
	case "wait":
		return cmdWait(ctx, args[1:], stderr)
	case "sink":
		return cmdSink(ctx, args[1:], stdout, stderr)
	case "latency":
		return cmdLatency(ctx, args[1:], stderr)
	case "report":
		return cmdReport(args[1:], stderr)
	}
	return &usageError{fmt.Sprintf("unknown subcommand %q; want ports, wait, sink, latency or report", args[0])}
}

func newFlags(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("benchtool "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return fs
}

func cmdPorts(args []string, stdout io.Writer) error {
	if len(args) != 1 {
		return &usageError{"usage: benchtool ports N"}
	}
	n, err := strconv.Atoi(args[0])
	if err != nil || n < 1 || n > 100 {
		return &usageError{fmt.Sprintf("ports: N = %q, want 1..100", args[0])}
	}
	ports, err := benchtool.FreePorts(n)
	if err != nil {
		return err
	}
	s := make([]string, len(ports))
	for i, p := range ports {
		s[i] = strconv.Itoa(p)
	}
	_, err = fmt.Fprintln(stdout, strings.Join(s, " "))
	return err
}

func cmdWait(ctx context.Context, args []string, stderr io.Writer) error {
	fs := newFlags("wait", stderr)
	timeout := fs.Duration("timeout", 15*time.Second, "give up after this long")
	if err := fs.Parse(args); err != nil {
		return &usageError{err.Error()}
	}
	if fs.NArg() == 0 {
		return &usageError{"usage: benchtool wait [-timeout D] ADDR..."}
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	for _, addr := range fs.Args() {
		if err := benchtool.WaitListening(ctx, addr, 20*time.Millisecond); err != nil {
			return err
		}
	}
	return nil
}

func cmdSink(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("sink", stderr)
	listen := fs.String("listen", "", "address to listen on (required)")
	acceptProxy := fs.Bool("accept-proxy", false, "expect a PROXY v1/v2 header on every connection")
	bare := fs.Bool("bare", false, "run go-smtp with a backend that keeps nothing instead of fakesource")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile of the sink's whole life to this file")
	if err := fs.Parse(args); err != nil {
		return &usageError{err.Error()}
	}
	if *listen == "" || fs.NArg() > 0 {
		return &usageError{"usage: benchtool sink -listen ADDR [-accept-proxy | -bare] [-cpuprofile FILE]"}
	}
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			return fmt.Errorf("sink: %w", err)
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return fmt.Errorf("sink: %w", err)
		}
		defer pprof.StopCPUProfile()
	}
	var counts benchtool.SinkCounts
	var shutdown func(context.Context) error
	if *bare {
		if *acceptProxy {
			return &usageError{"sink: -bare and -accept-proxy do not go together"}
		}
		b, err := benchtool.ListenBareSink(*listen, &counts)
		if err != nil {
			return err
		}
		fmt.Fprintf(stderr, "bare go-smtp sink listening on %s\n", b.Addr())
		shutdown = b.Shutdown
	} else {
		s := benchtool.NewSink(*acceptProxy, &counts)
		if err := s.Listen(*listen); err != nil {
			return fmt.Errorf("sink: %w", err)
		}
		fmt.Fprintf(stderr, "sink listening on %s (accept-proxy %v)\n", s.Addr, *acceptProxy)
		shutdown = s.Shutdown
	}
	<-ctx.Done()
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = shutdown(sctx) // clients still connected after 5s are cut off
	_, err := fmt.Fprintf(stdout, "messages %d proxy_headers %d\n", counts.Messages.Load(), counts.ProxyHeaders.Load())
	return err
}

func cmdLatency(ctx context.Context, args []string, stderr io.Writer) error {
	fs := newFlags("latency", stderr)
	n := fs.Int("n", 2000, "connections per target")
	timeout := fs.Duration("timeout", 5*time.Second, "bound on each connection")
	out := fs.String("o", "", "JSON output file (required)")
	if err := fs.Parse(args); err != nil {
		return &usageError{err.Error()}
	}
	if *out == "" || fs.NArg() == 0 || *n < 1 {
		return &usageError{"usage: benchtool latency [-n N] [-timeout D] -o FILE NAME=[v2@]ADDR..."}
	}
	var targets []benchtool.Target
	for _, a := range fs.Args() {
		name, addr, ok := strings.Cut(a, "=")
		addr, v2 := strings.CutPrefix(addr, "v2@")
		if !ok || name == "" || addr == "" {
			return &usageError{fmt.Sprintf("latency: target %q: want NAME=ADDR or NAME=v2@ADDR", a)}
		}
		targets = append(targets, benchtool.Target{Name: name, Addr: addr, ProxyV2: v2})
	}
	samples, err := benchtool.MeasureLatency(ctx, targets, *n, *timeout)
	if err != nil {
		return err
	}
	res := benchtool.LatencyResult{Rounds: *n, Baseline: targets[0].Name, Targets: map[string]benchtool.LatencySummary{}}
	for _, t := range targets {
		res.Order = append(res.Order, t.Name)
		res.Targets[t.Name] = benchtool.MicroSummary(benchtool.Summarize(samples[t.Name]))
	}
	b, err := json.MarshalIndent(res, "", "  ")
	if err != nil {
		return fmt.Errorf("latency: %w", err)
	}
	if err := os.WriteFile(*out, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("latency: %w", err)
	}
	return nil
}

// goalError reports missed goals after the report was written.
type goalError struct{ missed []string }

func (e *goalError) Error() string {
	return "goals not met: " + strings.Join(e.missed, "; ")
}

func cmdReport(args []string, stderr io.Writer) error {
	fs := newFlags("report", stderr)
	runsPath := fs.String("runs", "", "tab-separated runs (required)")
	latPath := fs.String("latency", "", "JSON from benchtool latency")
	preamble := fs.String("preamble", "", "Markdown file to put first")
	commands := fs.String("commands", "", "file with the commands that were run")
	doc := fs.String("doc", "", "Markdown document to update between the bench markers (required)")
	if err := fs.Parse(args); err != nil {
		return &usageError{err.Error()}
	}
	if *runsPath == "" || *doc == "" || fs.NArg() > 0 {
		return &usageError{"usage: benchtool report -runs FILE [-latency FILE] [-preamble FILE] [-commands FILE] -doc FILE"}
	}
	f, err := os.Open(*runsPath)
	if err != nil {
		return fmt.Errorf("report: %w", err)
	}
	runs, err := benchtool.ParseRuns(f)
	f.Close()
	if err != nil {
		return fmt.Errorf("report: %w", err)
	}
	rep := benchtool.Report{Runs: runs, Goals: benchtool.DefaultGoals}
	if *latPath != "" {
		b, err := os.ReadFile(*latPath)
		if err != nil {
			return fmt.Errorf("report: %w", err)
		}
		var l benchtool.LatencyResult
		if err := json.Unmarshal(b, &l); err != nil {
			return fmt.Errorf("report: %s: %w", *latPath, err)
		}
		rep.Latency = &l
	}
	for _, p := range []struct {
		path string
		dst  *string
	}{{*preamble, &rep.Preamble}, {*commands, &rep.Commands}} {
		if p.path == "" {
			continue
		}
		b, err := os.ReadFile(p.path)
		if err != nil {
			return fmt.Errorf("report: %w", err)
		}
		*p.dst = string(b)
	}
	var md strings.Builder
	v, err := rep.Render(&md)
	if err != nil {
		return fmt.Errorf("report: %w", err)
	}
	if err := benchtool.SpliceFile(*doc, md.String()); err != nil {
		return fmt.Errorf("report: %w", err)
	}
	fmt.Fprintf(stderr, "report: wrote %s (%d goals checked, %d missed)\n", *doc, v.Checked, len(v.Missed))
	if len(v.Missed) > 0 {
		return &goalError{v.Missed}
	}
	return nil
}
