// Package fakedns is a tiny authoritative DNS server for tests: it answers MX and A
// queries for a few chosen mail domains, so that a mail server under test delivers
// "external" mail to a fake MX on loopback, and answers NXDOMAIN for every other
// name, so that nothing leaks to the real DNS.
//
// A Server serves UDP and TCP on the same address, with github.com/miekg/dns. It
// records every query it answers (Queries) as evidence of what the mail server
// asked. Start binds and serves in background goroutines; Close stops them and
// waits for them.
package fakedns

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"
)

// DefaultTTL is the TTL of every answer when Server.TTL is zero.
const DefaultTTL = 5 * time.Second

// maxQueries bounds the recorded queries (the oldest are dropped).
const maxQueries = 10000

// ErrStarted is returned by Start when the server was already started.
var ErrStarted = errors.New("fakedns: server already started")

// Server answers for a set of mail domains. Set the fields, then call Start.
type Server struct {
	// MX maps each mail domain (such as "external.test") to the address its MX
	// host resolves to. The domain gets an MX record naming "mx.<domain>"
	// (preference 10), and both the domain and "mx.<domain>" get an A (or AAAA)
	// record with the address. Other query types for those names get an empty
	// answer (NODATA); every other name gets NXDOMAIN.
	MX map[string]netip.Addr
	// TTL of the answers; default 5s.
	TTL time.Duration
	// Timeout bounds each socket read and write; default 2s.
	Timeout time.Duration
	// Logger receives one debug line per query; nil is silent.
	Logger *slog.Logger

	mu      sync.Mutex
	started bool
	addr    string
	servers []*dns.Server
	pc      net.PacketConn
	ln      net.Listener
	wg      sync.WaitGroup
	queries []Query
	records map[string]record // by canonical (lower-case, fully qualified) name
}

// Query is one question the server answered.
type Query struct {
	At     time.Time
	Net    string // "udp" or "tcp"
	From   string // client address
	Name   string // as asked, fully qualified
	Type   string // "MX", "A", "AAAA", ...
	Rcode  string // "NOERROR" or "NXDOMAIN"
	Answer []string
}

// record is what the server knows about one name.
type record struct {
	mx   string // MX target, "" for none
	addr netip.Addr
}

// Start binds addr ("127.0.0.53:53", or port 0 for a free port) for UDP and TCP
// and serves both until Close. The returned error names the address that could
// not be bound.
func (s *Server) Start(addr string) error {
	s.mu.Lock()
	if s.started {
		s.mu.Unlock()
		return ErrStarted
	}
	s.started = true
	s.mu.Unlock()

	records, err := buildRecords(s.MX)
	if err != nil {
		return err
	}
	pc, ln, err := listenBoth(addr)
	if err != nil {
		return err
	}
	timeout := s.Timeout
	if timeout <= 0 {
		timeout = 2 * time.Second
	}
	handler := dns.HandlerFunc(s.serveDNS)
	udp := &dns.Server{PacketConn: pc, Handler: handler, ReadTimeout: timeout, WriteTimeout: timeout}
	tcp := &dns.Server{Listener: ln, Handler: handler, ReadTimeout: timeout, WriteTimeout: timeout,
		IdleTimeout: func() time.Duration { return timeout }}

	s.mu.Lock()
	s.records = records
	s.addr = pc.LocalAddr().String()
	s.servers = []*dns.Server{udp, tcp}
	s.pc, s.ln = pc, ln
	s.mu.Unlock()

	// Wait until both report they serve, so that Close never races their start
	// (miekg/dns refuses to shut down a server that has not started yet).
	started := make(chan struct{}, 2)
	errs := make(chan error, 2)
	for _, srv := range s.servers {
		srv.NotifyStartedFunc = func() { started <- struct{}{} }
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			if err := srv.ActivateAndServe(); err != nil {
				errs <- err
			}
		}()
	}
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for range 2 {
		select {
		case <-started:
		case err := <-errs:
			s.Close()
			return fmt.Errorf("fakedns: serve %s: %w", addr, err)
		case <-timer.C:
			s.Close()
			return fmt.Errorf("fakedns: serve %s: not started within %s", addr, timeout)
		}
	}
	s.log().Debug("fake DNS listening", "addr", s.addr, "domains", len(records))
	return nil
}

// listenBoth binds UDP on addr and TCP on the same port; with port 0 it retries a
// few times when the TCP port is taken.
func listenBoth(addr string) (net.PacketConn, net.Listener, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, nil, fmt.Errorf("fakedns: listen %q: %w", addr, err)
	}
	var lastErr error
	for range 5 {
		pc, err := net.ListenPacket("udp", addr)
		if err != nil {
			return nil, nil, fmt.Errorf("fakedns: listen udp %s: %w", addr, err)
		}
		_, got, _ := net.SplitHostPort(pc.LocalAddr().String())
		ln, err := net.Listen("tcp", net.JoinHostPort(host, got))
		if err == nil {
			return pc, ln, nil
		}
		pc.Close()
		lastErr = err
		if port != "0" {
			break
		}
	}
	return nil, nil, fmt.Errorf("fakedns: listen tcp %s: %w", addr, lastErr)
}

func buildRecords(mx map[string]netip.Addr) (map[string]record, error) {
	out := map[string]record{}
	for domain, ip := range mx {
		if !ip.IsValid() {
			return nil, fmt.Errorf("fakedns: domain %q: invalid address", domain)
		}
		name := dns.CanonicalName(domain)
		if _, ok := dns.IsDomainName(name); !ok || name == "." {
			return nil, fmt.Errorf("fakedns: %q is not a domain name", domain)
		}
		host := "mx." + name
		out[name] = record{mx: host, addr: ip.Unmap()}
		out[host] = record{addr: ip.Unmap()}
	}
	return out, nil
}

// Addr is the address the server listens on (UDP and TCP), "" before Start.
func (s *Server) Addr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.addr
}

// Queries returns a copy of the questions answered so far, oldest first.
func (s *Server) Queries() []Query {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Query, len(s.queries))
	copy(out, s.queries)
	return out
}

// Close stops serving and waits for the serving goroutines. It is safe to call
// more than once and before Start.
func (s *Server) Close() error {
	s.mu.Lock()
	servers, pc, ln := s.servers, s.pc, s.ln
	s.servers, s.pc, s.ln = nil, nil, nil
	s.mu.Unlock()
	var errs []error
	for _, srv := range servers {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if err := srv.ShutdownContext(ctx); err != nil && !strings.Contains(err.Error(), "server not started") {
			errs = append(errs, err)
		}
		cancel()
	}
	// A server that had not started yet ignores ShutdownContext; closing its
	// sockets makes it return at once.
	if pc != nil {
		pc.Close()
		ln.Close()
	}
	s.wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("fakedns: close: %w", err)
	}
	return nil
}

func (s *Server) log() *slog.Logger {
	if s.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return s.Logger
}

func (s *Server) ttl() uint32 {
	if s.TTL <= 0 {
		return uint32(DefaultTTL / time.Second)
	}
	return uint32(max(s.TTL/time.Second, 1))
}

// serveDNS answers one query.
func (s *Server) serveDNS(w dns.ResponseWriter, req *dns.Msg) {
	resp := s.answer(req)
	q := Query{At: time.Now(), Net: w.RemoteAddr().Network(), From: w.RemoteAddr().String(), Rcode: dns.RcodeToString[resp.Rcode]}
	if len(req.Question) > 0 {
		q.Name, q.Type = req.Question[0].Name, dns.TypeToString[req.Question[0].Qtype]
	}
	for _, rr := range resp.Answer {
		q.Answer = append(q.Answer, rr.String())
	}
	s.mu.Lock()
	if len(s.queries) >= maxQueries {
		s.queries = append(s.queries[:0], s.queries[1:]...)
	}
	s.queries = append(s.queries, q)
	s.mu.Unlock()
	s.log().Debug("dns query", "net", q.Net, "from", q.From, "name", q.Name, "type", q.Type, "rcode", q.Rcode)
	_ = w.WriteMsg(resp)
}

// answer builds the reply to req.
func (s *Server) answer(req *dns.Msg) *dns.Msg {
	resp := new(dns.Msg)
	resp.SetReply(req)
	resp.Authoritative = true
	resp.RecursionAvailable = false
	if req.Opcode != dns.OpcodeQuery || len(req.Question) != 1 {
		resp.SetRcode(req, dns.RcodeNotImplemented)
		return resp
	}
	q := req.Question[0]
	s.mu.Lock()
	rec, ok := s.records[dns.CanonicalName(q.Name)]
	s.mu.Unlock()
	if !ok || q.Qclass != dns.ClassINET {
		resp.SetRcode(req, dns.RcodeNameError)
		return resp
	}
	hdr := func(t uint16) dns.RR_Header {
		return dns.RR_Header{Name: q.Name, Rrtype: t, Class: dns.ClassINET, Ttl: s.ttl()}
	}
	switch q.Qtype {
	case dns.TypeMX:
		if rec.mx != "" {
			resp.Answer = append(resp.Answer, &dns.MX{Hdr: hdr(dns.TypeMX), Preference: 10, Mx: rec.mx})
			if host, ok := s.lookup(rec.mx); ok && host.addr.Is4() {
				resp.Extra = append(resp.Extra, &dns.A{Hdr: dns.RR_Header{Name: rec.mx, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: s.ttl()}, A: host.addr.AsSlice()})
			}
		}
	case dns.TypeA:
		if rec.addr.Is4() {
			resp.Answer = append(resp.Answer, &dns.A{Hdr: hdr(dns.TypeA), A: rec.addr.AsSlice()})
		}
	case dns.TypeAAAA:
		if rec.addr.Is6() {
			resp.Answer = append(resp.Answer, &dns.AAAA{Hdr: hdr(dns.TypeAAAA), AAAA: rec.addr.AsSlice()})
		}
	}
	return resp
}

func (s *Server) lookup(name string) (record, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.records[dns.CanonicalName(name)]
	return r, ok
}
