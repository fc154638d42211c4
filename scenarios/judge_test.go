package scenarios

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestJudge(t *testing.T) {
	route := func(expect Route) Check {
		return Check{Name: "route/x", Kind: KindRoute, Recipient: "bob@example.org", Expect: expect, Deadline: 30 * time.Second}
	}
	local := Observation{Place: RouteLocal, Where: "alice@example.org INBOX", Evidence: "IMAP 127.0.0.1:143 alice@example.org INBOX uid 3"}
	source := Observation{Place: RouteSource, Where: "fake source 127.0.0.4:2525", Evidence: "fake source 127.0.0.4:2525 RCPT <bob@example.org>"}
	reject := Observation{Place: RouteReject, Where: "RCPT", Evidence: "RCPT 554 5.7.1 <carol@external.test>: Relay access denied"}
	refused := Observation{Place: RouteReject, Where: "127.0.0.1:25", Evidence: "421 4.3.0 mx.example.org Server local error"}
	accepted := Observation{Place: RouteAccepted, Where: "127.0.0.1:25", Evidence: "220 mx.example.org ESMTP, then EHLO 250"}

	received := Check{Name: "received/local/alice@example.org", Kind: KindReceived, Probe: "local/alice@example.org", Want: "198.51.100.7"}
	withRcvd := func(o Observation, lines ...string) Observation { o.Received = lines; return o }
	good := "from probe.splitcheck.test (unknown [198.51.100.7]) by mx.example.org (Postfix) with ESMTP id 4A; Mon, 1 Jan 2024"
	proxyLine := "from probe.splitcheck.test (localhost [127.0.0.1]) by mx.example.org (Postfix) with ESMTP id 4B"
	lmtp := "from mx.example.org by mx.example.org with LMTP id x"

	relay := Check{Name: CheckRelayHeader, Kind: KindRelayHeader, Probe: CheckRelayHeader, Entry: EntryRelay}
	clean := Observation{Place: RouteSource, Where: "fake source 127.0.0.4:2525",
		Evidence: `connection 1 from 127.0.0.1:40001 began "EHLO mx.example.org\r\n"`}
	cleanMX := Observation{Place: RouteMX, Where: "fake MX 127.0.0.5:25", Evidence: `connection 1 from 127.0.0.1:40003 began "EHLO mx.example.org\r\n"`}
	proxied := Observation{Place: RouteSource, Where: "fake source 127.0.0.4:2525", ProxyHeader: true,
		Evidence: `connection 2 from 127.0.0.1:40002 began "PROXY TCP4 198.51.100.7 127.0.0.4 40002 2525\r\nEHLO mx.example.org\r\n"`}

	for _, tt := range []struct {
		name       string
		check      Check
		obs        []Observation
		elapsed    time.Duration
		want       Status
		wantDetail string // substring; "" = empty detail
	}{
		{"local once at local", route(RouteLocal), []Observation{local}, time.Second, StatusPass, ""},
		{"source once at source", route(RouteSource), []Observation{source}, time.Second, StatusPass, ""},
		{"rejected as expected", route(RouteReject), []Observation{reject}, time.Second, StatusPass, ""},
		{"wrong place", route(RouteSource), []Observation{local}, time.Second, StatusFail,
			"want source, got local: IMAP 127.0.0.1:143 alice@example.org INBOX uid 3"},
		{"open relay", route(RouteReject), []Observation{{Place: RouteMX, Where: "fake MX 127.0.0.5:25", Evidence: "RCPT <carol@external.test>"}},
			time.Second, StatusFail, "want reject, got mx: fake MX 127.0.0.5:25: RCPT <carol@external.test>"},
		{"two sightings", route(RouteLocal), []Observation{local, source}, time.Second, StatusFail,
			"want local exactly once, seen 2 times: local (IMAP 127.0.0.1:143 alice@example.org INBOX uid 3); source (fake source"},
		{"twice at the right place", route(RouteSource), []Observation{source, source}, time.Second, StatusFail, "seen 2 times"},
		{"nowhere", route(RouteLocal), nil, 31 * time.Second, StatusFail, "want local, got none: not seen anywhere within 30s"},
		{"nowhere without deadline", Check{Kind: KindRoute, Expect: RouteMX}, nil, 1500 * time.Millisecond, StatusFail,
			"not seen anywhere within 1.5s"},
		{"skipped whatever was seen", Check{Kind: KindPlain, Expect: RouteLocal, Skip: "no plain listener"}, []Observation{local}, 0,
			StatusSkip, "no plain listener"},
		{"plain delivered", Check{Kind: KindPlain, Expect: RouteLocal}, []Observation{local}, time.Second, StatusPass, ""},
		{"headerless refused", Check{Kind: KindHeaderless, Expect: RouteReject}, []Observation{refused}, time.Second, StatusPass, ""},
		{"headerless accepted", Check{Kind: KindHeaderless, Expect: RouteReject}, []Observation{accepted}, time.Second, StatusFail,
			"want reject, got accepted: 127.0.0.1:25: 220 mx.example.org ESMTP, then EHLO 250"},
		{"received carries announce", received, []Observation{withRcvd(local, lmtp, good)}, time.Second, StatusPass, ""},
		{"received ignores the rejection", received, []Observation{reject, withRcvd(source, good)}, time.Second, StatusPass, ""},
		{"received shows proxy address", received, []Observation{withRcvd(local, lmtp, proxyLine)}, time.Second, StatusFail,
			"want a Received header with [198.51.100.7], got local copy (alice@example.org INBOX): Received: " + proxyLine},
		{"received: one of two copies wrong", received, []Observation{withRcvd(local, good), withRcvd(source, proxyLine)}, time.Second,
			StatusFail, "source copy"},
		{"received: no header", received, []Observation{local}, time.Second, StatusFail, "no Received header"},
		{"received: nothing delivered", received, []Observation{reject}, time.Second, StatusFail, `probe "local/alice@example.org" was not delivered`},
		{"received: nothing to look for", Check{Kind: KindReceived}, []Observation{withRcvd(local, good)}, time.Second, StatusError, "no announced"},
		{"unknown kind", Check{Kind: "vibes"}, nil, 0, StatusError, `unknown kind of check "vibes"`},
		{"relay: clean connections", relay, []Observation{clean, clean, cleanMX}, time.Second, StatusPass,
			"3 connection(s) (2 to source, 1 to mx), none began with a PROXY header"},
		{"relay: a PROXY header to the source", relay, []Observation{clean, proxied, cleanMX}, time.Second, StatusFail,
			`want no PROXY header on the server's outbound connections, got 1 of 3 beginning with one: fake source 127.0.0.4:2525: connection 2 from 127.0.0.1:40002 began "PROXY TCP4 `},
		{"relay: many listed with a count", relay, []Observation{proxied, proxied, proxied, proxied, proxied}, time.Second, StatusFail,
			`got 5 of 5 beginning with one: fake source 127.0.0.4:2525: connection 2 from 127.0.0.1:40002 began "PROXY TCP4 198.51.100.7 127.0.0.4 40002 2525\r\nEHLO mx.example.org\r\n"; fake source`},
		{"relay: the rest counted", relay, []Observation{proxied, proxied, proxied, proxied, proxied}, time.Second, StatusFail,
			`EHLO mx.example.org\r\n"; and 2 more`},
		{"relay: nothing connected is no pass", relay, nil, time.Second, StatusSkip,
			"no connection reached the fake source or the fake MX during the run: nothing to check"},
		{"relay: skipped", Check{Kind: KindRelayHeader, Skip: "why"}, []Observation{proxied}, 0, StatusSkip, "why"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			v := Judge(tt.check, tt.obs, tt.elapsed)
			if v.Status != tt.want {
				t.Errorf("Judge status = %s (%s); want %s", v.Status, v.Detail, tt.want)
			}
			if tt.wantDetail == "" && v.Detail != "" {
				t.Errorf("Judge detail = %q; want empty", v.Detail)
			}
			if !strings.Contains(v.Detail, tt.wantDetail) {
				t.Errorf("Judge detail = %q; want it to contain %q", v.Detail, tt.wantDetail)
			}
			if v.Elapsed != tt.elapsed {
				t.Errorf("Judge elapsed = %v; want %v", v.Elapsed, tt.elapsed)
			}
			if v.Check.Name != tt.check.Name {
				t.Errorf("Judge check = %q; want %q", v.Check.Name, tt.check.Name)
			}
		})
	}
}

func TestJudgeReceivedEvidence(t *testing.T) {
	line := "from h.test (unknown [198.51.100.7]) by mx.example.org (Postfix)"
	c := Check{Kind: KindReceived, Want: "198.51.100.7", Probe: "p"}
	v := Judge(c, []Observation{{Place: RouteSource, Where: "fake source", Received: []string{"from a by b", line}}}, time.Second)
	if len(v.Observed) != 1 {
		t.Fatalf("Observed has %d entries; want 1", len(v.Observed))
	}
	if got, want := v.Observed[0].Evidence, "Received: "+line; got != want {
		t.Errorf("evidence = %q; want %q", got, want)
	}
}

func TestJudgeRelayHeaderObserved(t *testing.T) {
	c := Check{Name: CheckRelayHeader, Kind: KindRelayHeader}
	clean := Observation{Place: RouteSource, Evidence: "clean"}
	bad := Observation{Place: RouteMX, Evidence: "proxied", ProxyHeader: true}
	if v := Judge(c, []Observation{clean, bad, clean}, time.Second); len(v.Observed) != 1 || v.Observed[0].Evidence != "proxied" {
		t.Errorf("failed relay-header Observed = %+v; want only the connection with the header", v.Observed)
	}
	if v := Judge(c, []Observation{clean}, time.Second); len(v.Observed) != 0 {
		t.Errorf("passed relay-header Observed = %+v; want none (the detail counts them)", v.Observed)
	}
}

func TestReceivedCarries(t *testing.T) {
	for _, tt := range []struct {
		received, ip string
		want         bool
	}{
		{"from h (unknown [198.51.100.7]) by mx", "198.51.100.7", true},
		{"from h (unknown [198.51.100.70]) by mx", "198.51.100.7", false},
		{"from h (unknown [198.51.100.7]) by mx", "198.51.100.70", false},
		{"from h ([IPv6:2001:db8::7]) by mx", "2001:db8:0::7", true},
		{"from h ([2001:db8::7]) by mx", "2001:db8::7", true},
		{"from h (198.51.100.7) by mx", "198.51.100.7", false},
		{"from h ([127.0.0.1]) by mx [198.51.100.7", "198.51.100.7", false},
		{"from h ([::ffff:198.51.100.7]) by mx", "198.51.100.7", true},
		{"anything", "not-an-ip", false},
	} {
		if got := ReceivedCarries(tt.received, tt.ip); got != tt.want {
			t.Errorf("ReceivedCarries(%q, %q) = %v; want %v", tt.received, tt.ip, got, tt.want)
		}
	}
}

func TestErrored(t *testing.T) {
	c := Check{Name: "route/x", Kind: KindRoute}
	v := Errored(c, errors.New("send probe: dial 127.0.0.1:587: connection refused"), time.Second)
	if v.Status != StatusError || !strings.Contains(v.Detail, "connection refused") {
		t.Errorf("Errored = %s %q; want error with the cause", v.Status, v.Detail)
	}
}

func TestMismatchError(t *testing.T) {
	err := &MismatchError{Failed: []string{"a: want x", "b: want y"}}
	if got, want := err.Error(), "2 check(s) failed: a: want x; b: want y"; got != want {
		t.Errorf("Error() = %q; want %q", got, want)
	}
}
