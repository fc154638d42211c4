package harness

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"time"

	"github.com/splitcheck/splitcheck/fakesource"
	"github.com/splitcheck/splitcheck/scenarios"
)

// runRelay judges a relay probe's check once every other probe was judged: the
// connections the target opened to the fake source and the fake MX during the run,
// each one a sighting, flagged when it began with a PROXY header (the server must
// relay without one: a header there is evidence of a misconfiguration).
func (r *run) runRelay(ctx context.Context, p scenarios.Probe) {
	for _, i := range r.checksOf(p) {
		if r.checks[i].Skip != "" {
			r.judge(ctx, i, nil, 0, "")
			continue
		}
		r.judge(ctx, i, r.relayConnections(), time.Since(r.start), "")
	}
}

// relayConnections describes every connection the fake source and the fake MX
// accepted, oldest first per fake: where, who, and the first bytes it sent.
func (r *run) relayConnections() []scenarios.Observation {
	var out []scenarios.Observation
	for _, f := range []struct {
		route scenarios.Route
		name  string
		srv   *fakesource.Server
	}{{scenarios.RouteSource, sourceName, r.env.source}, {scenarios.RouteMX, mxName, r.env.mx}} {
		if f.srv == nil {
			continue
		}
		for _, c := range f.srv.Connections() {
			o := scenarios.Observation{
				Place:       f.route,
				Where:       f.name + " " + f.srv.Addr,
				Evidence:    fmt.Sprintf("connection %d from %s began %s", c.ID, c.RemoteAddr, firstLine(c.FirstBytes)),
				At:          c.At,
				ProxyHeader: c.ProxyHeader,
			}
			if len(c.FirstBytes) == 0 {
				o.Evidence = fmt.Sprintf("connection %d from %s sent nothing", c.ID, c.RemoteAddr)
			}
			if !c.At.IsZero() {
				o.After = max(c.At.Sub(r.start), 0)
			}
			out = append(out, o)
		}
	}
	return out
}

// proxyV2Signature starts every PROXY protocol v2 header.
var proxyV2Signature = []byte("\r\n\r\n\x00\r\nQUIT\n")

// maxShown bounds the first bytes quoted in evidence (a PROXY v1 line is at most 107).
const maxShown = 108

// firstLine quotes what a connection began with: a PROXY v2 header whole, else up
// to the first line end; "..." marks bytes left out.
func firstLine(b []byte) string {
	n := len(b)
	switch {
	case bytes.HasPrefix(b, proxyV2Signature) && len(b) >= 16:
		n = min(n, 16+int(binary.BigEndian.Uint16(b[14:16])))
	case bytes.Contains(b, []byte("\r\n")):
		n = bytes.Index(b, []byte("\r\n")) + 2
	}
	n = min(n, maxShown)
	s := fmt.Sprintf("%q", b[:n])
	if n < len(b) {
		s += "..."
	}
	return s
}
