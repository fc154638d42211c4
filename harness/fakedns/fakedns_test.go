package fakedns_test

import (
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
	"go.uber.org/goleak"

	"github.com/splitcheck/splitcheck/harness/fakedns"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func start(t *testing.T) *fakedns.Server {
	t.Helper()
	s := &fakedns.Server{MX: map[string]netip.Addr{
		"external.test": netip.MustParseAddr("127.0.0.5"),
		"Other.Test":    netip.MustParseAddr("::1"),
	}}
	if err := s.Start("127.0.0.1:0"); err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

func TestAnswers(t *testing.T) {
	s := start(t)
	for _, network := range []string{"udp", "tcp"} {
		for _, tt := range []struct {
			name   string
			qtype  uint16
			rcode  int
			answer []string // RR strings without the TTL column
		}{
			{"external.test.", dns.TypeMX, dns.RcodeSuccess, []string{"external.test. IN MX 10 mx.external.test."}},
			{"EXTERNAL.test.", dns.TypeMX, dns.RcodeSuccess, []string{"EXTERNAL.test. IN MX 10 mx.external.test."}},
			{"mx.external.test.", dns.TypeA, dns.RcodeSuccess, []string{"mx.external.test. IN A 127.0.0.5"}},
			{"external.test.", dns.TypeA, dns.RcodeSuccess, []string{"external.test. IN A 127.0.0.5"}},
			{"mx.external.test.", dns.TypeAAAA, dns.RcodeSuccess, nil},
			{"mx.external.test.", dns.TypeMX, dns.RcodeSuccess, nil},
			{"mx.other.test.", dns.TypeAAAA, dns.RcodeSuccess, []string{"mx.other.test. IN AAAA ::1"}},
			{"mx.other.test.", dns.TypeA, dns.RcodeSuccess, nil},
			{"splitcheck.test.", dns.TypeMX, dns.RcodeNameError, nil},
			{"example.org.", dns.TypeA, dns.RcodeNameError, nil},
			{"1.100.51.198.in-addr.arpa.", dns.TypePTR, dns.RcodeNameError, nil},
		} {
			t.Run(network+"/"+tt.name+"/"+dns.TypeToString[tt.qtype], func(t *testing.T) {
				c := &dns.Client{Net: network, Timeout: 2 * time.Second}
				m := new(dns.Msg)
				m.SetQuestion(tt.name, tt.qtype)
				r, _, err := c.Exchange(m, s.Addr())
				if err != nil {
					t.Fatalf("Exchange: %v", err)
				}
				if r.Rcode != tt.rcode {
					t.Errorf("rcode = %s; want %s", dns.RcodeToString[r.Rcode], dns.RcodeToString[tt.rcode])
				}
				if !r.Authoritative {
					t.Errorf("answer not authoritative")
				}
				var got []string
				for _, rr := range r.Answer {
					f := strings.Fields(rr.String())
					got = append(got, strings.Join(append(f[:1], f[2:]...), " "))
				}
				if !slices.Equal(got, tt.answer) {
					t.Errorf("answer = %q; want %q", got, tt.answer)
				}
			})
		}
	}
	qs := s.Queries()
	if len(qs) != 22 {
		t.Fatalf("Queries() has %d entries; want 22", len(qs))
	}
	if q := qs[0]; q.Name != "external.test." || q.Type != "MX" || q.Rcode != "NOERROR" || q.Net != "udp" {
		t.Errorf("first query = %+v; want external.test. MX NOERROR over udp", q)
	}
}

func TestStartErrors(t *testing.T) {
	s := start(t)
	// The same port again: busy.
	busy := &fakedns.Server{}
	if err := busy.Start(s.Addr()); err == nil {
		busy.Close()
		t.Errorf("Start(%s) on a busy port = nil; want an error", s.Addr())
	}
	if err := s.Start("127.0.0.1:0"); err == nil {
		t.Errorf("second Start = nil; want ErrStarted")
	}
	bad := &fakedns.Server{MX: map[string]netip.Addr{"external.test": {}}}
	if err := bad.Start("127.0.0.1:0"); err == nil {
		bad.Close()
		t.Errorf("Start with an invalid address = nil; want an error")
	}
}

func TestCloseBeforeStart(t *testing.T) {
	var s fakedns.Server
	if err := s.Close(); err != nil {
		t.Errorf("Close before Start = %v; want nil", err)
	}
}
