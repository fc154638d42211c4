package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapserver"
	"github.com/emersion/go-imap/v2/imapserver/imapmemserver"

	"github.com/splitcheck/splitcheck/harness"
	"github.com/splitcheck/splitcheck/harness/config"
	"github.com/splitcheck/splitcheck/scenarios"
)

// The source test mailbox of TestRunLiveSourceMailbox.
const (
	sourceTester   = "tester@example.org"
	sourceTesterPW = "Source-Pw-9-not-shown"
)

// startSourceIMAP is the real source's IMAP server, in memory, with one account.
func startSourceIMAP(t *testing.T, addr, password string) (string, *imapmemserver.User) {
	t.Helper()
	mem := imapmemserver.New()
	u := imapmemserver.NewUser(addr, password)
	if err := u.Create("INBOX", nil); err != nil {
		t.Fatal(err)
	}
	mem.AddUser(u)
	srv := imapserver.New(&imapserver.Options{
		NewSession: func(*imapserver.Conn) (imapserver.Session, *imapserver.GreetingData, error) {
			return mem.NewSession(), nil, nil
		},
		Caps:         imap.CapSet{imap.CapIMAP4rev1: {}, imap.CapIMAP4rev2: {}},
		InsecureAuth: true,
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		_ = srv.Serve(ln)
	}()
	t.Cleanup(func() {
		srv.Close()
		ln.Close() // in case Serve had not registered it yet
		wg.Wait()
	})
	return ln.Addr().String(), u
}

// appendProbe puts a copy of probe id into u's INBOX, as the source would deliver it.
func appendProbe(t *testing.T, u *imapmemserver.User, id, rcpt string) {
	t.Helper()
	msg := fmt.Sprintf("Received: from mx.example.org ([203.0.113.25]) by source.internal.example.org\r\n"+
		"Message-ID: %s\r\nTo: <%s>\r\nX-Splitcheck-Probe: %s\r\nSubject: probe\r\n\r\nbody\r\n", scenarios.MessageID(id), rcpt, id)
	if _, err := u.Append("INBOX", bytes.NewReader([]byte(msg)), &imap.AppendOptions{}); err != nil {
		t.Fatal(err)
	}
}

// TestRunLiveSourceMailbox: with migration.source_test_address and
// source_mailbox, a live run also probes that address and judges its source
// route from its mailbox on the source (an in-test IMAP server): the probe
// found there passes, a mailbox without it fails with the mailbox named in the
// evidence. The other source recipients are still observed in the queue, and
// the report says which evidence was used.
func TestRunLiveSourceMailbox(t *testing.T) {
	const liveLine = `Live: the source route stays on the real source source\.internal\.example\.org:25; source verdicts come from ` +
		`the source mailbox of tester@example\.org over IMAP at {imap}; for the other recipients Stalwart's queue \(recipient completed at source\.internal\.example\.org\)`
	t.Setenv("SPLITCHECK_TEST_SOURCE_PW", sourceTesterPW)
	testerCheck := "route/unmigrated/" + sourceTester

	for _, tt := range []struct {
		name     string
		deliver  bool
		json     bool
		wantCode int
		want     []string // regular expressions; {imap} stands for the IMAP server's address
	}{
		{name: "probe in the source mailbox", deliver: true, wantCode: 0, want: []string{
			`(?m)^PASS +route/unmigrated/tester@example\.org +tester@example\.org +source +source +\S+ +source mailbox IMAP {imap}: tester@example\.org INBOX uid 2$`,
			`(?m)^PASS +route/unmigrated/bob@example\.org .*Stalwart queue \S+ bob@example\.org Completed at source\.internal\.example\.org`,
			liveLine,
		}},
		{name: "probe in the source mailbox, json", deliver: true, json: true, wantCode: 0},
		{name: "probe absent from the source mailbox", deliver: false, wantCode: 1, want: []string{
			`(?m)^FAIL +route/unmigrated/tester@example\.org +tester@example\.org +source +none `,
			`(?m)^ +want source, got none: not seen anywhere within 30s; source mailbox IMAP {imap}` +
				`: no copy of the probe for tester@example\.org \(searched INBOX and the junk folder by Message-ID\); ` +
				`Stalwart queue \(missing\): nothing for tester@example\.org`,
			`(?m)^PASS +route/unmigrated/bob@example\.org `,
			liveLine,
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			imapAddr, user := startSourceIMAP(t, sourceTester, sourceTesterPW)
			appendProbe(t, user, "other-run-01", sourceTester) // another probe's copy never counts
			e := newSwEnv(t, true, false)
			editConfig(t, e, "migration:\n", fmt.Sprintf(`migration:
  mode: live
  source_test_address: %s
  source_mailbox: {address: %s, password: {env: SPLITCHECK_TEST_SOURCE_PW}}
`, sourceTester, imapAddr))
			if _, err := e.srv.Seed("x:QueuedMessage", map[string]any{"returnPath": "probe@splitcheck.test",
				"recipients": map[string]any{"bob@example.org": map[string]any{"retryDue": "2026-08-21T10:00:00Z", "notifyDue": "2026-08-21T10:00:00Z",
					"status": map[string]any{"@type": "Completed", "responseCode": 250, "responseMessage": "2.0.0 queued",
						"responseHostname": runRealSource}}}}); err != nil {
				t.Fatal(err)
			}
			stub := &runStub{srv: e.srv, judge: func(ctx context.Context, cfg *config.Config, opts harness.VerifyOptions) *harness.Result {
				// What Verify would do for the source probes, with the observer
				// run hands it.
				var vs []scenarios.Verdict
				for i, c := range scenarios.Checks(harness.ProbesFor(cfg, opts.Extra, opts.Replace)) {
					if c.Kind != scenarios.KindRoute || c.Expect != scenarios.RouteSource {
						continue
					}
					id := fmt.Sprintf("run-%02d", i+1)
					if tt.deliver && c.Recipient == sourceTester {
						appendProbe(t, user, id, c.Recipient)
					}
					obs, err := opts.Observers[scenarios.RouteSource].Observe(ctx, id, c.Recipient)
					if err != nil {
						vs = append(vs, scenarios.Errored(c, err, time.Second))
						continue
					}
					c.Deadline = 30 * time.Second
					vs = append(vs, scenarios.Judge(c, obs, time.Second))
				}
				return result(vs...)
			}}
			args := []string{"--config", e.config, "--snapshot", e.path("snap.json")}
			if tt.json {
				args = append(args, "--json")
			}
			got := runRunCmd(t, context.Background(), stub, nil, args...)
			if got.code != tt.wantCode {
				t.Errorf("exit %d; want %d\nstdout:\n%s\nstderr:\n%s", got.code, tt.wantCode, got.stdout, got.stderr)
			}
			if stub.cfg == nil || !slices.Equal(stub.cfg.Plan.Unmigrated, []string{"bob@example.org", sourceTester}) {
				t.Errorf("verify's plan.unmigrated = %v; want bob and the source test address", stub.cfg.Plan.Unmigrated)
			}
			for _, w := range tt.want {
				re := regexp.MustCompile(strings.ReplaceAll(w, "{imap}", regexp.QuoteMeta(imapAddr)))
				if !re.MatchString(got.stdout) {
					t.Errorf("stdout does not match %s:\n%s", re, got.stdout)
				}
			}
			if tt.json {
				checkRunJSON(t, got.stdout, "live", map[string]scenarios.Status{
					"route/unmigrated/bob@example.org": scenarios.StatusPass, testerCheck: scenarios.StatusPass})
				var run struct {
					Live liveRecord `json:"live"`
				}
				first, _, _ := strings.Cut(got.stdout, "\n")
				if err := json.Unmarshal([]byte(first), &run); err != nil || run.Live.SourceMailbox != sourceTester+" at "+imapAddr {
					t.Errorf("run object live = %+v (%v); want source_mailbox %s at %s", run.Live, err, sourceTester, imapAddr)
				}
			}
			noSecrets(t, []string{got.stdout, got.stderr}, sourceTesterPW)
		})
	}

	// A wrong password is found before any probe is sent (exit 3).
	imapAddr, _ := startSourceIMAP(t, sourceTester, sourceTesterPW)
	e := newSwEnv(t, true, false)
	editConfig(t, e, "migration:\n", fmt.Sprintf("migration:\n  mode: live\n  source_test_address: %s\n  source_mailbox: {address: %s, password: wrong-pw}\n",
		sourceTester, imapAddr))
	stub := &runStub{srv: e.srv, res: result(passBob)}
	got := runRunCmd(t, context.Background(), stub, nil, "--config", e.config, "--snapshot", e.path("snap.json"))
	if got.code != 3 || stub.called != 0 || !strings.Contains(got.stderr, "run: source mailbox (migration.source_mailbox): imap "+imapAddr+" "+sourceTester+": login") {
		t.Errorf("wrong source mailbox password: exit %d, verify called %d times, stderr %q; want 3, never, the login refused",
			got.code, stub.called, got.stderr)
	}
	noSecrets(t, []string{got.stdout, got.stderr}, sourceTesterPW)
}

// TestRunRehearsalIgnoresSourceMailbox: the source mailbox is for live mode; a
// rehearsal relays to the fake source, so neither the observer nor the extra
// recipient is used.
func TestRunRehearsalIgnoresSourceMailbox(t *testing.T) {
	e := newSwEnv(t, true, false)
	editConfig(t, e, "migration:\n", "migration:\n  source_test_address: tester@example.org\n  source_mailbox: {address: 127.0.0.1:1, password: p}\n")
	stub := &runStub{srv: e.srv, res: result(passBob)}
	got := runRunCmd(t, context.Background(), stub, nil, "--config", e.config, "--snapshot", e.path("snap.json"))
	if got.code != 0 {
		t.Fatalf("exit %d; want 0\n%s%s", got.code, got.stdout, got.stderr)
	}
	if len(stub.opts.Observers) != 0 || !slices.Equal(stub.cfg.Plan.Unmigrated, []string{"bob@example.org"}) {
		t.Errorf("rehearsal verify had observers %v and plan.unmigrated %v; want none and bob only", stub.opts.Observers, stub.cfg.Plan.Unmigrated)
	}
}
