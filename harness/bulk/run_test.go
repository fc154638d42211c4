package bulk

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/emersion/go-smtp"

	"github.com/splitcheck/splitcheck/scenarios"
)

var accounts = []string{"alice@example.org", "carol@example.org"}

// collect runs r over list and returns the result and the verdicts by address.
func collect(t *testing.T, r *Runner, rows Rows) (*Result, map[string]Verdict, error) {
	t.Helper()
	var mu sync.Mutex
	got := map[string]Verdict{}
	r.OnVerdict = func(v Verdict) {
		mu.Lock()
		defer mu.Unlock()
		if _, dup := got[v.Check.Recipient]; dup {
			t.Errorf("two verdicts for %s", v.Check.Recipient)
		}
		got[v.Check.Recipient] = v
	}
	res, err := r.Run(context.Background(), rows)
	return res, got, err
}

// mixedList is n unmigrated addresses, both accounts, three external ones by
// submission and three refused unauthenticated.
func mixedList(n int) []string {
	var rows []string
	for i := range n {
		rows = append(rows, fmt.Sprintf("user%03d@example.org,source", i))
	}
	rows = append(rows, "alice@example.org,local", "Carol@Example.org,LOCAL")
	for i := range 3 {
		rows = append(rows, fmt.Sprintf("ext%d@mx.test,mx", i), fmt.Sprintf("relay%d@external.test,reject", i))
	}
	return rows
}

func TestRunEveryRoute(t *testing.T) {
	tg := startTarget(t, accounts, targetOpts{})
	cfg := tg.config(accounts)
	cfg.Bulk.BatchSize = 10
	rows := mixedList(40)
	res, got, err := collect(t, tg.runner(cfg), NewCSV(listOf(rows...), "list.csv", cfg.Plan.Domains))
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if len(got) != len(rows) {
		t.Errorf("got %d verdicts; want %d", len(got), len(rows))
	}
	for addr, v := range got {
		if v.Status != scenarios.StatusPass {
			t.Errorf("%s (line %d): %s %s; want pass", addr, v.Line, v.Status, v.Detail)
		}
	}
	if v := got["Carol@Example.org"]; len(v.Observed) != 1 || !strings.HasPrefix(v.Observed[0].Where, "carol@example.org/INBOX") {
		t.Errorf("Carol observed %+v; want one copy in carol@example.org/INBOX", v.Observed)
	}
	if v := got["relay0@external.test"]; len(v.Observed) != 1 || !strings.Contains(v.Observed[0].Evidence, "554 5.7.1") {
		t.Errorf("relay0 observed %+v; want the 554 refusal as evidence", v.Observed)
	}
	want := map[scenarios.Route]int{scenarios.RouteLocal: 2, scenarios.RouteSource: 40, scenarios.RouteMX: 3, scenarios.RouteReject: 3}
	for _, rt := range res.Routes {
		if rt.Total != want[rt.Route] || rt.Passed != rt.Total {
			t.Errorf("route %s: %d passed of %d; want %d of %d", rt.Route, rt.Passed, rt.Total, want[rt.Route], want[rt.Route])
		}
	}
	if len(res.Routes) != 4 {
		t.Errorf("routes = %+v; want all four", res.Routes)
	}
	if err := res.Err(); err != nil {
		t.Errorf("Result.Err() = %v; want nil", err)
	}
	if _, ok := tg.announced.Load("198.51.100.7:40000"); !ok {
		t.Errorf("the target never saw the announced client 198.51.100.7:40000 in a PROXY header")
	}
}

func TestRunMismatches(t *testing.T) {
	tg := startTarget(t, accounts, targetOpts{rcptErr: func(rcpt string) error {
		if rcpt == "user002@example.org" {
			return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "User unknown"}
		}
		return nil
	}})
	tg.misroute = func(rcpt string) string {
		switch rcpt {
		case "alice@example.org":
			return "source" // a local account relayed to the source
		case "user005@example.org":
			return "local" // an unmigrated address delivered locally
		case "user007@example.org":
			return "drop"
		}
		return ""
	}
	cfg := tg.config(accounts)
	cfg.Timeouts.Delivery = 300 * 1e6 // 300ms: user007 never arrives
	res, got, err := collect(t, tg.runner(cfg), NewCSV(listOf(mixedList(10)...), "list.csv", nil))
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	for _, tt := range []struct {
		addr, detail string
	}{
		{"user002@example.org", "want source, got reject: RCPT TO: RCPT 550 5.1.1 User unknown"},
		{"alice@example.org", "want local, got source"},
		{"user005@example.org", "want source, got none: not seen anywhere"},
		{"user007@example.org", "want source, got none: not seen anywhere within 300ms"},
	} {
		v := got[tt.addr]
		if v.Status != scenarios.StatusFail || !strings.HasPrefix(v.Detail, tt.detail) {
			t.Errorf("%s: %s %q; want fail %q", tt.addr, v.Status, v.Detail, tt.detail)
		}
	}
	if res.Summary.Failed != 4 || res.Summary.Passed != len(got)-4 {
		t.Errorf("summary %s; want 4 failed, %d passed", res.Summary, len(got)-4)
	}
	var mm *scenarios.MismatchError
	if err := res.Err(); !errors.As(err, &mm) || len(mm.Failed) != 4 {
		t.Errorf("Result.Err() = %v; want a MismatchError naming 4 recipients", err)
	}
	if len(res.Mismatches) != 4 || res.Mismatches[0].Line > res.Mismatches[3].Line {
		t.Errorf("mismatches = %d, in line order; want 4", len(res.Mismatches))
	}
}

// TestBatchLearnsLimit: the target refuses every recipient past the 7th of a
// transaction with 452 4.5.3; the run learns 7 and still verifies everyone.
func TestBatchLearnsLimit(t *testing.T) {
	const limit = 7
	var inTxn atomic.Int64
	tg := startTarget(t, accounts, targetOpts{
		mailErr: func(string) error { inTxn.Store(0); return nil },
		rcptErr: func(string) error {
			if inTxn.Add(1) > limit {
				return &smtp.SMTPError{Code: 452, EnhancedCode: smtp.EnhancedCode{4, 5, 3}, Message: "Error: too many recipients"}
			}
			return nil
		},
	})
	cfg := tg.config(accounts)
	cfg.Bulk.Concurrency = 1 // the counter above is per transaction only with one connection
	cfg.Bulk.BatchSize = 50
	var rows []string
	for i := range 60 {
		rows = append(rows, fmt.Sprintf("user%03d@example.org,source", i))
	}
	res, got, err := collect(t, tg.runner(cfg), NewCSV(listOf(rows...), "list.csv", nil))
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if res.BatchLimit != limit {
		t.Errorf("BatchLimit = %d; want %d", res.BatchLimit, limit)
	}
	if res.Summary.Passed != 60 || len(got) != 60 {
		t.Errorf("summary %s, %d verdicts; want 60 passed", res.Summary, len(got))
	}
	if want := (60 + limit - 1) / limit; res.Transactions < want {
		t.Errorf("transactions = %d; want at least %d", res.Transactions, want)
	}
	if res.RateLimited != 0 || res.Retries != 0 {
		t.Errorf("rate limited %d, retries %d; want 0 and 0 (a recipient limit is not a rate limit)", res.RateLimited, res.Retries)
	}
	for _, v := range got {
		if v.Retries != 0 {
			t.Errorf("%s: %d retries; want 0", v.Check.Recipient, v.Retries)
		}
	}
}

// TestPipelining looks at the server side: with PIPELINING offered, one read
// from the client carries many RCPT commands; without it, or with it turned
// off, never more than one.
func TestPipelining(t *testing.T) {
	for _, tt := range []struct {
		name          string
		hide          bool
		mode          string
		wantPipelined bool
	}{
		{"offered", false, "auto", true},
		{"not offered", true, "auto", false},
		{"turned off", false, "off", false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			tg := startTarget(t, accounts, targetOpts{})
			tg.hidePipelining.Store(tt.hide)
			cfg := tg.config(accounts)
			cfg.Bulk.Pipelining = tt.mode
			cfg.Bulk.BatchSize = 20
			var rows []string
			for i := range 40 {
				rows = append(rows, fmt.Sprintf("user%03d@example.org,source", i))
			}
			res, _, err := collect(t, tg.runner(cfg), NewCSV(listOf(rows...), "list.csv", nil))
			if err != nil {
				t.Fatalf("Run: %v", err)
			}
			if res.Summary.Passed != 40 {
				t.Errorf("summary %s; want 40 passed", res.Summary)
			}
			maxPerRead := tg.maxRcptPerRead.Load()
			if tt.wantPipelined && maxPerRead < 2 {
				t.Errorf("most RCPTs in one read = %d; want several (pipelined)", maxPerRead)
			}
			if !tt.wantPipelined && maxPerRead != 1 {
				t.Errorf("most RCPTs in one read = %d; want 1 (one command per round trip)", maxPerRead)
			}
			if res.Pipelined != tt.wantPipelined {
				t.Errorf("Result.Pipelined = %v; want %v", res.Pipelined, tt.wantPipelined)
			}
		})
	}
}

// TestRateLimits: the target throttles the first recipients; the run reports the
// rate limits, backs off, and verifies everyone. A target that never stops
// throttling gets errors, not mismatches.
func TestRateLimits(t *testing.T) {
	for _, tt := range []struct {
		name     string
		reply    *smtp.SMTPError
		throttle int64 // how many RCPTs get the reply; -1 all
		wantPass bool
	}{
		{"451 rate limit", &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 7, 1}, Message: "Rate limit exceeded, try again later"}, 12, true},
		{"421 too many connections", &smtp.SMTPError{Code: 421, EnhancedCode: smtp.EnhancedCode{4, 7, 0}, Message: "Error: too many connections from 198.51.100.7"}, 3, true},
		{"450 throttled for ever", &smtp.SMTPError{Code: 450, EnhancedCode: smtp.EnhancedCode{4, 7, 1}, Message: "Throttled: too much mail from 198.51.100.7"}, -1, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var n atomic.Int64
			tg := startTarget(t, accounts, targetOpts{rcptErr: func(string) error {
				if tt.throttle < 0 || n.Add(1) <= tt.throttle {
					return tt.reply
				}
				return nil
			}})
			cfg := tg.config(accounts)
			cfg.Bulk.BatchSize = 5
			cfg.Bulk.Retries = 3
			var rows []string
			for i := range 20 {
				rows = append(rows, fmt.Sprintf("user%03d@example.org,source", i))
			}
			res, got, err := collect(t, tg.runner(cfg), NewCSV(listOf(rows...), "list.csv", nil))
			if err != nil {
				t.Fatalf("Run: %v", err)
			}
			if res.RateLimited == 0 || !strings.Contains(res.RateLimitReply, fmt.Sprint(tt.reply.Code)) {
				t.Errorf("rate limited %d, last %q; want the %d replies counted", res.RateLimited, res.RateLimitReply, tt.reply.Code)
			}
			if res.Summary.Failed != 0 {
				t.Errorf("summary %s; want no routing failures from rate limits", res.Summary)
			}
			if tt.wantPass {
				if res.Summary.Passed != 20 || res.Retries == 0 {
					t.Errorf("summary %s, %d retries; want 20 passed after retries", res.Summary, res.Retries)
				}
				return
			}
			if res.Summary.Errors != 20 {
				t.Errorf("summary %s; want 20 errors", res.Summary)
			}
			v := got["user000@example.org"]
			if !strings.Contains(v.Detail, "rate limited: 450 4.7.1") || !strings.Contains(v.Detail, "gave up after 3 retries") || v.Retries != 4 {
				t.Errorf("user000: %q, %d retries; want rate limited, gave up after 3 retries", v.Detail, v.Retries)
			}
			if err := res.Err(); !errors.Is(err, ErrUnjudged) {
				t.Errorf("Result.Err() = %v; want ErrUnjudged", err)
			}
		})
	}
}

// TestInFlightBound: never more rows between reading and verdict than InFlight.
func TestInFlightBound(t *testing.T) {
	tg := startTarget(t, accounts, targetOpts{})
	cfg := tg.config(accounts)
	cfg.Bulk.InFlight = 12
	cfg.Bulk.BatchSize = 4
	var rows []string
	for i := range 200 {
		rows = append(rows, fmt.Sprintf("user%03d@example.org,source", i))
	}
	r := tg.runner(cfg)
	var worst atomic.Int64
	var n atomic.Int64
	r.OnVerdict = func(Verdict) {
		n.Add(1)
		p := r.Progress()
		if d := p.Read - p.Judged; d > worst.Load() {
			worst.Store(d)
		}
	}
	res, err := r.Run(context.Background(), NewCSV(listOf(rows...), "list.csv", nil))
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if res.Summary.Passed != 200 || n.Load() != 200 {
		t.Errorf("summary %s; want 200 passed", res.Summary)
	}
	if w := worst.Load(); w > 12 {
		t.Errorf("rows in flight reached %d; want at most 12", w)
	}
}

func TestRunMalformed(t *testing.T) {
	list := []string{
		"user001@example.org,source",
		"not-an-address,source", // line 3
		"user002@example.org,source",
		"user003@example.org,elsewhere", // line 5
		"user004@example.org,source",
	}
	for _, tt := range []struct {
		mode      string
		wantLines []int
		wantRows  []string
		wantErr   bool
	}{
		{"continue", []int{3, 5}, []string{"user001@example.org", "user002@example.org", "user004@example.org"}, false},
		{"stop", []int{3}, []string{"user001@example.org"}, true},
	} {
		t.Run(tt.mode, func(t *testing.T) {
			tg := startTarget(t, accounts, targetOpts{})
			cfg := tg.config(accounts)
			cfg.Bulk.OnMalformed = tt.mode
			r := tg.runner(cfg)
			var lines []int
			r.OnMalformed = func(e *RowError) { lines = append(lines, e.Line) }
			res, got, err := collect(t, r, NewCSV(listOf(list...), "list.csv", nil))
			var re *RowError
			if tt.wantErr != errors.As(err, &re) {
				t.Fatalf("Run error = %v; want a *RowError: %v", err, tt.wantErr)
			}
			if tt.wantErr && re.Line != 3 {
				t.Errorf("RowError line = %d; want 3", re.Line)
			}
			if fmt.Sprint(lines) != fmt.Sprint(tt.wantLines) {
				t.Errorf("malformed lines = %v; want %v", lines, tt.wantLines)
			}
			if len(got) != len(tt.wantRows) || res.Malformed != len(tt.wantLines) {
				t.Errorf("%d verdicts, %d malformed; want %d and %d", len(got), res.Malformed, len(tt.wantRows), len(tt.wantLines))
			}
			for _, a := range tt.wantRows {
				if got[a].Status != scenarios.StatusPass {
					t.Errorf("%s: %s; want pass", a, got[a].Status)
				}
			}
		})
	}
}

func TestRunUnreachable(t *testing.T) {
	tg := startTarget(t, accounts, targetOpts{})
	cfg := tg.config(accounts)
	cfg.Target.SMTP = "127.0.0.1:1" // nothing listens there
	cfg.Bulk.Retries = 1
	_, got, err := collect(t, tg.runner(cfg), NewCSV(listOf("user001@example.org,source"), "list.csv", nil))
	if !errors.Is(err, ErrUnreachable) {
		t.Errorf("Run error = %v; want ErrUnreachable", err)
	}
	if len(got) != 0 {
		t.Errorf("got %d verdicts; want none (nothing was judged)", len(got))
	}
}

func TestRunShardsPartition(t *testing.T) {
	tg := startTarget(t, accounts, targetOpts{})
	rows := mixedList(30)
	seen := map[string]int{}
	for k := 1; k <= 3; k++ {
		cfg := tg.config(accounts)
		r := tg.runner(cfg)
		r.Shard = Shard{K: k, N: 3}
		res, got, err := collect(t, r, NewCSV(listOf(rows...), "list.csv", nil))
		if err != nil {
			t.Fatalf("shard %d: %v", k, err)
		}
		if res.Summary.Passed != len(got) || len(got) == 0 {
			t.Errorf("shard %d: summary %s of %d verdicts; want all passed, some", k, res.Summary, len(got))
		}
		for a := range got {
			seen[a]++
		}
	}
	if len(seen) != len(rows) {
		t.Errorf("shards verified %d addresses together; want all %d", len(seen), len(rows))
	}
	for a, n := range seen {
		if n != 1 {
			t.Errorf("%s verified by %d shards; want 1", a, n)
		}
	}
}

// TestRunPlain sends to the plain listener, with no PROXY header.
func TestRunPlain(t *testing.T) {
	tg := startTarget(t, accounts, targetOpts{})
	cfg := tg.config(accounts)
	cfg.Target.PlainSMTP = tg.mta.Addr // the MTA itself: a PROXY header would be a bad command
	r := tg.runner(cfg)
	r.Plain = true
	res, _, err := collect(t, r, NewCSV(listOf(mixedList(5)...), "list.csv", nil))
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if res.Summary.Failed+res.Summary.Errors != 0 || res.Summary.Passed != 13 {
		t.Errorf("summary %s; want 13 passed", res.Summary)
	}
	if tg.maxRcptPerRead.Load() != 0 {
		t.Errorf("the PROXY front saw traffic; want none with Plain")
	}
	for _, c := range tg.mta.Connections() {
		if c.ProxyHeader {
			t.Errorf("connection %d began with a PROXY header; want none", c.ID)
		}
	}
}

// TestErrorBudget: a target that refuses every recipient never gets more
// refusals on one connection than bulk.errors_per_connection (servers slow down
// or hang up after a few), and every row is still judged.
func TestErrorBudget(t *testing.T) {
	tg := startTarget(t, accounts, targetOpts{rcptErr: func(string) error {
		return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "User unknown in relay recipient table"}
	}})
	cfg := tg.config(accounts)
	cfg.Bulk.ErrorsPerConnection = 3
	cfg.Bulk.Concurrency = 2
	var rows []string
	for i := range 40 {
		rows = append(rows, fmt.Sprintf("user%03d@example.org,source", i))
	}
	res, got, err := collect(t, tg.runner(cfg), NewCSV(listOf(rows...), "list.csv", nil))
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if res.Summary.Failed != 40 || len(got) != 40 {
		t.Errorf("summary %s; want 40 failed", res.Summary)
	}
	for _, v := range got {
		if !strings.HasPrefix(v.Detail, "want source, got reject: RCPT TO: RCPT 550 5.1.1") {
			t.Errorf("%s: %q; want the 550 refusal", v.Check.Recipient, v.Detail)
		}
	}
	tg.front.Close() // let the last pipes finish
	tg.wg.Wait()
	tg.mu.Lock()
	defer tg.mu.Unlock()
	sum := 0
	for i, n := range tg.rcptPerConn {
		sum += n
		if n > 3 {
			t.Errorf("connection %d carried %d refused RCPTs; want at most 3", i, n)
		}
	}
	if sum != 40 {
		t.Errorf("%d RCPTs in all; want 40 (each row once)", sum)
	}
}

// TestRunFindsProbesInTheJunkFolder: a probe filed as spam was still delivered
// locally. Stalwart's junk folder is "Junk Mail", not "Junk": bulk must find it
// there as imapobs does, not fail the row as never delivered.
func TestRunFindsProbesInTheJunkFolder(t *testing.T) {
	for _, junk := range []string{"Junk", "Junk Mail"} {
		t.Run(junk, func(t *testing.T) {
			tg := startTarget(t, accounts, targetOpts{junk: junk})
			tg.misroute = func(rcpt string) string {
				if rcpt == "alice@example.org" {
					return "junk"
				}
				return ""
			}
			res, got, err := collect(t, tg.runner(tg.config(accounts)), NewCSV(listOf("alice@example.org,local", "carol@example.org,local"), "list.csv", nil))
			if err != nil {
				t.Fatalf("Run: %v", err)
			}
			v := got["alice@example.org"]
			if v.Status != scenarios.StatusPass || len(v.Observed) != 1 || !strings.Contains(v.Observed[0].Where, junk) {
				t.Errorf("alice: %s %q observed %+v; want pass, found in %s", v.Status, v.Detail, v.Observed, junk)
			}
			if res.Summary.Passed != 2 {
				t.Errorf("summary %s; want 2 passed", res.Summary)
			}
		})
	}
}
