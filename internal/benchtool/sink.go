package benchtool

import (
	"sync/atomic"

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
