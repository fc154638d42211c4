package bulk

import (
	"strings"
	"sync"
	"sync/atomic"

	"github.com/splitcheck/splitcheck/fakesource"
)

// ownSink is the record of a fake the run started itself. fakesource keeps a lot
// per message (the header block, every reply of the connection), which at
// 100,000 recipients is most of a run's memory; a verdict needs only the
// envelope and the Received fields. So the run keeps a compact copy of each
// message, by probe id, and only while the transaction is waiting: an id is
// expected before its message is sent and forgotten once judged. A copy for an
// id not expected (already judged, or not from this run) is counted as late,
// handed to unexpected (which tells a second delivery from noise) and dropped.
// Memory is then bounded by the transactions in flight.
type ownSink struct {
	arrived    func(id string)                       // hurries the observer
	unexpected func(id string, m fakesource.Message) // a copy nobody waits for; may be nil

	mu   sync.Mutex
	byID map[string][]fakesource.Message
	late atomic.Int64
}

func newOwnSink(arrived func(string), unexpected func(string, fakesource.Message)) *ownSink {
	return &ownSink{arrived: arrived, unexpected: unexpected, byID: map[string][]fakesource.Message{}}
}

// ByIndex returns the copies recorded for id.
func (s *ownSink) ByIndex(id string) []fakesource.Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]fakesource.Message(nil), s.byID[id]...)
}

func (s *ownSink) expect(id string) {
	s.mu.Lock()
	if _, ok := s.byID[id]; !ok {
		s.byID[id] = nil
	}
	s.mu.Unlock()
}

// take returns the copies recorded for id and forgets it, in one step: a copy
// arriving after it is late.
func (s *ownSink) take(id string) []fakesource.Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	copies := s.byID[id]
	delete(s.byID, id)
	return copies
}

func (s *ownSink) forget(id string) {
	s.mu.Lock()
	delete(s.byID, id)
	s.mu.Unlock()
}

// record is the fakesource's OnMessage.
func (s *ownSink) record(m fakesource.Message) {
	c := fakesource.Message{
		Seq: m.Seq, ConnID: m.ConnID, ReceivedAt: m.ReceivedAt, From: m.From,
		RemoteAddr: m.RemoteAddr, Received: m.Received, MessageID: m.MessageID,
		Rcpts: make([]fakesource.Rcpt, len(m.Rcpts)),
	}
	for i, r := range m.Rcpts {
		c.Rcpts[i] = fakesource.Rcpt{Addr: r.Addr}
	}
	for _, id := range m.HeaderValues(ProbeHeader) {
		id = strings.TrimSpace(id)
		s.mu.Lock()
		copies, ok := s.byID[id]
		if ok {
			s.byID[id] = append(copies, c)
		}
		s.mu.Unlock()
		if !ok {
			s.late.Add(1)
			if s.unexpected != nil {
				s.unexpected(id, c)
			}
			continue
		}
		s.arrived(id)
	}
}
