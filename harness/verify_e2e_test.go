package harness_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"log/slog"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/splitcheck/splitcheck/harness"
	"github.com/splitcheck/splitcheck/harness/config"
	"github.com/splitcheck/splitcheck/internal/reftarget"
	"github.com/splitcheck/splitcheck/internal/reftarget/reftargettest"
	"github.com/splitcheck/splitcheck/scenarios"
)

// e2eAddrs are the reference target's listen addresses for this package's tests:
// the target's defaults moved to 127.0.1.x, so that they do not collide with other
// packages' targets when go test runs packages in parallel.
var e2eAddrs = struct {
	proxy, plain, submission, imap, source, mx, dns, nameserver string
}{
	proxy: "127.0.1.1:25", plain: "127.0.1.2:25", submission: "127.0.1.1:587", imap: "127.0.1.1:143",
	source: "127.0.1.4:2525", mx: "127.0.1.5:25", dns: "127.0.1.53:53", nameserver: "127.0.1.53",
}

// e2eConfig is the run description matching the target startE2E starts.
const e2eConfig = `
target:
  smtp: ` + "127.0.1.1:25" + `
  plain_smtp: 127.0.1.2:25
  submission: 127.0.1.1:587
  submission_tls: starttls
  insecure_skip_verify: true
  hostname: mx.example.org
plan:
  domains: [example.org]
  local:
    - address: alice@example.org
      mailbox: {address: 127.0.1.1:143, password: {env: PW_ALICE}}
    - address: dave@example.org
      mailbox: {address: 127.0.1.1:143, password: {env: PW_DAVE}}
  unmigrated: [bob@example.org, carol@example.org]
  external: [erin@external.test, frank@other.test]
submitter:
  username: alice@example.org
  password: {env: PW_ALICE}
fakes:
  source: 127.0.1.4:2525
  mx: 127.0.1.5:25
  dns: 127.0.1.53:53
proxy:
  version: 2
  announce: 198.51.100.7
  source_address: 127.0.1.9
probe:
  helo: probe.splitcheck.test
  plain_source: 127.0.1.10
timeouts:
  connect: 5s
  delivery: 10s
  absence: 1s
  run: 2m
`

// startE2E starts the reference target with a mutation and returns the matching
// config.
func startE2E(t testing.TB, m reftarget.Mutation) *config.Config {
	t.Helper()
	reftargettest.Require(t)
	pw := map[string]string{"PW_ALICE": password(), "PW_DAVE": password()}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	tgt, err := reftarget.Start(ctx, reftarget.Options{
		Accounts: []reftarget.Account{
			{Address: "alice@example.org", Password: pw["PW_ALICE"]},
			{Address: "dave@example.org", Password: pw["PW_DAVE"]},
		},
		ProxyListen: e2eAddrs.proxy, PlainListen: e2eAddrs.plain, SubmissionListen: e2eAddrs.submission,
		IMAPListen: e2eAddrs.imap, SourceRelay: e2eAddrs.source, Nameserver: e2eAddrs.nameserver,
		Mutation: m,
	})
	if err != nil {
		var se *reftarget.StartError
		if errors.As(err, &se) && se.Maillog != "" {
			t.Logf("reference target log:\n%s", se.Maillog)
		}
		t.Fatalf("start reference target: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("reference target log:\n%s", tgt.Maillog())
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := tgt.Close(ctx); err != nil {
			t.Errorf("close reference target: %v", err)
		}
	})
	cfg, err := config.Parse("e2e.yaml", []byte(e2eConfig), func(k string) (string, bool) { v, ok := pw[k]; return v, ok })
	if err != nil {
		t.Fatalf("parse config: %v", err)
	}
	return cfg
}

func password() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return "Pw-" + hex.EncodeToString(b[:])
}

func testLogger(testing.TB) *slog.Logger {
	if !testing.Verbose() {
		return nil
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// TestVerifyReferenceTarget runs the built-in matrix against a correctly configured
// Postfix + Dovecot: every check passes, each route check with exactly one sighting
// where the plan says.
func TestVerifyReferenceTarget(t *testing.T) {
	cfg := startE2E(t, reftarget.MutationNone)
	var events []harness.ProgressEvent
	res, err := harness.Verify(context.Background(), cfg, harness.VerifyOptions{
		Logger:   testLogger(t),
		Progress: func(ev harness.ProgressEvent) { events = append(events, ev) },
	})
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	want := []string{
		"route/local/alice@example.org", "received/local/alice@example.org", "route/local/dave@example.org",
		"route/unmigrated/bob@example.org", "route/unmigrated/carol@example.org",
		"route/external/erin@external.test", "route/external/frank@other.test",
		"route/open-relay/erin@external.test", "route/open-relay/frank@other.test",
		"mixed/alice@example.org", "mixed/bob@example.org", "mixed/erin@external.test",
		"route/plus/alice+splitcheck@example.org", "route/case/ALICE@EXAMPLE.ORG",
		"headerless", "plain", "relay/no-proxy-header",
	}
	var got []string
	for _, v := range res.Verdicts {
		got = append(got, v.Check.Name)
		for _, o := range v.Observed {
			t.Logf("%-42s %-5s %-7s %6s %s", v.Check.Name, v.Status, o.Place, o.After.Round(time.Millisecond), o.Evidence)
		}
		if v.Status != scenarios.StatusPass {
			t.Errorf("%s: %s: %s (observed %v)", v.Check.Name, v.Status, v.Detail, v.Observed)
			continue
		}
		switch v.Check.Kind {
		case scenarios.KindRoute, scenarios.KindPlain, scenarios.KindHeaderless:
			if len(v.Observed) != 1 || v.Observed[0].Place != v.Check.Expect {
				t.Errorf("%s passed with sightings %v; want exactly one at %s", v.Check.Name, v.Observed, v.Check.Expect)
			}
		case scenarios.KindRelayHeader:
			if !strings.Contains(v.Detail, " to source, ") || !strings.Contains(v.Detail, " to mx)") {
				t.Errorf("%s passed with detail %q; want Postfix's connections to both fakes counted", v.Check.Name, v.Detail)
			}
		case scenarios.KindReceived:
			if len(v.Observed) == 0 || !strings.Contains(v.Observed[0].Evidence, "[198.51.100.7]") {
				t.Errorf("%s passed with evidence %v; want the Received line with [198.51.100.7]", v.Check.Name, v.Observed)
			}
		}
	}
	if !slices.Equal(got, want) {
		t.Errorf("checks = %q;\nwant %q", got, want)
	}
	if err := res.Mismatch(); err != nil {
		t.Errorf("Mismatch() = %v; want nil", err)
	}
	if pass, _, _, _ := res.Counts(); pass != len(want) {
		t.Errorf("Counts() pass = %d; want %d", pass, len(want))
	}
	judged := 0
	for _, ev := range events {
		if ev.Stage == harness.StageJudged {
			judged++
			if ev.Done != judged || ev.Total != len(want) {
				t.Errorf("progress %+v; want Done %d of %d", ev, judged, len(want))
			}
		}
	}
	if judged != len(want) {
		t.Errorf("%d judged progress events; want %d", judged, len(want))
	}
	lat := res.Latencies()
	if len(lat) > 0 {
		t.Logf("built-in matrix: %d checks in %s; delivery latency p50 %s, p95 %s (n=%d)",
			len(res.Verdicts), res.Elapsed.Round(time.Millisecond), percentile(lat, 50), percentile(lat, 95), len(lat))
	}
}

// percentile of sorted durations (nearest rank).
func percentile(sorted []time.Duration, p int) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	k := (p*len(sorted) + 99) / 100
	return sorted[max(k-1, 0)].Round(time.Millisecond)
}

// BenchmarkVerifyReferenceTarget times the built-in matrix against a ready reference
// target (started once): the wall time of one Verify, and the send-to-arrival
// latency of the delivered probes over every run.
//
//	go test -run '^$' -bench VerifyReferenceTarget -benchtime 5x ./harness/
func BenchmarkVerifyReferenceTarget(b *testing.B) {
	cfg := startE2E(b, reftarget.MutationNone)
	var lat []time.Duration
	var wall []time.Duration
	for b.Loop() {
		res, err := harness.Verify(context.Background(), cfg, harness.VerifyOptions{})
		if err != nil {
			b.Fatal(err)
		}
		if err := res.Mismatch(); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, res.Latencies()...)
		wall = append(wall, res.Elapsed)
	}
	slices.Sort(lat)
	slices.Sort(wall)
	b.ReportMetric(float64(percentile(wall, 50))/float64(time.Millisecond), "wall-p50-ms")
	b.ReportMetric(float64(percentile(lat, 50))/float64(time.Millisecond), "probe-p50-ms")
	b.ReportMetric(float64(percentile(lat, 95))/float64(time.Millisecond), "probe-p95-ms")
}
