package report

import (
	"fmt"
	"io"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/splitcheck/splitcheck/scenarios"
)

// TableOptions change how Table draws.
type TableOptions struct {
	// Color adds ANSI colours to statuses and the summary. Callers set it only when
	// the output is a terminal.
	Color bool
	// Width, when positive, is the terminal's width: the evidence column is cut
	// ("...") so that rows do not wrap. A failed check's full detail is still printed
	// below its row. Zero never cuts (pipes, files, CI logs).
	Width int
}

// ANSI escape sequences used when TableOptions.Color is set.
const (
	ansiReset   = "\x1b[0m"
	ansiBold    = "\x1b[1m"
	ansiRed     = "\x1b[1;31m"
	ansiGreen   = "\x1b[32m"
	ansiYellow  = "\x1b[33m"
	ansiMagenta = "\x1b[1;35m"
)

var tableHeader = []string{"STATUS", "CHECK", "RECIPIENT", "EXPECTED", "OBSERVED", "TIME", "EVIDENCE"}

// Table writes one row per verdict, in the order given, then the summary line
// ("N passed, N failed, N skipped, N errors"). The columns are the status, the check's
// name, the recipient, the expected route, the observed places (joined with "+", "none"
// when a route check saw the probe nowhere), the time (the first sighting's delay after
// sending, else the verdict's elapsed time) and the evidence. A check that did not pass
// gets its Detail on the lines below its row.
func Table(w io.Writer, verdicts []scenarios.Verdict, opt TableOptions) error {
	rows := make([][]string, 0, len(verdicts)+1)
	rows = append(rows, tableHeader)
	for _, v := range verdicts {
		rows = append(rows, []string{
			statusWord(v.Status),
			cell(v.Check.Name),
			cell(v.Check.Recipient),
			cell(string(v.Check.Expect)),
			observedCell(v),
			timeCell(v),
			evidenceCell(v),
		})
	}
	widths := make([]int, len(tableHeader))
	for _, r := range rows {
		for i, c := range r {
			widths[i] = max(widths[i], utf8.RuneCountInString(c))
		}
	}
	indent := strings.Repeat(" ", widths[0]+2)
	if opt.Width > 0 {
		last := len(widths) - 1
		room := opt.Width - 1 // leave the last column free: some terminals wrap at it
		for _, w := range widths[:last] {
			room -= w + 2
		}
		room = max(room, len(tableHeader[last]), 12)
		for _, r := range rows[1:] {
			if utf8.RuneCountInString(r[last]) > room {
				r[last] = string([]rune(r[last])[:room-3]) + "..."
			}
		}
	}

	var b strings.Builder
	for i, r := range rows {
		for j, c := range r {
			pad := widths[j] - utf8.RuneCountInString(c)
			switch {
			case opt.Color && i == 0:
				c = ansiBold + c + ansiReset
			case opt.Color && j == 0:
				c = statusColor(verdicts[i-1].Status) + c + ansiReset
			}
			b.WriteString(c)
			if j < len(r)-1 {
				b.WriteString(strings.Repeat(" ", pad+2))
			}
		}
		b.WriteByte('\n')
		if i == 0 {
			continue
		}
		if v := verdicts[i-1]; v.Status != scenarios.StatusPass && strings.TrimSpace(v.Detail) != "" {
			for _, line := range strings.Split(strings.TrimSpace(v.Detail), "\n") {
				b.WriteString(indent)
				b.WriteString(cell(line))
				b.WriteByte('\n')
			}
		}
	}
	s := Summarize(verdicts)
	b.WriteString(summaryLine(s, opt.Color))
	b.WriteByte('\n')
	_, err := io.WriteString(w, b.String())
	if err != nil {
		return fmt.Errorf("write table: %w", err)
	}
	return nil
}

func summaryLine(s Summary, color bool) string {
	if !color {
		return s.String()
	}
	part := func(n int, label, code string) string {
		t := fmt.Sprintf("%d %s", n, label)
		if n == 0 {
			return t
		}
		return code + t + ansiReset
	}
	return strings.Join([]string{
		part(s.Passed, "passed", ansiGreen),
		part(s.Failed, "failed", ansiRed),
		part(s.Skipped, "skipped", ansiYellow),
		part(s.Errors, "errors", ansiMagenta),
	}, ", ")
}

func statusColor(st scenarios.Status) string {
	switch st {
	case scenarios.StatusPass:
		return ansiGreen
	case scenarios.StatusFail:
		return ansiRed
	case scenarios.StatusSkip:
		return ansiYellow
	default:
		return ansiMagenta
	}
}

// cell makes s safe for one table cell: control characters (newlines from multi-line
// SMTP replies, escape sequences from a hostile server) become spaces; empty is "-".
func cell(s string) string {
	s = strings.TrimSpace(strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return ' '
		}
		return r
	}, s))
	if s == "" {
		return "-"
	}
	return s
}

func observedCell(v scenarios.Verdict) string {
	if len(v.Observed) == 0 {
		if v.Check.Kind == scenarios.KindRoute {
			return string(scenarios.RouteNone)
		}
		return "-"
	}
	places := make([]string, len(v.Observed))
	for i, o := range v.Observed {
		places[i] = string(o.Place)
	}
	return cell(strings.Join(places, "+"))
}

func timeCell(v scenarios.Verdict) string {
	if len(v.Observed) > 0 && v.Observed[0].After > 0 {
		return formatDuration(v.Observed[0].After)
	}
	if v.Elapsed > 0 {
		return formatDuration(v.Elapsed)
	}
	return "-"
}

func evidenceCell(v scenarios.Verdict) string {
	var ev []string
	for _, o := range v.Observed {
		if e := strings.TrimSpace(o.Evidence); e != "" {
			ev = append(ev, e)
		}
	}
	if len(ev) == 0 && v.Status == scenarios.StatusPass {
		return cell(v.Detail)
	}
	return cell(strings.Join(ev, "; "))
}
