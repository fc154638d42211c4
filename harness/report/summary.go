// Package report renders the verdicts of a splitcheck run for people and machines:
// a terminal table (Table), one JSON object per line (JSON), JUnit XML (JUnit, or
// JUnitStream for runs too large to hold), and a live progress line while the run waits
// for deliveries (Progress).
//
// It only formats: it runs no checks, opens no files and starts no goroutines. It
// depends on nothing but package scenarios and the standard library. A skipped check is
// always shown as skipped, never as passed; a verdict with an unknown status counts as an
// error.
package report

import (
	"fmt"
	"time"

	"github.com/splitcheck/splitcheck/scenarios"
)

// Summary is the tally of a run.
type Summary struct {
	Passed  int
	Failed  int
	Skipped int
	Errors  int // checks that could not be judged, and verdicts with an unknown status

	// Elapsed, RunID and Started describe the run; zero values are left out of JSON.
	Elapsed time.Duration
	RunID   string
	Started time.Time
}

// Summarize counts verdicts by status.
func Summarize(verdicts []scenarios.Verdict) Summary {
	var s Summary
	for _, v := range verdicts {
		switch v.Status {
		case scenarios.StatusPass:
			s.Passed++
		case scenarios.StatusFail:
			s.Failed++
		case scenarios.StatusSkip:
			s.Skipped++
		default:
			s.Errors++
		}
	}
	return s
}

// Total is the number of checks.
func (s Summary) Total() int { return s.Passed + s.Failed + s.Skipped + s.Errors }

// OK reports whether no check failed or errored (skips do not make a run fail, but are
// never counted as passes).
func (s Summary) OK() bool { return s.Failed == 0 && s.Errors == 0 }

// String is the summary line, "3 passed, 1 failed, 0 skipped, 0 errors".
func (s Summary) String() string {
	return fmt.Sprintf("%d passed, %d failed, %d skipped, %d errors", s.Passed, s.Failed, s.Skipped, s.Errors)
}

// statusWord is how a status is shown in the table and progress line.
func statusWord(st scenarios.Status) string {
	switch st {
	case scenarios.StatusPass:
		return "PASS"
	case scenarios.StatusFail:
		return "FAIL"
	case scenarios.StatusSkip:
		return "SKIP"
	case scenarios.StatusError:
		return "ERROR"
	case "":
		return "ERROR"
	default:
		return "ERROR(" + string(st) + ")"
	}
}

// formatDuration is a short, stable rendering: "-", "0ms", "12ms", "1.5s", "2m05s".
func formatDuration(d time.Duration) string {
	switch {
	case d < 0:
		return "-"
	case d < time.Second:
		return fmt.Sprintf("%dms", d.Round(time.Millisecond)/time.Millisecond)
	case d < time.Minute:
		return fmt.Sprintf("%.1fs", d.Seconds())
	default:
		d = d.Round(time.Second)
		return fmt.Sprintf("%dm%02ds", d/time.Minute, (d%time.Minute)/time.Second)
	}
}

// millis is d in milliseconds, to the microsecond.
func millis(d time.Duration) float64 {
	return float64(d.Round(time.Microsecond)) / float64(time.Millisecond)
}
