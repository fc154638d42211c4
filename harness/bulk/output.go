package bulk

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/splitcheck/splitcheck/harness/report"
	"github.com/splitcheck/splitcheck/scenarios"
)

// WriteReport writes the human report of res: a table of verdicts by expected
// route, what the run did to the target (transactions, connections, the learned
// recipient limit, rate limits met), the malformed rows, and then only the
// mismatches, in full, in line order.
func WriteReport(w io.Writer, res *Result, color bool) error {
	var b strings.Builder
	total := res.Summary.Total()
	rate := 0.0
	if res.Elapsed > 0 {
		rate = float64(total) / res.Elapsed.Seconds()
	}
	fmt.Fprintf(&b, "splitcheck bulk: run %s, shard %s: %d recipients in %s (%.0f/s)\n\n",
		res.RunID, res.Shard, total, res.Elapsed.Round(100*time.Millisecond), rate)

	rows := [][]string{{"ROUTE", "TOTAL", "PASSED", "FAILED", "ERRORS", "SKIPPED"}}
	var all RouteTally
	for _, t := range res.Routes {
		rows = append(rows, tallyRow(string(t.Route), t))
		all.Total += t.Total
		all.Passed += t.Passed
		all.Failed += t.Failed
		all.Errors += t.Errors
		all.Skipped += t.Skipped
	}
	rows = append(rows, tallyRow("all", all))
	widths := make([]int, len(rows[0]))
	for _, r := range rows {
		for i, c := range r {
			widths[i] = max(widths[i], len(c))
		}
	}
	for i, r := range rows {
		for j, c := range r {
			if j == 0 {
				fmt.Fprintf(&b, "%-*s", widths[j], c)
			} else {
				fmt.Fprintf(&b, "  %*s", widths[j], c)
			}
		}
		b.WriteByte('\n')
		if i == len(rows)-2 {
			b.WriteString(strings.Repeat("-", sum(widths)+2*(len(widths)-1)) + "\n")
		}
	}
	b.WriteByte('\n')

	pipe := "not pipelined"
	if res.Pipelined {
		pipe = "pipelined"
	}
	fmt.Fprintf(&b, "target: %d transactions on %d connections, at most %d recipients each, %s\n",
		res.Transactions, res.Connections, res.BatchLimit, pipe)
	if res.RateLimited > 0 {
		fmt.Fprintf(&b, "rate limits: %d replies, retried with backoff (last: %s)\n", res.RateLimited, cellText(res.RateLimitReply))
	}
	if res.Temporary > 0 || res.Retries > 0 {
		fmt.Fprintf(&b, "temporary failures: %d; resends in all: %d\n", res.Temporary, res.Retries)
	}
	if res.Strays > 0 {
		fmt.Fprintf(&b, "strays: %d deliveries to recipients no probe was sent to (the target rewrote addresses?)\n", res.Strays)
	}
	if res.Late > 0 {
		word := "FAIL"
		if color {
			word = "\x1b[1;31mFAIL\x1b[0m"
		}
		fmt.Fprintf(&b, "%s  late copies: %d of this run's probes reached the fakes after their verdict (delivered twice, "+
			"the second time slower than timeouts.absence, or delivered after a refusal):\n", word, res.Late)
		for _, ev := range res.LateEvidence {
			fmt.Fprintf(&b, "  %s\n", cellText(ev))
		}
		if more := res.Late - len(res.LateEvidence); more > 0 {
			fmt.Fprintf(&b, "  ... and %d more\n", more)
		}
	}
	if res.LateLostReply > 0 {
		fmt.Fprintf(&b, "copies after a lost DATA reply: %d (the target delivered messages whose reply never came; their rows were sent again)\n",
			res.LateLostReply)
	}
	if res.Foreign > 0 {
		fmt.Fprintf(&b, "foreign copies: %d probes of another run reached this run's fakes (ignored)\n", res.Foreign)
	}
	if res.Malformed > 0 {
		fmt.Fprintf(&b, "malformed rows: %d (reported on stderr, not verified)\n", res.Malformed)
	}

	if n := len(res.Mismatches) + res.Unlisted; n > 0 {
		fmt.Fprintf(&b, "\nmismatches and errors (%d):\n", n)
		for _, v := range res.Mismatches {
			word := "FAIL "
			if v.Status != scenarios.StatusFail {
				word = "ERROR"
			}
			if color {
				c := "\x1b[1;31m"
				if v.Status != scenarios.StatusFail {
					c = "\x1b[1;35m"
				}
				word = c + word + "\x1b[0m"
			}
			fmt.Fprintf(&b, "%s  line %d  %s  expected %s, observed %s\n", word, v.Line, cellText(v.Check.Recipient),
				v.Check.Expect, observed(v.Verdict))
			for _, l := range strings.Split(strings.TrimSpace(v.Detail), "\n") {
				fmt.Fprintf(&b, "       %s\n", cellText(l))
			}
		}
		if res.Unlisted > 0 {
			fmt.Fprintf(&b, "... and %d more (every verdict is in --json and --junit)\n", res.Unlisted)
		}
	}
	fmt.Fprintf(&b, "\n%s\n", res.Summary)
	if _, err := io.WriteString(w, b.String()); err != nil {
		return fmt.Errorf("write report: %w", err)
	}
	return nil
}

func tallyRow(name string, t RouteTally) []string {
	return []string{name, fmt.Sprint(t.Total), fmt.Sprint(t.Passed), fmt.Sprint(t.Failed), fmt.Sprint(t.Errors), fmt.Sprint(t.Skipped)}
}

func sum(xs []int) int {
	n := 0
	for _, x := range xs {
		n += x
	}
	return n
}

// observed names the places a verdict saw ("none" when none).
func observed(v scenarios.Verdict) string {
	if len(v.Observed) == 0 {
		return "none"
	}
	parts := make([]string, len(v.Observed))
	for i, o := range v.Observed {
		parts[i] = string(o.Place)
	}
	return strings.Join(parts, "+")
}

// cellText keeps hostile bytes (from a server reply, say) off the terminal.
func cellText(s string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, s)
}

// JSONWriter streams one JSON object per line: a "check" record per verdict (the
// shape of report.CheckRecord, plus the row's line and resends), a "malformed"
// record per malformed row, and a final "summary" record. Nothing is buffered
// beyond one record.
type JSONWriter struct {
	bw  *bufio.Writer
	enc *json.Encoder
	err error
}

// NewJSONWriter writes to w.
func NewJSONWriter(w io.Writer) *JSONWriter {
	bw := bufio.NewWriter(w)
	enc := json.NewEncoder(bw)
	enc.SetEscapeHTML(false)
	return &JSONWriter{bw: bw, enc: enc}
}

// CheckRecord is the JSON record of one verdict.
type CheckRecord struct {
	report.CheckRecord
	Line    int `json:"line"`
	Retries int `json:"retries,omitempty"`
}

// MalformedRecord is the JSON record of a malformed row.
type MalformedRecord struct {
	Type  string `json:"type"` // always "malformed"
	File  string `json:"file"`
	Line  int    `json:"line"`
	Text  string `json:"text"`
	Error string `json:"error"`
}

// SummaryRecord is the JSON record that ends the stream.
type SummaryRecord struct {
	report.SummaryRecord
	Shard          string        `json:"shard"`
	Routes         []RouteRecord `json:"routes"`
	Malformed      int           `json:"malformed"`
	Listed         int           `json:"mismatches_listed"`
	RateLimited    int           `json:"rate_limited"`
	RateLimitReply string        `json:"rate_limit_reply,omitempty"`
	Temporary      int           `json:"temporary_failures"`
	Retries        int           `json:"retries"`
	Transactions   int           `json:"transactions"`
	Connections    int           `json:"connections"`
	BatchLimit     int           `json:"batch_limit"`
	Pipelined      bool          `json:"pipelined"`
	Late           int           `json:"late_copies"`
	LateEvidence   []string      `json:"late_copy_evidence,omitempty"`
	LateLostReply  int           `json:"late_after_lost_reply"`
	Foreign        int           `json:"foreign_copies"`
	RatePerSecond  float64       `json:"rate_per_second"`
}

// RouteRecord is one route's tally in the summary.
type RouteRecord struct {
	Route   scenarios.Route `json:"route"`
	Total   int             `json:"total"`
	Passed  int             `json:"passed"`
	Failed  int             `json:"failed"`
	Errors  int             `json:"errors"`
	Skipped int             `json:"skipped"`
}

func (j *JSONWriter) encode(v any) {
	if j.err == nil {
		if err := j.enc.Encode(v); err != nil {
			j.err = fmt.Errorf("write json: %w", err)
		}
	}
}

// Verdict writes one check record.
func (j *JSONWriter) Verdict(v Verdict) {
	j.encode(CheckRecord{CheckRecord: report.NewCheckRecord(v.Verdict), Line: v.Line, Retries: v.Retries})
}

// Malformed writes one malformed-row record.
func (j *JSONWriter) Malformed(e *RowError) {
	j.encode(MalformedRecord{Type: "malformed", File: e.Name, Line: e.Line, Text: e.Text, Error: e.Msg})
}

// Close writes the summary record and flushes; it returns the first error met.
func (j *JSONWriter) Close(res *Result) error {
	rec := SummaryRecord{
		SummaryRecord: report.NewSummaryRecord(res.Summary), Shard: res.Shard.String(), Malformed: res.Malformed,
		Listed: len(res.Mismatches), RateLimited: res.RateLimited, RateLimitReply: res.RateLimitReply,
		Temporary: res.Temporary, Retries: res.Retries, Transactions: res.Transactions, Connections: res.Connections,
		BatchLimit: res.BatchLimit, Pipelined: res.Pipelined, Late: res.Late, LateEvidence: res.LateEvidence,
		LateLostReply: res.LateLostReply, Foreign: res.Foreign, Routes: []RouteRecord{},
	}
	if res.Elapsed > 0 {
		rec.RatePerSecond = float64(res.Summary.Total()) / res.Elapsed.Seconds()
	}
	for _, t := range res.Routes {
		rec.Routes = append(rec.Routes, RouteRecord(t))
	}
	j.encode(rec)
	if err := j.bw.Flush(); err != nil && j.err == nil {
		j.err = fmt.Errorf("write json: %w", err)
	}
	return j.err
}

// JUnitWriter writes a JUnit XML file with one testcase per verdict and one
// error testcase per malformed row, without holding them: a report.JUnitStream
// spools the testcases to a temporary file beside the target, and Close writes the
// file with the totals and renames it into place.
type JUnitWriter struct {
	path   string
	tmp    *os.File
	stream *report.JUnitStream
}

// NewJUnitWriter starts a JUnit file at path for the suite name.
func NewJUnitWriter(path, suite string) (*JUnitWriter, error) {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".junit-*.tmp")
	if err != nil {
		return nil, fmt.Errorf("write junit: %w", err)
	}
	return &JUnitWriter{path: path, tmp: tmp, stream: report.NewJUnitStream(tmp, suite)}, nil
}

// Verdict adds one testcase, named after the check and the row's line, with the
// expected route as its class.
func (j *JUnitWriter) Verdict(v Verdict) {
	j.stream.Add(v.Verdict, report.JUnitName(fmt.Sprintf("%s (line %d)", v.Check.Name, v.Line)),
		report.JUnitClass(string(v.Check.Expect)))
}

// Malformed adds an error testcase for a malformed row.
func (j *JUnitWriter) Malformed(e *RowError) {
	j.stream.AddError(report.JUnitError{Name: fmt.Sprintf("input %s line %d", e.Name, e.Line), Class: "input",
		Type: "malformed", Message: e.Msg, Text: e.Text})
}

// Late adds a failed testcase when copies of the run's probes arrived after
// their verdicts (Result.Late): every row may have passed, yet the run fails.
func (j *JUnitWriter) Late(res *Result) {
	if res.Late == 0 {
		return
	}
	detail := strings.Join(res.LateEvidence, "\n")
	if more := res.Late - len(res.LateEvidence); more > 0 {
		detail += fmt.Sprintf("\nand %d more", more)
	}
	v := scenarios.Verdict{Check: scenarios.Check{Name: "late copies"}, Status: scenarios.StatusFail,
		Detail: fmt.Sprintf("%d copies of this run's probes reached the fakes after their verdict:\n%s", res.Late, detail)}
	j.stream.Add(v, report.JUnitClass("delivery"))
}

// Close writes the file (totals, then every testcase) and removes the
// temporary one.
func (j *JUnitWriter) Close(elapsed time.Duration) error {
	defer os.Remove(j.tmp.Name())
	defer j.tmp.Close()
	out, err := os.CreateTemp(filepath.Dir(j.path), ".junit-out-*.tmp")
	if err != nil {
		return fmt.Errorf("write junit: %w", err)
	}
	defer os.Remove(out.Name())
	defer out.Close()
	if err := j.stream.Finish(out, elapsed); err != nil {
		return err
	}
	if err := out.Chmod(0o644); err != nil {
		return fmt.Errorf("write junit: %w", err)
	}
	if err := out.Close(); err != nil {
		return fmt.Errorf("write junit: %w", err)
	}
	if err := os.Rename(out.Name(), j.path); err != nil {
		return fmt.Errorf("write junit: %w", err)
	}
	return nil
}

// Abort removes the temporary file without writing the result.
func (j *JUnitWriter) Abort() {
	j.tmp.Close()
	os.Remove(j.tmp.Name())
}
