package bulk

import (
	"slices"
	"testing"

	"github.com/splitcheck/splitcheck/fakesource"
)

func TestOwnSink(t *testing.T) {
	var hurried []string
	var unexpected []string
	s := newOwnSink(func(id string) { hurried = append(hurried, id) },
		func(id string, m fakesource.Message) { unexpected = append(unexpected, id+" "+m.Rcpts[0].Addr) })
	msg := func(id string, rcpts ...string) fakesource.Message {
		m := fakesource.Message{Header: []byte(ProbeHeader + ": " + id + "\r\nSubject: x\r\n"), Replies: make([]fakesource.Reply, 200)}
		for _, r := range rcpts {
			m.Rcpts = append(m.Rcpts, fakesource.Rcpt{Addr: r, Params: map[string]string{"NOTIFY": "NEVER"}})
		}
		return m
	}
	s.expect("run.1")
	s.record(msg("run.1", "a@example.org", "b@example.org"))
	s.record(msg("run.2", "c@example.org")) // not expected: late
	got := s.ByIndex("run.1")
	if len(got) != 1 || len(got[0].Rcpts) != 2 || got[0].Rcpts[1].Addr != "b@example.org" {
		t.Fatalf("ByIndex(run.1) = %+v; want one copy for a and b", got)
	}
	if got[0].Replies != nil || got[0].Header != nil || got[0].Rcpts[0].Params != nil {
		t.Errorf("the kept copy holds replies, header or params; want only what a verdict needs")
	}
	if len(hurried) != 1 || hurried[0] != "run.1" || s.late.Load() != 1 {
		t.Errorf("hurried %v, late %d; want [run.1] and 1", hurried, s.late.Load())
	}
	s.forget("run.1")
	s.record(msg("run.1", "a@example.org"))
	if n := len(s.ByIndex("run.1")); n != 0 || s.late.Load() != 2 || len(s.byID) != 0 {
		t.Errorf("after forget: %d copies, late %d, %d ids kept; want 0, 2, 0", n, s.late.Load(), len(s.byID))
	}
	if want := []string{"run.2 c@example.org", "run.1 a@example.org"}; !slices.Equal(unexpected, want) {
		t.Errorf("unexpected copies handed on = %q; want %q", unexpected, want)
	}
}
