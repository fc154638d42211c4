package stalwartobs_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/splitcheck/splitcheck/harness/stalwart"
	"github.com/splitcheck/splitcheck/harness/stalwart/stalwarttest"
	"github.com/splitcheck/splitcheck/harness/stalwartobs"
	"github.com/splitcheck/splitcheck/scenarios"
)

const (
	sourceHost = "source.internal.test"
	due        = "2026-08-21T10:00:00Z"
)

// seedQueue stores one queued message for rcpt with the given status.
func seedQueue(t *testing.T, srv *stalwarttest.Server, from, rcpt, created string, status map[string]any) string {
	t.Helper()
	qm := map[string]any{"returnPath": from, "receivedFromIp": "198.51.100.7",
		"recipients": map[string]any{rcpt: map[string]any{"retryDue": due, "notifyDue": due, "status": status}}}
	if created != "" {
		qm["createdAt"] = created
	}
	id, err := srv.Seed("x:QueuedMessage", qm)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func completed(host string) map[string]any {
	return map[string]any{"@type": "Completed", "responseCode": 250, "responseMessage": "2.0.0 queued", "responseHostname": host}
}

func adminClient(srv *stalwarttest.Server) *stalwart.Client {
	return &stalwart.Client{URL: srv.URL, Credentials: stalwart.BasicAuth(srv.AdminUser, srv.AdminPassword)}
}

// TestQueueObserve: only entries completed at the source host, from the probe
// sender, created since the run began, count; each entry counts for one probe.
func TestQueueObserve(t *testing.T) {
	srv := fakeStalwart(t)
	since := time.Date(2026, 8, 21, 9, 0, 0, 0, time.UTC)
	old := since.Add(-time.Hour).Format(time.RFC3339)
	recent := since.Add(-2 * time.Second).Format(time.RFC3339) // within the clock slack
	sender := "probe@splitcheck.test"
	want := seedQueue(t, srv, sender, "bob@migrated.test", recent, completed(sourceHost+"."))
	seedQueue(t, srv, sender, "bob@migrated.test", old, completed(sourceHost))                 // an earlier run
	seedQueue(t, srv, "someone@else.test", "bob@migrated.test", recent, completed(sourceHost)) // not a probe
	seedQueue(t, srv, sender, "bob@migrated.test", recent, completed("mx.elsewhere.test"))     // another host
	seedQueue(t, srv, sender, "bob@migrated.test", recent, map[string]any{"@type": "TemporaryFailure",
		"errorType": "connectionError", "errorMessage": "refused", "responseHostname": sourceHost})
	seedQueue(t, srv, sender, "carol@migrated.test", recent, completed(sourceHost))

	q := &stalwartobs.Queue{Client: adminClient(srv), Host: sourceHost, Sender: sender, Since: since}
	ctx := context.Background()
	obs, err := q.Observe(ctx, "run-01", "BOB@migrated.test")
	if err != nil {
		t.Fatal(err)
	}
	if len(obs) != 1 {
		t.Fatalf("sightings = %+v; want exactly the one entry completed at the source", obs)
	}
	o := obs[0]
	if o.Place != scenarios.RouteSource || o.Where != "Stalwart queue "+want || o.At.IsZero() ||
		!strings.Contains(o.Evidence, "bob@migrated.test Completed at source.internal.test. (250 2.0.0 queued)") {
		t.Errorf("sighting = %+v; want source, the queue id %s and the completion as evidence", o, want)
	}
	// The same probe sees it again, at the same time; another probe does not.
	again, _ := q.Observe(ctx, "run-01", "bob@migrated.test")
	if len(again) != 1 || !again[0].At.Equal(o.At) {
		t.Errorf("second look = %+v; want the same sighting", again)
	}
	if other, _ := q.Observe(ctx, "run-02", "bob@migrated.test"); len(other) != 0 {
		t.Errorf("another probe's look = %+v; want nothing (the entry is claimed)", other)
	}
	// Without a lower bound and sender filter, the earlier run's entry counts too.
	all := &stalwartobs.Queue{Client: adminClient(srv), Host: sourceHost, Route: scenarios.RouteMX}
	if got, _ := all.Observe(ctx, "run-01", "bob@migrated.test"); len(got) != 3 || got[0].Place != scenarios.RouteMX {
		t.Errorf("unfiltered sightings = %+v; want 3 at mx", got)
	}
	if v := srv.Violations(); len(v) > 0 {
		t.Errorf("requests the real server would refuse: %q", v)
	}

	srv.InjectFault(stalwarttest.Fault{Kind: stalwarttest.FaultHTTP500, Count: 10}) // more than the client retries
	if _, err := q.Observe(ctx, "run-01", "bob@migrated.test"); err == nil || !strings.HasPrefix(err.Error(), "observe the Stalwart queue: ") {
		t.Errorf("Observe with the server failing = %v; want an error", err)
	}
}

// fakeLister answers QueueEvidence from a map, or fails.
type fakeLister struct {
	entries map[string][]stalwart.QueueEntry
	err     error
	asked   []string
}

func (f *fakeLister) QueueEvidence(_ context.Context, rcpt string) ([]stalwart.QueueEntry, error) {
	f.asked = append(f.asked, rcpt)
	return f.entries[rcpt], f.err
}

func TestAddQueueEvidence(t *testing.T) {
	route := func(rcpt string, expect scenarios.Route) scenarios.Check {
		return scenarios.Check{Name: "route/" + rcpt, Kind: scenarios.KindRoute, Recipient: rcpt, Expect: expect, Deadline: 10 * time.Second}
	}
	at := func(p scenarios.Route, after time.Duration) []scenarios.Observation {
		return []scenarios.Observation{{Place: p, After: after}}
	}
	bobEntry := stalwart.QueueEntry{QueueID: "q1", Recipient: "bob@migrated.test", ReturnPath: "probe@splitcheck.test",
		Status: "TemporaryFailure", ResponseHostname: sourceHost, ErrorType: "connectionError", ErrorMessage: "refused", RetryCount: 2}
	lister := &fakeLister{entries: map[string][]stalwart.QueueEntry{
		"bob@migrated.test": {bobEntry, {QueueID: "q0", Recipient: "bob@migrated.test", ReturnPath: "other@x.test", Status: "Scheduled"}},
	}}
	verdicts := []scenarios.Verdict{
		{Check: route("bob@migrated.test", scenarios.RouteSource), Status: scenarios.StatusFail, Detail: "want source, got none"},
		{Check: route("erin@external.test", scenarios.RouteMX), Status: scenarios.StatusPass, Observed: at(scenarios.RouteMX, 12*time.Second)},
		{Check: route("zoe@migrated.test", scenarios.RouteSource), Status: scenarios.StatusPass, Observed: at(scenarios.RouteSource, time.Second)},
		{Check: route("alice@migrated.test", scenarios.RouteLocal), Status: scenarios.StatusFail},
		{Check: route("carl@migrated.test", scenarios.RouteSource), Status: scenarios.StatusFail, Observed: at(scenarios.RouteLocal, time.Second)},
		{Check: scenarios.Check{Name: "received/x", Kind: scenarios.KindReceived, Recipient: "bob@migrated.test", Expect: scenarios.RouteSource},
			Status: scenarios.StatusFail},
	}
	n := stalwartobs.AddQueueEvidence(context.Background(), lister, verdicts, "probe@splitcheck.test", 0)
	if n != 3 {
		t.Errorf("annotated %d verdicts; want 3 (bob missing, erin late, carl missing at source)", n)
	}
	wants := []string{
		"want source, got none; Stalwart queue (missing): " + bobEntry.String(),
		"Stalwart queue (late): nothing for erin@external.test (delivered, bounced or never queued)",
		"",
		"",
		"Stalwart queue (missing): nothing for carl@migrated.test",
		"",
	}
	for i, w := range wants {
		got := verdicts[i].Detail
		if (w == "" && got != "") || !strings.HasPrefix(got, w) {
			t.Errorf("%s detail = %q; want %q", verdicts[i].Check.Name, got, w)
		}
	}
	if strings.Contains(verdicts[0].Detail, "other@x.test") {
		t.Errorf("bob's detail %q names an entry from another sender", verdicts[0].Detail)
	}

	failing := &fakeLister{err: errors.New("connection refused")}
	v := []scenarios.Verdict{{Check: route("bob@migrated.test", scenarios.RouteSource), Status: scenarios.StatusError}}
	if stalwartobs.AddQueueEvidence(context.Background(), failing, v, "", 0) != 1 ||
		v[0].Detail != "Stalwart queue (missing) could not be read: connection refused" {
		t.Errorf("detail with the queue unreadable = %q", v[0].Detail)
	}

	many := &fakeLister{entries: map[string][]stalwart.QueueEntry{"bob@migrated.test": {bobEntry, bobEntry, bobEntry}}}
	v = []scenarios.Verdict{{Check: route("bob@migrated.test", scenarios.RouteSource), Status: scenarios.StatusFail}}
	stalwartobs.AddQueueEvidence(context.Background(), many, v, "", 2)
	if strings.Count(v[0].Detail, "queue q1") != 2 || !strings.HasSuffix(v[0].Detail, "; and 1 more") {
		t.Errorf("detail with a limit of 2 = %q; want two entries and a count of the rest", v[0].Detail)
	}
}
