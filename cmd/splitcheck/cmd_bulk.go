package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"github.com/splitcheck/splitcheck/harness/bulk"
	"github.com/splitcheck/splitcheck/harness/config"
	"github.com/splitcheck/splitcheck/harness/report"
	"github.com/splitcheck/splitcheck/scenarios"
)

// bulkOptions are the flags of `splitcheck bulk`.
type bulkOptions struct {
	configPath  string
	list        string // CSV address,route; "-" is stdin
	migrated    string // migrated accounts, one per line
	addresses   string // all addresses of the migrated domains, one per line
	shard       string
	onMalformed string
	concurrency int
	batchSize   int
	plain       bool
	json        bool
	junit       string
	timeout     time.Duration
	progress    time.Duration // between progress lines off a terminal
}

// bulkJUnitSuite is the suite name in bulk --junit reports.
const bulkJUnitSuite = "splitcheck-bulk"

func newBulkCmd(ios *ioStreams) *cobra.Command {
	opts := &bulkOptions{}
	cmd := &cobra.Command{
		Use:   "bulk --config FILE (--list FILE | --migrated FILE --addresses FILE) [--shard k/n]",
		Short: "Verify the route of every address of a long list, fast",
		Long: `bulk checks every address of a list against the route the migration plan expects
for it, thousands in one run: many recipients per SMTP transaction (lowered when the
server answers "too many recipients"), pipelined when the server offers PIPELINING, over
a bounded number of connections. Rate limits and other temporary refusals are retried
with backoff and reported as such, never as routing failures.

The list is either a CSV file of "address,route" rows (route: local, source, mx or
reject; a first line "address,route" is skipped, as are blank lines and # comments), or
two plain lists: --migrated (accounts already on the new server: route local) and
--addresses (every address of the migrated domains; the others: route source). It is
streamed, never held whole; "-" reads the CSV from stdin. A malformed row is reported
with its line number; --on-malformed decides whether the run stops (exit 2) or skips it.

--shard k/n keeps the k-th of n parts of the list (by a hash of the address, so the
parts are disjoint, cover the list, and do not depend on its order); each part is a run
of its own with its own report.

Local recipients need a mailbox to read: plan.local in the config, or the bulk.mailbox
template (e.g. a Dovecot master user) for accounts it does not list.

A copy of one of the run's probes that reaches its fake source or MX after that
probe's verdict (delivered twice, the second time after timeouts.absence; or delivered
after a refusal) fails the run, even when every recipient passed.

Progress (count, rate, time left) goes to stderr. The report goes to stdout: a summary
by route and only the mismatches in full; with --json one JSON object per recipient and
a summary, streamed. --junit FILE writes JUnit XML with one testcase per recipient (and
one for late copies, if any).

Exit codes: 0 every recipient routed as expected, 1 a routing mismatch or a late copy, 2 bad usage,
configuration or list rows, or nothing verified (an empty list, or every row skipped), 3 the target or the environment unreachable (or rows that
could not be judged, such as rate limits that never ended).`,
		Example: `  splitcheck bulk --config examples/reftarget.yaml --list recipients.csv
  splitcheck bulk -c staging.yaml --migrated migrated.txt --addresses all.txt --shard 2/4 --junit part2.xml`,
		Args: noArgs("bulk", "--list"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runBulk(cmd, ios, opts)
		},
	}
	f := cmd.Flags()
	f.StringVarP(&opts.configPath, "config", "c", "", "the run's configuration file (YAML; required)")
	f.StringVar(&opts.list, "list", "", "CSV `FILE` of address,route rows (- for stdin)")
	f.StringVar(&opts.migrated, "migrated", "", "`FILE` of migrated accounts, one address per line (with --addresses)")
	f.StringVar(&opts.addresses, "addresses", "", "`FILE` of every address of the migrated domains, one per line (with --migrated)")
	f.StringVar(&opts.shard, "shard", "", "verify only part `k/n` of the list (1 <= k <= n)")
	f.StringVar(&opts.onMalformed, "on-malformed", "", "a malformed row: stop (exit 2) or continue (default: bulk.on_malformed, else stop)")
	f.IntVar(&opts.concurrency, "concurrency", 0, "SMTP connections at once (default: bulk.concurrency, else 4)")
	f.IntVar(&opts.batchSize, "batch-size", 0, "most recipients per transaction (default: bulk.batch_size, else 100)")
	f.BoolVar(&opts.plain, "plain", false, "send port-25 probes to target.plain_smtp without a PROXY header")
	f.BoolVar(&opts.json, "json", false, "print one JSON object per recipient and a summary object instead of the report")
	f.StringVar(&opts.junit, "junit", "", "also write a JUnit XML report to `FILE`")
	f.DurationVar(&opts.timeout, "timeout", 0, "bound the whole run (default: the config's timeouts.run)")
	f.DurationVar(&opts.progress, "progress-every", 5*time.Second, "time between progress lines when stderr is not a terminal")
	return cmd
}

// bulkInput opens the rows the flags name; each call starts from the top.
type bulkInput struct {
	name    string
	open    func() (io.ReadCloser, error)
	rows    func(io.Reader) bulk.Rows
	regular bool // the input can be read twice (a scan before the run)
}

func (o *bulkOptions) input(cfg *config.Config, stdin io.Reader) (*bulkInput, error) {
	domains := cfg.Plan.Domains
	switch {
	case o.list != "" && (o.migrated != "" || o.addresses != ""):
		return nil, usageErrorf("bulk: give either --list or --migrated with --addresses, not both")
	case o.list == "-":
		return &bulkInput{name: "stdin", open: func() (io.ReadCloser, error) { return io.NopCloser(stdin), nil },
			rows: func(r io.Reader) bulk.Rows { return bulk.NewCSV(r, "stdin", domains) }}, nil
	case o.list != "":
		path := o.list
		return &bulkInput{name: path, open: openFile(path), regular: true,
			rows: func(r io.Reader) bulk.Rows { return bulk.NewCSV(r, path, domains) }}, nil
	case o.migrated != "" && o.addresses != "":
		f, err := os.Open(o.migrated)
		if err != nil {
			return nil, usageErrorf("bulk: --migrated: %v", err)
		}
		defer f.Close()
		accounts, err := bulk.ReadAccounts(f, o.migrated)
		if err != nil {
			return nil, &usageError{fmt.Errorf("bulk: --migrated: %w", err)}
		}
		path := o.addresses
		return &bulkInput{name: path, open: openFile(path), regular: true,
			rows: func(r io.Reader) bulk.Rows { return bulk.NewDerived(r, path, domains, accounts) }}, nil
	case o.migrated != "" || o.addresses != "":
		return nil, usageErrorf("bulk: --migrated and --addresses go together")
	default:
		return nil, usageErrorf("bulk: --list FILE (or --migrated FILE --addresses FILE) is required")
	}
}

func openFile(path string) func() (io.ReadCloser, error) {
	return func() (io.ReadCloser, error) {
		f, err := os.Open(path)
		if err != nil {
			return nil, usageErrorf("bulk: %v", err)
		}
		return f, nil
	}
}

// scan reads the whole input once before the run: the rows of the shard (for the
// time-left estimate), the external domains the fake DNS must serve, and the
// first malformed row. It holds only the set of domains.
func (in *bulkInput) scan(shard bulk.Shard) (total int, mxDomains []string, firstBad *bulk.RowError, err error) {
	rc, err := in.open()
	if err != nil {
		return 0, nil, nil, err
	}
	defer rc.Close()
	rows := in.rows(rc)
	seen := map[string]bool{}
	for {
		row, err := rows.Next()
		var re *bulk.RowError
		switch {
		case errors.Is(err, io.EOF):
			return total, mxDomains, firstBad, nil
		case errors.As(err, &re):
			if firstBad == nil {
				firstBad = re
			}
			continue
		case err != nil:
			return 0, nil, nil, fmt.Errorf("read %s: %w", in.name, err)
		}
		if !shard.Contains(row.Address) {
			continue
		}
		total++
		if row.Expect == scenarios.RouteMX {
			d := strings.ToLower(row.Address[strings.LastIndexByte(row.Address, '@')+1:])
			if !seen[d] {
				seen[d] = true
				mxDomains = append(mxDomains, d)
			}
		}
	}
}

func runBulk(cmd *cobra.Command, ios *ioStreams, opts *bulkOptions) error {
	if opts.configPath == "" {
		return usageErrorf("bulk: --config FILE is required")
	}
	if opts.timeout < 0 {
		return usageErrorf("bulk: --timeout %s: must not be negative", opts.timeout)
	}
	if opts.progress <= 0 {
		return usageErrorf("bulk: --progress-every %s: must be positive", opts.progress)
	}
	var shard bulk.Shard
	if opts.shard != "" {
		s, err := bulk.ParseShard(opts.shard)
		if err != nil {
			return &usageError{fmt.Errorf("bulk: --shard: %w", err)}
		}
		shard = s
	}
	cfg, err := config.Load(opts.configPath)
	if err != nil {
		return err // names file:line:field; exit 2
	}
	if cfg.Bulk == nil {
		cfg.Bulk = config.BulkDefaults()
	}
	if err := opts.override(cfg.Bulk); err != nil {
		return err
	}
	in, err := opts.input(cfg, ios.In)
	if err != nil {
		return err
	}

	var junit *bulk.JUnitWriter
	if opts.junit != "" {
		if junit, err = bulk.NewJUnitWriter(opts.junit, bulkJUnitSuite); err != nil {
			return usageErrorf("bulk: --junit: %v", err)
		}
		defer junit.Abort() // no-op after Close
	}

	if opts.plain && cfg.Target.PlainSMTP == "" {
		return &config.Error{File: cfg.File, Field: "target.plain_smtp", Msg: "required by --plain"}
	}
	r := &bulk.Runner{Config: cfg, Shard: shard, Plain: opts.plain}
	if in.regular {
		total, domains, bad, err := in.scan(shard)
		if err != nil {
			return err
		}
		if bad != nil && cfg.Bulk.OnMalformed == "stop" {
			if junit != nil {
				junit.Malformed(bad)
				if werr := junit.Close(0); werr != nil {
					return errors.Join(&usageError{bad}, werr)
				}
			}
			return &usageError{fmt.Errorf("bulk: malformed row, nothing sent: %w (--on-malformed continue skips such rows)", bad)}
		}
		r.Total, r.MXDomains = total, domains
	}

	progress, logger, err := newProgressLogger(cmd, ios)
	if err != nil {
		return err
	}
	r.Logger = logger

	var jsonw *bulk.JSONWriter
	if opts.json {
		jsonw = bulk.NewJSONWriter(ios.Out)
	}
	var outMu sync.Mutex // OnVerdict and OnMalformed come from two goroutines
	r.OnVerdict = func(v bulk.Verdict) {
		outMu.Lock()
		defer outMu.Unlock()
		if jsonw != nil {
			jsonw.Verdict(v)
		}
		if junit != nil {
			junit.Verdict(v)
		}
	}
	r.OnMalformed = func(e *bulk.RowError) {
		outMu.Lock()
		defer outMu.Unlock()
		fmt.Fprintf(progress, "splitcheck: malformed row: %v\n", e)
		if jsonw != nil {
			jsonw.Malformed(e)
		}
		if junit != nil {
			junit.Malformed(e)
		}
	}

	timeout := cfg.Timeouts.Run
	if opts.timeout > 0 {
		timeout = opts.timeout
	}
	parent := cmdContext(cmd)
	ctx, cancel := context.WithTimeout(parent, timeout)
	defer cancel()

	rc, err := in.open()
	if err != nil {
		return err
	}
	defer rc.Close()

	stop := showProgress(progress, r, ios.StderrTTY, opts.progress)
	res, err := r.Run(ctx, in.rows(rc))
	stop()
	progress.Clear()

	var re *bulk.RowError
	switch {
	case err == nil:
	case errors.As(err, &re):
		err = &usageError{fmt.Errorf("bulk: malformed row: %w (--on-malformed continue skips such rows)", re)}
	case parent.Err() != nil:
		err = fmt.Errorf("bulk: interrupted: %w", err)
	case errors.Is(ctx.Err(), context.DeadlineExceeded):
		err = fmt.Errorf("bulk: no verdict for every row within %s (--timeout, or timeouts.run in %s): %w", timeout, cfg.File, err)
	default:
		err = fmt.Errorf("bulk: %w", err)
	}

	var werr error
	if jsonw != nil {
		werr = jsonw.Close(res)
	} else {
		werr = bulk.WriteReport(ios.Out, res, ios.StdoutTTY)
	}
	if junit != nil {
		junit.Late(res)
		werr = errors.Join(werr, junit.Close(res.Elapsed))
	}
	if werr != nil {
		return errors.Join(err, werr)
	}
	if err != nil {
		return err
	}
	if verr := res.Err(); verr != nil {
		return verr // a mismatch (1), or rows not judged (3)
	}
	if res.Summary.Passed == 0 {
		// An empty list (or shard), or only skipped rows: exit 0 would claim a
		// pass that nothing earned.
		return usageErrorf("bulk: nothing was verified: %d row(s), all skipped (see the report)", res.Summary.Skipped)
	}
	if res.Malformed > 0 {
		return usageErrorf("bulk: %d malformed row(s) skipped (listed above); every other row passed", res.Malformed)
	}
	return nil
}

// override applies the flags that tune the bulk section, checked like the file.
func (o *bulkOptions) override(b *config.Bulk) error {
	if o.onMalformed != "" {
		if o.onMalformed != "stop" && o.onMalformed != "continue" {
			return usageErrorf("bulk: --on-malformed %q: want stop or continue", o.onMalformed)
		}
		b.OnMalformed = o.onMalformed
	}
	if o.concurrency != 0 {
		if o.concurrency < 1 || o.concurrency > 256 {
			return usageErrorf("bulk: --concurrency %d: want 1 to 256", o.concurrency)
		}
		b.Concurrency = o.concurrency
	}
	if o.batchSize != 0 {
		if o.batchSize < 1 || o.batchSize > 10000 {
			return usageErrorf("bulk: --batch-size %d: want 1 to 10000", o.batchSize)
		}
		b.BatchSize = o.batchSize
		b.InFlight = max(b.InFlight, o.batchSize)
	}
	return nil
}

// showProgress draws the progress line until the returned func is called: live
// on a terminal (4 times a second), else one line every `every`.
func showProgress(p *report.Progress, r *bulk.Runner, tty bool, every time.Duration) (stop func()) {
	interval := every
	if tty {
		interval = 250 * time.Millisecond
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				step := progressStep(r.Progress())
				if tty {
					p.Update(step)
				} else {
					// Off a terminal Update prints only verdicts: write the line.
					fmt.Fprintf(p, "[%d/%d] %s: %s\n", step.Done, step.Total, step.Stage, step.Check)
				}
			}
		}
	}()
	return func() {
		close(done)
		wg.Wait()
	}
}

// progressStep renders the figures: "[4210/10000] bulk: 1234/s, 3s left, 0 failed".
func progressStep(p bulk.Progress) report.Step {
	total := p.Total
	if total <= 0 {
		total = int(p.Read)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%.0f/s", p.Rate())
	if eta, ok := p.ETA(); ok {
		fmt.Fprintf(&b, ", %s left", eta.Round(time.Second))
	}
	fmt.Fprintf(&b, ", %d failed, %d errors", p.Failed, p.Errors)
	if p.RateLimited > 0 {
		fmt.Fprintf(&b, ", %d rate-limited replies", p.RateLimited)
	}
	return report.Step{Stage: "bulk", Check: b.String(), Done: int(p.Judged), Total: total}
}
