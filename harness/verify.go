// Package harness runs one splitcheck verification against a mail server: it stands
// up the fakes (a fake source and a fake MX from package fakesource, a fake DNS from
// harness/fakedns, the PROXY-protocol proxy from package proxy), sends the probes of
// the built-in matrix and of scenario files as real SMTP, watches where each one lands
// (local mailboxes over IMAP, the fakes, SMTP replies), and judges every check with
// package scenarios.
//
// Verify is the whole run. It starts its goroutines itself and waits for all of them,
// and closes every fake, before it returns; cancelling its context stops everything.
// Subpackages hold the parts that stand alone: fakedns, imapobs (the IMAP observer),
// config (the run description), report (rendering verdicts).
package harness

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/splitcheck/splitcheck/harness/config"
	"github.com/splitcheck/splitcheck/scenarios"
)

// ErrConfig is wrapped by Verify's errors that come from the configuration or the
// probes rather than from the environment (exit code 2).
var ErrConfig = errors.New("harness: bad configuration")

// Progress stages.
const (
	StageSent    = "sent"    // the probe's message was sent (or refused) over SMTP
	StageWaiting = "waiting" // waiting for arrival and for absence elsewhere
	StageJudged  = "judged"  // the check has its verdict
)

// VerifyOptions tunes a Verify run. The zero value runs the built-in matrix silently.
type VerifyOptions struct {
	// Logger receives the run's log records; nil is silent.
	Logger *slog.Logger
	// Progress, when set, is called as checks move (StageSent, StageWaiting,
	// StageJudged). Calls are serialized; it must not block for long. A check
	// that passed is judged again, failed, when a late copy of its probe turns
	// up at a fake sink or in a mailbox once every probe is judged.
	Progress func(ProgressEvent)
	// Now is the clock for Started, Date headers and probe ids; default time.Now.
	// Durations are always measured with the monotonic clock.
	Now func() time.Time
	// Extra are probes from scenario files (already parsed).
	Extra []scenarios.Probe
	// Replace makes Extra replace the built-in matrix instead of adding to it.
	Replace bool
	// LocalObserver overrides how local delivery is observed (a JMAP observer for
	// Stalwart, say); nil means IMAP with the accounts' mailbox settings. Verify
	// does not close it.
	LocalObserver Observer
	// Observers replace the built-in observer of a route (a Stalwart queue
	// observer for source in live mode, say): see observers_ext.go. Verify does
	// not close them.
	Observers map[scenarios.Route]Observer
}

// ProgressEvent tells how far a run is.
type ProgressEvent struct {
	Check  string
	Stage  string           // StageSent, StageWaiting or StageJudged
	Status scenarios.Status // set with StageJudged
	Done   int              // checks judged so far
	Total  int              // checks in the run
}

// Result is what one run found.
type Result struct {
	// Verdicts has one entry per check, in the order of scenarios.Checks.
	Verdicts []scenarios.Verdict
	Started  time.Time
	Elapsed  time.Duration
	// RunID is unique per run and prefixes every probe id.
	RunID string
}

// Counts tallies the verdicts by status; a verdict with an unknown status counts as
// errored.
func (r *Result) Counts() (pass, fail, skip, errored int) {
	for _, v := range r.Verdicts {
		switch v.Status {
		case scenarios.StatusPass:
			pass++
		case scenarios.StatusFail:
			fail++
		case scenarios.StatusSkip:
			skip++
		default:
			errored++
		}
	}
	return
}

// Mismatch returns nil when no check failed or errored, else a
// *scenarios.MismatchError naming each such check with its detail.
func (r *Result) Mismatch() error {
	var failed []string
	for _, v := range r.Verdicts {
		if v.Status == scenarios.StatusPass || v.Status == scenarios.StatusSkip {
			continue
		}
		line := v.Check.Name + ": " + string(v.Status)
		if v.Detail != "" {
			line = v.Check.Name + ": " + v.Detail
		}
		failed = append(failed, line)
	}
	if len(failed) == 0 {
		return nil
	}
	return &scenarios.MismatchError{Failed: failed}
}

// Latencies are the send-to-arrival times of the passed route and plain checks that
// were delivered (refusals left out), sorted.
func (r *Result) Latencies() []time.Duration {
	var out []time.Duration
	for _, v := range r.Verdicts {
		if v.Status != scenarios.StatusPass || (v.Check.Kind != scenarios.KindRoute && v.Check.Kind != scenarios.KindPlain) {
			continue
		}
		if len(v.Observed) == 1 && v.Observed[0].Place != scenarios.RouteReject {
			out = append(out, v.Observed[0].After)
		}
	}
	slices.Sort(out)
	return out
}

// Observer finds where one probe landed for one recipient: every sighting of the
// probe (by id) for rcpt at the place it watches. It does not wait.
type Observer interface {
	Observe(ctx context.Context, probeID, rcpt string) ([]scenarios.Observation, error)
}

// Waiter is an optional Observer method: block until Observe would find the probe for
// rcpt (nil), or fail. Observers without it are polled.
type Waiter interface {
	Wait(ctx context.Context, probeID, rcpt string) error
}

// Verify runs every check of the plan in cfg (and of opt.Extra) against the target
// and returns the verdicts. It returns an error only when the run could not happen at
// all: bad probes or configuration (wrapping ErrConfig), a fake that could not bind,
// the target's port 25 (or submission, or a mailbox) unreachable, or ctx ending
// before any verdict. A routing mismatch is a verdict, not an error: see
// Result.Mismatch.
func Verify(ctx context.Context, cfg *config.Config, opt VerifyOptions) (*Result, error) {
	if cfg == nil {
		return nil, fmt.Errorf("%w: no configuration", ErrConfig)
	}
	r := &run{cfg: cfg, opt: opt, log: opt.Logger, now: opt.Now}
	if r.log == nil {
		r.log = slog.New(slog.DiscardHandler)
	}
	if r.now == nil {
		r.now = time.Now
	}
	probes := ProbesFor(cfg, opt.Extra, opt.Replace)
	if len(probes) == 0 {
		return nil, fmt.Errorf("%w: no probes to run", ErrConfig)
	}
	if err := scenarios.Validate(probes); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrConfig, err)
	}
	announce, err := config.ParseIPPort(cfg.Proxy.Announce)
	if err != nil {
		return nil, fmt.Errorf("%w: proxy.announce: %w", ErrConfig, err)
	}
	if err := checkAnnounce(cfg, announce.Addr()); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrConfig, err)
	}
	if !r.customLocal() {
		for _, a := range cfg.Plan.Local {
			if p := a.Mailbox.Protocol; p != "" && p != "imap" {
				return nil, fmt.Errorf("%w: plan.local %s: mailbox protocol %q needs a local observer (IMAP is built in)", ErrConfig, a.Address, p)
			}
		}
	}
	r.announce = announce
	r.probes = probes
	r.checks = r.prepareChecks(scenarios.Checks(probes))

	started := r.now()
	mono := time.Now()
	r.runID = newRunID(started)
	res := &Result{Started: started, RunID: r.runID}
	if d := cfg.Timeouts.Run; d > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, d)
		defer cancel()
	}
	r.log.Info("verify starting", "run", r.runID, "probes", len(probes), "checks", len(r.checks))

	env, err := startEnv(ctx, cfg, r.needs(), r.log)
	if err != nil {
		return nil, err
	}
	defer env.close()
	r.env = env
	r.places = withObservers(env.places(opt.LocalObserver), opt.Observers)
	if err := r.preflight(ctx); err != nil {
		return nil, err
	}

	r.verdicts = make([]scenarios.Verdict, len(r.checks))
	r.judged = make([]bool, len(r.checks))
	r.probeIDs = make([]string, len(r.checks))
	r.start = mono
	var wg sync.WaitGroup
	var relay []scenarios.Probe
	for i, p := range probes {
		if p.Entry == scenarios.EntryRelay {
			relay = append(relay, p) // judged once every other probe is
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			r.runProbe(ctx, i, p)
		}()
	}
	wg.Wait()
	r.recheckLate(ctx)
	for _, p := range relay {
		r.runRelay(ctx, p)
	}

	res.Elapsed = time.Since(mono)
	res.Verdicts = r.verdicts
	r.log.Info("verify done", "run", r.runID, "elapsed", res.Elapsed)
	if ctx.Err() != nil && r.real == 0 {
		return res, fmt.Errorf("verify: no verdict before the run ended: %w", context.Cause(ctx))
	}
	return res, nil
}

// checkAnnounce refuses a run whose received check could pass without the PROXY
// header being honoured: an EHLO name that is an address literal (the target
// copies it into its Received header), or an announced address the proxy
// connects from anyway (proxy.source_address, or without one the loopback
// address the system picks: 127.0.0.1, ::1 or the target's own).
func checkAnnounce(cfg *config.Config, announce netip.Addr) error {
	announce = announce.Unmap()
	if h := cfg.Probe.Helo; strings.HasPrefix(h, "[") {
		return fmt.Errorf("probe.helo %q is an address literal: use a host name (a literal in the Received header cannot be told from the client address)", h)
	}
	var from []netip.Addr
	if src := cfg.Proxy.SourceAddress; src != "" {
		if ip, err := netip.ParseAddr(src); err == nil {
			from = append(from, ip.Unmap())
		}
	} else {
		from = append(from, netip.AddrFrom4([4]byte{127, 0, 0, 1}), netip.IPv6Loopback())
		if ap, err := netip.ParseAddrPort(cfg.Target.SMTP); err == nil {
			from = append(from, ap.Addr().Unmap())
		}
	}
	if slices.Contains(from, announce) {
		return fmt.Errorf("proxy.announce %s is the address the proxy connects to the target from: announce another one, "+
			"so that a Received header showing it proves the PROXY header was honoured", announce)
	}
	return nil
}

// ProbesFor is the probes a run of cfg sends: the built-in matrix of its plan followed
// by extra, or extra alone when replace is set.
func ProbesFor(cfg *config.Config, extra []scenarios.Probe, replace bool) []scenarios.Probe {
	var probes []scenarios.Probe
	if !replace {
		probes = scenarios.Matrix(PlanOf(cfg))
	}
	return append(probes, extra...)
}

// PlanOf is the scenarios view of cfg's migration plan.
func PlanOf(cfg *config.Config) scenarios.Plan {
	p := scenarios.Plan{
		Domains:       slices.Clone(cfg.Plan.Domains),
		Unmigrated:    slices.Clone(cfg.Plan.Unmigrated),
		External:      slices.Clone(cfg.Plan.External),
		PlainListener: cfg.Target.PlainSMTP != "",
	}
	for _, a := range cfg.Plan.Local {
		p.Local = append(p.Local, a.Address)
	}
	return p
}

// newRunID is "20260102t030405-1a2b3c": sortable, and unique thanks to the random tail.
func newRunID(now time.Time) string {
	var b [3]byte
	_, _ = rand.Read(b[:])
	return strings.ToLower(now.UTC().Format("20060102T150405")) + "-" + hex.EncodeToString(b[:])
}

// run is the state of one Verify call.
type run struct {
	cfg      *config.Config
	opt      VerifyOptions
	log      *slog.Logger
	now      func() time.Time
	runID    string
	announce netip.AddrPort
	probes   []scenarios.Probe
	checks   []scenarios.Check
	env      *env
	places   []place
	start    time.Time // when the run started (monotonic)

	mu       sync.Mutex
	verdicts []scenarios.Verdict
	judged   []bool
	probeIDs []string // the id of the message each check's probe sent ("" if none)
	done     int
	real     int // verdicts judged from observations (not skips, not cancellations)
}

// customLocal reports whether the caller observes local delivery (either
// option), so that the built-in IMAP observer is neither started nor checked.
func (r *run) customLocal() bool {
	return r.opt.LocalObserver != nil || r.opt.Observers[scenarios.RouteLocal] != nil
}

// needs says which fakes the probes use.
func (r *run) needs() needs {
	n := needs{imap: !r.customLocal()}
	for _, c := range r.checks {
		if c.Skip != "" {
			continue
		}
		switch c.Entry {
		case scenarios.EntrySubmission:
			n.submission = true
		case scenarios.EntryProxy:
			n.proxy = true
		}
	}
	seen := map[string]bool{}
	addDomain := func(addr string) {
		if d := domainOf(addr); d != "" && !r.migrated(addr) && !seen[d] {
			seen[d] = true
			n.external = append(n.external, d)
		}
	}
	for _, a := range r.cfg.Plan.External {
		addDomain(a)
	}
	for _, p := range r.probes {
		for _, rc := range p.Recipients {
			addDomain(rc.Address)
		}
	}
	return n
}

func (r *run) migrated(addr string) bool {
	d := domainOf(addr)
	return slices.ContainsFunc(r.cfg.Plan.Domains, func(m string) bool { return strings.EqualFold(m, d) })
}

// prepareChecks fills in what the engine knows and the plan does not: deadlines, the
// address a received check looks for, and skips for listeners and fakes the
// configuration lacks.
func (r *run) prepareChecks(checks []scenarios.Check) []scenarios.Check {
	cfg := r.cfg
	for i := range checks {
		c := &checks[i]
		if c.Kind == scenarios.KindRoute || c.Kind == scenarios.KindPlain {
			c.Deadline = cfg.Timeouts.Delivery
		}
		if c.Kind == scenarios.KindReceived {
			c.Want = r.announce.Addr().Unmap().String()
		}
		if c.Skip != "" {
			continue
		}
		switch {
		case c.Entry == scenarios.EntryPlain && cfg.Target.PlainSMTP == "":
			c.Skip = "no plain listener configured (target.plain_smtp)"
		case c.Entry == scenarios.EntrySubmission && cfg.Target.Submission == "":
			c.Skip = "no submission listener configured (target.submission)"
		case c.Entry == scenarios.EntrySubmission && cfg.Submitter.Username == "":
			c.Skip = "no submitter configured (submitter.username)"
		case c.Expect == scenarios.RouteMX && (cfg.Fakes.MX == "" || cfg.Fakes.DNS == ""):
			c.Skip = "no fake MX and DNS configured (fakes.mx, fakes.dns)"
		}
	}
	return checks
}

// checksOf returns the indexes of probe p's checks.
func (r *run) checksOf(p scenarios.Probe) []int {
	var out []int
	for i, c := range r.checks {
		if c.Probe == p.Name {
			out = append(out, i)
		}
	}
	return out
}

// emit reports progress (serialized).
func (r *run) emit(i int, stage string, status scenarios.Status) {
	if r.opt.Progress == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.opt.Progress(ProgressEvent{Check: r.checks[i].Name, Stage: stage, Status: status, Done: r.done, Total: len(r.checks)})
}

// recheckLate looks at the fake sinks and the IMAP mailboxes once more when
// every probe is judged: a copy that arrived after its check had passed (a
// second delivery slower than timeouts.absence, while other checks were still
// waiting) turns that pass into a failure. The caller's observers are not asked
// again: they may claim what they report (the Stalwart queue does).
func (r *run) recheckLate(ctx context.Context) {
	if ctx.Err() != nil {
		return // the run ended: there is no time to look, and the verdicts say so
	}
	for i := range r.checks {
		r.mu.Lock()
		v, id := r.verdicts[i], r.probeIDs[i]
		r.mu.Unlock()
		c := v.Check
		if v.Status != scenarios.StatusPass || id == "" || (c.Kind != scenarios.KindRoute && c.Kind != scenarios.KindPlain) {
			continue
		}
		var late []scenarios.Observation
		for _, p := range r.places {
			if !p.recheck {
				continue
			}
			sctx, cancel := context.WithTimeout(ctx, 2*r.cfg.Timeouts.Connect)
			now, err := p.obs.Observe(sctx, id, c.Recipient)
			cancel()
			if err != nil {
				// Nothing new is known; the check was judged on what was seen.
				r.log.Warn("could not look again for late copies", "scenario", c.Name, "place", p.route, "err", err)
				continue
			}
			// A copy is late when it was not among the check's sightings: compared
			// by evidence, since a place need not list its copies in arrival order.
			seen := map[string]int{}
			for _, o := range v.Observed {
				if o.Place == p.route {
					seen[o.Evidence]++
				}
			}
			for _, o := range now {
				if seen[o.Evidence] > 0 {
					seen[o.Evidence]--
					continue
				}
				if o.Place == "" {
					o.Place = p.route
				}
				late = append(late, o)
			}
		}
		if len(late) == 0 {
			continue
		}
		nv := scenarios.Judge(c, append(slices.Clone(v.Observed), late...), v.Elapsed)
		nv.AddDetail(fmt.Sprintf("%d of them arrived after the check had passed (a second delivery slower than timeouts.absence)", len(late)))
		r.log.Warn("a copy arrived after its check passed", "scenario", c.Name, "rcpt", c.Recipient, "copies", len(late))
		r.mu.Lock()
		r.verdicts[i] = nv
		if r.opt.Progress != nil {
			r.opt.Progress(ProgressEvent{Check: c.Name, Stage: StageJudged, Status: nv.Status, Done: r.done, Total: len(r.checks)})
		}
		r.mu.Unlock()
	}
}

// record stores check i's verdict once and reports it.
func (r *run) record(i int, v scenarios.Verdict, real bool) {
	r.mu.Lock()
	if r.judged[i] {
		r.mu.Unlock()
		return
	}
	r.judged[i] = true
	r.verdicts[i] = v
	r.done++
	if real {
		r.real++
	}
	done := r.done
	if r.opt.Progress != nil {
		r.opt.Progress(ProgressEvent{Check: v.Check.Name, Stage: StageJudged, Status: v.Status, Done: done, Total: len(r.checks)})
	}
	r.mu.Unlock()
	r.log.Info("check judged", "scenario", v.Check.Name, "rcpt", v.Check.Recipient, "route", v.Check.Expect,
		"status", v.Status, "detail", v.Detail, "elapsed", v.Elapsed)
}

// sortObservations orders sightings by time, then place, for stable reports.
func sortObservations(obs []scenarios.Observation) {
	sort.SliceStable(obs, func(a, b int) bool {
		if obs[a].After != obs[b].After {
			return obs[a].After < obs[b].After
		}
		return obs[a].Place < obs[b].Place
	})
}

func domainOf(addr string) string {
	i := strings.LastIndexByte(addr, '@')
	if i < 0 {
		return ""
	}
	return strings.ToLower(addr[i+1:])
}
