// Package e2e_test runs bulk verification against the reference target
// (Postfix + Dovecot, internal/reftarget). It needs root and the Debian
// packages; without them it fails with the reason, unless SPLITCHECK_SKIP_E2E=1.
// Only one reference target can run at a time (fixed ports): run with -p 1.
package e2e_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/splitcheck/splitcheck/harness/bulk"
	"github.com/splitcheck/splitcheck/harness/config"
	"github.com/splitcheck/splitcheck/internal/reftarget"
	"github.com/splitcheck/splitcheck/internal/reftarget/reftargettest"
	"github.com/splitcheck/splitcheck/scenarios"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func logger() *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	return nil
}

var localAccounts = []string{"alice@example.org", "dave@example.org", "mig1@example.org", "mig2@example.org", "mig3@example.org"}

// startTarget starts the reference target with the local accounts.
func startTarget(t *testing.T, m reftarget.Mutation) []reftarget.Account {
	t.Helper()
	reftargettest.Require(t)
	var accts []reftarget.Account
	for i, a := range localAccounts {
		accts = append(accts, reftarget.Account{Address: a, Password: fmt.Sprintf("pw-%d-%d", i, time.Now().UnixNano())})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	tg, err := reftarget.Start(ctx, reftarget.Options{Accounts: accts, Mutation: m, Logger: logger()})
	if err != nil {
		t.Fatalf("reftarget.Start: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := tg.Close(ctx); err != nil {
			t.Errorf("close reftarget: %v", err)
		}
	})
	return accts
}

// configFor is examples/reftarget.yaml with the accounts' passwords.
func configFor(accts []reftarget.Account) *config.Config {
	cfg := &config.Config{
		Target: config.Target{SMTP: reftarget.DefaultProxyListen, PlainSMTP: reftarget.DefaultPlainListen,
			Submission: reftarget.DefaultSubmissionListen, SubmissionTLS: "starttls", InsecureSkipVerify: true,
			Hostname: reftarget.DefaultHostname},
		Plan: config.Plan{Domains: []string{reftarget.DefaultDomain}},
		Submitter: config.Submitter{Username: accts[0].Address, Password: config.NewSecret(accts[0].Password),
			Mechanism: "plain"},
		Fakes: config.Fakes{Source: reftarget.DefaultSourceRelay, MX: "127.0.0.5:25", DNS: reftarget.DefaultNameserver + ":53",
			MXAddress: "127.0.0.5"},
		Proxy:    config.Proxy{Version: 2, Announce: "198.51.100.7", SourceAddress: "127.0.0.9"},
		Probe:    config.Probe{Helo: "probe.splitcheck.test", Sender: "probe@splitcheck.test"},
		Timeouts: config.Timeouts{Connect: 5 * time.Second, Delivery: 15 * time.Second, Absence: time.Second, Run: 2 * time.Minute},
		Bulk:     config.BulkDefaults(),
	}
	for _, a := range accts {
		cfg.Plan.Local = append(cfg.Plan.Local, config.LocalAccount{Address: a.Address, Mailbox: config.Mailbox{
			Protocol: "imap", Address: reftarget.DefaultIMAPListen, TLS: "none", Username: a.Address,
			Password: config.NewSecret(a.Password)}})
	}
	return cfg
}

// list has n unmigrated addresses, every local account, external addresses
// by submission (mx) and unauthenticated external addresses (reject).
func list(n int) (string, int) {
	var b strings.Builder
	b.WriteString("address,route\n")
	rows := 0
	add := func(a string, r scenarios.Route) {
		fmt.Fprintf(&b, "%s,%s\n", a, r)
		rows++
	}
	for i := range n {
		add(fmt.Sprintf("user%04d@example.org", i), scenarios.RouteSource)
		if i%100 == 50 && i/100 < len(localAccounts) {
			add(localAccounts[i/100], scenarios.RouteLocal)
		}
	}
	for i := range 4 {
		add(fmt.Sprintf("erin%d@external.test", i), scenarios.RouteMX)
		add(fmt.Sprintf("frank%d@other.test", i), scenarios.RouteMX)
	}
	for i := range 7 {
		add(fmt.Sprintf("relay%d@external.test", i), scenarios.RouteReject)
	}
	return b.String(), rows
}

func run(t *testing.T, cfg *config.Config, csv string) (*bulk.Result, map[string]bulk.Verdict) {
	t.Helper()
	got := map[string]bulk.Verdict{}
	r := &bulk.Runner{Config: cfg, MXDomains: []string{"external.test", "other.test"}, Logger: logger(),
		OnVerdict: func(v bulk.Verdict) { got[v.Check.Recipient] = v }}
	ctx, cancel := context.WithTimeout(context.Background(), cfg.Timeouts.Run)
	defer cancel()
	res, err := r.Run(ctx, bulk.NewCSV(strings.NewReader(csv), "list.csv", cfg.Plan.Domains))
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	return res, got
}

// TestBulkReferenceTarget verifies 500 recipients: unmigrated addresses relayed
// to the source, local accounts into Dovecot, external addresses by MX when
// submitted with SASL, refused on port 25 without it.
func TestBulkReferenceTarget(t *testing.T) {
	accts := startTarget(t, reftarget.MutationNone)
	cfg := configFor(accts)
	csv, rows := list(480)
	res, got := run(t, cfg, csv)
	if len(got) != rows || rows != 500 {
		t.Errorf("%d verdicts for %d rows; want 500", len(got), rows)
	}
	for a, v := range got {
		if v.Status != scenarios.StatusPass {
			t.Errorf("%s (line %d): %s: %s", a, v.Line, v.Status, v.Detail)
		}
	}
	want := map[scenarios.Route]int{scenarios.RouteLocal: 5, scenarios.RouteSource: 480, scenarios.RouteMX: 8, scenarios.RouteReject: 7}
	for _, rt := range res.Routes {
		if rt.Total != want[rt.Route] || rt.Passed != rt.Total {
			t.Errorf("route %s: %d of %d passed; want %d of %d", rt.Route, rt.Passed, rt.Total, want[rt.Route], want[rt.Route])
		}
	}
	if !res.Pipelined {
		t.Errorf("Postfix offers PIPELINING, but the run did not pipeline")
	}
	if v := got["relay0@external.test"]; len(v.Observed) != 1 || !strings.Contains(v.Observed[0].Evidence, "554 5.7.1") {
		t.Errorf("relay0@external.test observed %+v; want Postfix's 554 5.7.1 refusal", v.Observed)
	}
	if v := got["alice@example.org"]; len(v.Observed) != 1 || !strings.HasPrefix(v.Observed[0].Where, "alice@example.org/INBOX") {
		t.Errorf("alice observed %+v; want her INBOX", v.Observed)
	}
	t.Logf("500 recipients: %s in %s, %d transactions on %d connections", res.Summary, res.Elapsed.Round(time.Millisecond),
		res.Transactions, res.Connections)
}

// TestBulkReferenceTargetMutation: with unmigrated addresses rejected at RCPT,
// bulk flags every one of them, and only them.
func TestBulkReferenceTargetMutation(t *testing.T) {
	accts := startTarget(t, reftarget.MutationUnmigratedRejected)
	cfg := configFor(accts)
	csv, _ := list(60)
	res, got := run(t, cfg, csv)
	for a, v := range got {
		wantFail := strings.HasPrefix(a, "user")
		if wantFail != (v.Status == scenarios.StatusFail) {
			t.Errorf("%s: %s %s; want fail: %v", a, v.Status, v.Detail, wantFail)
		}
		if wantFail && !strings.HasPrefix(v.Detail, "want source, got reject") {
			t.Errorf("%s: %q; want \"want source, got reject ...\"", a, v.Detail)
		}
	}
	if res.Summary.Failed != 60 {
		t.Errorf("summary %s; want 60 failed", res.Summary)
	}
}
