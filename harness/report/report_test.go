package report_test

import (
	"bytes"
	"encoding/json"
	"encoding/xml"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/splitcheck/splitcheck/harness/report"
	"github.com/splitcheck/splitcheck/scenarios"
)

// sample covers every status and the shapes of observation a run produces.
var sample = []scenarios.Verdict{
	{
		Check: scenarios.Check{Name: "route/local/alice@example.org", Kind: scenarios.KindRoute,
			Probe: "local alice@example.org", Recipient: "alice@example.org", Entry: scenarios.EntryProxy,
			Expect: scenarios.RouteLocal},
		Status:   scenarios.StatusPass,
		Observed: []scenarios.Observation{{Place: scenarios.RouteLocal, Where: "alice@example.org/INBOX", Evidence: "INBOX uid 7", After: 12 * time.Millisecond}},
		Elapsed:  2012 * time.Millisecond,
	},
	{
		Check: scenarios.Check{Name: "route/unmigrated/bob@example.org", Kind: scenarios.KindRoute,
			Probe: "unmigrated bob@example.org", Recipient: "bob@example.org", Entry: scenarios.EntryProxy,
			Expect: scenarios.RouteSource},
		Status:   scenarios.StatusFail,
		Observed: []scenarios.Observation{{Place: scenarios.RouteReject, Where: "RCPT TO", Evidence: "RCPT 550 5.1.1 <bob@example.org>: User unknown", After: 3 * time.Millisecond}},
		Detail:   "want source, got reject\nRCPT 550 5.1.1 <bob@example.org>: User unknown",
		Elapsed:  3 * time.Millisecond,
	},
	{
		Check: scenarios.Check{Name: "route/external/erin@external.test", Kind: scenarios.KindRoute,
			Recipient: "erin@external.test", Entry: scenarios.EntrySubmission, Expect: scenarios.RouteMX},
		Status:  scenarios.StatusFail,
		Detail:  "not seen anywhere within 30s",
		Elapsed: 30 * time.Second,
	},
	{
		Check:  scenarios.Check{Name: "plain", Kind: scenarios.KindPlain, Entry: scenarios.EntryPlain},
		Status: scenarios.StatusSkip,
		Detail: "target.plain_smtp is not set",
	},
	{
		Check:   scenarios.Check{Name: "headerless", Kind: scenarios.KindHeaderless, Entry: scenarios.EntryProxy},
		Status:  scenarios.StatusError,
		Detail:  "dial 127.0.0.1:25: connection refused",
		Elapsed: 1500 * time.Microsecond,
	},
}

func TestTable(t *testing.T) {
	for _, tt := range []struct {
		name     string
		verdicts []scenarios.Verdict
		opt      report.TableOptions
		want     string
	}{
		{
			name:     "empty",
			verdicts: nil,
			want: "STATUS  CHECK  RECIPIENT  EXPECTED  OBSERVED  TIME  EVIDENCE\n" +
				"0 passed, 0 failed, 0 skipped, 0 errors\n",
		},
		{
			name:     "every status",
			verdicts: sample,
			want: `STATUS  CHECK                              RECIPIENT           EXPECTED  OBSERVED  TIME   EVIDENCE
PASS    route/local/alice@example.org      alice@example.org   local     local     12ms   INBOX uid 7
FAIL    route/unmigrated/bob@example.org   bob@example.org     source    reject    3ms    RCPT 550 5.1.1 <bob@example.org>: User unknown
        want source, got reject
        RCPT 550 5.1.1 <bob@example.org>: User unknown
FAIL    route/external/erin@external.test  erin@external.test  mx        none      30.0s  -
        not seen anywhere within 30s
SKIP    plain                              -                   -         -         -      -
        target.plain_smtp is not set
ERROR   headerless                         -                   -         -         2ms    -
        dial 127.0.0.1:25: connection refused
1 passed, 2 failed, 1 skipped, 1 errors
`,
		},
		{
			name: "colour",
			verdicts: []scenarios.Verdict{
				{Check: scenarios.Check{Name: "a", Kind: scenarios.KindReceived}, Status: scenarios.StatusPass, Detail: "Received: from x ([198.51.100.7])"},
				{Check: scenarios.Check{Name: "b", Kind: scenarios.KindReceived}, Status: scenarios.StatusSkip},
			},
			opt: report.TableOptions{Color: true},
			want: "\x1b[1mSTATUS\x1b[0m  \x1b[1mCHECK\x1b[0m  \x1b[1mRECIPIENT\x1b[0m  \x1b[1mEXPECTED\x1b[0m  \x1b[1mOBSERVED\x1b[0m  \x1b[1mTIME\x1b[0m  \x1b[1mEVIDENCE\x1b[0m\n" +
				"\x1b[32mPASS\x1b[0m    a      -          -         -         -     Received: from x ([198.51.100.7])\n" +
				"\x1b[33mSKIP\x1b[0m    b      -          -         -         -     -\n" +
				"\x1b[32m1 passed\x1b[0m, 0 failed, \x1b[33m1 skipped\x1b[0m, 0 errors\n",
		},
		{
			name:     "cut to the terminal width",
			verdicts: sample[:2],
			opt:      report.TableOptions{Width: 110},
			want: `STATUS  CHECK                             RECIPIENT          EXPECTED  OBSERVED  TIME  EVIDENCE
PASS    route/local/alice@example.org     alice@example.org  local     local     12ms  INBOX uid 7
FAIL    route/unmigrated/bob@example.org  bob@example.org    source    reject    3ms   RCPT 550 5.1.1 <bob...
        want source, got reject
        RCPT 550 5.1.1 <bob@example.org>: User unknown
1 passed, 1 failed, 0 skipped, 0 errors
`,
		},
		{
			name: "hostile evidence and duplicate sightings",
			verdicts: []scenarios.Verdict{{
				Check:  scenarios.Check{Name: "route/local/dave@example.org", Kind: scenarios.KindRoute, Recipient: "dave@example.org", Expect: scenarios.RouteLocal},
				Status: scenarios.StatusFail,
				Observed: []scenarios.Observation{
					{Place: scenarios.RouteLocal, Evidence: "INBOX uid 1", After: time.Millisecond},
					{Place: scenarios.RouteSource, Evidence: "sink\r\n\x1b[2Jmsg 4", After: 2 * time.Millisecond},
				},
				Detail: "seen twice",
			}},
			want: "STATUS  CHECK                         RECIPIENT         EXPECTED  OBSERVED      TIME  EVIDENCE\n" +
				"FAIL    route/local/dave@example.org  dave@example.org  local     local+source  1ms   INBOX uid 1; sink   [2Jmsg 4\n" +
				"        seen twice\n" +
				"0 passed, 1 failed, 0 skipped, 0 errors\n",
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var b bytes.Buffer
			if err := report.Table(&b, tt.verdicts, tt.opt); err != nil {
				t.Fatalf("Table: %v", err)
			}
			if got := b.String(); got != tt.want {
				t.Errorf("Table() =\n%s\nwant\n%s", got, tt.want)
			}
			if !tt.opt.Color && strings.Contains(b.String(), "\x1b[") {
				t.Errorf("Table() without Color wrote an escape sequence")
			}
		})
	}
}

func TestTableNeverShowsSkipAsPass(t *testing.T) {
	var b bytes.Buffer
	v := []scenarios.Verdict{{Check: scenarios.Check{Name: "route/x"}, Status: scenarios.StatusSkip}}
	if err := report.Table(&b, v, report.TableOptions{}); err != nil {
		t.Fatal(err)
	}
	if got := b.String(); strings.Contains(got, "PASS") || !strings.Contains(got, "SKIP") || !strings.Contains(got, "0 passed") {
		t.Errorf("Table(skip) =\n%s\nwant SKIP and 0 passed, no PASS", got)
	}
}

type failWriter struct{}

func (failWriter) Write([]byte) (int, error) { return 0, errors.New("disk full") }

// failSpool is a JUnitStream spool that cannot be written.
type failSpool struct{ failWriter }

func (failSpool) Read([]byte) (int, error) { return 0, errors.New("not written") }

func TestWriteErrors(t *testing.T) {
	for name, f := range map[string]func() error{
		"table": func() error { return report.Table(failWriter{}, sample, report.TableOptions{}) },
		"json":  func() error { return report.JSON(failWriter{}, sample, report.Summarize(sample)) },
		"junit": func() error { return report.JUnit(failWriter{}, "s", sample, time.Second) },
		"junit stream spool": func() error {
			s := report.NewJUnitStream(failSpool{}, "s")
			for _, v := range sample {
				s.Add(v)
			}
			return s.Finish(&bytes.Buffer{}, time.Second)
		},
	} {
		if err := f(); err == nil || !strings.Contains(err.Error(), "disk full") {
			t.Errorf("%s to a failing writer: err = %v; want disk full", name, err)
		}
	}
}

func TestSummarize(t *testing.T) {
	for _, tt := range []struct {
		name     string
		statuses []scenarios.Status
		want     string
		ok       bool
	}{
		{"none", nil, "0 passed, 0 failed, 0 skipped, 0 errors", true},
		{"all pass", []scenarios.Status{"pass", "pass"}, "2 passed, 0 failed, 0 skipped, 0 errors", true},
		{"skip is not pass", []scenarios.Status{"pass", "skip"}, "1 passed, 0 failed, 1 skipped, 0 errors", true},
		{"fail", []scenarios.Status{"fail", "pass"}, "1 passed, 1 failed, 0 skipped, 0 errors", false},
		{"unknown status is an error", []scenarios.Status{"", "bogus", "error"}, "0 passed, 0 failed, 0 skipped, 3 errors", false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var vs []scenarios.Verdict
			for _, s := range tt.statuses {
				vs = append(vs, scenarios.Verdict{Status: s})
			}
			s := report.Summarize(vs)
			if got := s.String(); got != tt.want {
				t.Errorf("Summarize(%v) = %q; want %q", tt.statuses, got, tt.want)
			}
			if s.Total() != len(tt.statuses) {
				t.Errorf("Total() = %d; want %d", s.Total(), len(tt.statuses))
			}
			if s.OK() != tt.ok {
				t.Errorf("OK() = %v; want %v", s.OK(), tt.ok)
			}
		})
	}
}

func TestJSON(t *testing.T) {
	sum := report.Summarize(sample)
	sum.Elapsed = 2500 * time.Millisecond
	sum.RunID = "r1"
	sum.Started = time.Date(2026, 5, 1, 10, 0, 0, 0, time.UTC)
	var b bytes.Buffer
	if err := report.JSON(&b, sample[:3], sum); err != nil {
		t.Fatalf("JSON: %v", err)
	}
	want := `{"type":"check","name":"route/local/alice@example.org","kind":"route","probe":"local alice@example.org","recipient":"alice@example.org","entry":"proxy","expected":"local","status":"pass","observed":[{"place":"local","where":"alice@example.org/INBOX","evidence":"INBOX uid 7","after_ms":12}],"elapsed_ms":2012}
{"type":"check","name":"route/unmigrated/bob@example.org","kind":"route","probe":"unmigrated bob@example.org","recipient":"bob@example.org","entry":"proxy","expected":"source","status":"fail","observed":[{"place":"reject","where":"RCPT TO","evidence":"RCPT 550 5.1.1 <bob@example.org>: User unknown","after_ms":3}],"detail":"want source, got reject\nRCPT 550 5.1.1 <bob@example.org>: User unknown","elapsed_ms":3}
{"type":"check","name":"route/external/erin@external.test","kind":"route","recipient":"erin@external.test","entry":"submission","expected":"mx","status":"fail","observed":[],"detail":"not seen anywhere within 30s","elapsed_ms":30000}
{"type":"summary","passed":1,"failed":2,"skipped":1,"errors":1,"total":5,"ok":false,"elapsed_ms":2500,"run_id":"r1","started":"2026-05-01T10:00:00Z"}
`
	if got := b.String(); got != want {
		t.Errorf("JSON() =\n%s\nwant\n%s", got, want)
	}
	// Every line decodes on its own, and the records round-trip.
	lines := strings.Split(strings.TrimSpace(b.String()), "\n")
	for i, line := range lines[:len(lines)-1] {
		var r report.CheckRecord
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("line %d: %v", i+1, err)
		}
		if r.Type != "check" || r.Name != sample[i].Check.Name || r.Status != sample[i].Status {
			t.Errorf("line %d = %+v; want check %s %s", i+1, r, sample[i].Check.Name, sample[i].Status)
		}
	}
	var s report.SummaryRecord
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &s); err != nil {
		t.Fatal(err)
	}
	if s.Type != "summary" || s.Failed != 2 || s.OK {
		t.Errorf("summary = %+v; want type summary, 2 failed, not ok", s)
	}
}

// junitDoc is what a CI system reads back.
type junitDoc struct {
	XMLName xml.Name `xml:"testsuites"`
	Tests   int      `xml:"tests,attr"`
	Suites  []struct {
		Name     string `xml:"name,attr"`
		Tests    int    `xml:"tests,attr"`
		Failures int    `xml:"failures,attr"`
		Errors   int    `xml:"errors,attr"`
		Skipped  int    `xml:"skipped,attr"`
		Time     string `xml:"time,attr"`
		Cases    []struct {
			Name      string `xml:"name,attr"`
			Classname string `xml:"classname,attr"`
			Failure   *struct {
				Message string `xml:"message,attr"`
				Text    string `xml:",chardata"`
			} `xml:"failure"`
			Error *struct {
				Message string `xml:"message,attr"`
				Text    string `xml:",chardata"`
			} `xml:"error"`
			Skipped *struct {
				Message string `xml:"message,attr"`
			} `xml:"skipped"`
			SystemOut string `xml:"system-out"`
		} `xml:"testcase"`
	} `xml:"testsuite"`
}

func TestJUnit(t *testing.T) {
	hostile := scenarios.Verdict{
		Check:    scenarios.Check{Name: `route/<x>&"y"`, Kind: scenarios.KindRoute, Expect: scenarios.RouteLocal},
		Status:   scenarios.StatusFail,
		Observed: []scenarios.Observation{{Place: scenarios.RouteSource, Evidence: "bad \x00\x1b bytes ]]> <tag>"}},
	}
	verdicts := append(append([]scenarios.Verdict(nil), sample...), hostile)
	var b bytes.Buffer
	if err := report.JUnit(&b, "splitcheck", verdicts, 2500*time.Millisecond); err != nil {
		t.Fatalf("JUnit: %v", err)
	}
	var doc junitDoc
	if err := xml.Unmarshal(b.Bytes(), &doc); err != nil {
		t.Fatalf("JUnit output does not parse: %v\n%s", err, b.String())
	}
	if len(doc.Suites) != 1 {
		t.Fatalf("suites = %d; want 1", len(doc.Suites))
	}
	s := doc.Suites[0]
	if got, want := [5]int{doc.Tests, s.Tests, s.Failures, s.Errors, s.Skipped}, [5]int{6, 6, 3, 1, 1}; got != want {
		t.Errorf("counts (tests, suite tests, failures, errors, skipped) = %v; want %v", got, want)
	}
	if s.Name != "splitcheck" || s.Time != "2.500" {
		t.Errorf("suite name, time = %q, %q; want splitcheck, 2.500", s.Name, s.Time)
	}
	if len(s.Cases) != len(verdicts) {
		t.Fatalf("testcases = %d; want %d", len(s.Cases), len(verdicts))
	}
	for i, c := range s.Cases {
		v := verdicts[i]
		if c.Name != v.Check.Name {
			t.Errorf("case %d name = %q; want %q", i, c.Name, v.Check.Name)
		}
		if want := "splitcheck." + string(v.Check.Kind); c.Classname != want {
			t.Errorf("case %d classname = %q; want %q", i, c.Classname, want)
		}
		got := [3]bool{c.Failure != nil, c.Error != nil, c.Skipped != nil}
		want := [3]bool{v.Status == scenarios.StatusFail, v.Status == scenarios.StatusError, v.Status == scenarios.StatusSkip}
		if got != want {
			t.Errorf("case %s (failure, error, skipped) = %v; want %v", c.Name, got, want)
		}
	}
	if f := s.Cases[1].Failure; f == nil || f.Message != sample[1].Detail || !strings.Contains(f.Text, "RCPT 550 5.1.1") {
		t.Errorf("bob's failure = %+v; want the detail as message and the RCPT evidence in the text", f)
	}
	if f := s.Cases[2].Failure; f == nil || !strings.Contains(f.Text, "observed: none") {
		t.Errorf("erin's failure = %+v; want observed: none", f)
	}
	if !strings.Contains(s.Cases[0].SystemOut, "INBOX uid 7") {
		t.Errorf("alice's system-out = %q; want the evidence", s.Cases[0].SystemOut)
	}
	if e := s.Cases[4].Error; e == nil || e.Message != sample[4].Detail || e.Text != sample[4].Detail+"\n" {
		t.Errorf("headerless error = %+v; want the detail as message and text", e)
	}
	if f := s.Cases[5].Failure; f == nil || f.Message != "expected local, observed source" || !strings.Contains(f.Text, "]]> <tag>") {
		t.Errorf("hostile failure = %+v; want a built message and the escaped evidence", f)
	}
}

func TestJUnitStream(t *testing.T) {
	var whole bytes.Buffer
	if err := report.JUnit(&whole, "splitcheck", sample, 2500*time.Millisecond); err != nil {
		t.Fatalf("JUnit: %v", err)
	}
	for _, tt := range []struct {
		name  string
		spool func(t *testing.T) io.ReadWriter
	}{
		{"buffer", func(*testing.T) io.ReadWriter {
			return &bytes.Buffer{}
		}},
		{"file", func(t *testing.T) io.ReadWriter {
			f, err := os.Create(filepath.Join(t.TempDir(), "spool"))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { f.Close() })
			return f
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			// Without options the stream writes what JUnit writes, to the byte.
			s := report.NewJUnitStream(tt.spool(t), "splitcheck")
			for _, v := range sample {
				s.Add(v)
			}
			var got bytes.Buffer
			if err := s.Finish(&got, 2500*time.Millisecond); err != nil {
				t.Fatalf("Finish: %v", err)
			}
			if got.String() != whole.String() {
				t.Errorf("stream =\n%s\nwant what JUnit writes:\n%s", got.String(), whole.String())
			}

			// Options rename a testcase; AddError adds one that is not a verdict.
			s = report.NewJUnitStream(tt.spool(t), "bulk")
			s.Add(sample[1], report.JUnitName("bob (line 3)"), report.JUnitClass("source"))
			s.AddError(report.JUnitError{Name: "input list.csv line 9", Class: "input", Type: "malformed",
				Message: "want 2 fields", Text: "junk <row>"})
			got.Reset()
			if err := s.Finish(&got, time.Second); err != nil {
				t.Fatalf("Finish: %v", err)
			}
			var doc junitDoc
			if err := xml.Unmarshal(got.Bytes(), &doc); err != nil {
				t.Fatalf("stream output does not parse: %v\n%s", err, got.String())
			}
			if len(doc.Suites) != 1 || len(doc.Suites[0].Cases) != 2 {
				t.Fatalf("stream = %+v; want one suite of 2 testcases\n%s", doc, got.String())
			}
			st := doc.Suites[0]
			if got, want := [4]int{doc.Tests, st.Failures, st.Errors, st.Skipped}, [4]int{2, 1, 1, 0}; got != want {
				t.Errorf("counts (tests, failures, errors, skipped) = %v; want %v", got, want)
			}
			if c := st.Cases[0]; c.Name != "bob (line 3)" || c.Classname != "bulk.source" || c.Failure == nil || c.Failure.Message != sample[1].Detail {
				t.Errorf("renamed case = %+v; want bob (line 3), bulk.source, the verdict's failure", c)
			}
			if c := st.Cases[1]; c.Name != "input list.csv line 9" || c.Classname != "bulk.input" || c.Error == nil ||
				c.Error.Message != "want 2 fields" || c.Error.Text != "junk <row>" {
				t.Errorf("error case = %+v; want the malformed row", c)
			}
		})
	}
}

func TestProgress(t *testing.T) {
	steps := []report.Step{
		{Check: "route/local/alice@example.org", Stage: "wait delivery", Done: 0, Total: 2},
		{Check: "route/local/alice@example.org", Status: scenarios.StatusPass, Done: 1, Total: 2},
		{Check: "route/unmigrated/bob@example.org", Stage: "wait absence", Done: 1, Total: 2},
		{Check: "route/unmigrated/bob@example.org", Status: scenarios.StatusSkip, Done: 2, Total: 2},
	}
	for _, tt := range []struct {
		name  string
		tty   bool
		width int
		want  string
	}{
		{"plain lines, judged checks only", false, 0, "[1/2] PASS route/local/alice@example.org\n" +
			"[2/2] SKIP route/unmigrated/bob@example.org\n"},
		{"live line", true, 0, "\r\x1b[K[0/2] wait delivery: route/local/alice@example.org" +
			"\r\x1b[K[1/2] PASS route/local/alice@example.org" +
			"\r\x1b[K[1/2] wait absence: route/unmigrated/bob@example.org" +
			"\r\x1b[K[2/2] SKIP route/unmigrated/bob@example.org" +
			"\r\x1b[K"},
		{"narrow terminal", true, 30, "\r\x1b[K[0/2] wait delivery: route..." +
			"\r\x1b[K[1/2] PASS route/local/ali..." +
			"\r\x1b[K[1/2] wait absence: route/..." +
			"\r\x1b[K[2/2] SKIP route/unmigrate..." +
			"\r\x1b[K"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var b bytes.Buffer
			p := &report.Progress{W: &b, TTY: tt.tty, Width: tt.width}
			for _, s := range steps {
				p.Update(s)
			}
			p.Clear()
			p.Clear() // a second Clear writes nothing
			if got := b.String(); got != tt.want {
				t.Errorf("progress = %q; want %q", got, tt.want)
			}
		})
	}
}

func TestProgressConcurrent(t *testing.T) {
	var b bytes.Buffer
	p := &report.Progress{W: &b}
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() { p.Update(report.Step{Check: "c", Status: scenarios.StatusPass, Done: i, Total: 8}) })
	}
	wg.Wait()
	if got := strings.Count(b.String(), "\n"); got != 8 {
		t.Errorf("lines = %d; want 8", got)
	}
}

func TestProgressWrite(t *testing.T) {
	for _, tt := range []struct {
		name string
		tty  bool
		want string
	}{
		{"plain", false, "log one\nlog two\n[1/1] PASS c\n"},
		{"live line kept below logs", true, "log one\n\r\x1b[K[0/1] send: c\r\x1b[Klog two\n[0/1] send: c\r\x1b[K[1/1] PASS c\r\x1b[K"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var b bytes.Buffer
			p := &report.Progress{W: &b, TTY: tt.tty}
			for _, f := range []func(){
				func() { _, _ = p.Write([]byte("log one\n")) },
				func() { p.Update(report.Step{Check: "c", Stage: "send", Total: 1}) },
				func() { _, _ = p.Write([]byte("log two\n")) },
				func() { p.Update(report.Step{Check: "c", Status: scenarios.StatusPass, Done: 1, Total: 1}) },
				p.Clear,
			} {
				f()
			}
			if got := b.String(); got != tt.want {
				t.Errorf("output = %q; want %q", got, tt.want)
			}
		})
	}
}
