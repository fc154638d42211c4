package report

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"time"

	"github.com/splitcheck/splitcheck/scenarios"
)

// CheckRecord is the JSON object JSON writes for one check (type "check").
type CheckRecord struct {
	Type      string           `json:"type"` // always "check"
	Name      string           `json:"name"`
	Kind      scenarios.Kind   `json:"kind"`
	Probe     string           `json:"probe,omitempty"`
	Recipient string           `json:"recipient,omitempty"`
	Entry     scenarios.Entry  `json:"entry,omitempty"`
	Expected  scenarios.Route  `json:"expected,omitempty"`
	Status    scenarios.Status `json:"status"`
	// Observed lists every sighting; it is an empty array, never null, when there was none.
	Observed  []ObservationRecord `json:"observed"`
	Detail    string              `json:"detail,omitempty"`
	ElapsedMS float64             `json:"elapsed_ms"`
	Mode      string              `json:"mode,omitempty"`
}

// ObservationRecord is one sighting inside a CheckRecord.
type ObservationRecord struct {
	Place    scenarios.Route `json:"place"`
	Where    string          `json:"where,omitempty"`
	Evidence string          `json:"evidence,omitempty"`
	AfterMS  float64         `json:"after_ms"`
}

// SummaryRecord is the last JSON object JSON writes (type "summary").
type SummaryRecord struct {
	Type      string  `json:"type"` // always "summary"
	Passed    int     `json:"passed"`
	Failed    int     `json:"failed"`
	Skipped   int     `json:"skipped"`
	Errors    int     `json:"errors"`
	Total     int     `json:"total"`
	OK        bool    `json:"ok"` // no check failed or errored
	ElapsedMS float64 `json:"elapsed_ms,omitempty"`
	RunID     string  `json:"run_id,omitempty"`
	Started   string  `json:"started,omitempty"` // RFC 3339, UTC
}

// NewCheckRecord converts a verdict to its JSON form.
func NewCheckRecord(v scenarios.Verdict) CheckRecord {
	r := CheckRecord{
		Type:      "check",
		Name:      v.Check.Name,
		Kind:      v.Check.Kind,
		Probe:     v.Check.Probe,
		Recipient: v.Check.Recipient,
		Entry:     v.Check.Entry,
		Expected:  v.Check.Expect,
		Status:    v.Status,
		Observed:  make([]ObservationRecord, 0, len(v.Observed)),
		Detail:    v.Detail,
		ElapsedMS: millis(v.Elapsed),
		Mode:      v.Mode,
	}
	for _, o := range v.Observed {
		r.Observed = append(r.Observed, ObservationRecord{
			Place: o.Place, Where: o.Where, Evidence: o.Evidence, AfterMS: millis(o.After),
		})
	}
	return r
}

// NewSummaryRecord converts a summary to its JSON form. The counts are the ones in s.
func NewSummaryRecord(s Summary) SummaryRecord {
	r := SummaryRecord{
		Type:      "summary",
		Passed:    s.Passed,
		Failed:    s.Failed,
		Skipped:   s.Skipped,
		Errors:    s.Errors,
		Total:     s.Total(),
		OK:        s.OK(),
		ElapsedMS: millis(s.Elapsed),
		RunID:     s.RunID,
	}
	if !s.Started.IsZero() {
		r.Started = s.Started.UTC().Format(time.RFC3339Nano)
	}
	return r
}

// JSON writes one CheckRecord per verdict, one per line, then a SummaryRecord built
// from summary (usually Summarize(verdicts) with the run's Elapsed, RunID and Started
// filled in).
func JSON(w io.Writer, verdicts []scenarios.Verdict, summary Summary) error {
	bw := bufio.NewWriter(w)
	enc := json.NewEncoder(bw)
	enc.SetEscapeHTML(false)
	for _, v := range verdicts {
		if err := enc.Encode(NewCheckRecord(v)); err != nil {
			return fmt.Errorf("encode check %s: %w", v.Check.Name, err)
		}
	}
	if err := enc.Encode(NewSummaryRecord(summary)); err != nil {
		return fmt.Errorf("encode summary: %w", err)
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("write json: %w", err)
	}
	return nil
}
