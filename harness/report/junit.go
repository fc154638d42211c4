package report

import (
	"bufio"
	"bytes"
	"encoding/xml"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/splitcheck/splitcheck/scenarios"
)

// JUnit writes verdicts as JUnit XML: one <testsuite> named suiteName with one
// <testcase> per check (classname suiteName.kind). A failed check gets a <failure>
// whose message is the verdict's Detail (or, without one, the expected and observed
// places) and whose text lists every sighting with its evidence; a skipped check gets
// <skipped/>; a check that could not be judged gets <error>. elapsed is the run's wall
// time. Characters XML cannot carry are replaced, so the output always parses.
func JUnit(w io.Writer, suiteName string, verdicts []scenarios.Verdict, elapsed time.Duration) error {
	var spool bytes.Buffer
	s := NewJUnitStream(&spool, suiteName)
	for _, v := range verdicts {
		s.Add(v)
	}
	return s.Finish(w, elapsed)
}

// JUnitStream writes the same JUnit XML as JUnit one testcase at a time, for runs too
// large to hold their verdicts: Add and AddError encode each testcase into a spool at
// once, and Finish writes the document (the totals first, where JUnit wants them, then
// the spooled testcases) to its writer. With a file as the spool, memory stays bounded
// by one testcase whatever the run's size. Its methods must not be called concurrently.
type JUnitStream struct {
	suite  string
	spool  io.ReadWriter
	bw     *bufio.Writer
	enc    *xml.Encoder
	counts Summary
	err    error
}

// NewJUnitStream starts a suite named suite whose testcases go to spool until Finish:
// a *bytes.Buffer, or a temporary *os.File (any io.Seeker is rewound before it is
// read back).
func NewJUnitStream(spool io.ReadWriter, suite string) *JUnitStream {
	bw := bufio.NewWriter(spool)
	enc := xml.NewEncoder(bw)
	enc.Indent("    ", "  ")
	return &JUnitStream{suite: suite, spool: spool, bw: bw, enc: enc}
}

// JUnitOption changes the testcase Add writes for a verdict.
type JUnitOption func(*caseNames)

// caseNames are a testcase's names where an option set them.
type caseNames struct{ name, class string }

// JUnitName sets the testcase's name instead of the check's name.
func JUnitName(name string) JUnitOption {
	return func(n *caseNames) { n.name = name }
}

// JUnitClass sets what follows "suite." in the testcase's classname instead of the
// check's kind.
func JUnitClass(class string) JUnitOption {
	return func(n *caseNames) { n.class = class }
}

// JUnitError is a testcase that is not a verdict (a malformed input row, say): it is
// written as an <error> of Type with Message and Text, and counted as an error.
type JUnitError struct {
	Name                string // the testcase's name
	Class               string // what follows "suite." in its classname
	Type, Message, Text string
}

// Add writes one testcase for v (see JUnit), counted by v's status.
func (s *JUnitStream) Add(v scenarios.Verdict, opts ...JUnitOption) {
	c := newJUnitCase(s.suite, v)
	var names caseNames
	for _, o := range opts {
		o(&names)
	}
	if names.name != "" {
		c.Name = names.name
	}
	if names.class != "" {
		c.Classname = s.suite + "." + names.class
	}
	switch v.Status {
	case scenarios.StatusPass:
		s.counts.Passed++
	case scenarios.StatusFail:
		s.counts.Failed++
	case scenarios.StatusSkip:
		s.counts.Skipped++
	default:
		s.counts.Errors++
	}
	s.encode(c)
}

// AddError writes one error testcase that is not a verdict.
func (s *JUnitStream) AddError(e JUnitError) {
	s.counts.Errors++
	s.encode(junitCase{Name: e.Name, Classname: s.suite + "." + e.Class, Time: seconds(0),
		Error: &junitResult{Message: e.Message, Type: e.Type, Text: e.Text}})
}

func (s *JUnitStream) encode(c junitCase) {
	if s.err != nil {
		return
	}
	if s.counts.Total() == 1 {
		// The encoder puts a newline before every testcase but the first.
		if err := s.bw.WriteByte('\n'); err != nil {
			s.err = fmt.Errorf("write junit: %w", err)
			return
		}
	}
	if err := s.enc.Encode(c); err != nil {
		s.err = fmt.Errorf("write junit: %w", err)
	}
}

// Finish writes the document to w: the XML header, the totals, the testcases from
// the spool. elapsed is the run's wall time. It returns the first error met, writing
// to the spool or to w.
func (s *JUnitStream) Finish(w io.Writer, elapsed time.Duration) error {
	if s.err != nil {
		return s.err
	}
	if err := s.bw.Flush(); err != nil {
		return fmt.Errorf("write junit: %w", err)
	}
	if sk, ok := s.spool.(io.Seeker); ok {
		if _, err := sk.Seek(0, io.SeekStart); err != nil {
			return fmt.Errorf("write junit: %w", err)
		}
	}
	n := s.counts
	var name strings.Builder
	if err := xml.EscapeText(&name, []byte(s.suite)); err != nil {
		return fmt.Errorf("write junit: %w", err)
	}
	attrs := fmt.Sprintf(`name="%s" tests="%d" failures="%d" errors="%d" skipped="%d" time="%s"`,
		name.String(), n.Total(), n.Failed, n.Errors, n.Skipped, seconds(elapsed))
	out := bufio.NewWriter(w)
	fmt.Fprintf(out, "%s<testsuites %s>\n  <testsuite %s>", xml.Header, attrs, attrs)
	if n.Total() > 0 {
		if _, err := io.Copy(out, s.spool); err != nil {
			return fmt.Errorf("write junit: %w", err)
		}
		out.WriteString("\n  ")
	}
	out.WriteString("</testsuite>\n</testsuites>\n")
	if err := out.Flush(); err != nil {
		return fmt.Errorf("write junit: %w", err)
	}
	return nil
}

type junitCase struct {
	XMLName   xml.Name     `xml:"testcase"`
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

// newJUnitCase is the testcase of one verdict in suite.
func newJUnitCase(suite string, v scenarios.Verdict) junitCase {
	c := junitCase{
		Name:      v.Check.Name,
		Classname: suite + "." + string(v.Check.Kind),
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
	return c
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
