package bulk

import (
	"container/heap"
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/splitcheck/splitcheck/fakesource"
	"github.com/splitcheck/splitcheck/scenarios"
)

// txn is one accepted transaction waiting for its deliveries to be observed.
type txn struct {
	id     string
	entry  scenarios.Entry
	sentAt time.Time
	rows   []*rowState // the recipients the target accepted
	due    time.Time   // next check
	index  int         // in the heap, -1 when not in it
	waited bool        // the first check is done: arrivals may hurry the next
}

// txnHeap orders transactions by their next check.
type txnHeap []*txn

func (h txnHeap) Len() int           { return len(h) }
func (h txnHeap) Less(i, j int) bool { return h[i].due.Before(h[j].due) }
func (h txnHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].index, h[j].index = i, j
}
func (h *txnHeap) Push(x any) {
	t := x.(*txn)
	t.index = len(*h)
	*h = append(*h, t)
}
func (h *txnHeap) Pop() any {
	old := *h
	t := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	t.index = -1
	return t
}

// observer checks each accepted transaction once its quiet window (Absence) has
// passed since it was sent: the sinks are asked for its probe id (an index
// lookup) and each local recipient's mailbox is searched once. A transaction
// whose recipients are not all found yet is checked again every poll interval
// until Delivery has passed; then what was seen is judged.
//
// A sink that reports arrivals (the fakesource servers Run starts do, through
// arrived) hurries the next check of a transaction that is still waiting, so a
// late delivery is judged when it lands rather than at the next poll.
//
// One scheduler goroutine and ObserveWorkers check goroutines run from start
// until finish; finish waits for them.
type observer struct {
	e                       *engine
	absence, delivery, poll time.Duration
	mu                      sync.Mutex
	h                       txnHeap
	busy                    int  // transactions being checked
	closed                  bool // no more transactions will be added
	aborted                 error
	wake                    chan struct{}
	byID                    map[string]*txn // transactions not yet judged
	checks                  chan *txn       // transactions whose recipients are all at sinks
	searches                chan *txn       // transactions with mailboxes to search (slower)
	wg                      sync.WaitGroup
	sinks                   []sinkRef
}

type sinkRef struct {
	route scenarios.Route
	sink  Sink
	name  string
}

func newObserver(e *engine) *observer {
	o := &observer{
		e: e, absence: e.cfg.Timeouts.Absence, delivery: e.cfg.Timeouts.Delivery,
		wake: make(chan struct{}, 1), byID: map[string]*txn{},
	}
	o.poll = min(max(o.absence/10, 20*time.Millisecond), 200*time.Millisecond)
	// Buffered, so that the scheduler does not wait on slow searches while
	// transactions for the sink workers are ready.
	n := min(e.b.InFlight, 4096)
	o.checks, o.searches = make(chan *txn, n), make(chan *txn, n)
	return o
}

// addSinks takes the engine's sinks, once they are set up.
func (o *observer) addSinks() {
	e := o.e
	if e.source != nil {
		o.sinks = append(o.sinks, sinkRef{scenarios.RouteSource, e.source, e.sourceName})
	}
	if e.mx != nil {
		o.sinks = append(o.sinks, sinkRef{scenarios.RouteMX, e.mx, e.mxName})
	}
}

func (o *observer) signal() {
	select {
	case o.wake <- struct{}{}:
	default:
	}
}

// sinkWorkers check transactions that need no mailbox search: index lookups,
// never slow, kept apart so that IMAP searches never hold them up.
const sinkWorkers = 2

func (o *observer) start(ctx context.Context) {
	o.wg.Add(1 + o.e.b.ObserveWorkers + sinkWorkers)
	go o.schedule(ctx)
	for range o.e.b.ObserveWorkers {
		go o.work(ctx, o.searches)
	}
	for range sinkWorkers {
		go o.work(ctx, o.checks)
	}
}

// queueFor is the channel of the workers that check t.
func (o *observer) queueFor(t *txn) chan *txn {
	for _, rs := range t.rows {
		if rs.mailbox != nil {
			return o.searches
		}
	}
	return o.checks
}

// add queues t for its first check.
func (o *observer) add(t *txn) {
	t.due = t.sentAt.Add(o.absence)
	o.mu.Lock()
	if err := o.aborted; err != nil {
		o.mu.Unlock()
		o.fail(t, err)
		return
	}
	heap.Push(&o.h, t)
	o.byID[t.id] = t
	o.mu.Unlock()
	o.signal()
}

// arrived hurries the check of transaction id after a sink recorded a copy of
// it; it may be called from any goroutine.
func (o *observer) arrived(id string) {
	o.mu.Lock()
	t := o.byID[id]
	hurry := t != nil && t.waited && t.index >= 0
	if hurry {
		t.due = time.Now()
		heap.Fix(&o.h, t.index)
	}
	o.mu.Unlock()
	if hurry {
		o.signal()
	}
}

// finish says no transaction will be added and waits until every one is judged.
func (o *observer) finish() {
	o.mu.Lock()
	o.closed = true
	o.mu.Unlock()
	o.signal()
	o.wg.Wait()
}

// sinkCopies returns the sightings of t's probe at the fake sinks by row key, and
// how many copies went to recipients t did not send to. With final set, the
// run's own sinks hand their copies over and forget the id at once.
func (o *observer) sinkCopies(t *txn, keys map[string]bool, final bool) (map[string][]scenarios.Observation, int) {
	seen := map[string][]scenarios.Observation{}
	strays := 0
	for _, s := range o.sinks {
		var msgs []fakesource.Message
		if own, ok := s.sink.(*ownSink); ok && final {
			msgs = own.take(t.id)
		} else {
			msgs = s.sink.ByIndex(t.id)
		}
		for _, m := range msgs {
			for _, rc := range m.Rcpts {
				k := strings.ToLower(rc.Addr)
				if !keys[k] {
					strays++
					continue
				}
				seen[k] = append(seen[k], scenarios.Observation{
					Place: s.route, Where: s.name,
					Evidence: fmt.Sprintf("%s message %d, %d recipient(s), from %s", s.name, m.Seq, len(m.Rcpts), m.RemoteAddr),
					After:    m.ReceivedAt.Sub(t.sentAt), Received: m.Received,
				})
			}
		}
	}
	return seen, strays
}

// fail judges every row of t as not judged because of err.
func (o *observer) fail(t *txn, err error) {
	o.e.forget(t.id)
	for _, rs := range t.rows {
		o.e.verdicts <- o.e.errored(rs, fmt.Errorf("%w: %v", errNoVerdict, err), time.Since(t.sentAt))
	}
}

func (o *observer) schedule(ctx context.Context) {
	defer o.wg.Done()
	defer close(o.searches)
	defer close(o.checks)
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		o.mu.Lock()
		if o.closed && o.h.Len() == 0 && o.busy == 0 {
			o.mu.Unlock()
			return
		}
		now := time.Now()
		var ready []*txn
		for o.h.Len() > 0 && !o.h[0].due.After(now) {
			ready = append(ready, heap.Pop(&o.h).(*txn))
			o.busy++
		}
		next := time.Duration(-1)
		if o.h.Len() > 0 {
			next = o.h[0].due.Sub(now)
		}
		o.mu.Unlock()
		for i, t := range ready {
			select {
			case o.queueFor(t) <- t:
			case <-ctx.Done():
				o.mu.Lock()
				o.busy -= len(ready) - i
				o.mu.Unlock()
				for _, t := range ready[i:] {
					o.fail(t, context.Cause(ctx))
				}
				o.abort(ctx)
				return
			}
		}
		if len(ready) > 0 {
			continue
		}
		if next >= 0 {
			timer.Reset(next)
		}
		select {
		case <-ctx.Done():
			o.abort(ctx)
			return
		case <-o.wake:
		case <-timer.C:
		}
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
	}
}

// abort judges every queued transaction as not judged; later ones too.
func (o *observer) abort(ctx context.Context) {
	o.mu.Lock()
	o.aborted = context.Cause(ctx)
	queued := o.h
	o.h = nil
	clear(o.byID)
	o.mu.Unlock()
	for _, t := range queued {
		o.fail(t, o.aborted)
	}
}

func (o *observer) work(ctx context.Context, queue <-chan *txn) {
	defer o.wg.Done()
	for t := range queue {
		done := o.check(ctx, t)
		o.mu.Lock()
		o.busy--
		aborted := o.aborted
		t.waited = true
		switch {
		case !done && aborted == nil:
			t.due = time.Now().Add(o.poll)
			heap.Push(&o.h, t)
		default:
			delete(o.byID, t.id)
			o.e.forget(t.id)
		}
		o.mu.Unlock()
		if !done && aborted != nil {
			o.fail(t, aborted)
		}
		o.signal()
	}
}

// check looks for t's deliveries; it judges t and returns true once every
// recipient was seen somewhere or Delivery has passed.
func (o *observer) check(ctx context.Context, t *txn) bool {
	if err := context.Cause(ctx); err != nil {
		o.fail(t, err)
		return true
	}
	now := time.Now()
	keys := make(map[string]bool, len(t.rows))
	for _, rs := range t.rows {
		keys[rs.key] = true
	}
	seen, _ := o.sinkCopies(t, keys, false)
	for _, rs := range t.rows {
		if rs.mailbox == nil || len(rs.local) > 0 {
			continue
		}
		hits, err := o.e.pool.search(ctx, *rs.mailbox, t.id)
		if err != nil {
			rs.localErr = err
			o.e.log.Warn("mailbox search failed", "rcpt", rs.row.Address, "err", err)
			continue
		}
		rs.localErr = nil
		for _, h := range hits {
			rs.local = append(rs.local, scenarios.Observation{
				Place: scenarios.RouteLocal, Where: rs.mailbox.Account + "/" + h.Folder,
				Evidence: fmt.Sprintf("%s uid %d", h.Folder, h.UID), After: time.Since(t.sentAt),
			})
		}
	}
	complete := true
	for _, rs := range t.rows {
		if len(seen[rs.key])+len(rs.local) == 0 {
			complete = false
			break
		}
	}
	elapsed := now.Sub(t.sentAt)
	if !complete && elapsed < o.delivery {
		return false
	}
	// Judging: read the run's own sinks again, forgetting the id in the same
	// step, so that a copy arriving from now on counts as late, never as lost.
	seen, strays := o.sinkCopies(t, keys, true)
	if strays > 0 {
		o.e.r.c.strays.Add(int64(strays))
		o.e.log.Warn("probe delivered to recipients it was not sent to", "probe", t.id, "count", strays)
	}
	for _, rs := range t.rows {
		obs := append(seen[rs.key], rs.local...)
		if len(obs) == 0 && rs.localErr != nil {
			o.e.verdicts <- o.e.errored(rs, fmt.Errorf("read mailbox: %w", rs.localErr), elapsed)
			continue
		}
		o.e.verdicts <- o.e.judge(rs, obs, elapsed, t.id)
	}
	return true
}
