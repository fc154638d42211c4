// Package bulk verifies a long list of recipients against a split-delivery mail
// server in one run: every address of the migrated domains, each against the
// route the plan expects for it (local, source, mx or reject).
//
// The list is streamed (CSV, Derived), never held whole; a Shard keeps one
// deterministic part of it. A Runner sends the recipients many to a transaction
// (up to what the server accepts, learned from its 452 replies), pipelining
// MAIL and RCPT when the server offers PIPELINING, over a bounded number of
// connections, retrying rate limits and other temporary failures with backoff
// rather than counting them as routing failures. Each transaction carries one
// probe id (the ProbeHeader field and the Message-ID); deliveries are found by
// that id in the fake source and fake MX (an index, not a scan) and, for local
// accounts, by one IMAP search per account and transaction. Memory is bounded
// by Bulk.InFlight, not by the length of the list.
//
// The package does not print: the caller receives every verdict through
// Runner.OnVerdict and polls Runner.Progress for a progress line.
package bulk

import (
	"cmp"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emersion/go-sasl"

	"github.com/splitcheck/splitcheck/fakesource"
	"github.com/splitcheck/splitcheck/harness/config"
	"github.com/splitcheck/splitcheck/harness/fakedns"
	"github.com/splitcheck/splitcheck/harness/report"
	"github.com/splitcheck/splitcheck/proxy"
	"github.com/splitcheck/splitcheck/scenarios"
)

// ProbeHeader is the header field that carries a transaction's probe id; a Sink
// must index messages by it (fakesource.Server.IndexHeader).
const ProbeHeader = scenarios.ProbeHeader

// RunHeader is the header field that carries the run id.
const RunHeader = "X-Splitcheck-Run"

// Sink is a fake MTA the target delivers to, indexed by ProbeHeader; a
// *fakesource.Server with IndexHeader = ProbeHeader is one.
type Sink interface {
	ByIndex(value string) []fakesource.Message
}

// Verdict is the judged outcome for one row of the list.
type Verdict struct {
	scenarios.Verdict
	// Line is the row's line in the input.
	Line int
	// Retries is how many times the recipient was sent again after a rate limit
	// or another temporary failure.
	Retries int
}

// Runner verifies a stream of rows. Set the fields, then call Run once.
type Runner struct {
	// Config describes the target, the plan and the fakes; Config.Bulk nil
	// means config.BulkDefaults().
	Config *config.Config
	// Source and MX are where the target relays and delivers by MX. Nil: Run
	// starts a fakesource.Server on Config.Fakes.Source (and Config.Fakes.MX,
	// when set) and closes it at the end.
	Source, MX Sink
	// MXDomains are the external domains the fake DNS answers for (with
	// plan.external's); an mx row in another domain is reported as an error.
	// Run starts the fake DNS on Config.Fakes.DNS when MX rows are possible.
	MXDomains []string
	// Shard keeps one part of the list; the zero value keeps all of it.
	Shard Shard
	// Plain sends the port-25 probes to Config.Target.PlainSMTP, from
	// Config.Probe.PlainSource, without a PROXY header: for a target whose
	// port 25 does not speak PROXY, or to measure what the header costs.
	Plain bool
	// RunID tags every probe of the run; default a random one.
	RunID string
	// Total is the number of rows expected in the shard, for Progress's
	// estimate; 0 when unknown.
	Total int
	// Logger receives debug and warning records; nil is silent.
	Logger *slog.Logger
	// OnVerdict receives every verdict, from one goroutine at a time.
	OnVerdict func(Verdict)
	// OnMalformed receives every malformed row, from Run's goroutine.
	OnMalformed func(*RowError)

	started atomic.Bool
	start   time.Time
	c       counters
}

// counters are the live figures behind Progress.
type counters struct {
	read, sent, judged                atomic.Int64
	passed, failed, errored, skipped  atomic.Int64
	rateLimited, temporary, retries   atomic.Int64
	transactions, connections, strays atomic.Int64
	malformed                         atomic.Int64
}

// Progress is a snapshot of a running Run.
type Progress struct {
	Read, Sent, Judged              int64
	Passed, Failed, Errors, Skipped int64
	RateLimited, Retries            int64
	Total                           int
	Elapsed                         time.Duration
}

// Rate is rows judged per second.
func (p Progress) Rate() float64 {
	if p.Elapsed <= 0 {
		return 0
	}
	return float64(p.Judged) / p.Elapsed.Seconds()
}

// ETA estimates the time left, when Total is known and the rate is not zero.
func (p Progress) ETA() (time.Duration, bool) {
	r := p.Rate()
	if p.Total <= 0 || r <= 0 {
		return 0, false
	}
	left := float64(int64(p.Total) - p.Judged)
	return time.Duration(max(left, 0) / r * float64(time.Second)), true
}

// Progress returns the live figures; it may be called from any goroutine.
func (r *Runner) Progress() Progress {
	p := Progress{
		Read: r.c.read.Load(), Sent: r.c.sent.Load(), Judged: r.c.judged.Load(),
		Passed: r.c.passed.Load(), Failed: r.c.failed.Load(), Errors: r.c.errored.Load(), Skipped: r.c.skipped.Load(),
		RateLimited: r.c.rateLimited.Load(), Retries: r.c.retries.Load(), Total: r.Total,
	}
	if r.started.Load() {
		p.Elapsed = time.Since(r.start)
	}
	return p
}

// RouteTally counts the verdicts of one expected route.
type RouteTally struct {
	Route                                  scenarios.Route
	Total, Passed, Failed, Errors, Skipped int
}

// Result is what a run found.
type Result struct {
	RunID string
	Shard Shard
	// Routes tallies verdicts by expected route, in the order local, source, mx, reject.
	Routes []RouteTally
	// Summary counts every verdict by status.
	Summary report.Summary
	// Mismatches are the failed and errored verdicts, at most Bulk.MaxListed;
	// Unlisted counts the rest.
	Mismatches []Verdict
	Unlisted   int
	// Malformed counts malformed rows (reported through OnMalformed).
	Malformed int
	// RateLimited counts replies read as rate limits; RateLimitReply is the last
	// one. Temporary counts other temporary failures; Retries the resends.
	RateLimited    int
	RateLimitReply string
	Temporary      int
	Retries        int
	// Transactions and Connections count what was opened on the target.
	Transactions, Connections int
	// BatchLimit is the recipients-per-transaction limit the run ended with.
	BatchLimit int
	// Pipelined reports whether the proxy entry pipelined its RCPTs.
	Pipelined bool
	// Strays counts recipients of probe messages that were not in the probe
	// (the target rewrote an address, say).
	Strays int
	// Late counts copies of this run's probes that reached its own fakes after
	// their transaction was judged (a second delivery slower than
	// timeouts.absence, or a delivery of a message the target refused): they
	// fail the run (see Err). LateEvidence describes the first ones.
	Late         int
	LateEvidence []string
	// LateLostReply counts copies of transactions whose DATA reply never came
	// (their rows were sent again); Foreign counts copies of other runs' probes.
	// Neither is evidence about this run's routing.
	LateLostReply, Foreign int
	Elapsed                time.Duration
}

// Err is the verdict of the whole run: a *scenarios.MismatchError when a row
// failed (listing at most 20 of them) or a copy of a probe arrived after its
// verdict (Late), an error when rows could not be judged, else nil. Malformed
// rows are the caller's business.
func (res *Result) Err() error {
	if res.Summary.Failed > 0 || res.Late > 0 {
		var names []string
		for _, v := range res.Mismatches {
			if v.Status == scenarios.StatusFail && len(names) < 20 {
				names = append(names, fmt.Sprintf("%s: %s", v.Check.Recipient, firstLine(v.Detail)))
			}
		}
		if more := res.Summary.Failed - len(names); more > 0 {
			names = append(names, fmt.Sprintf("and %d more", more))
		}
		names = append(names, res.LateEvidence...)
		if more := res.Late - len(res.LateEvidence); more > 0 {
			names = append(names, fmt.Sprintf("and %d more late copies", more))
		}
		return &scenarios.MismatchError{Failed: names}
	}
	if res.Summary.Errors > 0 {
		return fmt.Errorf("%w: %d of %d recipients could not be judged", ErrUnjudged, res.Summary.Errors, res.Summary.Total())
	}
	return nil
}

// Sentinel errors.
var (
	// ErrUnjudged means some rows could not be judged (the target or a mailbox
	// kept failing, or the run ended first).
	ErrUnjudged = errors.New("bulk: recipients not judged")
	// ErrUnreachable means the target could not be reached (connections kept
	// failing after every retry); the run stopped.
	ErrUnreachable = errors.New("bulk: target unreachable")
)

func firstLine(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	return s
}

// engine is the state of one Run.
type engine struct {
	r      *Runner
	cfg    *config.Config
	b      *config.Bulk
	log    *slog.Logger
	runID  string
	helo   string
	sender string

	proxyEP, subEP *endpoint
	source, mx     Sink
	sourceName     string
	mxName         string
	mxDomains      map[string]bool
	mailboxes      map[string]mailbox // plan.local by lower-case address

	limit     atomic.Int64 // learned recipients per transaction
	pipelined atomic.Bool
	// cautious keeps pipelined groups within ErrorsPerConnection, so that a
	// target that refuses what it should not never collects more refusals per
	// session than the budget. A run starts cautious and leaves it after a
	// transaction of unmigrated addresses (the bulk of a list) with 2*budget
	// recipients accepted and none refused; it stays
	// cautious for good (sticky) once a session overshot the budget.
	cautious, sticky atomic.Bool
	nextTxn          atomic.Uint64
	tokens           chan struct{} // one per row in flight

	obs      *observer
	own      []*ownSink // the fakes this run started (see ownSink)
	verdicts chan Verdict
	pool     *imapPool

	lateMu  sync.Mutex
	lost    map[string]bool // transactions whose DATA reply never came
	lateOwn []string        // evidence of the first copies of this run's probes after their verdict
	lateN   struct{ own, lost, foreign int }

	mu       sync.Mutex // guards the tallies below (reporter goroutine and Result)
	routes   map[scenarios.Route]*RouteTally
	summary  report.Summary
	listed   []Verdict
	unlisted int
	lastRate string
}

// Run reads rows until io.EOF, verifies every row of the shard and returns what
// it found. It returns a *RowError when a malformed row stops the run
// (Bulk.OnMalformed "stop"; the rows read before it are still verified), an
// error wrapping ErrUnreachable when the target cannot be reached, and ctx's
// cause when ctx ends first; the Result is never nil. Verdicts are not errors:
// see Result.Err.
func (r *Runner) Run(ctx context.Context, rows Rows) (*Result, error) {
	if r.started.Swap(true) {
		return &Result{}, errors.New("bulk: Run called twice")
	}
	r.start = time.Now()
	e, cleanup, err := r.newEngine(ctx)
	if err != nil {
		return &Result{RunID: r.RunID, Shard: r.Shard}, err
	}
	defer cleanup()

	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)

	repDone := make(chan struct{})
	go func() {
		defer close(repDone)
		for v := range e.verdicts {
			e.report(v)
		}
	}()
	e.obs.start(ctx)

	work := make(chan *batch)
	var wg sync.WaitGroup
	for range e.b.Concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w := &worker{e: e}
			defer w.closeConn(context.WithoutCancel(ctx))
			for b := range work {
				if err := w.process(ctx, b); err != nil {
					cancel(err)
				}
			}
		}()
	}
	inErr := e.produce(ctx, rows, work)
	close(work)
	wg.Wait()
	e.log.Debug("every recipient sent", "elapsed", time.Since(r.start), "sent", r.c.sent.Load(),
		"transactions", r.c.transactions.Load(), "judged", r.c.judged.Load())
	e.obs.finish()
	e.log.Debug("every recipient judged", "elapsed", time.Since(r.start))
	close(e.verdicts)
	<-repDone

	res := e.result()
	if err := context.Cause(ctx); err != nil {
		return res, err
	}
	return res, inErr
}

func (r *Runner) newEngine(ctx context.Context) (*engine, func(), error) {
	cfg := r.Config
	if cfg == nil {
		return nil, nil, errors.New("bulk: Runner.Config is nil")
	}
	b := cfg.Bulk
	if b == nil {
		b = config.BulkDefaults()
	}
	log := r.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if r.RunID == "" {
		var id [6]byte
		_, _ = rand.Read(id[:])
		r.RunID = hex.EncodeToString(id[:])
	}
	e := &engine{
		r: r, cfg: cfg, b: b, log: log, runID: r.RunID,
		helo: cfg.Probe.Helo, sender: cfg.Probe.Sender,
		mxDomains: map[string]bool{}, mailboxes: map[string]mailbox{},
		tokens:   make(chan struct{}, b.InFlight),
		verdicts: make(chan Verdict, 256),
		routes:   map[scenarios.Route]*RouteTally{},
		pool:     newIMAPPool(cfg.Timeouts.Connect, 4*b.ObserveWorkers),
	}
	e.limit.Store(int64(b.BatchSize))
	e.cautious.Store(true)
	e.obs = newObserver(e) // before the sinks start: they report arrivals to it
	for _, a := range cfg.Plan.Local {
		m := a.Mailbox
		e.mailboxes[strings.ToLower(a.Address)] = mailbox{Account: a.Address, Addr: m.Address, TLS: m.TLS,
			Insecure: m.InsecureSkipVerify, Username: m.Username, Password: m.Password.Value()}
	}
	for _, d := range append(slices.Clone(r.MXDomains), externalDomains(cfg.Plan.External)...) {
		e.mxDomains[strings.ToLower(d)] = true
	}

	var closers []func()
	cleanup := func() {
		for i := len(closers) - 1; i >= 0; i-- {
			closers[i]()
		}
	}
	fail := func(err error) (*engine, func(), error) {
		cleanup()
		return nil, nil, err
	}
	closers = append(closers, e.pool.close)

	// The port-25 entry: straight to the PROXY listener with a header in one
	// segment, as the proxy would send it.
	ep, err := e.proxyEndpoint(ctx)
	if err != nil {
		return fail(err)
	}
	if r.Plain {
		if cfg.Target.PlainSMTP == "" {
			return fail(errors.New("bulk: plain probes need target.plain_smtp"))
		}
		ep = &endpoint{Addr: cfg.Target.PlainSMTP, LocalAddr: cfg.Probe.PlainSource, TLS: "none", Helo: e.helo,
			Timeout: cfg.Timeouts.Connect}
	}
	e.proxyEP = ep
	if cfg.Target.Submission != "" && cfg.Submitter.Password.IsSet() {
		e.subEP = e.submissionEndpoint()
	}

	startSink := func(role, addr string) (*fakesource.Server, *ownSink, error) {
		own := newOwnSink(e.obs.arrived, func(id string, m fakesource.Message) { e.unexpectedCopy(role+" "+addr, id, m) })
		e.own = append(e.own, own)
		s := fakesource.NewUnstartedServer()
		s.OnMessage = own.record
		// The server's own record only helps debugging: keep little of it.
		s.KeepBodyBytes = -1
		s.MaxMessages = 100
		s.ReadTimeout, s.WriteTimeout = cfg.Timeouts.Connect, cfg.Timeouts.Connect
		s.Logger = log.With("sink", addr)
		if err := s.Listen(addr); err != nil {
			return nil, nil, err
		}
		closers = append(closers, func() { _ = s.Close() })
		return s, own, nil
	}
	e.source, e.sourceName = r.Source, "fake source"
	if e.source == nil {
		s, own, err := startSink("fake source", cfg.Fakes.Source)
		if err != nil {
			return fail(fmt.Errorf("start fake source: %w", err))
		}
		e.source, e.sourceName = own, "fake source "+s.Addr
	}
	e.mx, e.mxName = r.MX, "fake MX"
	if e.mx == nil && cfg.Fakes.MX != "" && e.subEP != nil {
		s, own, err := startSink("fake MX", cfg.Fakes.MX)
		if err != nil {
			return fail(fmt.Errorf("start fake MX: %w", err))
		}
		e.mx, e.mxName = own, "fake MX "+s.Addr
	}
	if e.mx != nil && r.MX == nil && cfg.Fakes.DNS != "" && len(e.mxDomains) > 0 {
		addr, err := netip.ParseAddr(cfg.Fakes.MXAddress)
		if err != nil {
			return fail(fmt.Errorf("start fake DNS: fakes.mx_address %q: %w", cfg.Fakes.MXAddress, err))
		}
		dns := &fakedns.Server{MX: map[string]netip.Addr{}, Logger: log.With("dns", cfg.Fakes.DNS)}
		for d := range e.mxDomains {
			dns.MX[d] = addr
		}
		if err := dns.Start(cfg.Fakes.DNS); err != nil {
			return fail(fmt.Errorf("start fake DNS: %w", err))
		}
		closers = append(closers, func() { _ = dns.Close() })
	}
	e.obs.addSinks()
	return e, cleanup, nil
}

func externalDomains(addrs []string) []string {
	var out []string
	for _, a := range addrs {
		if strings.Contains(a, "@") {
			out = append(out, domainOf(a))
		}
	}
	return out
}

func (e *engine) proxyEndpoint(ctx context.Context) (*endpoint, error) {
	cfg := e.cfg
	announce, err := config.ParseIPPort(cfg.Proxy.Announce)
	if err != nil {
		return nil, fmt.Errorf("proxy.announce: %w", err)
	}
	if announce.Port() == 0 {
		announce = netip.AddrPortFrom(announce.Addr(), 40000)
	}
	dst, err := resolveAddrPort(ctx, cfg.Target.SMTP, cfg.Timeouts.Connect)
	if err != nil {
		return nil, fmt.Errorf("target.smtp: %w", err)
	}
	header := proxy.HeaderV2(announce, dst)
	if cfg.Proxy.Version == 1 {
		header = proxy.HeaderV1(announce, dst)
	}
	return &endpoint{Addr: cfg.Target.SMTP, Header: header, LocalAddr: cfg.Proxy.SourceAddress,
		TLS: "none", Helo: e.helo, Timeout: cfg.Timeouts.Connect}, nil
}

// resolveAddrPort is s as an address and port, looking the host up (bounded by
// timeout) when it is a name.
func resolveAddrPort(ctx context.Context, s string, timeout time.Duration) (netip.AddrPort, error) {
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return ap, nil
	}
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return netip.AddrPort{}, err
	}
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	ips, err := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
	if err != nil || len(ips) == 0 {
		return netip.AddrPort{}, fmt.Errorf("resolve %s: %v", host, err)
	}
	ap, err := netip.ParseAddrPort(net.JoinHostPort(ips[0].String(), port))
	return ap, err
}

func (e *engine) submissionEndpoint() *endpoint {
	cfg := e.cfg
	host, _, _ := net.SplitHostPort(cfg.Target.Submission)
	user, pass, mech := cfg.Submitter.Username, cfg.Submitter.Password.Value(), cfg.Submitter.Mechanism
	return &endpoint{
		Addr: cfg.Target.Submission, TLS: cfg.Target.SubmissionTLS, Helo: e.helo, Timeout: cfg.Timeouts.Connect,
		TLSConfig: &tls.Config{ServerName: host, InsecureSkipVerify: cfg.Target.InsecureSkipVerify, MinVersion: tls.VersionTLS12},
		Auth: func() sasl.Client {
			if mech == "login" {
				return sasl.NewLoginClient(user, pass)
			}
			return sasl.NewPlainClient("", user, pass)
		},
	}
}

// entryFor is how a row's probe enters the target.
func entryFor(route scenarios.Route) scenarios.Entry {
	if route == scenarios.RouteMX {
		return scenarios.EntrySubmission
	}
	return scenarios.EntryProxy
}

// rowState is one row on its way through the run.
type rowState struct {
	row     Row
	key     string // lower-case address
	retries int
	last    reply // the last temporary reply
	mailbox *mailbox

	local    []scenarios.Observation // copies found over IMAP
	localErr error
}

// batch is rows of one entry sent together (split further by the learned limit).
type batch struct {
	entry scenarios.Entry
	kind  batchKind
	rows  []*rowState
}

// batchKind keeps local recipients in transactions of their own: a copy found
// in a mailbox can then only be the copy for that mailbox's account, while an
// unmigrated address delivered into some mailbox (a catch-all, say) is "not
// seen" at the source instead of a second copy credited to the wrong account.
type batchKind int

const (
	kindProxy batchKind = iota
	kindLocal
	kindReject // expected refusals: at most ErrorsPerConnection to a transaction
	kindSubmission
	nKinds
)

func kindOf(route scenarios.Route) batchKind {
	switch route {
	case scenarios.RouteLocal:
		return kindLocal
	case scenarios.RouteReject:
		return kindReject
	case scenarios.RouteMX:
		return kindSubmission
	}
	return kindProxy
}

// produce reads the rows, filters the shard, and hands batches to the workers.
func (e *engine) produce(ctx context.Context, rows Rows, work chan<- *batch) error {
	var pending [nKinds]*batch
	var seen [nKinds]map[string]bool // addresses in the pending batch
	flush := func(k batchKind) bool {
		b := pending[k]
		pending[k], seen[k] = nil, nil
		if b == nil {
			return true
		}
		select {
		case work <- b:
			return true
		case <-ctx.Done():
			e.release(len(b.rows))
			return false
		}
	}
	flushAll := func() {
		for k := range nKinds {
			flush(k)
		}
	}
	for {
		if ctx.Err() != nil {
			flushAll()
			return nil
		}
		row, err := rows.Next()
		if err != nil {
			var re *RowError
			switch {
			case errors.Is(err, io.EOF):
				flushAll()
				return nil
			case errors.As(err, &re):
				e.r.c.malformed.Add(1)
				if e.r.OnMalformed != nil {
					e.r.OnMalformed(re)
				}
				if e.b.OnMalformed == "stop" {
					flushAll()
					return re
				}
				continue
			default:
				flushAll()
				return fmt.Errorf("read list: %w", err)
			}
		}
		if !e.r.Shard.Contains(row.Address) {
			continue
		}
		// Wait for room: this bounds memory whatever the list's length.
		select {
		case e.tokens <- struct{}{}:
		case <-ctx.Done():
			flushAll()
			return nil
		}
		e.r.c.read.Add(1)
		rs := &rowState{row: row, key: strings.ToLower(row.Address)}
		if v, ok := e.precheck(rs); !ok {
			e.verdicts <- v
			continue
		}
		k := kindOf(row.Expect)
		if seen[k][rs.key] && !flush(k) { // the same address twice: next transaction
			return nil
		}
		if pending[k] == nil {
			pending[k] = &batch{entry: entryFor(row.Expect), kind: k}
			seen[k] = map[string]bool{}
		}
		pending[k].rows = append(pending[k].rows, rs)
		seen[k][rs.key] = true
		size := int(e.limit.Load())
		if k == kindReject {
			size = min(size, e.b.ErrorsPerConnection)
		}
		if len(pending[k].rows) >= size && !flush(k) {
			return nil
		}
	}
}

// precheck settles rows that cannot be probed as configured.
func (e *engine) precheck(rs *rowState) (Verdict, bool) {
	row := rs.row
	switch row.Expect {
	case scenarios.RouteLocal:
		if m, ok := e.mailboxes[rs.key]; ok {
			rs.mailbox = &m
		} else if bm := e.b.Mailbox; bm != nil {
			rs.mailbox = &mailbox{Account: row.Address, Addr: bm.Address, TLS: bm.TLS, Insecure: bm.InsecureSkipVerify,
				Username: bm.LoginFor(row.Address), Password: bm.Password.Value()}
		} else {
			return e.errored(rs, fmt.Errorf("no mailbox to read for local account %s: list it in plan.local or set bulk.mailbox", row.Address), 0), false
		}
	case scenarios.RouteMX:
		switch {
		case e.subEP == nil:
			return e.skipped(rs, "route mx needs target.submission and submitter credentials"), false
		case e.mx == nil:
			return e.skipped(rs, "route mx needs fakes.mx"), false
		case e.r.MX == nil && !e.mxDomains[domainOf(row.Address)]:
			return e.errored(rs, fmt.Errorf("the fake DNS does not answer for %s: list an address of it in plan.external, or give the list as a file", domainOf(row.Address)), 0), false
		}
	}
	return Verdict{}, true
}

// check is the scenarios.Check for a row.
func (e *engine) check(rs *rowState) scenarios.Check {
	return scenarios.Check{
		Name:      fmt.Sprintf("route/%s/%s", rs.row.Expect, rs.row.Address),
		Kind:      scenarios.KindRoute,
		Recipient: rs.row.Address,
		Entry:     entryFor(rs.row.Expect),
		Expect:    rs.row.Expect,
		Deadline:  e.cfg.Timeouts.Delivery,
	}
}

func (e *engine) verdict(rs *rowState, v scenarios.Verdict) Verdict {
	return Verdict{Verdict: v, Line: rs.row.Line, Retries: rs.retries}
}

func (e *engine) errored(rs *rowState, err error, elapsed time.Duration) Verdict {
	return e.verdict(rs, scenarios.Errored(e.check(rs), err, elapsed))
}

func (e *engine) skipped(rs *rowState, why string) Verdict {
	c := e.check(rs)
	c.Skip = why
	return e.verdict(rs, scenarios.Judge(c, nil, 0))
}

func (e *engine) judge(rs *rowState, obs []scenarios.Observation, elapsed time.Duration, probe string) Verdict {
	c := e.check(rs)
	c.Probe = probe
	return e.verdict(rs, scenarios.Judge(c, obs, elapsed))
}

// expect and forget bracket the life of probe id in the run's own sinks.
func (e *engine) expect(id string) {
	for _, s := range e.own {
		s.expect(id)
	}
}

func (e *engine) forget(id string) {
	for _, s := range e.own {
		s.forget(id)
	}
}

// release frees n in-flight slots.
func (e *engine) release(n int) {
	for range n {
		<-e.tokens
	}
}

// report tallies one verdict and hands it on; it runs on the reporter goroutine.
func (e *engine) report(v Verdict) {
	c := &e.r.c
	c.judged.Add(1)
	e.release(1)
	e.mu.Lock()
	t := e.routes[v.Check.Expect]
	if t == nil {
		t = &RouteTally{Route: v.Check.Expect}
		e.routes[v.Check.Expect] = t
	}
	t.Total++
	switch v.Status {
	case scenarios.StatusPass:
		t.Passed++
		e.summary.Passed++
		c.passed.Add(1)
	case scenarios.StatusFail:
		t.Failed++
		e.summary.Failed++
		c.failed.Add(1)
	case scenarios.StatusSkip:
		t.Skipped++
		e.summary.Skipped++
		c.skipped.Add(1)
	default:
		t.Errors++
		e.summary.Errors++
		c.errored.Add(1)
	}
	if v.Status == scenarios.StatusFail || v.Status == scenarios.StatusError {
		if len(e.listed) < e.b.MaxListed {
			e.listed = append(e.listed, v)
		} else {
			e.unlisted++
		}
	}
	e.mu.Unlock()
	if e.r.OnVerdict != nil {
		e.r.OnVerdict(v)
	}
}

func (e *engine) noteRate(r reply) {
	e.r.c.rateLimited.Add(1)
	e.mu.Lock()
	e.lastRate = r.String()
	e.mu.Unlock()
}

func (e *engine) result() *Result {
	e.mu.Lock()
	defer e.mu.Unlock()
	c := &e.r.c
	res := &Result{
		RunID: e.runID, Shard: e.r.Shard, Summary: e.summary,
		Mismatches: e.listed, Unlisted: e.unlisted, Malformed: int(c.malformed.Load()),
		RateLimited: int(c.rateLimited.Load()), RateLimitReply: e.lastRate,
		Temporary: int(c.temporary.Load()), Retries: int(c.retries.Load()),
		Transactions: int(c.transactions.Load()), Connections: int(c.connections.Load()),
		BatchLimit: int(e.limit.Load()), Pipelined: e.pipelined.Load(), Strays: int(c.strays.Load()),
		Elapsed: time.Since(e.r.start),
	}
	e.lateMu.Lock()
	res.Late, res.LateLostReply, res.Foreign = e.lateN.own, e.lateN.lost, e.lateN.foreign
	res.LateEvidence = slices.Clone(e.lateOwn)
	e.lateMu.Unlock()
	res.Summary.Elapsed, res.Summary.RunID, res.Summary.Started = res.Elapsed, e.runID, e.r.start
	for _, route := range []scenarios.Route{scenarios.RouteLocal, scenarios.RouteSource, scenarios.RouteMX, scenarios.RouteReject} {
		if t := e.routes[route]; t != nil {
			res.Routes = append(res.Routes, *t)
		}
	}
	slices.SortStableFunc(res.Mismatches, func(a, b Verdict) int { return cmp.Compare(a.Line, b.Line) })
	return res
}

// maxLateEvidence bounds the late copies described in full.
const maxLateEvidence = 20

// markLost records that transaction id's DATA reply never came: the target may
// have delivered it anyway, and its rows are sent again, so a copy of it arriving
// later is not a second delivery.
func (e *engine) markLost(id string) {
	e.lateMu.Lock()
	if e.lost == nil {
		e.lost = map[string]bool{}
	}
	e.lost[id] = true
	e.lateMu.Unlock()
}

// unexpectedCopy sorts a copy that reached the run's fake sink after its
// transaction was judged: one of this run's probes delivered again (or after
// the target refused it) is evidence against the verdicts; a copy whose DATA
// reply was lost, or of another run's probe, is not.
func (e *engine) unexpectedCopy(sink, id string, m fakesource.Message) {
	e.lateMu.Lock()
	defer e.lateMu.Unlock()
	switch {
	case !strings.HasPrefix(id, e.runID+"."):
		e.lateN.foreign++
	case e.lost[id]:
		e.lateN.lost++
	default:
		e.lateN.own++
		if len(e.lateOwn) < maxLateEvidence {
			rcpts := make([]string, len(m.Rcpts))
			for i, r := range m.Rcpts {
				rcpts[i] = r.Addr
			}
			e.lateOwn = append(e.lateOwn, fmt.Sprintf("probe %s for %s reached the %s after its verdict", id, strings.Join(rcpts, ", "), sink))
		}
	}
}

// lowerLimit lowers the learned recipients-per-transaction limit to n.
func (e *engine) lowerLimit(n int) {
	for {
		cur := e.limit.Load()
		if int64(n) >= cur || e.limit.CompareAndSwap(cur, int64(n)) {
			if int64(n) < cur {
				e.log.Info("recipients per transaction lowered", "limit", n)
			}
			return
		}
	}
}
