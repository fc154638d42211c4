package scenarios

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

var testPlan = Plan{
	Domains:       []string{"example.org"},
	Local:         []string{"alice@example.org", "dan@example.org"},
	Unmigrated:    []string{"bob@example.org"},
	External:      []string{"carol@external.test"},
	PlainListener: true,
}

func TestExpectRoute(t *testing.T) {
	for _, tt := range []struct {
		rcpt string
		auth bool
		want Route
	}{
		{"alice@example.org", false, RouteLocal},
		{"ALICE@Example.ORG", false, RouteLocal},
		{"alice+news@example.org", false, RouteLocal},
		{"alice@example.org", true, RouteLocal},
		{"bob@example.org", false, RouteSource},
		{"nobody@EXAMPLE.org", true, RouteSource},
		{"carol@external.test", true, RouteMX},
		{"carol@external.test", false, RouteReject},
		{"alice@example.org.evil.test", false, RouteReject},
	} {
		t.Run(fmt.Sprintf("%s/auth=%v", tt.rcpt, tt.auth), func(t *testing.T) {
			if got := testPlan.ExpectRoute(tt.rcpt, tt.auth); got != tt.want {
				t.Errorf("ExpectRoute(%q, %v) = %q; want %q", tt.rcpt, tt.auth, got, tt.want)
			}
		})
	}
}

func TestMatrixChecks(t *testing.T) {
	type line struct {
		name   string
		kind   Kind
		entry  Entry
		rcpt   string
		expect Route
		skip   bool
	}
	want := []line{
		{"route/local/alice@example.org", KindRoute, EntryProxy, "alice@example.org", RouteLocal, false},
		{"received/local/alice@example.org", KindReceived, EntryProxy, "", "", false},
		{"route/local/dan@example.org", KindRoute, EntryProxy, "dan@example.org", RouteLocal, false},
		{"route/unmigrated/bob@example.org", KindRoute, EntryProxy, "bob@example.org", RouteSource, false},
		{"route/external/carol@external.test", KindRoute, EntrySubmission, "carol@external.test", RouteMX, false},
		{"route/open-relay/carol@external.test", KindRoute, EntryProxy, "carol@external.test", RouteReject, false},
		{"mixed/alice@example.org", KindRoute, EntrySubmission, "alice@example.org", RouteLocal, false},
		{"mixed/bob@example.org", KindRoute, EntrySubmission, "bob@example.org", RouteSource, false},
		{"mixed/carol@external.test", KindRoute, EntrySubmission, "carol@external.test", RouteMX, false},
		{"route/plus/alice+splitcheck@example.org", KindRoute, EntryProxy, "alice+splitcheck@example.org", RouteLocal, false},
		{"route/case/ALICE@EXAMPLE.ORG", KindRoute, EntryProxy, "ALICE@EXAMPLE.ORG", RouteLocal, false},
		{"headerless", KindHeaderless, EntryHeaderless, "", RouteReject, false},
		{"plain", KindPlain, EntryPlain, "alice@example.org", RouteLocal, false},
		{"relay/no-proxy-header", KindRelayHeader, EntryRelay, "", "", false},
	}
	probes := Matrix(testPlan)
	if err := Validate(probes); err != nil {
		t.Fatalf("Validate(Matrix(testPlan)) = %v; want nil", err)
	}
	got := Checks(probes)
	if len(got) != len(want) {
		names := make([]string, len(got))
		for i, c := range got {
			names[i] = c.Name
		}
		t.Fatalf("Checks(Matrix) gave %d checks %q; want %d", len(got), names, len(want))
	}
	for i, w := range want {
		c := got[i]
		g := line{c.Name, c.Kind, c.Entry, c.Recipient, c.Expect, c.Skip != ""}
		if g != w {
			t.Errorf("check %d = %+v; want %+v", i, g, w)
		}
		// Every route expectation is the guide's rule.
		if c.Kind == KindRoute || c.Kind == KindPlain {
			if r := testPlan.ExpectRoute(c.Recipient, c.Entry == EntrySubmission); r != c.Expect {
				t.Errorf("check %s expects %s; the route rule says %s", c.Name, c.Expect, r)
			}
		}
	}
}

func TestMatrixVariants(t *testing.T) {
	for _, tt := range []struct {
		name      string
		plan      Plan
		wantNames []string // checks that must be present
		noNames   []string // checks that must be absent
		skipped   map[string]string
	}{
		{
			name:      "no plain listener",
			plan:      Plan{Domains: []string{"example.org"}, Local: []string{"alice@example.org"}},
			wantNames: []string{"route/local/alice@example.org", "headerless", "plain", "relay/no-proxy-header"},
			noNames:   []string{"mixed/alice@example.org"},
			skipped:   map[string]string{"plain": "no plain listener configured (target.plain_smtp)"},
		},
		{
			name:      "only unmigrated",
			plan:      Plan{Domains: []string{"example.org"}, Unmigrated: []string{"bob@example.org"}, PlainListener: true},
			wantNames: []string{"route/unmigrated/bob@example.org", "received/unmigrated/bob@example.org", "plain"},
			noNames:   []string{"mixed/bob@example.org"},
			skipped:   map[string]string{"plain": "the plan has no local account to deliver headerless mail to"},
		},
		{
			name:      "no external: mixed goes through the proxy",
			plan:      Plan{Domains: []string{"example.org"}, Local: []string{"alice@example.org"}, Unmigrated: []string{"bob@example.org"}, PlainListener: true},
			wantNames: []string{"mixed/alice@example.org", "mixed/bob@example.org"},
			noNames:   []string{"route/open-relay/carol@external.test"},
		},
		{
			name:      "upper-case local account has no case probe",
			plan:      Plan{Domains: []string{"EXAMPLE.ORG"}, Local: []string{"ALICE@EXAMPLE.ORG"}, PlainListener: true},
			wantNames: []string{"route/plus/ALICE+splitcheck@EXAMPLE.ORG"},
			noNames:   []string{"route/case/ALICE@EXAMPLE.ORG"},
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			probes := Matrix(tt.plan)
			if err := Validate(probes); err != nil {
				t.Fatalf("Validate(Matrix) = %v; want nil", err)
			}
			byName := map[string]Check{}
			for _, c := range Checks(probes) {
				byName[c.Name] = c
			}
			for _, n := range tt.wantNames {
				if _, ok := byName[n]; !ok {
					t.Errorf("check %q missing from %v", n, keys(byName))
				}
			}
			for _, n := range tt.noNames {
				if _, ok := byName[n]; ok {
					t.Errorf("check %q present; want absent", n)
				}
			}
			for n, c := range byName {
				if want := tt.skipped[n]; c.Skip != want {
					t.Errorf("check %q Skip = %q; want %q", n, c.Skip, want)
				}
			}
		})
	}
}

func TestMixedEntry(t *testing.T) {
	for _, p := range Matrix(testPlan) {
		if p.Name != "mixed" {
			continue
		}
		if p.Entry != EntrySubmission {
			t.Errorf("mixed entry = %s; want submission (an unauthenticated message cannot carry the external recipient)", p.Entry)
		}
		return
	}
	t.Fatal("no mixed probe in the matrix")
}

func TestValidate(t *testing.T) {
	ok := Probe{Name: "p", Entry: EntryProxy, Recipients: []Recipient{{Address: "a@example.org", Expect: RouteLocal}}}
	for _, tt := range []struct {
		name   string
		probes []Probe
		want   string // substring of the error; "" = valid
	}{
		{"valid", []Probe{ok}, ""},
		{"empty name", []Probe{{Entry: EntryProxy, Recipients: ok.Recipients}}, "empty name"},
		{"repeated name", []Probe{ok, ok}, "name used twice"},
		{"bad entry", []Probe{{Name: "x", Entry: "smoke", Recipients: ok.Recipients}}, `unknown entry "smoke"`},
		{"no recipients", []Probe{{Name: "x", Entry: EntrySubmission}}, "no recipients"},
		{"skipped without recipients", []Probe{{Name: "x", Entry: EntryPlain, Skip: "why"}}, ""},
		{"headerless with recipients", []Probe{{Name: "h", Entry: EntryHeaderless, Recipients: ok.Recipients}}, "carries no recipients"},
		{"headerless received", []Probe{{Name: "h", Entry: EntryHeaderless, Received: true}}, "Received header"},
		{"relay", []Probe{{Name: "r", Entry: EntryRelay}}, ""},
		{"relay with recipients", []Probe{{Name: "r", Entry: EntryRelay, Recipients: ok.Recipients}}, "a relay probe carries no recipients"},
		{"relay received", []Probe{{Name: "r", Entry: EntryRelay, Received: true}}, "a relay probe delivers nothing"},
		{"bad address", []Probe{{Name: "x", Entry: EntryProxy, Recipients: []Recipient{{Address: "Alice <a@x.org>", Expect: RouteLocal}}}}, "not an e-mail address"},
		{"bad route", []Probe{{Name: "x", Entry: EntryProxy, Recipients: []Recipient{{Address: "a@x.org", Expect: RouteNone}}}}, "not an expected route"},
		{"same mailbox twice", []Probe{{Name: "x", Entry: EntryProxy, Recipients: []Recipient{
			{Address: "a@x.org", Expect: RouteLocal}, {Address: "A+t@X.org", Expect: RouteLocal}}}}, "same mailbox"},
		{"check name collision", []Probe{ok, {Name: "route/p", Entry: EntryPlain, Recipients: ok.Recipients}}, `check "route/p" is produced twice`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			err := Validate(tt.probes)
			switch {
			case tt.want == "" && err != nil:
				t.Errorf("Validate = %v; want nil", err)
			case tt.want != "" && err == nil:
				t.Errorf("Validate = nil; want an error containing %q", tt.want)
			case tt.want != "" && !strings.Contains(err.Error(), tt.want):
				t.Errorf("Validate = %v; want it to contain %q", err, tt.want)
			case tt.want != "" && !errors.Is(err, ErrInvalid):
				t.Errorf("Validate = %v; want it to match ErrInvalid", err)
			}
		})
	}
}

func TestCanonical(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{"alice@example.org", "alice@example.org"},
		{"Alice+Tag@Example.ORG", "alice@example.org"},
		{"+tag@example.org", "+tag@example.org"},
		{"a+b+c@x.test", "a@x.test"},
		{"nodomain", "nodomain"},
	} {
		if got := Canonical(tt.in); got != tt.want {
			t.Errorf("Canonical(%q) = %q; want %q", tt.in, got, tt.want)
		}
	}
}

func TestIsAddress(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want bool
	}{
		{"alice@example.org", true},
		{"ALICE+x@EXAMPLE.ORG", true},
		{"alice@localhost", false},
		{"alice", false},
		{"@example.org", false},
		{"a@b@example.org", false},
		{"a b@example.org", false},
		{"<a@example.org>", false},
		{"a@example..org", false},
		{"a@.example.org", false},
	} {
		if got := IsAddress(tt.in); got != tt.want {
			t.Errorf("IsAddress(%q) = %v; want %v", tt.in, got, tt.want)
		}
	}
}

func keys(m map[string]Check) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

func TestMessageID(t *testing.T) {
	if got, want := MessageID("r1-03"), "<r1-03@splitcheck.test>"; got != want {
		t.Errorf("MessageID = %q; want %q", got, want)
	}
	for _, tt := range []struct {
		in   string
		want string
		ok   bool
	}{
		{" <r1-03@splitcheck.test> ", "r1-03", true},
		{"<r1-03@splitcheck.test", "", false},
		{"<@splitcheck.test>", "", false},
		{"<a@b@splitcheck.test>", "", false},
		{"<r1@other.test>", "", false},
	} {
		got, ok := ProbeIDFromMessageID(tt.in)
		if got != tt.want || ok != tt.ok {
			t.Errorf("ProbeIDFromMessageID(%q) = %q, %v; want %q, %v", tt.in, got, ok, tt.want, tt.ok)
		}
	}
}
