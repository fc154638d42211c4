package harness_test

import (
	"context"
	"errors"
	"net"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/splitcheck/splitcheck/fakesource"
	"github.com/splitcheck/splitcheck/harness"
	"github.com/splitcheck/splitcheck/harness/config"
	"github.com/splitcheck/splitcheck/scenarios"
)

// miniChecks are the checks of the built-in matrix for the mini target's plan.
var miniChecks = []string{
	"route/local/alice@example.org", "received/local/alice@example.org", "route/local/dave@example.org",
	"route/unmigrated/bob@example.org", "route/external/erin@external.test", "route/open-relay/erin@external.test",
	"mixed/alice@example.org", "mixed/bob@example.org", "mixed/erin@external.test",
	"route/plus/alice+splitcheck@example.org", "route/case/ALICE@EXAMPLE.ORG", "headerless", "plain",
	"relay/no-proxy-header",
}

func verify(t *testing.T, cfg *config.Config, opt harness.VerifyOptions) *harness.Result {
	t.Helper()
	if opt.Logger == nil {
		opt.Logger = testLogger(t)
	}
	res, err := harness.Verify(context.Background(), cfg, opt)
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	return res
}

func byName(res *harness.Result) map[string]scenarios.Verdict {
	out := map[string]scenarios.Verdict{}
	for _, v := range res.Verdicts {
		out[v.Check.Name] = v
	}
	return out
}

func places(v scenarios.Verdict) string {
	if len(v.Observed) == 0 {
		return "none"
	}
	var p []string
	for _, o := range v.Observed {
		p = append(p, string(o.Place))
	}
	return strings.Join(p, "+")
}

func TestVerifyMini(t *testing.T) {
	m := startMini(t, "")
	var mu sync.Mutex
	stages := map[string][]string{}
	res := verify(t, m.config(t), harness.VerifyOptions{Progress: func(ev harness.ProgressEvent) {
		mu.Lock()
		defer mu.Unlock()
		stages[ev.Check] = append(stages[ev.Check], ev.Stage)
	}})
	var names []string
	for _, v := range res.Verdicts {
		names = append(names, v.Check.Name)
		if v.Status != scenarios.StatusPass {
			t.Errorf("%s: %s: %s (observed %s)", v.Check.Name, v.Status, v.Detail, places(v))
			continue
		}
		if v.Check.Kind != scenarios.KindReceived && v.Check.Kind != scenarios.KindRelayHeader && places(v) != string(v.Check.Expect) {
			t.Errorf("%s passed with sightings %s; want exactly one at %s", v.Check.Name, places(v), v.Check.Expect)
		}
	}
	if !slices.Equal(names, miniChecks) {
		t.Errorf("checks = %q; want %q", names, miniChecks)
	}
	if err := res.Mismatch(); err != nil {
		t.Errorf("Mismatch() = %v; want nil", err)
	}
	if p, f, s, e := res.Counts(); p != len(miniChecks) || f+s+e != 0 {
		t.Errorf("Counts() = %d, %d, %d, %d; want %d passed", p, f, s, e, len(miniChecks))
	}
	if !regexp.MustCompile(`^\d{8}t\d{6}-[0-9a-f]{6}$`).MatchString(res.RunID) {
		t.Errorf("RunID = %q; want a timestamp and a random tail", res.RunID)
	}
	if got := stages["route/local/alice@example.org"]; !slices.Equal(got, []string{harness.StageSent, harness.StageWaiting, harness.StageJudged}) {
		t.Errorf("progress stages of route/local/alice = %q; want sent, waiting, judged", got)
	}
	if got := stages["received/local/alice@example.org"]; !slices.Equal(got, []string{harness.StageSent, harness.StageJudged}) {
		t.Errorf("progress stages of received/local/alice = %q; want sent, judged", got)
	}
	if n := len(res.Latencies()); n != 10 {
		t.Errorf("Latencies() has %d entries; want 10 (the delivered route and plain checks)", n)
	}

	v := byName(res)
	evidence := map[string]*regexp.Regexp{
		"route/local/alice@example.org":       regexp.MustCompile(`^IMAP 127\.0\.0\.1:\d+: alice@example\.org INBOX uid \d+$`),
		"route/case/ALICE@EXAMPLE.ORG":        regexp.MustCompile(`alice@example\.org INBOX`),
		"route/unmigrated/bob@example.org":    regexp.MustCompile(`^fake source 127\.0\.0\.1:\d+: message \d+ RCPT <bob@example\.org> from 127\.0\.0\.1, helo mini\.test$`),
		"route/external/erin@external.test":   regexp.MustCompile(`^fake MX 127\.0\.0\.1:\d+: message \d+ RCPT <erin@external\.test>`),
		"route/open-relay/erin@external.test": regexp.MustCompile(`^RCPT 554 5\.7\.1 <erin@external\.test>: Relay access denied$`),
		"received/local/alice@example.org":    regexp.MustCompile(`^Received: from probe\.splitcheck\.test \(unknown \[198\.51\.100\.7\]\) by mini\.test with ESMTP$`),
		"headerless":                          regexp.MustCompile(`^no SMTP reply: the connection was closed$`),
	}
	for name, re := range evidence {
		if got := v[name]; len(got.Observed) != 1 || !re.MatchString(got.Observed[0].Evidence) {
			t.Errorf("%s evidence = %+v; want one matching %s", name, got.Observed, re)
		}
	}
	// The relays reached both fakes, none with a PROXY header.
	relayed := regexp.MustCompile(`^\d+ connection\(s\) \([1-9]\d* to source, [1-9]\d* to mx\), none began with a PROXY header$`)
	if got := v[scenarios.CheckRelayHeader]; got.Status != scenarios.StatusPass || !relayed.MatchString(got.Detail) {
		t.Errorf("%s = %s %q; want pass with a detail matching %s", scenarios.CheckRelayHeader, got.Status, got.Detail, relayed)
	}
}

func TestVerifyMiniMutations(t *testing.T) {
	for _, tt := range []struct {
		mutation string
		failed   map[string]*regexp.Regexp // the checks that must fail, and their detail
	}{
		{"local-relayed", map[string]*regexp.Regexp{
			"route/local/alice@example.org":           regexp.MustCompile(`^want local, got source: fake source 127\.0\.0\.1:\d+: message \d+ RCPT <alice@example\.org>`),
			"mixed/alice@example.org":                 regexp.MustCompile(`want local, got source`),
			"route/plus/alice+splitcheck@example.org": regexp.MustCompile(`RCPT <alice\+splitcheck@example\.org>`),
			"route/case/ALICE@EXAMPLE.ORG":            regexp.MustCompile(`RCPT <ALICE@EXAMPLE\.ORG>`),
			"plain":                                   regexp.MustCompile(`want local, got source`),
		}},
		{"open-relay", map[string]*regexp.Regexp{
			"route/open-relay/erin@external.test": regexp.MustCompile(`^want reject, got mx: fake MX 127\.0\.0\.1:\d+: message \d+ RCPT <erin@external\.test>`),
		}},
		{"relay-deferred", map[string]*regexp.Regexp{
			"route/open-relay/erin@external.test": regexp.MustCompile(`^want reject, got deferred: RCPT at 127\.0\.0\.1:\d+ through the proxy: RCPT 450 4\.7\.1 <erin@external\.test>: Relay access denied$`),
		}},
		{"proxy-ignored", map[string]*regexp.Regexp{
			"received/local/alice@example.org": regexp.MustCompile(`^want a Received header with \[198\.51\.100\.7\], got local copy \(alice@example\.org INBOX\): Received: from probe\.splitcheck\.test \(unknown \[127\.0\.0\.1\]\)`),
			"headerless":                       regexp.MustCompile(`^want reject, got accepted: .*220 mini\.test ESMTP Service Ready, then EHLO 250 `),
		}},
		{"drop-external", map[string]*regexp.Regexp{
			"route/external/erin@external.test": regexp.MustCompile(`^want mx, got none: not seen anywhere within 2s; the target accepted it: DATA 250 `),
			"mixed/erin@external.test":          regexp.MustCompile(`not seen anywhere within 2s`),
		}},
		{"proxy-to-source", map[string]*regexp.Regexp{
			scenarios.CheckRelayHeader: regexp.MustCompile(`^want no PROXY header on the server's outbound connections, got [1-9]\d* of \d+ beginning with one: ` +
				`fake source 127\.0\.0\.1:\d+: connection \d+ from 127\.0\.0\.1:\d+ began "PROXY TCP4 127\.0\.0\.1 127\.0\.0\.1 \d+ \d+\\r\\n`),
		}},
		{"duplicate-local", map[string]*regexp.Regexp{
			"route/local/alice@example.org": regexp.MustCompile(`^want local exactly once, seen 2 times: local \(IMAP .* alice@example\.org INBOX uid \d+\); local \(`),
			"route/local/dave@example.org":  regexp.MustCompile(`seen 2 times`),
			// Two copies of the mixed message in alice's mailbox: the first is alice's,
			// the second counts for bob, the recipient without a mailbox of his own.
			"mixed/bob@example.org":                   regexp.MustCompile(`^want source exactly once, seen 2 times: .*alice@example\.org INBOX uid \d+`),
			"route/plus/alice+splitcheck@example.org": regexp.MustCompile(`seen 2 times`),
			"route/case/ALICE@EXAMPLE.ORG":            regexp.MustCompile(`seen 2 times`),
			"plain":                                   regexp.MustCompile(`seen 2 times`),
		}},
	} {
		t.Run(tt.mutation, func(t *testing.T) {
			m := startMini(t, tt.mutation)
			res := verify(t, m.config(t), harness.VerifyOptions{})
			for _, v := range res.Verdicts {
				re, affected := tt.failed[v.Check.Name]
				switch {
				case !affected && v.Status != scenarios.StatusPass:
					t.Errorf("%s: %s (%s); want pass, the mutation does not affect it", v.Check.Name, v.Status, v.Detail)
				case affected && v.Status != scenarios.StatusFail:
					t.Errorf("%s: %s; want fail", v.Check.Name, v.Status)
				case affected && !re.MatchString(v.Detail):
					t.Errorf("%s detail = %q; want it to match %s", v.Check.Name, v.Detail, re)
				}
			}
			var mm *scenarios.MismatchError
			if err := res.Mismatch(); !errors.As(err, &mm) || len(mm.Failed) != len(tt.failed) {
				t.Errorf("Mismatch() = %v; want a MismatchError naming %d checks", err, len(tt.failed))
			}
		})
	}
}

// TestVerifySenderRefused: a refused MAIL FROM says nothing about the recipients,
// none of which was offered: an expected refusal must not pass on it.
func TestVerifySenderRefused(t *testing.T) {
	m := startMini(t, "sender-refused")
	extra := []scenarios.Probe{
		{Name: "guard", Entry: scenarios.EntryProxy, Recipients: []scenarios.Recipient{{Address: "erin@external.test", Expect: scenarios.RouteReject}}},
		{Name: "local", Entry: scenarios.EntryProxy, Recipients: []scenarios.Recipient{{Address: "alice@example.org", Expect: scenarios.RouteLocal}}},
	}
	res := verify(t, m.config(t), harness.VerifyOptions{Extra: extra, Replace: true})
	if len(res.Verdicts) != len(extra) {
		t.Fatalf("%d verdicts; want %d", len(res.Verdicts), len(extra))
	}
	want := regexp.MustCompile(`^send probe \w+: MAIL FROM:<probe@splitcheck\.test> refused: 553 5\.7\.1 <probe@splitcheck\.test>: Sender address rejected`)
	for _, v := range res.Verdicts {
		if v.Status != scenarios.StatusError || !want.MatchString(v.Detail) {
			t.Errorf("%s = %s %q; want error matching %s", v.Check.Name, v.Status, v.Detail, want)
		}
	}
	if _, _, _, e := res.Counts(); e != len(extra) {
		t.Errorf("Counts() errored = %d; want %d", e, len(extra))
	}
}

// TestVerifyReceivedCannotPassVacuously: against a target that ignores the PROXY
// header, the received check must not pass because the announced address shows
// in its Received header for another reason: the probe's own EHLO name, or the
// proxy connecting from the address it announces. Such a run is refused up front
// (a configuration error) or the check fails; it never passes.
func TestVerifyReceivedCannotPassVacuously(t *testing.T) {
	for _, tt := range []struct {
		name string
		mod  func(*config.Config)
	}{
		{"helo is the announced address", func(c *config.Config) { c.Probe.Helo = "[198.51.100.7]" }},
		{"helo is an IPv6 literal of it", func(c *config.Config) {
			c.Proxy.Announce, c.Probe.Helo = "2001:db8::7", "[IPv6:2001:db8::7]"
		}},
		{"proxy connects from the announced address", func(c *config.Config) {
			c.Proxy.Announce, c.Proxy.SourceAddress = "127.0.0.1", "127.0.0.1"
		}},
		{"proxy connects from the default loopback address", func(c *config.Config) { c.Proxy.Announce = "127.0.0.1" }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			m := startMini(t, "proxy-ignored")
			cfg := m.config(t)
			tt.mod(cfg)
			res, err := harness.Verify(context.Background(), cfg, harness.VerifyOptions{Logger: testLogger(t)})
			if err != nil {
				if !errors.Is(err, harness.ErrConfig) {
					t.Fatalf("Verify = %v; want verdicts or a configuration error", err)
				}
				return
			}
			if v := byName(res)["received/local/alice@example.org"]; v.Status == scenarios.StatusPass {
				t.Errorf("received check passed against a target that ignores the PROXY header: %+v", v.Observed)
			}
		})
	}
}

func TestVerifyScenarioFiles(t *testing.T) {
	m := startMini(t, "")
	extra, err := scenarios.ParseFile("wave.yaml", []byte(`probes:
  - name: wave
    entry: submission
    recipients:
      - {address: dave@example.org, expect: local}
      - {address: zoe@example.org, expect: source}
  - name: wrong-expectation
    entry: proxy
    recipients:
      - {address: bob@example.org, expect: local}
`))
	if err != nil {
		t.Fatal(err)
	}
	cfg := m.config(t)
	cfg.Target.PlainSMTP = "" // no plain listener: the plain check is skipped, never passed

	res := verify(t, cfg, harness.VerifyOptions{Extra: extra, Replace: true})
	want := map[string]scenarios.Status{
		"wave/dave@example.org": scenarios.StatusPass, "wave/zoe@example.org": scenarios.StatusPass,
		"route/wrong-expectation": scenarios.StatusFail,
	}
	if len(res.Verdicts) != len(want) {
		t.Fatalf("%d verdicts; want %d (Replace drops the built-in matrix)", len(res.Verdicts), len(want))
	}
	for _, v := range res.Verdicts {
		if v.Status != want[v.Check.Name] {
			t.Errorf("%s: %s (%s); want %s", v.Check.Name, v.Status, v.Detail, want[v.Check.Name])
		}
	}

	res = verify(t, cfg, harness.VerifyOptions{Extra: extra})
	v := byName(res)
	if got := v["plain"]; got.Status != scenarios.StatusSkip || got.Detail != "no plain listener configured (target.plain_smtp)" {
		t.Errorf("plain = %s %q; want skipped for want of a plain listener", got.Status, got.Detail)
	}
	if _, ok := v["wave/zoe@example.org"]; !ok || len(res.Verdicts) != len(miniChecks)+3 {
		t.Errorf("%d verdicts; want the built-in %d plus 3 from the file", len(res.Verdicts), len(miniChecks))
	}
	if _, f, s, _ := res.Counts(); f != 1 || s != 1 {
		t.Errorf("Counts() fail, skip = %d, %d; want 1, 1", f, s)
	}
}

func TestVerifyHeaderless(t *testing.T) {
	silent := listen(t)
	var wg sync.WaitGroup
	var conns []net.Conn
	var mu sync.Mutex
	wg.Add(1)
	go func() { // a trusted-proxy listener that never speaks (Stalwart waits for the header)
		defer wg.Done()
		for {
			c, err := silent.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		silent.Close()
		wg.Wait()
		for _, c := range conns {
			c.Close()
		}
	})

	speaker := fakesource.NewUnstartedServer() // a listener that speaks SMTP at once
	speaker.Hostname = "plain.test"
	speaker.Start()
	t.Cleanup(func() { speaker.Close() })

	probe := []scenarios.Probe{{Name: "headerless", Entry: scenarios.EntryHeaderless}}
	for _, tt := range []struct {
		name, target string
		status       scenarios.Status
		evidence     *regexp.Regexp
	}{
		{"silent until the deadline", silent.Addr().String(), scenarios.StatusPass,
			regexp.MustCompile(`^no reply within 1s: the connection was held open without a banner$`)},
		{"a plain SMTP listener", speaker.Addr, scenarios.StatusFail,
			regexp.MustCompile(`^220 plain\.test ESMTP Service Ready, then EHLO 250 Hello probe\.splitcheck\.test: the PROXY listener spoke SMTP without a header$`)},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cfg := minimalConfig(t, tt.target)
			cfg.Timeouts.Connect = time.Second
			res := verify(t, cfg, harness.VerifyOptions{Extra: probe, Replace: true})
			v := res.Verdicts[0]
			if v.Status != tt.status || len(v.Observed) != 1 || !tt.evidence.MatchString(v.Observed[0].Evidence) {
				t.Errorf("headerless = %s %q, observed %+v; want %s with evidence matching %s", v.Status, v.Detail, v.Observed, tt.status, tt.evidence)
			}
		})
	}
}

// minimalConfig is a run description with only a port-25 target.
func minimalConfig(t *testing.T, target string) *config.Config {
	t.Helper()
	cfg, err := config.Parse("min.yaml", []byte(`
target: {smtp: `+target+`}
plan: {domains: [example.org], unmigrated: [bob@example.org]}
fakes: {source: 127.0.0.1:0}
proxy: {announce: 198.51.100.7}
timeouts: {connect: 2s, delivery: 1s, absence: 100ms}
`), func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func TestVerifyEnvironmentErrors(t *testing.T) {
	closed := freeTCP(t)
	busy := listen(t)
	t.Cleanup(func() { busy.Close() })

	for _, tt := range []struct {
		name   string
		mod    func(*config.Config)
		opt    harness.VerifyOptions
		ctx    func() context.Context
		want   string
		config bool // wraps ErrConfig
	}{
		{name: "port 25 unreachable", mod: func(c *config.Config) { c.Target.SMTP = closed },
			want: "target port 25 (target.smtp) " + closed + " unreachable"},
		{name: "fake source cannot bind", mod: func(c *config.Config) { c.Fakes.Source = busy.Addr().String() },
			want: "start fake source (fakes.source): listen " + busy.Addr().String()},
		{name: "cancelled before any verdict", ctx: func() context.Context {
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			return ctx
		}, want: "context canceled"},
		{name: "repeated probe name", opt: harness.VerifyOptions{Extra: []scenarios.Probe{{Name: "headerless", Entry: scenarios.EntryHeaderless}}},
			want: `probe 4 "headerless": name used twice`, config: true},
		{name: "nothing to run", opt: harness.VerifyOptions{Replace: true}, want: "no probes to run", config: true},
		{name: "bad announce", mod: func(c *config.Config) { c.Proxy.Announce = "nowhere" }, want: "proxy.announce", config: true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cfg := minimalConfig(t, busy.Addr().String())
			if tt.mod != nil {
				tt.mod(cfg)
			}
			ctx := context.Background()
			if tt.ctx != nil {
				ctx = tt.ctx()
			}
			res, err := harness.Verify(ctx, cfg, tt.opt)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Verify = %v; want an error containing %q", err, tt.want)
			}
			if got := errors.Is(err, harness.ErrConfig); got != tt.config {
				t.Errorf("errors.Is(%v, ErrConfig) = %v; want %v", err, got, tt.config)
			}
			if res != nil && len(res.Verdicts) > 0 {
				for _, v := range res.Verdicts {
					if v.Status == scenarios.StatusPass {
						t.Errorf("%s passed in a run that could not happen", v.Check.Name)
					}
				}
			}
		})
	}
}

func TestVerifyCancelledMidRun(t *testing.T) {
	m := startMini(t, "drop-external")
	cfg := m.config(t)
	cfg.Timeouts.Delivery = time.Minute // erin never arrives: only the cancellation ends the wait
	ctx, cancel := context.WithCancel(context.Background())
	var once sync.Once
	res, err := harness.Verify(ctx, cfg, harness.VerifyOptions{Progress: func(ev harness.ProgressEvent) {
		if ev.Stage == harness.StageJudged && ev.Status == scenarios.StatusPass {
			once.Do(cancel)
		}
	}})
	if err != nil {
		t.Fatalf("Verify = %v; want a partial result once some check was judged", err)
	}
	v := byName(res)["route/external/erin@external.test"]
	if v.Status != scenarios.StatusError || !strings.Contains(v.Detail, "context canceled") {
		t.Errorf("erin = %s %q; want error naming the cancellation", v.Status, v.Detail)
	}
	if err := res.Mismatch(); err == nil {
		t.Errorf("Mismatch() = nil; want the unjudged checks listed")
	}
}

// TestVerifyLateDuplicateFails: the target delivers each unmigrated message to
// the source, and each message for alice alone to her mailbox, twice: the second
// time only after the first copy's check passed, while the run is still going
// (dave's local delivery waits for the second copies). Those passes must turn
// into failures naming the late copy; every other check still passes.
func TestVerifyLateDuplicateFails(t *testing.T) {
	m := startMini(t, "late-duplicate")
	lateChecks := map[string]string{"route/unmigrated/bob@example.org": "source", "mixed/bob@example.org": "source",
		"route/local/alice@example.org": "local", "plain": "local"}
	m.lateWant = int32(len(lateChecks))
	var mu sync.Mutex
	passed := map[string]bool{}
	res := verify(t, m.config(t), harness.VerifyOptions{Progress: func(e harness.ProgressEvent) {
		if e.Stage != harness.StageJudged || lateChecks[e.Check] == "" {
			return
		}
		mu.Lock()
		defer mu.Unlock()
		if e.Status == scenarios.StatusPass && !passed[e.Check] {
			passed[e.Check] = true
			if len(passed) == len(lateChecks) {
				close(m.lateGate) // every first copy judged: now the second copies
			}
		}
	}})
	mu.Lock()
	firstPassed := len(passed)
	mu.Unlock()
	if firstPassed != len(lateChecks) {
		t.Fatalf("%d of the duplicated checks passed on the first copy; want %d (the mutation depends on it)", firstPassed, len(lateChecks))
	}
	for _, v := range res.Verdicts {
		place := lateChecks[v.Check.Name]
		if place == "" {
			if v.Status != scenarios.StatusPass {
				t.Errorf("%s: %s (%s); want pass", v.Check.Name, v.Status, v.Detail)
			}
			continue
		}
		re := regexp.MustCompile(`^want ` + place + ` exactly once, seen 2 times: ` + place + ` \(.*\); ` + place + ` \(.*\); ` +
			`1 of them arrived after the check had passed \(a second delivery slower than timeouts\.absence\)$`)
		if v.Status != scenarios.StatusFail || !re.MatchString(v.Detail) {
			t.Errorf("%s: %s %q; want fail matching %s", v.Check.Name, v.Status, v.Detail, re)
		}
	}
	var mm *scenarios.MismatchError
	if err := res.Mismatch(); !errors.As(err, &mm) || len(mm.Failed) != len(lateChecks) {
		t.Errorf("Mismatch() = %v; want the %d duplicated checks", err, len(lateChecks))
	}
}
