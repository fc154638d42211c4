package stalwartobs

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/splitcheck/splitcheck/harness/stalwart"
	"github.com/splitcheck/splitcheck/scenarios"
)

// QueueLister reads Stalwart's outbound queue for one recipient;
// *stalwart.Client is one.
type QueueLister interface {
	QueueEvidence(ctx context.Context, rcpt string) ([]stalwart.QueueEntry, error)
}

// DefaultClockSlack is how much earlier than Queue.Since a queue entry may say
// it was created and still count: createdAt has whole seconds, and the server's
// clock may be a little behind the harness's.
const DefaultClockSlack = 5 * time.Second

// Queue observes one route (source, in live mode) in Stalwart's outbound queue:
// a sighting is a queue entry whose recipient completed with Host as the
// responding server (stalwart.QueueEntry.DeliveredTo). The queue keeps no probe
// id, so an entry counts for the first probe that claims it: one created since
// Since (less ClockSlack), from Sender when set, not yet claimed by another
// probe.
//
// Stalwart drops a message from the queue once every recipient is done, so a
// single-recipient message relayed at once may never be seen completed: then
// the check fails "not seen anywhere", and the queue evidence says what was
// there. A rehearsal (the route pointed at the fake source) has no such gap.
type Queue struct {
	// Client reads the queue (the management client).
	Client QueueLister
	// Host is the responseHostname that proves delivery: the source relay's
	// address (migration.source.address).
	Host string
	// Route is the route the sightings are for; default source.
	Route scenarios.Route
	// Sender, when set, keeps only entries with this return path (probe.sender).
	Sender string
	// Since is when the run started sending; zero counts every entry.
	Since time.Time
	// ClockSlack widens Since; 0 means DefaultClockSlack.
	ClockSlack time.Duration
	// Now is the clock of first sightings; default time.Now.
	Now func() time.Time

	mu     sync.Mutex
	claims map[string]string    // queue id + recipient -> probe id
	seen   map[string]time.Time // queue id + recipient -> first noticed
}

// Observe returns the queue entries for rcpt that prove the probe reached Host.
func (q *Queue) Observe(ctx context.Context, probeID, rcpt string) ([]scenarios.Observation, error) {
	entries, err := q.Client.QueueEvidence(ctx, rcpt)
	if err != nil {
		return nil, fmt.Errorf("observe the Stalwart queue: %w", err)
	}
	route := q.Route
	if route == "" {
		route = scenarios.RouteSource
	}
	slack := q.ClockSlack
	if slack <= 0 {
		slack = DefaultClockSlack
	}
	now := time.Now
	if q.Now != nil {
		now = q.Now
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.claims == nil {
		q.claims, q.seen = map[string]string{}, map[string]time.Time{}
	}
	var out []scenarios.Observation
	for _, e := range entries {
		if !e.DeliveredTo(q.Host) || !scenarios.SameRecipient(e.Recipient, rcpt) {
			continue
		}
		if q.Sender != "" && !strings.EqualFold(e.ReturnPath, q.Sender) {
			continue
		}
		if !q.Since.IsZero() {
			created, err := time.Parse(time.RFC3339, e.CreatedAt)
			if err == nil && created.Before(q.Since.Add(-slack)) {
				continue
			}
		}
		key := e.QueueID + "\x00" + strings.ToLower(e.Recipient)
		if owner, ok := q.claims[key]; ok && owner != probeID {
			continue
		}
		q.claims[key] = probeID
		at, ok := q.seen[key]
		if !ok {
			at = now()
			q.seen[key] = at
		}
		out = append(out, scenarios.Observation{
			Place:    route,
			Where:    "Stalwart queue " + e.QueueID,
			Evidence: "Stalwart " + e.String(),
			At:       at,
		})
	}
	return out, nil
}

// AddQueueEvidence appends to the detail of each route or plain check that
// expects source or mx and whose probe was missing (failed or errored without a
// sighting there) or late (seen there after the check's deadline) what
// Stalwart's queue holds for its recipient: "Stalwart queue: <entry>; ..." or
// that it holds nothing. sender, when set, keeps only entries with that return
// path; at most limit entries are shown (the first the server lists, which
// is newest first; 0 means 5). A queue that cannot be read is said so in the detail. It returns
// how many verdicts it annotated.
func AddQueueEvidence(ctx context.Context, q QueueLister, verdicts []scenarios.Verdict, sender string, limit int) int {
	if limit <= 0 {
		limit = 5
	}
	n := 0
	for i := range verdicts {
		v := &verdicts[i]
		why := lateOrMissing(*v)
		if why == "" {
			continue
		}
		entries, err := q.QueueEvidence(ctx, v.Check.Recipient)
		var text string
		switch {
		case err != nil:
			text = fmt.Sprintf("Stalwart queue (%s) could not be read: %v", why, err)
		default:
			var lines []string
			for _, e := range entries {
				if sender != "" && !strings.EqualFold(e.ReturnPath, sender) {
					continue
				}
				lines = append(lines, e.String())
			}
			if len(lines) > limit {
				lines = append(lines[:limit], fmt.Sprintf("and %d more", len(lines)-limit))
			}
			if len(lines) == 0 {
				text = fmt.Sprintf("Stalwart queue (%s): nothing for %s (delivered, bounced or never queued)", why, v.Check.Recipient)
			} else {
				text = fmt.Sprintf("Stalwart queue (%s): %s", why, strings.Join(lines, "; "))
			}
		}
		v.AddDetail(text)
		n++
	}
	return n
}

// lateOrMissing says why a verdict needs queue evidence ("missing" or "late"),
// or "" when it does not.
func lateOrMissing(v scenarios.Verdict) string {
	c := v.Check
	if (c.Kind != scenarios.KindRoute && c.Kind != scenarios.KindPlain) || c.Skip != "" ||
		(c.Expect != scenarios.RouteSource && c.Expect != scenarios.RouteMX) || c.Recipient == "" {
		return ""
	}
	var at []scenarios.Observation
	for _, o := range v.Observed {
		if o.Place == c.Expect {
			at = append(at, o)
		}
	}
	switch {
	case len(at) == 0 && (v.Status == scenarios.StatusFail || v.Status == scenarios.StatusError):
		return "missing"
	case len(at) > 0 && c.Deadline > 0 && at[0].After > c.Deadline:
		return "late"
	}
	return ""
}
