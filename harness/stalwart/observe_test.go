package stalwart

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/splitcheck/splitcheck/harness/stalwart/stalwarttest"
)

func probeMessage(id, probe string) []byte {
	return []byte("Received: from probe.splitcheck.test (unknown [198.51.100.7])\r\n\tby mx.example.org (Stalwart SMTP) with ESMTP id 1\r\n" +
		"Received: from inner\r\n" +
		"Message-ID: <" + id + ">\r\nX-Splitcheck-Probe: " + probe + "\r\nSubject: probe " + probe + "\r\n\r\nbody\r\n")
}

func TestMailObserverFindsProbeInInboxAndJunk(t *testing.T) {
	f := newFixture(t, "")
	ctx := context.Background()
	res, err := f.c.Apply(ctx, f.d, ApplyOptions{SnapshotPath: f.snapPath("s.json"), Hermetic: true})
	if err != nil {
		t.Fatal(err)
	}
	acct, _ := res.Snapshot.Account("probe@migrated.test")
	for _, m := range []struct{ role, id, probe string }{
		{"inbox", "other@x.test", "other"},
		{"junk", "p-1@splitcheck.test", "p-1"},
		{"inbox", "p-2@splitcheck.test", "p-2"},
		{"junk", "p-2@splitcheck.test", "p-2"},
	} {
		if _, err := f.srv.Deliver("probe@migrated.test", m.role, probeMessage(m.id, m.probe)); err != nil {
			t.Fatal(err)
		}
	}
	o := &MailObserver{URL: f.srv.URL, Credentials: BasicAuth("probe@migrated.test", acct.Password)}
	for _, tt := range []struct {
		name      string
		match     Match
		wantRoles []string
	}{
		{"by Message-ID in junk", Match{MessageID: "<p-1@splitcheck.test>"}, []string{"junk"}},
		{"by header", Match{Header: "X-Splitcheck-Probe", Value: "p-1"}, []string{"junk"}},
		{"both copies", Match{MessageID: "p-2@splitcheck.test"}, []string{"inbox", "junk"}},
		{"id and header must both match", Match{MessageID: "p-2@splitcheck.test", Header: "X-Splitcheck-Probe", Value: "p-1"}, nil},
		{"absent", Match{MessageID: "p-9@splitcheck.test"}, nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			found, err := o.Find(ctx, tt.match)
			if err != nil {
				t.Fatalf("Find: %v", err)
			}
			var roles []string
			for _, fd := range found {
				roles = append(roles, fd.Role)
			}
			if strings.Join(roles, ",") != strings.Join(tt.wantRoles, ",") {
				t.Errorf("found in %v; want %v", roles, tt.wantRoles)
			}
			for _, fd := range found {
				if len(fd.Received) != 2 || !strings.Contains(fd.Received[0], "[198.51.100.7]") || fd.Mailbox == "" || fd.EmailID == "" {
					t.Errorf("found %+v; want both Received headers, topmost first, and the mailbox", fd)
				}
			}
		})
	}
	bad := &MailObserver{URL: f.srv.URL, Credentials: BasicAuth("probe@migrated.test", "Not-The-Password-1")}
	if _, err := bad.Find(ctx, Match{MessageID: "x"}); !errors.Is(err, ErrUnauthorized) {
		t.Errorf("Find with a wrong password = %v; want ErrUnauthorized", err)
	}
	if _, err := o.Find(ctx, Match{}); err == nil {
		t.Errorf("Find with nothing to match = nil error")
	}
}

func TestQueueEvidence(t *testing.T) {
	f := newFixture(t, "")
	const due = "2026-08-21T10:00:00Z"
	for _, qm := range []map[string]any{
		{"returnPath": "probe@splitcheck.test", "receivedFromIp": "198.51.100.7", "receivedViaPort": 25,
			"recipients": map[string]any{
				"bob@example.org": map[string]any{"queueName": "remote", "retryCount": 1, "retryDue": due, "notifyDue": due, "status": map[string]any{
					"@type": "TemporaryFailure", "errorType": "connectionError", "errorMessage": "connection refused",
					"responseHostname": "source.internal.example.org"}},
				"carol@example.org": map[string]any{"retryDue": due, "notifyDue": due, "status": map[string]any{"@type": "Scheduled"}},
			}},
		{"returnPath": "probe@splitcheck.test", "receivedFromIp": "198.51.100.7",
			"recipients": map[string]any{"bob@example.org": map[string]any{"retryDue": due, "notifyDue": due, "status": map[string]any{
				"@type": "Completed", "responseCode": 250, "responseMessage": "OK queued", "responseHostname": "source.internal.example.org"}}}},
	} {
		if _, err := f.srv.Seed("x:QueuedMessage", qm); err != nil {
			t.Fatal(err)
		}
	}
	entries, err := f.c.QueueEvidence(context.Background(), "bob@example.org")
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 2 {
		t.Fatalf("entries = %v; want bob's two (not carol's)", entries)
	}
	var text []string
	delivered := 0
	for _, e := range entries {
		text = append(text, e.String())
		if e.DeliveredTo("source.internal.example.org.") {
			delivered++
		}
	}
	all := strings.Join(text, "\n")
	for _, want := range []string{"bob@example.org TemporaryFailure at source.internal.example.org (connectionError: connection refused), 1 retries",
		"bob@example.org Completed at source.internal.example.org (250 OK queued)", "from 198.51.100.7"} {
		if !strings.Contains(all, want) {
			t.Errorf("evidence\n%s\nwant it to contain %q", all, want)
		}
	}
	if delivered != 1 {
		t.Errorf("DeliveredTo the source: %d entries; want 1", delivered)
	}
	f.checkNoViolations(t)
}

func TestCheckPublicURL(t *testing.T) {
	for _, tt := range []struct {
		name, public, want string
		ok                 bool
	}{
		{"advertises the proxy", "https://mail.example.org", "https://mail.example.org", true},
		{"default port explicit", "https://mail.example.org:443", "https://mail.example.org", true},
		{"advertises itself", "", "https://mail.example.org", false},
		{"another host", "https://mx.example.org", "https://mail.example.org", false},
		{"another scheme", "http://mail.example.org", "https://mail.example.org", false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, "", func(s *stalwarttest.Server) { s.PublicURL = tt.public })
			chk, err := f.c.CheckPublicURL(context.Background(), "", tt.want)
			if err != nil {
				t.Fatal(err)
			}
			if chk.OK != tt.ok {
				t.Errorf("CheckPublicURL(%s) with apiUrl %s: OK = %v; want %v", tt.want, chk.APIURL, chk.OK, tt.ok)
			}
		})
	}
}

func TestApplyVerifyReportsPublicURLPending(t *testing.T) {
	f := newFixture(t, "")
	f.d.PublicURL = "https://mail.example.org"
	res, err := f.c.Apply(context.Background(), f.d, ApplyOptions{SnapshotPath: f.snapPath("s.json"), Hermetic: true, Verify: true})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(strings.Join(res.Pending, "\n"), "STALWART_PUBLIC_URL=https://mail.example.org") {
		t.Errorf("pending = %v; want the public URL restart named", res.Pending)
	}
}
