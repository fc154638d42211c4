package bulk

import (
	"bytes"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/splitcheck/splitcheck/fakesource"
	"github.com/splitcheck/splitcheck/internal/freeport"
	"github.com/splitcheck/splitcheck/scenarios"
)

// TestRunLateDuplicateFails: every row passes within its quiet window, but the
// target delivers user001's probe a second time once user001's row has passed,
// while the run is still going (user003's delivery waits for that second copy).
// That copy is evidence of a double delivery: the run must fail, naming it, in
// its result, its report and its JUnit file; never pass. The steps are chained
// by events, not by timing, so a loaded machine cannot reorder them.
func TestRunLateDuplicateFails(t *testing.T) {
	tg := startTarget(t, nil, targetOpts{})
	src, err := freeport.TCP("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	passed001, dupIn := make(chan struct{}), make(chan struct{})
	relay := func(m fakesource.Message, after <-chan struct{}, done chan<- struct{}) {
		tg.wg.Add(1)
		go func() {
			defer tg.wg.Done()
			if after != nil {
				select {
				case <-after:
				case <-time.After(10 * time.Second):
					t.Errorf("relay of %s: still waiting after 10s", m.Rcpts[0].Addr)
				}
			}
			to := make([]string, len(m.Rcpts))
			for i, r := range m.Rcpts {
				to[i] = r.Addr
			}
			err := relayOnce(src, m.From, to, m.Body)
			// user003's copy is the run's last: the run may end, and close the
			// sink, between recording it and answering; its verdict proves it.
			if err != nil && m.Rcpts[0].Addr != "user003@example.org" {
				t.Errorf("relay of %s (after %v) to the fake source: %v", m.Rcpts[0].Addr, after != nil, err)
			}
			if done != nil {
				close(done)
			}
		}()
	}
	tg.mta.OnMessage = func(m fakesource.Message) {
		switch m.Rcpts[0].Addr {
		case "user001@example.org":
			relay(m, nil, nil)
			relay(m, passed001, dupIn) // once user001's row has passed
		case "user003@example.org":
			relay(m, dupIn, nil) // keeps the run going past the duplicate
		default:
			relay(m, nil, nil)
		}
	}
	cfg := tg.config(nil)
	cfg.Fakes.Source = src
	cfg.Bulk.BatchSize = 1 // a transaction per row: user001's is judged long before user003's
	got := map[string]Verdict{}
	r := &Runner{Config: cfg, OnVerdict: func(v Verdict) { // called from one goroutine at a time
		got[v.Check.Recipient] = v
		if v.Check.Recipient == "user001@example.org" && v.Status == scenarios.StatusPass {
			close(passed001)
		}
	}}
	res, err := r.Run(t.Context(), NewCSV(listOf("user001@example.org,source", "user002@example.org,source",
		"user003@example.org,source"), "list.csv", nil))
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if len(got) != 3 {
		t.Fatalf("%d verdicts; want 3", len(got))
	}
	for addr, v := range got {
		if v.Status != scenarios.StatusPass {
			t.Errorf("%s: %s %s; want pass (each copy arrived once within its window)", addr, v.Status, v.Detail)
		}
	}
	if res.Late != 1 || len(res.LateEvidence) != 1 ||
		!strings.Contains(res.LateEvidence[0], "for user001@example.org reached the fake source "+src+" after its verdict") {
		t.Fatalf("late %d, evidence %q; want user001's second copy", res.Late, res.LateEvidence)
	}
	var mm *scenarios.MismatchError
	if err := res.Err(); !errors.As(err, &mm) || len(mm.Failed) != 1 || mm.Failed[0] != res.LateEvidence[0] {
		t.Errorf("Err() = %v; want a MismatchError naming the late copy", err)
	}
	var text bytes.Buffer
	if err := WriteReport(&text, res, false); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(text.String(), "FAIL  late copies: 1 of this run's probes reached the fakes after their verdict") {
		t.Errorf("report lacks the late copy:\n%s", text.String())
	}
	path := t.TempDir() + "/bulk.xml"
	jw, err := NewJUnitWriter(path, "bulk")
	if err != nil {
		t.Fatal(err)
	}
	jw.Late(res)
	if err := jw.Close(res.Elapsed); err != nil {
		t.Fatal(err)
	}
	if x := readFile(t, path); !strings.Contains(x, `failures="1"`) || !strings.Contains(x, "user001@example.org reached the fake source") {
		t.Errorf("JUnit lacks the failed late-copies testcase:\n%s", x)
	}
}

// TestUnexpectedCopySorting: only a copy of this run's own probe, not one whose
// DATA reply was lost (its rows were sent again) nor another run's, is held
// against the run.
func TestUnexpectedCopySorting(t *testing.T) {
	e := &engine{runID: "r1"}
	e.markLost("r1.5")
	m := fakesource.Message{Rcpts: []fakesource.Rcpt{{Addr: "a@example.org"}}}
	for _, id := range []string{"r1.5", "r2.1", "r1.6", "r10.6"} {
		e.unexpectedCopy("fake MX 127.0.0.1:2", id, m)
	}
	for range maxLateEvidence + 3 {
		e.unexpectedCopy("fake source 127.0.0.1:1", "r1.7", m)
	}
	if e.lateN.lost != 1 || e.lateN.foreign != 2 || e.lateN.own != maxLateEvidence+4 || len(e.lateOwn) != maxLateEvidence {
		t.Errorf("lost %d foreign %d own %d (evidence %d); want 1, 2, %d (%d)", e.lateN.lost, e.lateN.foreign, e.lateN.own,
			len(e.lateOwn), maxLateEvidence+4, maxLateEvidence)
	}
	if want := "probe r1.6 for a@example.org reached the fake MX 127.0.0.1:2 after its verdict"; e.lateOwn[0] != want {
		t.Errorf("evidence[0] = %q; want %q", e.lateOwn[0], want)
	}
}

// relayOnce delivers one message, done at the DATA reply: the run may close the
// fake sink as soon as the last copy is in, before a QUIT is answered.
func relayOnce(addr, from string, to []string, body []byte) error {
	c, err := smtp.Dial(addr)
	if err != nil {
		return err
	}
	defer c.Close()
	if err := c.Mail(from, nil); err != nil {
		return err
	}
	for _, rc := range to {
		if err := c.Rcpt(rc, nil); err != nil {
			return err
		}
	}
	w, err := c.Data()
	if err != nil {
		return err
	}
	if _, err := w.Write(body); err != nil {
		return err
	}
	return w.Close()
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
