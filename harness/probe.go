package harness

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/splitcheck/splitcheck/scenarios"
)

// pollMax is the longest pause between two looks at an observer that cannot wait.
const pollMax = 250 * time.Millisecond

// runProbe sends probe number idx (its message, or the headerless connection) and
// judges its checks.
func (r *run) runProbe(ctx context.Context, idx int, p scenarios.Probe) {
	var active []int
	for _, i := range r.checksOf(p) {
		if r.checks[i].Skip != "" {
			r.judge(ctx, i, nil, 0, "")
			continue
		}
		active = append(active, i)
	}
	if len(active) == 0 {
		return
	}
	if p.Entry == scenarios.EntryHeaderless {
		r.runHeaderless(ctx, active)
		return
	}
	id := fmt.Sprintf("%s-%02d", r.runID, idx+1)
	log := r.log.With("probe", p.Name, "probe_id", id, "entry", p.Entry)
	s := r.send(ctx, p, id)
	if s.err != nil {
		log.Warn("probe not sent", "err", s.err)
		for _, i := range active {
			r.fail(ctx, i, fmt.Errorf("send probe %s: %w", p.Name, s.err), time.Since(s.start))
		}
		return
	}
	log.Debug("probe sent", "rejected", len(s.rejects), "reply", s.accepted)
	for _, i := range active {
		r.mu.Lock()
		r.probeIDs[i] = id
		r.mu.Unlock()
		r.emit(i, StageSent, "")
	}

	var (
		mu       sync.Mutex
		all      []scenarios.Observation
		unread   []string // watches that stopped early: copies they would have seen are unknown
		received []int
		wg       sync.WaitGroup
	)
	for _, i := range active {
		if r.checks[i].Kind == scenarios.KindReceived {
			received = append(received, i)
			continue
		}
		r.emit(i, StageWaiting, "")
		wg.Add(1)
		go func() {
			defer wg.Done()
			obs, err := r.await(ctx, i, s)
			mu.Lock()
			all = append(all, obs...)
			if err != nil {
				unread = append(unread, fmt.Sprintf("%s: %v", r.checks[i].Name, err))
			}
			mu.Unlock()
		}()
	}
	wg.Wait()
	sortObservations(all)
	for _, i := range received {
		r.judgeReceived(ctx, i, all, unread, time.Since(s.start))
	}
}

// judgeReceived judges a Received check on the copies the route checks saw. When a
// watch stopped early, a copy may have gone unread: a bad header seen is still a
// failure, but anything else (no copy, or only good ones) cannot be judged.
func (r *run) judgeReceived(ctx context.Context, i int, obs []scenarios.Observation, unread []string, elapsed time.Duration) {
	if len(unread) > 0 && r.checks[i].Skip == "" {
		// A failed Received verdict that lists copies failed on a copy's header.
		if v := scenarios.Judge(r.checks[i], obs, elapsed); v.Status != scenarios.StatusFail || len(v.Observed) == 0 {
			sort.Strings(unread)
			r.fail(ctx, i, fmt.Errorf("cannot read every delivered copy: %s", strings.Join(unread, "; ")), elapsed)
			return
		}
	}
	r.judge(ctx, i, obs, elapsed, "")
}

// await waits for check i's recipient to show up anywhere, then for a quiet window,
// then looks everywhere once more and judges. It returns the sightings.
func (r *run) await(ctx context.Context, i int, s *sent) ([]scenarios.Observation, error) {
	c := r.checks[i]
	var initial []scenarios.Observation
	if o, ok := s.rejects[scenarios.Canonical(c.Recipient)]; ok {
		initial = append(initial, o)
	}
	var seen time.Time
	if len(initial) > 0 {
		seen = time.Now()
	} else {
		var err error
		seen, err = r.waitAny(ctx, s.start.Add(r.cfg.Timeouts.Delivery), s.id, c.Recipient)
		if err != nil {
			// Watching stopped early, so neither arrival nor absence was proven:
			// the check cannot be judged, and must never pass on one last sweep.
			r.log.Warn("watching failed", "scenario", c.Name, "err", err)
			r.fail(ctx, i, err, time.Since(s.start))
			return initial, err
		}
	}
	if !seen.IsZero() && r.cfg.Timeouts.Absence > 0 {
		// Arrived (or refused): now prove it arrives nowhere else.
		t := time.NewTimer(r.cfg.Timeouts.Absence)
		select {
		case <-ctx.Done():
		case <-t.C:
		}
		t.Stop()
	}
	found, err := r.sweep(ctx, s.id, c.Recipient)
	if err != nil {
		r.fail(ctx, i, err, time.Since(s.start))
		return initial, err
	}
	obs := append(initial, found...)
	for k := range obs {
		o := &obs[k]
		if o.After != 0 {
			continue
		}
		switch {
		case !o.At.IsZero():
			o.After = o.At.Sub(s.start)
		case !seen.IsZero():
			o.After = seen.Sub(s.start)
		default:
			o.After = time.Since(s.start)
		}
		o.After = max(o.After, 0)
	}
	sortObservations(obs)
	var notes []string
	if len(obs) == 0 {
		if s.accepted != "" {
			notes = append(notes, "the target accepted it: "+s.accepted)
		}
		if copies := r.copies(ctx, s.id, c.Recipient); len(copies) > 0 {
			notes = append(notes, "copies of the message, counted for other recipients: "+strings.Join(copies, "; "))
		}
	}
	r.judge(ctx, i, obs, time.Since(s.start), strings.Join(notes, "; "))
	return obs, nil
}

// copyFinder is implemented by observers that can list every copy of a probe,
// whichever recipient it counts for.
type copyFinder interface {
	Copies(ctx context.Context, probeID, rcpt string) ([]string, error)
}

// copies lists the probe's copies the observers know of, for a check that saw none.
func (r *run) copies(ctx context.Context, probeID, rcpt string) []string {
	var out []string
	for _, p := range r.places {
		cf, ok := p.obs.(copyFinder)
		if !ok {
			continue
		}
		cctx, cancel := context.WithTimeout(ctx, 2*r.cfg.Timeouts.Connect)
		found, err := cf.Copies(cctx, probeID, rcpt)
		cancel()
		if err != nil {
			r.log.Debug("list copies", "route", p.route, "err", err)
		}
		out = append(out, found...)
	}
	return out
}

// waitAny waits until some place has the probe for rcpt, or deadline. It returns when
// the first sighting was noticed (zero if none), and the first observer error.
func (r *run) waitAny(ctx context.Context, deadline time.Time, probeID, rcpt string) (time.Time, error) {
	wctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	found := make(chan time.Time, len(r.places))
	errc := make(chan error, len(r.places))
	var wg sync.WaitGroup
	for _, p := range r.places {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := waitFor(wctx, p.obs, probeID, rcpt)
			switch {
			case err == nil:
				found <- time.Now()
			case wctx.Err() == nil:
				errc <- fmt.Errorf("watch %s: %w", p.route, err)
			}
		}()
	}
	var at time.Time
	var err error
	select {
	case at = <-found:
	case err = <-errc:
	case <-wctx.Done():
	}
	cancel()
	wg.Wait()
	return at, err
}

// waitFor blocks until o sees the probe for rcpt: with o's own Wait when it has
// one, else by calling Observe with a growing pause.
func waitFor(ctx context.Context, o Observer, probeID, rcpt string) error {
	if w, ok := o.(Waiter); ok {
		return w.Wait(ctx, probeID, rcpt)
	}
	pause := pollMax / 25
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return context.Cause(ctx)
		case <-t.C:
		}
		obs, err := o.Observe(ctx, probeID, rcpt)
		if err != nil {
			return err
		}
		if len(obs) > 0 {
			return nil
		}
		t.Reset(pause)
		pause = min(pause*3/2, pollMax)
	}
}

// sweep asks every place once for the probe's sightings for rcpt.
func (r *run) sweep(ctx context.Context, probeID, rcpt string) ([]scenarios.Observation, error) {
	var out []scenarios.Observation
	for _, p := range r.places {
		sctx, cancel := context.WithTimeout(ctx, 2*r.cfg.Timeouts.Connect)
		obs, err := p.obs.Observe(sctx, probeID, rcpt)
		cancel()
		if err != nil {
			return nil, fmt.Errorf("observe %s: %w", p.route, err)
		}
		for _, o := range obs {
			if o.Place == "" {
				o.Place = p.route
			}
			out = append(out, o)
		}
	}
	return out, nil
}

// runHeaderless runs the headerless-connection check(s).
func (r *run) runHeaderless(ctx context.Context, checks []int) {
	start := time.Now()
	for _, i := range checks {
		r.emit(i, StageSent, "")
	}
	o, err := r.headerless(ctx)
	for _, i := range checks {
		if err != nil {
			r.fail(ctx, i, err, time.Since(start))
			continue
		}
		r.judge(ctx, i, []scenarios.Observation{o}, time.Since(start), "")
	}
}

// judge records the verdict for check i from its observations; note is added to the
// detail of a check that failed for want of any sighting.
func (r *run) judge(ctx context.Context, i int, obs []scenarios.Observation, elapsed time.Duration, note string) {
	c := r.checks[i]
	if ctx.Err() != nil && c.Skip == "" {
		v := scenarios.Errored(c, fmt.Errorf("no verdict: the run ended first (%w)", context.Cause(ctx)), elapsed)
		v.Observed = obs
		r.record(i, v, false)
		return
	}
	v := scenarios.Judge(c, obs, elapsed)
	if v.Status == scenarios.StatusFail && len(obs) == 0 && note != "" {
		v.AddDetail(note)
	}
	r.record(i, v, c.Skip == "")
}

// fail records an error verdict for check i.
func (r *run) fail(ctx context.Context, i int, err error, elapsed time.Duration) {
	real := ctx.Err() == nil
	if !real && !errors.Is(err, context.Cause(ctx)) {
		err = fmt.Errorf("%w (the run ended: %w)", err, context.Cause(ctx))
	}
	r.record(i, scenarios.Errored(r.checks[i], err, elapsed), real)
}
