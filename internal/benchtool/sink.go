package benchtool

import (
	"context"
	"fmt"
	"io"
	"log"
	"net"
	"sync/atomic"

	"github.com/emersion/go-smtp"

	"github.com/splitcheck/splitcheck/fakesource"
)

// SinkCounts counts what a bench sink recorded.
type SinkCounts struct {
	// Messages counts accepted messages.
	Messages atomic.Uint64
	// ProxyHeaders counts accepted messages whose connection began with a
	// PROXY header.
	ProxyHeaders atomic.Uint64
}

// NewSink returns an unstarted fakesource server with its default limits,
// silent, expecting a PROXY header on every connection when acceptProxy is
// set, and counting each accepted message into counts.
func NewSink(acceptProxy bool, counts *SinkCounts) *fakesource.Server {
	s := fakesource.NewUnstartedServer()
	s.AcceptProxy = acceptProxy
	s.OnMessage = func(m fakesource.Message) {
		counts.Messages.Add(1)
		if m.ProxyHeader {
			counts.ProxyHeaders.Add(1)
		}
	}
	return s
}

// BareSink is go-smtp with a backend that accepts every message and keeps
// nothing: the ceiling for any sink built on go-smtp, measured beside
// fakesource so its cost of recording can be told from go-smtp's own.
type BareSink struct {
	srv  *smtp.Server
	ln   net.Listener
	done chan error
}

// ListenBareSink starts a BareSink on addr, counting messages into counts.
func ListenBareSink(addr string, counts *SinkCounts) (*BareSink, error) {
	srv := smtp.NewServer(smtp.BackendFunc(func(*smtp.Conn) (smtp.Session, error) {
		return bareSession{counts}, nil
	}))
	srv.Domain = "bare.test"
	srv.ReadTimeout, srv.WriteTimeout = fakesource.DefaultTimeout, fakesource.DefaultTimeout
	srv.ErrorLog = log.New(io.Discard, "", 0)
	lc := net.ListenConfig{KeepAlive: -1} // as fakesource does
	ln, err := lc.Listen(context.Background(), "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("bare sink: listen %s: %w", addr, err)
	}
	b := &BareSink{srv: srv, ln: ln, done: make(chan error, 1)}
	go func() { b.done <- srv.Serve(ln) }()
	return b, nil
}

// Addr is the address the sink listens on.
func (b *BareSink) Addr() string { return b.ln.Addr().String() }

// Shutdown stops accepting and waits for open sessions until ctx ends.
func (b *BareSink) Shutdown(ctx context.Context) error {
	err := b.srv.Shutdown(ctx)
	if err != nil {
		b.srv.Close()
	}
	b.ln.Close() // go-smtp closes only the listeners its Serve has registered
	<-b.done
	if err != nil {
		return fmt.Errorf("bare sink: shutdown: %w", err)
	}
	return nil
}

type bareSession struct{ counts *SinkCounts }

func (bareSession) Mail(string, *smtp.MailOptions) error { return nil }
func (bareSession) Rcpt(string, *smtp.RcptOptions) error { return nil }
func (bareSession) Reset()                               {}
func (bareSession) Logout() error                        { return nil }

func (s bareSession) Data(r io.Reader) error {
	if _, err := io.Copy(io.Discard, r); err != nil {
		return err
	}
	s.counts.Messages.Add(1)
	return nil
}
