package fakedns_test

import (
	"fmt"
	"net/netip"
	"time"

	"github.com/miekg/dns"

	"github.com/splitcheck/splitcheck/harness/fakedns"
)

func ExampleServer() {
	s := &fakedns.Server{MX: map[string]netip.Addr{"external.test": netip.MustParseAddr("127.0.0.5")}}
	if err := s.Start("127.0.0.1:0"); err != nil {
		fmt.Println(err)
		return
	}
	defer s.Close()

	c := &dns.Client{Timeout: 2 * time.Second}
	for _, q := range []struct {
		name  string
		qtype uint16
	}{{"external.test.", dns.TypeMX}, {"mx.external.test.", dns.TypeA}, {"example.org.", dns.TypeMX}} {
		m := new(dns.Msg)
		m.SetQuestion(q.name, q.qtype)
		r, _, err := c.Exchange(m, s.Addr())
		if err != nil {
			fmt.Println(err)
			return
		}
		fmt.Print(q.name, " ", dns.TypeToString[q.qtype], ": ", dns.RcodeToString[r.Rcode])
		for _, rr := range r.Answer {
			switch rr := rr.(type) {
			case *dns.MX:
				fmt.Print(" ", rr.Mx)
			case *dns.A:
				fmt.Print(" ", rr.A)
			}
		}
		fmt.Println()
	}
	// Output:
	// external.test. MX: NOERROR mx.external.test.
	// mx.external.test. A: NOERROR 127.0.0.5
	// example.org. MX: NXDOMAIN
}
