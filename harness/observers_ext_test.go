package harness_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/splitcheck/splitcheck/harness"
	"github.com/splitcheck/splitcheck/harness/config"
	"github.com/splitcheck/splitcheck/scenarios"
)

// stubObserver reports one sighting at its route for the recipients it is told
// about (as a queue observer would), and records what it was asked.
type stubObserver struct {
	route scenarios.Route
	rcpts map[string]bool

	mu    sync.Mutex
	asked map[string]bool
}

func (s *stubObserver) Observe(_ context.Context, probeID, rcpt string) ([]scenarios.Observation, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.asked == nil {
		s.asked = map[string]bool{}
	}
	s.asked[scenarios.Canonical(rcpt)] = true
	if !s.rcpts[scenarios.Canonical(rcpt)] {
		return nil, nil
	}
	return []scenarios.Observation{{Place: s.route, Where: "stub", Evidence: "stub saw " + probeID + " for " + rcpt}}, nil
}

// TestVerifyObserversReplaceRoute: VerifyOptions.Observers replaces the built-in
// observer of a route. The mini target relays bob's mail to the fake source, but
// with the source observed by a stub only the stub's sightings count.
func TestVerifyObserversReplaceRoute(t *testing.T) {
	for _, tt := range []struct {
		name      string
		rcpts     map[string]bool
		wantBob   scenarios.Status
		wantStub  bool
		wantLocal scenarios.Status
	}{
		{name: "stub sees bob", rcpts: map[string]bool{"bob@example.org": true}, wantBob: scenarios.StatusPass, wantStub: true,
			wantLocal: scenarios.StatusPass},
		{name: "stub sees nothing", rcpts: nil, wantBob: scenarios.StatusFail, wantLocal: scenarios.StatusPass},
	} {
		t.Run(tt.name, func(t *testing.T) {
			m := startMini(t, "")
			stub := &stubObserver{route: scenarios.RouteSource, rcpts: tt.rcpts}
			cfg := m.config(t)
			// No fake DNS (nor MX): the mx checks are skipped, and no UDP port's
			// TCP twin has to be free.
			cfg.Fakes.DNS, cfg.Fakes.MX = "", ""
			res := verify(t, cfg, harness.VerifyOptions{
				Observers: map[scenarios.Route]harness.Observer{scenarios.RouteSource: stub},
			})
			v := byName(res)
			bob := v["route/unmigrated/bob@example.org"]
			if bob.Status != tt.wantBob {
				t.Errorf("route/unmigrated/bob: %s (%s); want %s", bob.Status, bob.Detail, tt.wantBob)
			}
			if tt.wantStub && (len(bob.Observed) != 1 || !strings.HasPrefix(bob.Observed[0].Evidence, "stub saw ")) {
				t.Errorf("route/unmigrated/bob observed %+v; want only the stub's sighting", bob.Observed)
			}
			if !tt.wantStub && len(bob.Observed) != 0 {
				t.Errorf("route/unmigrated/bob observed %+v; want nothing (the fake source is not watched any more)", bob.Observed)
			}
			if got := v["route/local/alice@example.org"].Status; got != tt.wantLocal {
				t.Errorf("route/local/alice: %s; want %s (IMAP still observes local)", got, tt.wantLocal)
			}
			stub.mu.Lock()
			asked := stub.asked["bob@example.org"]
			stub.mu.Unlock()
			if !asked {
				t.Error("the stub was never asked about bob@example.org")
			}
		})
	}
}

// brokenWatcher is an observer whose watching fails at once (an IMAP connection
// dropping, say) while a later look would find the probe where it belongs; with
// only set, only for those recipients.
type brokenWatcher struct {
	stubObserver
	only map[string]bool
}

func (b *brokenWatcher) Wait(ctx context.Context, _ string, rcpt string) error {
	if b.only != nil && !b.only[scenarios.Canonical(rcpt)] {
		<-ctx.Done() // watches until the deadline, as a watcher that sees nothing does
		return nil
	}
	return errWatchBroken
}

var errWatchBroken = errors.New("watch connection dropped")

// TestVerifyWatchFailureIsAnError: when watching a place fails, neither arrival nor
// absence elsewhere was proven, so the check is an error; one last sweep finding the
// probe at the right place must not make it pass.
func TestVerifyWatchFailureIsAnError(t *testing.T) {
	m := startMini(t, "")
	cfg := m.config(t)
	cfg.Fakes.DNS, cfg.Fakes.MX = "", ""
	broken := &brokenWatcher{stubObserver: stubObserver{route: scenarios.RouteSource, rcpts: map[string]bool{"bob@example.org": true}}}
	res := verify(t, cfg, harness.VerifyOptions{
		Observers: map[scenarios.Route]harness.Observer{scenarios.RouteSource: broken},
	})
	bob := byName(res)["route/unmigrated/bob@example.org"]
	if bob.Status != scenarios.StatusError {
		t.Errorf("route/unmigrated/bob: %s (%s); want error (watching failed)", bob.Status, bob.Detail)
	}
	if !strings.Contains(bob.Detail, errWatchBroken.Error()) {
		t.Errorf("route/unmigrated/bob detail %q status %s; want it to name the watch failure", bob.Detail, bob.Status)
	}
}

// TestVerifyReceivedUnreadCopyIsAnError: the Received check reads the copies the
// route checks saw. When watching for a recipient fails, that recipient's copy was
// never read: no copy seen, or only good ones, leaves the check unjudged (an error,
// never a failure blaming the target nor a pass); a bad header that was seen still
// fails it.
func TestVerifyReceivedUnreadCopyIsAnError(t *testing.T) {
	probe := scenarios.Probe{Name: "two", Entry: scenarios.EntryProxy, Received: true, Recipients: []scenarios.Recipient{
		{Address: "alice@example.org", Expect: scenarios.RouteLocal},
		{Address: "bob@example.org", Expect: scenarios.RouteSource},
	}}
	unread := func(rcpt string) string {
		return "cannot read every delivered copy: two/" + rcpt + ": watch source: " + errWatchBroken.Error()
	}
	for _, tt := range []struct {
		name     string
		mutation string
		brokenOn string // the recipient whose watch fails; "" for all
		want     scenarios.Status
		detail   string
	}{
		// Nothing was read: alice's copy, the one with the header, is unknown.
		{"no copy read", "", "", scenarios.StatusError, unread("alice@example.org") + "; two/bob@example.org"},
		// alice's copy is read and good; bob's, at the source, is not read.
		{"good copy read, one unread", "", "bob@example.org", scenarios.StatusError, unread("bob@example.org")},
		// alice's copy is read and lacks the announced address: proven wrong.
		{"bad copy read, one unread", "proxy-ignored", "bob@example.org", scenarios.StatusFail,
			"want a Received header with [198.51.100.7], got local copy"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			m := startMini(t, tt.mutation)
			cfg := m.config(t)
			cfg.Fakes.DNS, cfg.Fakes.MX = "", ""
			cfg.Timeouts.Delivery = 3 * time.Second // how long a healthy watch with nothing to see waits
			broken := &brokenWatcher{stubObserver: stubObserver{route: scenarios.RouteSource}}
			if tt.brokenOn != "" {
				broken.only = map[string]bool{tt.brokenOn: true}
			}
			res := verify(t, cfg, harness.VerifyOptions{
				Extra: []scenarios.Probe{probe}, Replace: true,
				Observers: map[scenarios.Route]harness.Observer{scenarios.RouteSource: broken},
			})
			v := byName(res)
			got := v["received/two"]
			if got.Status != tt.want || !strings.Contains(got.Detail, tt.detail) {
				t.Errorf("received/two: %s (%s); want %s containing %q", got.Status, got.Detail, tt.want, tt.detail)
			}
			if tt.brokenOn != "" {
				if a := v["two/alice@example.org"]; a.Status != scenarios.StatusPass {
					t.Errorf("two/alice: %s (%s); want pass (her watch works and her copy is local)", a.Status, a.Detail)
				}
			}
		})
	}
}

// failingSweep watches without trouble (it sees nothing) but fails when asked to
// look: the last look before a verdict, which proves absence there.
type failingSweep struct{}

func (failingSweep) Wait(ctx context.Context, _, _ string) error { <-ctx.Done(); return nil }
func (failingSweep) Observe(context.Context, string, string) ([]scenarios.Observation, error) {
	return nil, errSweepBroken
}

var errSweepBroken = errors.New("sweep connection dropped")

// TestVerifySweepFailureIsAnError: alice's copy arrives in her mailbox, but the
// look at the source that should prove it went nowhere else fails: her check
// cannot pass on that; it is an error naming the failed look.
func TestVerifySweepFailureIsAnError(t *testing.T) {
	m := startMini(t, "")
	cfg := m.config(t)
	cfg.Fakes.DNS, cfg.Fakes.MX = "", ""
	cfg.Timeouts.Delivery = 500 * time.Millisecond
	res := verify(t, cfg, harness.VerifyOptions{
		Extra:     []scenarios.Probe{{Name: "alice", Entry: scenarios.EntryProxy, Recipients: []scenarios.Recipient{{Address: "alice@example.org", Expect: scenarios.RouteLocal}}}},
		Replace:   true,
		Observers: map[scenarios.Route]harness.Observer{scenarios.RouteSource: failingSweep{}},
	})
	v := byName(res)["route/alice"]
	if v.Status != scenarios.StatusError || !strings.Contains(v.Detail, "observe source: "+errSweepBroken.Error()) {
		t.Errorf("route/alice: %s %q; want an error naming the failed look at the source", v.Status, v.Detail)
	}
}

// TestVerifyLocalMailboxProtocol: a plan.local mailbox that IMAP cannot read is a
// configuration error found before any connection (even with the target down),
// unless the caller observes local delivery, by either option.
func TestVerifyLocalMailboxProtocol(t *testing.T) {
	m := startMini(t, "")
	jmap := func() *config.Config {
		cfg := m.config(t)
		cfg.Fakes.DNS, cfg.Fakes.MX = "", ""
		for i := range cfg.Plan.Local {
			cfg.Plan.Local[i].Mailbox.Protocol = "jmap"
		}
		return cfg
	}
	cfg := jmap()
	cfg.Target.SMTP = freeTCP(t) // nothing listens: the config error must come first
	_, err := harness.Verify(context.Background(), cfg, harness.VerifyOptions{Logger: testLogger(t)})
	if !errors.Is(err, harness.ErrConfig) || !strings.Contains(err.Error(), `mailbox protocol "jmap" needs a local observer`) {
		t.Errorf("Verify with jmap mailboxes and no local observer = %v; want a configuration error", err)
	}
	local := &stubObserver{route: scenarios.RouteLocal, rcpts: map[string]bool{"alice@example.org": true, "dave@example.org": true}}
	res := verify(t, jmap(), harness.VerifyOptions{Observers: map[scenarios.Route]harness.Observer{scenarios.RouteLocal: local}})
	if v := byName(res)["route/local/dave@example.org"]; v.Status != scenarios.StatusPass {
		t.Errorf("route/local/dave with Observers[local]: %s (%s); want pass through the caller's observer", v.Status, v.Detail)
	}
}
