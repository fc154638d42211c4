package fakesource

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
)

// ErrUnexpected is wrapped by [Server.Quiet] when a message it was told to
// expect no sign of was recorded.
var ErrUnexpected = errors.New("fakesource: unexpected message")

// ErrClosed is wrapped by [Server.WaitFor] when the server closed before a
// matching message arrived.
var ErrClosed = errors.New("fakesource: server closed")

// Predicate selects messages for [Server.WaitFor] and [Server.Quiet].
type Predicate func(Message) bool

// To matches a message with a recipient equal to addr, ignoring case.
func To(addr string) Predicate {
	return func(m Message) bool {
		for _, r := range m.Rcpts {
			if strings.EqualFold(r.Addr, addr) {
				return true
			}
		}
		return false
	}
}

// From matches a message whose MAIL FROM equals addr, ignoring case.
func From(addr string) Predicate {
	return func(m Message) bool { return strings.EqualFold(m.From, addr) }
}

// HeaderIs matches a message with a header field called name (ignoring case)
// whose trimmed, unfolded value equals value.
func HeaderIs(name, value string) Predicate {
	value = strings.TrimSpace(value)
	return func(m Message) bool {
		for _, v := range m.HeaderValues(name) {
			if v == value {
				return true
			}
		}
		return false
	}
}

// Any matches every message.
func Any() Predicate { return func(Message) bool { return true } }

// All matches a message that every one of ps matches.
func All(ps ...Predicate) Predicate {
	return func(m Message) bool {
		for _, p := range ps {
			if !p(m) {
				return false
			}
		}
		return true
	}
}

// ringChunk is how many values a ring allocates at a time.
const ringChunk = 256

// ring keeps the latest max values of a sequence numbered first, first+1, ...
// Its slots live in chunks allocated as they are first used, so a ring
// never copies its values to grow and costs little until it fills.
type ring[T any] struct {
	chunks [][]T  // slot i is chunks[i/ringChunk][i%ringChunk]
	n      int    // values held
	start  int    // slot of the oldest value
	first  uint64 // sequence number of the oldest value
	max    int
}

// slot returns slot i (0 <= i < max), allocating its chunk if needed.
func (r *ring[T]) slot(i int) *T {
	if r.chunks == nil {
		r.chunks = make([][]T, (r.max+ringChunk-1)/ringChunk)
	}
	c := i / ringChunk
	if r.chunks[c] == nil {
		r.chunks[c] = make([]T, min(ringChunk, r.max-c*ringChunk))
	}
	return &r.chunks[c][i%ringChunk]
}

// push appends v, which must be numbered seq = first+n; it returns the
// evicted oldest value, if any.
func (r *ring[T]) push(seq uint64, v T) (old T, evicted bool) {
	if r.n == 0 {
		r.first = seq
	}
	if r.n < r.max {
		*r.slot((r.start + r.n) % r.max) = v
		r.n++
		return old, false
	}
	p := r.slot(r.start)
	old = *p
	*p = v
	r.start = (r.start + 1) % r.max
	r.first++
	return old, true
}

// at returns a pointer to the value numbered seq, or nil.
func (r *ring[T]) at(seq uint64) *T {
	if r.n == 0 || seq < r.first || seq-r.first >= uint64(r.n) {
		return nil
	}
	return r.slot((r.start + int(seq-r.first)) % r.max)
}

// since copies the values numbered seq and later, oldest first.
func (r *ring[T]) since(seq uint64) []T {
	if seq < r.first {
		seq = r.first
	}
	var out []T
	for s := seq; s-r.first < uint64(r.n); s++ {
		out = append(out, *r.at(s))
	}
	return out
}

// entry is a recorded message with the index keys it was filed under.
type entry struct {
	m    Message
	keys []string
}

// record files an accepted message, assigns its Seq and wakes waiters.
func (s *Server) record(m Message) Message {
	var keys []string
	if s.IndexHeader != "" {
		keys = m.HeaderValues(s.IndexHeader)
	}
	s.mu.Lock()
	s.nextSeq++
	m.Seq = s.nextSeq
	old, evicted := s.msgs.push(m.Seq, entry{m: m, keys: keys})
	if evicted {
		s.keptBytes -= int64(len(old.m.Body))
		for _, k := range old.keys {
			seqs := s.index[k]
			for len(seqs) > 0 && seqs[0] <= old.m.Seq {
				seqs = seqs[1:]
			}
			if len(seqs) == 0 {
				delete(s.index, k)
			} else {
				s.index[k] = seqs
			}
		}
	}
	for _, k := range keys {
		if n := len(s.index[k]); n == 0 || s.index[k][n-1] != m.Seq {
			s.index[k] = append(s.index[k], m.Seq)
		}
	}
	s.keptBytes += int64(len(m.Body))
	if s.bodyFloor < s.msgs.first {
		s.bodyFloor = s.msgs.first
	}
	for s.keptBytes > s.KeepTotalBytes && s.bodyFloor <= m.Seq {
		if e := s.msgs.at(s.bodyFloor); e != nil {
			s.keptBytes -= int64(len(e.m.Body))
			e.m.Body = nil
		}
		s.bodyFloor++
	}
	if e := s.msgs.at(m.Seq); e != nil {
		m = e.m
	}
	close(s.notify)
	s.notify = make(chan struct{})
	s.mu.Unlock()
	return m
}

// recordRejected files a message refused after DATA.
func (s *Server) recordRejected(m Message) {
	m.Body = nil
	s.mu.Lock()
	s.nextRejected++
	s.rejected.push(s.nextRejected, m)
	s.mu.Unlock()
}

// Messages returns a copy of the recorded messages, oldest first.
func (s *Server) Messages() []Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	return messagesOf(s.msgs.since(0))
}

func messagesOf(es []entry) []Message {
	out := make([]Message, len(es))
	for i, e := range es {
		out[i] = e.m
	}
	return out
}

// Rejected returns a copy of the latest messages refused after DATA (by
// DataErr, the size limit, or DropAfterData), oldest first; their Body is nil.
func (s *Server) Rejected() []Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.rejected.since(0)
}

// ByIndex returns the recorded messages whose IndexHeader field has the given
// value, oldest first. It uses a map, not a scan.
func (s *Server) ByIndex(value string) []Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Message
	for _, seq := range s.index[strings.TrimSpace(value)] {
		if e := s.msgs.at(seq); e != nil {
			out = append(out, e.m)
		}
	}
	return out
}

// Connections returns a copy of the latest connections the server accepted,
// oldest first (at most MaxMessages of them).
func (s *Server) Connections() []ConnInfo {
	s.mu.Lock()
	defer s.mu.Unlock()
	return copyConns(s.conns.since(0))
}

// Violations returns a copy of the connections accepted in ForbidConnections
// mode, oldest first (at most MaxMessages of them).
func (s *Server) Violations() []ConnInfo {
	s.mu.Lock()
	defer s.mu.Unlock()
	return copyConns(s.violations.since(0))
}

func copyConns(cs []ConnInfo) []ConnInfo {
	for i := range cs {
		cs[i].FirstBytes = append([]byte(nil), cs[i].FirstBytes...)
	}
	return cs
}

// scan returns the messages numbered from and later, the next number to scan
// from, and a channel closed when another message is recorded.
func (s *Server) scan(from uint64) ([]Message, uint64, <-chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return messagesOf(s.msgs.since(from)), s.nextSeq + 1, s.notify
}

// WaitFor returns the oldest recorded message that match selects, waiting for
// one to arrive until ctx is done. It is woken by each new message; it never
// polls. It fails with ctx's error, or [ErrClosed] once the server is closed.
func (s *Server) WaitFor(ctx context.Context, match Predicate) (Message, error) {
	var from uint64
	for {
		msgs, next, notify := s.scan(from)
		for _, m := range msgs {
			if match(m) {
				return m, nil
			}
		}
		from = next
		select {
		case <-ctx.Done():
			return Message{}, fmt.Errorf("wait for message: %w", context.Cause(ctx))
		case <-s.closing():
			if msgs, _, _ := s.scan(from); len(msgs) > 0 {
				continue
			}
			return Message{}, fmt.Errorf("wait for message: %w", ErrClosed)
		case <-notify:
		}
	}
}

// Quiet proves that no message match selects is recorded, now or within
// window from the call. It returns an error wrapping [ErrUnexpected] that
// names the first such message as soon as there is one, ctx's error if ctx
// ends before the window does, and nil after a quiet window.
func (s *Server) Quiet(ctx context.Context, window time.Duration, match Predicate) error {
	timer := time.NewTimer(window)
	defer timer.Stop()
	var from uint64
	for {
		msgs, next, notify := s.scan(from)
		for _, m := range msgs {
			if match(m) {
				return fmt.Errorf("quiet: %w: %s", ErrUnexpected, describe(m))
			}
		}
		from = next
		select {
		case <-ctx.Done():
			return fmt.Errorf("quiet: %w", context.Cause(ctx))
		case <-timer.C:
			msgs, _, _ := s.scan(from)
			for _, m := range msgs {
				if match(m) {
					return fmt.Errorf("quiet: %w: %s", ErrUnexpected, describe(m))
				}
			}
			return nil
		case <-notify:
		}
	}
}

// describe names a message for an error.
func describe(m Message) string {
	rcpts := make([]string, len(m.Rcpts))
	for i, r := range m.Rcpts {
		rcpts[i] = r.Addr
	}
	id := m.MessageID
	if id == "" {
		id = "(none)"
	}
	return fmt.Sprintf("message %d from <%s> to %v, Message-ID %s, via connection %d from %s",
		m.Seq, m.From, rcpts, id, m.ConnID, m.RemoteAddr)
}
