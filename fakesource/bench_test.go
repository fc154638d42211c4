package fakesource_test

import (
	"context"
	"testing"

	"github.com/splitcheck/splitcheck/fakesource"
)

// BenchmarkSession measures one whole SMTP session over loopback: connect,
// EHLO, MAIL, RCPT, DATA of a small message, QUIT, and its recording.
func BenchmarkSession(b *testing.B) {
	s := fakesource.NewUnstartedServer()
	s.MaxMessages = 1000
	s.Start()
	defer s.Close()
	msg := message("bench")
	b.ReportAllocs()
	b.SetBytes(int64(len(msg)))
	for b.Loop() {
		c, err := s.Dial(context.Background())
		if err != nil {
			b.Fatal(err)
		}
		if err := send(c, "a@source.example", []string{"b@corp.example"}, msg); err != nil {
			b.Fatal(err)
		}
		if err := c.Quit(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkMessageReuse measures one message on a connection that is kept
// open across messages (like smtp-source -d): MAIL, RCPT, DATA and its
// recording, with the connection's reply transcript growing past its window.
func BenchmarkMessageReuse(b *testing.B) {
	s := fakesource.NewUnstartedServer()
	s.MaxMessages = 1000
	s.Start()
	defer s.Close()
	c, err := s.Dial(context.Background())
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	msg := message("bench")
	b.ReportAllocs()
	b.SetBytes(int64(len(msg)))
	for b.Loop() {
		if err := send(c, "a@source.example", []string{"b@corp.example"}, msg); err != nil {
			b.Fatal(err)
		}
	}
	if err := c.Quit(); err != nil {
		b.Fatal(err)
	}
}
