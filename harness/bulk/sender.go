package bulk

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"time"

	"github.com/splitcheck/splitcheck/scenarios"
)

// worker owns at most one connection to the target and sends batches on it.
type worker struct {
	e        *engine
	conn     *client
	entry    scenarios.Entry
	failures int // consecutive connection failures
}

func (w *worker) closeConn(ctx context.Context) {
	if w.conn != nil {
		w.conn.quit(ctx)
		w.conn = nil
	}
}

// connect returns an open connection for entry, reusing the current one when
// it can still take refusals more than the transaction may bring.
func (w *worker) connect(ctx context.Context, entry scenarios.Entry, refusals int) (*client, error) {
	if c := w.conn; c != nil && !c.dead && w.entry == entry && c.errors < w.e.b.ErrorsPerConnection &&
		(c.errors == 0 || c.errors+refusals <= w.e.b.ErrorsPerConnection) {
		return c, nil
	}
	w.closeConn(ctx)
	ep := w.e.proxyEP
	if entry == scenarios.EntrySubmission {
		ep = w.e.subEP
	}
	c, err := dial(ctx, *ep)
	if err != nil {
		return nil, err
	}
	w.e.r.c.connections.Add(1)
	if n := c.rcptMax(); n > 0 {
		w.e.lowerLimit(n)
	}
	w.conn, w.entry = c, entry
	return c, nil
}

// process sends every row of b, splitting it by the learned limit and retrying
// deferred rows after a backoff. It returns an error only when the target is
// unreachable; rows it gives up on get an error verdict.
func (w *worker) process(ctx context.Context, b *batch) error {
	queue := b.rows
	for len(queue) > 0 {
		if ctx.Err() != nil {
			w.e.release(len(queue))
			return nil
		}
		n := min(len(queue), int(max(w.e.limit.Load(), 1)))
		part := queue[:n:n]
		queue = queue[n:]
		again, later, err := w.send(ctx, b, part)
		if err != nil {
			w.e.release(len(again) + len(later) + len(queue))
			return err
		}
		queue = append(again, queue...)
		if len(later) > 0 {
			attempt := w.failures
			for _, rs := range later {
				attempt = max(attempt, rs.retries)
			}
			if !sleep(ctx, w.e.backoff(attempt)) {
				w.e.release(len(later) + len(queue))
				return nil
			}
			queue = append(later, queue...)
		}
	}
	return nil
}

// sleep waits d unless ctx ends first; it reports whether ctx is still live.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// backoff is the wait before retry number attempt (1, 2, ...), with +-20% jitter.
func (e *engine) backoff(attempt int) time.Duration {
	d := e.b.Backoff
	for i := 1; i < attempt && d < e.b.MaxBackoff; i++ {
		d *= 2
	}
	d = min(d, e.b.MaxBackoff)
	return time.Duration(float64(d) * (0.8 + 0.4*rand.Float64()))
}

// send runs one transaction for part. again are rows to send at once (the
// recipient limit was reached), later are rows to send after a backoff.
func (w *worker) send(ctx context.Context, b *batch, part []*rowState) (again, later []*rowState, fatal error) {
	e := w.e
	entry := b.entry
	refusals := 0
	if b.kind == kindReject {
		refusals = len(part)
	}
	c, err := w.connect(ctx, entry, refusals)
	if err != nil {
		if ctx.Err() != nil {
			return nil, part, nil
		}
		if r, ok := replyFromErr(err); ok {
			// The server answered but refused the session (banner, EHLO, AUTH).
			switch o := classify(r); o {
			case outcomeRejected:
				for _, rs := range part {
					e.verdicts <- e.errored(rs, fmt.Errorf("the target refused the session: %w", err), 0)
				}
				return nil, nil, nil
			default:
				return nil, w.deferRows(part, r, o), nil
			}
		}
		w.failures++
		e.log.Warn("cannot connect to the target", "entry", entry, "err", err, "failures", w.failures)
		if w.failures > max(e.b.Retries, 0) {
			return nil, part, fmt.Errorf("%w: %v (after %d attempts)", ErrUnreachable, err, w.failures)
		}
		return nil, part, nil
	}

	id := fmt.Sprintf("%s.%d", e.runID, e.nextTxn.Add(1))
	rcpts := make([]string, len(part))
	for i, rs := range part {
		rcpts[i] = rs.row.Address
	}
	pipeline := e.b.Pipelining != "off" && c.has("PIPELINING")
	group, budget := 1, e.b.ErrorsPerConnection
	if pipeline {
		group = pipelineGroup
		if e.cautious.Load() {
			group = budget
		}
	}
	start := time.Now()
	before := c.errors
	e.expect(id) // copies may land before the reply to the message does
	registered := false
	defer func() {
		if !registered {
			e.forget(id)
		}
	}()
	res, err := c.transaction(ctx, e.sender, rcpts, group, budget, e.body(id, len(rcpts)))
	e.r.c.transactions.Add(1)
	refused, acceptedN := c.errors-before, 0
	for _, r := range res.Rcpt {
		if r.ok() {
			acceptedN++
		}
	}
	switch {
	case refused > budget:
		e.cautious.Store(true)
		if !e.sticky.Swap(true) {
			e.log.Warn("the target refuses many recipients: sending fewer commands at a time",
				"refusals", refused, "errors_per_connection", budget)
		}
	case refused == 0 && acceptedN >= 2*budget && b.kind == kindProxy && !e.sticky.Load():
		e.cautious.Store(false)
	}
	if pipeline && len(rcpts) > 0 && entry == scenarios.EntryProxy {
		e.pipelined.Store(true)
	}
	if err != nil || c.dead {
		w.closeConn(ctx)
	}
	if err != nil {
		if ctx.Err() != nil {
			return nil, part, nil
		}
		w.failures++
		e.log.Warn("connection to the target failed", "entry", entry, "err", err, "failures", w.failures)
		if w.failures > max(e.b.Retries, 0) {
			return nil, part, fmt.Errorf("%w: %v (after %d attempts)", ErrUnreachable, err, w.failures)
		}
	} else {
		w.failures = 0
	}
	elapsed := time.Since(start)

	if res.Mail.Code == 0 {
		return nil, part, nil // nothing answered: the connection failed
	}
	if !res.Mail.ok() {
		o := classify(res.Mail)
		if o == outcomeRejected {
			for _, rs := range part {
				e.verdicts <- e.errored(rs, fmt.Errorf("MAIL FROM:<%s> refused: %s", e.sender, res.Mail), elapsed)
			}
			return nil, nil, nil
		}
		return nil, w.deferRows(part, res.Mail, o), nil
	}

	// The limit is what the server answered before its first "too many".
	answered, tooMany := 0, false
	for _, r := range res.Rcpt {
		if r.Code == 0 || classify(r) == outcomeTooMany {
			tooMany = tooMany || r.Code != 0
			break
		}
		answered++
	}
	if tooMany && answered > 0 {
		e.lowerLimit(answered)
	}

	var accepted []*rowState
	for i, rs := range part {
		r := res.Rcpt[i]
		switch o := classify(r); {
		case r.Code == 0 && (tooMany && answered > 0 || res.Budget):
			again = append(again, rs) // not sent: after the limit, or the error budget
		case r.Code == 0:
			later = append(later, rs) // unanswered: the connection ended
		case o == outcomeOK:
			accepted = append(accepted, rs)
		case o == outcomeRejected:
			e.r.c.sent.Add(1)
			obs := scenarios.Observation{Place: scenarios.RouteReject, Where: "RCPT TO",
				Evidence: "RCPT " + r.String(), After: elapsed}
			e.verdicts <- e.judge(rs, []scenarios.Observation{obs}, elapsed, id)
		case o == outcomeTooMany && answered > 0:
			again = append(again, rs)
		default:
			later = append(later, w.deferRows([]*rowState{rs}, r, o)...)
		}
	}
	if len(accepted) == 0 {
		return again, later, nil
	}
	switch o := classify(res.Data); {
	case res.Data.Code == 0:
		// DATA not answered: the connection ended. Send them again; a copy of
		// this one may still arrive.
		e.markLost(id)
		later = append(later, accepted...)
	case o == outcomeOK:
		e.r.c.sent.Add(int64(len(accepted)))
		e.obs.add(&txn{id: id, entry: entry, sentAt: start, rows: accepted})
		registered = true
	case o == outcomeRejected:
		e.r.c.sent.Add(int64(len(accepted)))
		for _, rs := range accepted {
			obs := scenarios.Observation{Place: scenarios.RouteReject, Where: "DATA",
				Evidence: "DATA " + res.Data.String(), After: elapsed}
			e.verdicts <- e.judge(rs, []scenarios.Observation{obs}, elapsed, id)
		}
	default:
		later = append(later, w.deferRows(accepted, res.Data, o)...)
	}
	return again, later, nil
}

// deferRows counts a temporary refusal r for rows and returns those to retry;
// rows out of retries get an error verdict.
func (w *worker) deferRows(rows []*rowState, r reply, o outcome) []*rowState {
	e := w.e
	if o == outcomeRateLimited {
		e.noteRate(r)
	} else {
		e.r.c.temporary.Add(1)
	}
	var keep []*rowState
	for _, rs := range rows {
		rs.retries++
		rs.last = r
		if rs.retries > max(e.b.Retries, 0) {
			what := "temporary failure"
			if o == outcomeRateLimited {
				what = "rate limited"
			}
			e.verdicts <- e.errored(rs, fmt.Errorf("%s: %s (gave up after %d retries)", what, r, rs.retries-1), 0)
			continue
		}
		e.r.c.retries.Add(1)
		keep = append(keep, rs)
	}
	return keep
}

// body is the probe message of transaction id.
func (e *engine) body(id string, n int) []byte {
	var b strings.Builder
	b.Grow(512)
	fmt.Fprintf(&b, "From: <%s>\r\n", e.sender)
	b.WriteString("To: undisclosed-recipients:;\r\n")
	fmt.Fprintf(&b, "Subject: splitcheck bulk probe %s\r\n", id)
	fmt.Fprintf(&b, "Date: %s\r\n", time.Now().Format(time.RFC1123Z))
	fmt.Fprintf(&b, "Message-ID: %s\r\n", scenarios.MessageID(id))
	fmt.Fprintf(&b, "%s: %s\r\n", ProbeHeader, id)
	fmt.Fprintf(&b, "%s: %s\r\n", RunHeader, e.runID)
	b.WriteString("MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n")
	fmt.Fprintf(&b, "splitcheck bulk probe %s for %d recipients (run %s).\r\nIt only tests routing; delete it.\r\n", id, n, e.runID)
	return []byte(b.String())
}

var errNoVerdict = errors.New("bulk: run ended before a verdict")
