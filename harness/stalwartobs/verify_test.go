package stalwartobs_test

import (
	"bytes"
	"context"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/splitcheck/splitcheck/harness"
	"github.com/splitcheck/splitcheck/harness/stalwart/stalwarttest"
	"github.com/splitcheck/splitcheck/harness/stalwartobs"
	"github.com/splitcheck/splitcheck/internal/freeport"
	"github.com/splitcheck/splitcheck/scenarios"
)

// stalwartMTA stands in for Stalwart's SMTP side in front of the JMAP fake: mail
// for probe@migrated.test goes into that account's mailbox (Junk for
// probe+junk@), the rest of migrated.test is relayed to the fake source.
type stalwartMTA struct {
	srv    *stalwarttest.Server
	source string
	// live, when set, is the real source's host name: relayed mail is not sent
	// anywhere but recorded in the queue as completed there (what Stalwart's
	// queue shows while a message has other recipients pending).
	live string
	addr string
	smtp *smtp.Server
	wg   sync.WaitGroup
}

func startMTA(t *testing.T, srv *stalwarttest.Server, source string) *stalwartMTA {
	t.Helper()
	m := &stalwartMTA{srv: srv, source: source}
	m.smtp = smtp.NewServer(smtp.BackendFunc(func(*smtp.Conn) (smtp.Session, error) { return &mtaSession{m: m}, nil }))
	m.smtp.Domain = "mx.migrated.test"
	m.smtp.ReadTimeout, m.smtp.WriteTimeout = 5*time.Second, 5*time.Second
	m.smtp.ErrorLog = nopLogger{}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	m.addr = ln.Addr().String()
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		_ = m.smtp.Serve(ln)
	}()
	t.Cleanup(func() {
		m.smtp.Close()
		ln.Close() // in case Serve had not registered it yet
		m.wg.Wait()
	})
	return m
}

type mtaSession struct {
	m     *stalwartMTA
	from  string
	rcpts []string
}

func (s *mtaSession) Mail(from string, _ *smtp.MailOptions) error { s.from = from; return nil }
func (s *mtaSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	s.rcpts = append(s.rcpts, to)
	return nil
}
func (s *mtaSession) Reset()        { s.from, s.rcpts = "", nil }
func (s *mtaSession) Logout() error { return nil }

func (s *mtaSession) Data(r io.Reader) error {
	body, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	msg := append([]byte("Received: from probe.splitcheck.test (unknown [127.0.0.1])\r\n\tby mx.migrated.test (Stalwart SMTP) with ESMTP\r\n"), body...)
	for _, rc := range s.rcpts {
		switch c := strings.ToLower(rc); {
		case c == "probe@migrated.test":
			// probe+lost@ is relayed like an unmigrated address: a misroute.
			_, err = s.m.srv.Deliver("probe@migrated.test", "inbox", msg)
		case c == "probe+junk@migrated.test":
			_, err = s.m.srv.Deliver("probe@migrated.test", "junk", msg)
		case s.m.live != "":
			_, err = s.m.srv.Seed("x:QueuedMessage", map[string]any{"returnPath": s.from, "receivedFromIp": "127.0.0.1",
				"recipients": map[string]any{rc: map[string]any{"retryDue": due, "notifyDue": due, "status": completed(s.m.live)}}})
		default:
			err = relay(s.m.source, s.from, rc, msg)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func relay(addr, from, rcpt string, msg []byte) error {
	c, err := smtp.Dial(addr)
	if err != nil {
		return err
	}
	defer c.Close()
	c.CommandTimeout, c.SubmissionTimeout = 5*time.Second, 5*time.Second
	if err := c.Hello("mx.migrated.test"); err != nil {
		return err
	}
	if err := c.SendMail(from, []string{rcpt}, bytes.NewReader(msg)); err != nil {
		return err
	}
	return c.Quit()
}

type nopLogger struct{}

func (nopLogger) Printf(string, ...any) {}
func (nopLogger) Println(...any)        {}

// freeAddr is a loopback address that was just free, below the ephemeral range so
// no outgoing connection takes it before the harness binds it.
func freeAddr(t *testing.T) string {
	t.Helper()
	addr, err := freeport.TCP("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	return addr
}

// TestVerifyWithJMAPLocalObserver runs the verify engine with Local as its local
// observer: the probes for the JMAP account are found in its Inbox and Junk,
// the unmigrated recipient at the fake source, and a local recipient the MTA
// relays instead fails.
func TestVerifyWithJMAPLocalObserver(t *testing.T) {
	srv := fakeStalwart(t)
	source := freeAddr(t)
	mta := startMTA(t, srv, source)
	cfg := runConfig(t, srv.URL, "")
	snap := applied(t, srv, cfg)
	cfg.Target.SMTP, cfg.Target.PlainSMTP, cfg.Fakes.Source = mta.addr, mta.addr, source
	cfg.Timeouts.Delivery, cfg.Timeouts.Absence = 3*time.Second, 100*time.Millisecond

	extra, err := scenarios.ParseFile("jmap.yaml", []byte(`probes:
  - name: jmap
    entry: plain
    recipients:
      - {address: probe@migrated.test, expect: local}
      - {address: bob@migrated.test, expect: source}
  - name: junk
    entry: plain
    recipients:
      - {address: probe+junk@migrated.test, expect: local}
  - name: misrouted
    entry: plain
    recipients:
      - {address: probe+lost@migrated.test, expect: local}
`))
	if err != nil {
		t.Fatal(err)
	}
	local, err := stalwartobs.NewLocal(cfg, stalwartobs.LocalOptions{Snapshot: snap})
	if err != nil {
		t.Fatal(err)
	}
	defer local.Close()
	res, err := harness.Verify(context.Background(), cfg, harness.VerifyOptions{Extra: extra, Replace: true, LocalObserver: local})
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	want := map[string]struct {
		status   scenarios.Status
		evidence string
	}{
		"jmap/probe@migrated.test": {scenarios.StatusPass, "JMAP " + srv.URL + ": probe@migrated.test Inbox (role inbox)"},
		"jmap/bob@migrated.test":   {scenarios.StatusPass, "fake source " + source},
		"junk":                     {scenarios.StatusPass, "probe@migrated.test Junk Mail (role junk)"},
		"misrouted":                {scenarios.StatusFail, "fake source " + source},
	}
	if len(res.Verdicts) != len(want) {
		t.Errorf("%d verdicts; want %d", len(res.Verdicts), len(want))
	}
	for _, v := range res.Verdicts {
		w, ok := want[v.Check.Name]
		if !ok {
			t.Errorf("unexpected check %s", v.Check.Name)
			continue
		}
		if v.Status != w.status {
			t.Errorf("%s: %s (%s); want %s", v.Check.Name, v.Status, v.Detail, w.status)
			continue
		}
		if w.evidence != "" && (len(v.Observed) != 1 || !strings.Contains(v.Observed[0].Evidence, w.evidence)) {
			t.Errorf("%s observed %+v; want one sighting with %q", v.Check.Name, v.Observed, w.evidence)
		}
		if w.status == scenarios.StatusFail && !strings.HasPrefix(v.Detail, "want local, got source") {
			t.Errorf("%s detail = %q; want local, got source", v.Check.Name, v.Detail)
		}
	}
	if v := srv.Violations(); len(v) > 0 {
		t.Errorf("requests the real server would refuse: %q", v)
	}
}

// TestVerifyLiveSourceFromQueue: in live mode the source route is observed in
// Stalwart's queue (Queue as the source observer), not at the fake source.
func TestVerifyLiveSourceFromQueue(t *testing.T) {
	srv := fakeStalwart(t)
	source := freeAddr(t)
	mta := startMTA(t, srv, source)
	mta.live = sourceHost
	cfg := runConfig(t, srv.URL, "")
	snap := applied(t, srv, cfg)
	cfg.Target.SMTP, cfg.Target.PlainSMTP, cfg.Fakes.Source = mta.addr, mta.addr, source
	cfg.Timeouts.Delivery, cfg.Timeouts.Absence = 3*time.Second, 100*time.Millisecond
	extra, err := scenarios.ParseFile("live.yaml", []byte(`probes:
  - name: live
    entry: plain
    recipients:
      - {address: probe@migrated.test, expect: local}
      - {address: bob@migrated.test, expect: source}
`))
	if err != nil {
		t.Fatal(err)
	}
	local, err := stalwartobs.NewLocal(cfg, stalwartobs.LocalOptions{Snapshot: snap})
	if err != nil {
		t.Fatal(err)
	}
	defer local.Close()
	queue := &stalwartobs.Queue{Client: adminClient(srv), Host: sourceHost, Sender: cfg.Probe.Sender, Since: time.Now()}
	res, err := harness.Verify(context.Background(), cfg, harness.VerifyOptions{Extra: extra, Replace: true, LocalObserver: local,
		Observers: map[scenarios.Route]harness.Observer{scenarios.RouteSource: queue}})
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	for _, v := range res.Verdicts {
		if v.Status != scenarios.StatusPass {
			t.Errorf("%s: %s (%s); want pass", v.Check.Name, v.Status, v.Detail)
		}
	}
	bob := res.Verdicts[len(res.Verdicts)-1]
	if bob.Check.Name != "live/bob@migrated.test" || len(bob.Observed) != 1 ||
		!strings.Contains(bob.Observed[0].Evidence, "bob@migrated.test Completed at "+sourceHost) {
		t.Errorf("%s observed %+v; want the queue entry completed at the source", bob.Check.Name, bob.Observed)
	}
}
