package bulk

import (
	"bufio"
	"bytes"
	"encoding/json"
	"encoding/xml"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/splitcheck/splitcheck/scenarios"
)

func sampleVerdicts() []Verdict {
	mk := func(addr string, route scenarios.Route, st scenarios.Status, line int, detail string, obs ...scenarios.Observation) Verdict {
		return Verdict{Line: line, Verdict: scenarios.Verdict{
			Check:  scenarios.Check{Name: "route/" + string(route) + "/" + addr, Kind: scenarios.KindRoute, Recipient: addr, Expect: route},
			Status: st, Detail: detail, Observed: obs, Elapsed: 40 * time.Millisecond,
		}}
	}
	return []Verdict{
		mk("alice@example.org", scenarios.RouteLocal, scenarios.StatusPass, 2, "",
			scenarios.Observation{Place: scenarios.RouteLocal, Where: "alice@example.org/INBOX", Evidence: "INBOX uid 3"}),
		mk("bob@example.org", scenarios.RouteSource, scenarios.StatusFail, 3, "want source, got reject: RCPT 550 5.1.1 User unknown",
			scenarios.Observation{Place: scenarios.RouteReject, Where: "RCPT TO", Evidence: "RCPT 550 5.1.1 User unknown"}),
		mk("erin@mx.test", scenarios.RouteMX, scenarios.StatusError, 4, "rate limited: 451 4.7.1 slow down (gave up after 5 retries)"),
		mk("x@mx.test", scenarios.RouteMX, scenarios.StatusSkip, 5, "route mx needs fakes.mx"),
	}
}

func sampleResult(vs []Verdict) *Result {
	res := &Result{RunID: "r1", Shard: Shard{K: 2, N: 3}, Elapsed: 2 * time.Second, Transactions: 3, Connections: 2,
		BatchLimit: 100, Pipelined: true, RateLimited: 4, RateLimitReply: "451 4.7.1 slow down", Malformed: 1}
	tally := map[scenarios.Route]*RouteTally{}
	for _, v := range vs {
		t := tally[v.Check.Expect]
		if t == nil {
			t = &RouteTally{Route: v.Check.Expect}
			tally[v.Check.Expect] = t
		}
		t.Total++
		switch v.Status {
		case scenarios.StatusPass:
			t.Passed++
			res.Summary.Passed++
		case scenarios.StatusFail:
			t.Failed++
			res.Summary.Failed++
			res.Mismatches = append(res.Mismatches, v)
		case scenarios.StatusSkip:
			t.Skipped++
			res.Summary.Skipped++
		default:
			t.Errors++
			res.Summary.Errors++
			res.Mismatches = append(res.Mismatches, v)
		}
	}
	for _, r := range []scenarios.Route{scenarios.RouteLocal, scenarios.RouteSource, scenarios.RouteMX} {
		res.Routes = append(res.Routes, *tally[r])
	}
	return res
}

func TestWriteReport(t *testing.T) {
	vs := sampleVerdicts()
	var b bytes.Buffer
	if err := WriteReport(&b, sampleResult(vs), false); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{
		"run r1, shard 2/3: 4 recipients",
		"ROUTE   TOTAL  PASSED  FAILED  ERRORS  SKIPPED",
		"source      1       0       1       0        0",
		"all         4       1       1       1        1",
		"3 transactions on 2 connections, at most 100 recipients each, pipelined",
		"rate limits: 4 replies, retried with backoff (last: 451 4.7.1 slow down)",
		"malformed rows: 1",
		"mismatches and errors (2):",
		"FAIL   line 3  bob@example.org  expected source, observed reject",
		"ERROR  line 4  erin@mx.test  expected mx, observed none",
		"1 passed, 1 failed, 1 skipped, 1 errors",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "alice@example.org") {
		t.Errorf("report lists a passing recipient; want only mismatches:\n%s", out)
	}
}

func TestJSONWriter(t *testing.T) {
	vs := sampleVerdicts()
	var b bytes.Buffer
	j := NewJSONWriter(&b)
	for _, v := range vs {
		j.Verdict(v)
	}
	j.Malformed(&RowError{Name: "list.csv", Line: 9, Text: "junk", Msg: "want 2 fields"})
	if err := j.Close(sampleResult(vs)); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(&b)
	var types []string
	var last SummaryRecord
	for sc.Scan() {
		var rec map[string]any
		if err := json.Unmarshal(sc.Bytes(), &rec); err != nil {
			t.Fatalf("line %q: %v", sc.Text(), err)
		}
		types = append(types, rec["type"].(string))
		if rec["type"] == "check" && rec["line"] == nil {
			t.Errorf("check record without line: %s", sc.Text())
		}
		if rec["type"] == "summary" {
			if err := json.Unmarshal(sc.Bytes(), &last); err != nil {
				t.Fatal(err)
			}
		}
	}
	if got := strings.Join(types, ","); got != "check,check,check,check,malformed,summary" {
		t.Errorf("record types = %s; want 4 checks, malformed, summary", got)
	}
	if last.Passed != 1 || last.Failed != 1 || last.Shard != "2/3" || len(last.Routes) != 3 || !last.Pipelined || last.RateLimited != 4 {
		t.Errorf("summary = %+v; want the result's figures", last)
	}
}

func TestJUnitWriter(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "bulk.xml")
	j, err := NewJUnitWriter(path, "splitcheck-bulk")
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range sampleVerdicts() {
		j.Verdict(v)
	}
	j.Malformed(&RowError{Name: "list.csv", Line: 9, Text: "junk", Msg: "want 2 fields"})
	if err := j.Close(3 * time.Second); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Tests    int `xml:"tests,attr"`
		Failures int `xml:"failures,attr"`
		Errors   int `xml:"errors,attr"`
		Skipped  int `xml:"skipped,attr"`
		Suites   []struct {
			Tests int `xml:"tests,attr"`
			Cases []struct {
				Name    string    `xml:"name,attr"`
				Failure *struct{} `xml:"failure"`
				Error   *struct {
					Type string `xml:"type,attr"`
				} `xml:"error"`
			} `xml:"testcase"`
		} `xml:"testsuite"`
	}
	if err := xml.Unmarshal(data, &doc); err != nil {
		t.Fatalf("parse %s: %v\n%s", path, err, data)
	}
	if doc.Tests != 5 || doc.Failures != 1 || doc.Errors != 2 || doc.Skipped != 1 || len(doc.Suites) != 1 || len(doc.Suites[0].Cases) != 5 {
		t.Errorf("junit totals = %+v; want 5 tests, 1 failure, 2 errors, 1 skipped\n%s", doc, data)
	}
	if c := doc.Suites[0].Cases[4]; c.Name != "input list.csv line 9" || c.Error == nil || c.Error.Type != "malformed" {
		t.Errorf("last case = %+v; want the malformed row as an error", c)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Errorf("%d files left in %s; want only bulk.xml", len(entries), dir)
	}
}
