package report

import (
	"encoding/xml"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/splitcheck/splitcheck/scenarios"
)

type junitSuites struct {
	XMLName  xml.Name     `xml:"testsuites"`
	Name     string       `xml:"name,attr"`
	Tests    int          `xml:"tests,attr"`
	Failures int          `xml:"failures,attr"`
	Errors   int          `xml:"errors,attr"`
	Skipped  int          `xml:"skipped,attr"`
	Time     string       `xml:"time,attr"`
	Suites   []junitSuite `xml:"testsuite"`
}

type junitSuite struct {
	Name     string      `xml:"name,attr"`
	Tests    int         `xml:"tests,attr"`
	Failures int         `xml:"failures,attr"`
	Errors   int         `xml:"errors,attr"`
	Skipped  int         `xml:"skipped,attr"`
	Time     string      `xml:"time,attr"`
	Cases    []junitCase `xml:"testcase"`
}

type junitCase struct {
	Name      string       `xml:"name,attr"`
	Classname string       `xml:"classname,attr"`
	Time      string       `xml:"time,attr"`
	Failure   *junitResult `xml:"failure,omitempty"`
	Error     *junitResult `xml:"error,omitempty"`
	Skipped   *junitResult `xml:"skipped,omitempty"`
	SystemOut string       `xml:"system-out,omitempty"`
}

type junitResult struct {
	Message string `xml:"message,attr,omitempty"`
	Type    string `xml:"type,attr,omitempty"`
	Text    string `xml:",chardata"`
}

// JUnit writes verdicts as JUnit XML: one <testsuite> named suiteName with one
// <testcase> per check (classname suiteName.kind). A failed check gets a <failure>
// whose message is the verdict's Detail (or, without one, the expected and observed
// places) and whose text lists every sighting with its evidence; a skipped check gets
// <skipped/>; a check that could not be judged gets <error>. elapsed is the run's wall
// time. Characters XML cannot carry are replaced, so the output always parses.
func JUnit(w io.Writer, suiteName string, verdicts []scenarios.Verdict, elapsed time.Duration) error {
	s := Summarize(verdicts)
	suite := junitSuite{
		Name: suiteName, Tests: s.Total(), Failures: s.Failed, Errors: s.Errors, Skipped: s.Skipped,
		Time: seconds(elapsed),
	}
	for _, v := range verdicts {
		c := junitCase{
			Name:      v.Check.Name,
			Classname: suiteName + "." + string(v.Check.Kind),
			Time:      seconds(v.Elapsed),
		}
		evidence := sightings(v)
		switch v.Status {
		case scenarios.StatusPass:
			c.SystemOut = evidence
		case scenarios.StatusFail:
			c.Failure = &junitResult{Message: message(v), Type: "mismatch", Text: evidence}
		case scenarios.StatusSkip:
			c.Skipped = &junitResult{Message: strings.TrimSpace(v.Detail)}
		default:
			c.Error = &junitResult{Message: message(v), Type: "error", Text: evidence}
		}
		suite.Cases = append(suite.Cases, c)
	}
	doc := junitSuites{
		Name: suiteName, Tests: suite.Tests, Failures: suite.Failures, Errors: suite.Errors,
		Skipped: suite.Skipped, Time: suite.Time, Suites: []junitSuite{suite},
	}
	if _, err := io.WriteString(w, xml.Header); err != nil {
		return fmt.Errorf("write junit: %w", err)
	}
	enc := xml.NewEncoder(w)
	enc.Indent("", "  ")
	if err := enc.Encode(doc); err != nil {
		return fmt.Errorf("write junit: %w", err)
	}
	if err := enc.Close(); err != nil {
		return fmt.Errorf("write junit: %w", err)
	}
	if _, err := io.WriteString(w, "\n"); err != nil {
		return fmt.Errorf("write junit: %w", err)
	}
	return nil
}

func seconds(d time.Duration) string { return fmt.Sprintf("%.3f", d.Seconds()) }

// message is the one-line reason a check did not pass.
func message(v scenarios.Verdict) string {
	if d := strings.TrimSpace(v.Detail); d != "" {
		return d
	}
	if v.Check.Kind == scenarios.KindRoute {
		return fmt.Sprintf("expected %s, observed %s", cell(string(v.Check.Expect)), observedCell(v))
	}
	return string(v.Status)
}

// sightings lists the expected route and each observation on its own line
// ("observed: place at where after 12ms: evidence"); a check with neither (an
// environment error, a skipped connection check) gets its Detail instead.
func sightings(v scenarios.Verdict) string {
	var b strings.Builder
	if v.Check.Expect != "" {
		fmt.Fprintf(&b, "expected: %s\n", v.Check.Expect)
	}
	if len(v.Observed) == 0 && (v.Check.Kind == scenarios.KindRoute || v.Check.Kind == scenarios.KindPlain) {
		b.WriteString("observed: none\n")
	}
	for _, o := range v.Observed {
		fmt.Fprintf(&b, "observed: %s", o.Place)
		if o.Where != "" {
			fmt.Fprintf(&b, " at %s", o.Where)
		}
		fmt.Fprintf(&b, " after %s", formatDuration(o.After))
		if o.Evidence != "" {
			fmt.Fprintf(&b, ": %s", o.Evidence)
		}
		b.WriteByte('\n')
	}
	if b.Len() == 0 && strings.TrimSpace(v.Detail) != "" {
		return strings.TrimSpace(v.Detail) + "\n"
	}
	return b.String()
}
