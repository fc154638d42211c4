package fakesource_test

import (
	"fmt"
	"reflect"
	"testing"
)

// TestRepliesOnALongConnection sends more messages over one connection than
// the reply window holds and checks every message's Replies: the latest 256
// replies of the connection up to its own DATA reply, unchanged by the
// messages after it.
func TestRepliesOnALongConnection(t *testing.T) {
	s := start(t, nil)
	c := dial(t, s)
	const n = 150 // 2 + 4*150 replies: the window is full from message 64 on
	var all []string
	for i := range n {
		if err := send(c, "a@source.example", []string{"b@corp.example"}, message(fmt.Sprint(i))); err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
	}
	if err := c.Quit(); err != nil {
		t.Fatal(err)
	}
	all = append(all, "CONNECT 220", "EHLO 250")
	msgs := s.Messages()
	if len(msgs) != n {
		t.Fatalf("messages = %d; want %d", len(msgs), n)
	}
	for i, m := range msgs {
		all = append(all, "MAIL 250", "RCPT 250", "DATA 354", "DATA 250")
		want := all[max(0, len(all)-256):]
		if got := verbs(m.Replies); !reflect.DeepEqual(got, want) {
			t.Fatalf("message %d: %d replies %v...; want %d: %v...", i, len(got), got[:min(6, len(got))], len(want), want[:min(6, len(want))])
		}
		if got, want := m.Replies[len(m.Replies)-1].Text, "OK: queued"; got != want {
			t.Errorf("message %d: DATA reply text %q; want %q", i, got, want)
		}
	}
}
