package report_test

import (
	"bytes"
	"os"
	"time"

	"github.com/splitcheck/splitcheck/harness/report"
	"github.com/splitcheck/splitcheck/scenarios"
)

func ExampleTable() {
	verdicts := []scenarios.Verdict{
		{
			Check:    scenarios.Check{Name: "route/local/alice@example.org", Kind: scenarios.KindRoute, Recipient: "alice@example.org", Expect: scenarios.RouteLocal},
			Status:   scenarios.StatusPass,
			Observed: []scenarios.Observation{{Place: scenarios.RouteLocal, Evidence: "INBOX uid 7", After: 11 * time.Millisecond}},
		},
		{
			Check:    scenarios.Check{Name: "route/unmigrated/bob@example.org", Kind: scenarios.KindRoute, Recipient: "bob@example.org", Expect: scenarios.RouteSource},
			Status:   scenarios.StatusFail,
			Observed: []scenarios.Observation{{Place: scenarios.RouteLocal, Evidence: "INBOX uid 8", After: 9 * time.Millisecond}},
			Detail:   "want source, got local",
		},
		{
			Check:  scenarios.Check{Name: "plain", Kind: scenarios.KindPlain},
			Status: scenarios.StatusSkip,
			Detail: "target.plain_smtp is not set",
		},
	}
	_ = report.Table(os.Stdout, verdicts, report.TableOptions{})
	// Output:
	// STATUS  CHECK                             RECIPIENT          EXPECTED  OBSERVED  TIME  EVIDENCE
	// PASS    route/local/alice@example.org     alice@example.org  local     local     11ms  INBOX uid 7
	// FAIL    route/unmigrated/bob@example.org  bob@example.org    source    local     9ms   INBOX uid 8
	//         want source, got local
	// SKIP    plain                             -                  -         -         -     -
	//         target.plain_smtp is not set
	// 1 passed, 1 failed, 1 skipped, 0 errors
}

func ExampleJSON() {
	verdicts := []scenarios.Verdict{{
		Check:    scenarios.Check{Name: "route/external/erin@external.test", Kind: scenarios.KindRoute, Recipient: "erin@external.test", Entry: scenarios.EntrySubmission, Expect: scenarios.RouteMX},
		Status:   scenarios.StatusPass,
		Observed: []scenarios.Observation{{Place: scenarios.RouteMX, Where: "127.0.0.5:25", Evidence: "RCPT <erin@external.test>", After: 8 * time.Millisecond}},
		Elapsed:  2 * time.Second,
	}}
	_ = report.JSON(os.Stdout, verdicts, report.Summarize(verdicts))
	// Output:
	// {"type":"check","name":"route/external/erin@external.test","kind":"route","recipient":"erin@external.test","entry":"submission","expected":"mx","status":"pass","observed":[{"place":"mx","where":"127.0.0.5:25","evidence":"RCPT <erin@external.test>","after_ms":8}],"elapsed_ms":2000}
	// {"type":"summary","passed":1,"failed":0,"skipped":0,"errors":0,"total":1,"ok":true}
}

func ExampleJUnit() {
	verdicts := []scenarios.Verdict{{
		Check:  scenarios.Check{Name: "route/unmigrated/bob@example.org", Kind: scenarios.KindRoute, Expect: scenarios.RouteSource},
		Status: scenarios.StatusFail,
		Observed: []scenarios.Observation{{Place: scenarios.RouteReject, Where: "RCPT TO",
			Evidence: "550 5.1.1 <bob@example.org>: User unknown", After: 3 * time.Millisecond}},
		Detail:  "want source, got reject",
		Elapsed: 3 * time.Millisecond,
	}}
	_ = report.JUnit(os.Stdout, "splitcheck", verdicts, time.Second)
	// Output:
	// <?xml version="1.0" encoding="UTF-8"?>
	// <testsuites name="splitcheck" tests="1" failures="1" errors="0" skipped="0" time="1.000">
	//   <testsuite name="splitcheck" tests="1" failures="1" errors="0" skipped="0" time="1.000">
	//     <testcase name="route/unmigrated/bob@example.org" classname="splitcheck.route" time="0.003">
	//       <failure message="want source, got reject" type="mismatch">expected: source&#xA;observed: reject at RCPT TO after 3ms: 550 5.1.1 &lt;bob@example.org&gt;: User unknown&#xA;</failure>
	//     </testcase>
	//   </testsuite>
	// </testsuites>
}

func ExampleJUnitStream() {
	// A large run spools its testcases to a temporary file; a buffer does for the example.
	var spool bytes.Buffer
	s := report.NewJUnitStream(&spool, "splitcheck-bulk")
	s.Add(scenarios.Verdict{
		Check:    scenarios.Check{Name: "route/local/alice@example.org", Kind: scenarios.KindRoute, Expect: scenarios.RouteLocal},
		Status:   scenarios.StatusPass,
		Observed: []scenarios.Observation{{Place: scenarios.RouteLocal, Where: "INBOX", Evidence: "uid 7", After: 12 * time.Millisecond}},
		Elapsed:  12 * time.Millisecond,
	}, report.JUnitName("alice@example.org (line 2)"), report.JUnitClass("local"))
	s.AddError(report.JUnitError{Name: "input list.txt line 3", Class: "input", Type: "malformed", Message: "not an address", Text: "bob"})
	_ = s.Finish(os.Stdout, time.Second)
	// Output:
	// <?xml version="1.0" encoding="UTF-8"?>
	// <testsuites name="splitcheck-bulk" tests="2" failures="0" errors="1" skipped="0" time="1.000">
	//   <testsuite name="splitcheck-bulk" tests="2" failures="0" errors="1" skipped="0" time="1.000">
	//     <testcase name="alice@example.org (line 2)" classname="splitcheck-bulk.local" time="0.012">
	//       <system-out>expected: local&#xA;observed: local at INBOX after 12ms: uid 7&#xA;</system-out>
	//     </testcase>
	//     <testcase name="input list.txt line 3" classname="splitcheck-bulk.input" time="0.000">
	//       <error message="not an address" type="malformed">bob</error>
	//     </testcase>
	//   </testsuite>
	// </testsuites>
}

func ExampleProgress() {
	p := &report.Progress{W: os.Stdout} // not a terminal: one line per judged check
	p.Update(report.Step{Check: "route/local/alice@example.org", Stage: "waiting", Done: 0, Total: 3})
	p.Update(report.Step{Check: "route/local/alice@example.org", Stage: "judged", Status: scenarios.StatusPass, Done: 1, Total: 3})
	p.Update(report.Step{Check: "route/unmigrated/bob@example.org", Stage: "judged", Status: scenarios.StatusFail, Done: 2, Total: 3})
	// Output:
	// [1/3] PASS route/local/alice@example.org
	// [2/3] FAIL route/unmigrated/bob@example.org
}
