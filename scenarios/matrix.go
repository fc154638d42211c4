package scenarios

import (
	"errors"
	"fmt"
	"strings"
)

// ErrInvalid is wrapped by Validate's errors: the probes of a run contradict each other
// or are incomplete (a usage or configuration problem, not a routing verdict).
var ErrInvalid = errors.New("scenarios: invalid probes")

// Plan is what the built-in matrix is derived from: the migration plan's addresses and
// what the target offers. It mirrors the configuration without depending on it.
type Plan struct {
	// Domains are the migrated domains.
	Domains []string
	// Local are the addresses of accounts that already live on the new server.
	Local []string
	// Unmigrated are addresses in migrated domains that still live on the source.
	Unmigrated []string
	// External are addresses in other domains.
	External []string
	// PlainListener says the target has a port-25 listener without PROXY protocol;
	// without one the plain check is skipped (never passed).
	PlainListener bool
}

// plusTag is the subaddress of the built-in plus-addressed probe.
const plusTag = "splitcheck"

// ExpectRoute is the guide's route rule for one recipient: the exact address of a local
// account is local; any other address in a migrated domain goes to the source; any other
// domain goes to its MX when the sender is authenticated and is refused otherwise.
// Addresses compare case-insensitively, and a "+tag" subaddress of a local account is
// that account.
func (p Plan) ExpectRoute(rcpt string, authenticated bool) Route {
	c := Canonical(rcpt)
	for _, a := range p.Local {
		if Canonical(a) == c {
			return RouteLocal
		}
	}
	if p.migrated(rcpt) {
		return RouteSource
	}
	if authenticated {
		return RouteMX
	}
	return RouteReject
}

func (p Plan) migrated(rcpt string) bool {
	_, d := splitAddress(rcpt)
	for _, m := range p.Domains {
		if strings.EqualFold(m, d) {
			return true
		}
	}
	return false
}

// Matrix is the built-in set of probes for a plan:
//
//   - each local account through the proxy (local), its Received header checked once;
//   - each unmigrated address through the proxy (source);
//   - each external address by authenticated submission (mx), and the same address
//     unauthenticated through the proxy (reject: the open-relay guard);
//   - one message with a local, an unmigrated and an external recipient together (by
//     submission; through the proxy when the plan has no external address), routed per
//     recipient;
//   - the first local account plus-addressed (alice+splitcheck@) and upper-cased, both local;
//   - a headerless connection on the PROXY listener (refused);
//   - headerless mail to the first local account on the plain listener (local, the check
//     "plain"), skipped when the plan has no plain listener or no local account;
//   - last, the relay probe (CheckRelayHeader): no connection the server opened to the
//     fake source or the fake MX during the run may begin with a PROXY header.
//
// Probe names are unique, so the check names built from them are too.
func Matrix(p Plan) []Probe {
	var probes []Probe
	one := func(prefix, addr string, entry Entry, want Route) Probe {
		return Probe{Name: prefix + "/" + addr, Entry: entry, Recipients: []Recipient{{Address: addr, Expect: want}}}
	}
	for i, a := range p.Local {
		pr := one("local", a, EntryProxy, RouteLocal)
		pr.Received = i == 0
		probes = append(probes, pr)
	}
	for i, a := range p.Unmigrated {
		pr := one("unmigrated", a, EntryProxy, RouteSource)
		pr.Received = i == 0 && len(p.Local) == 0
		probes = append(probes, pr)
	}
	for _, a := range p.External {
		probes = append(probes, one("external", a, EntrySubmission, RouteMX))
	}
	for _, a := range p.External {
		probes = append(probes, one("open-relay", a, EntryProxy, RouteReject))
	}

	var mixed []Recipient
	if len(p.Local) > 0 {
		mixed = append(mixed, Recipient{Address: p.Local[0], Expect: RouteLocal})
	}
	if len(p.Unmigrated) > 0 {
		mixed = append(mixed, Recipient{Address: p.Unmigrated[0], Expect: RouteSource})
	}
	if len(p.External) > 0 {
		mixed = append(mixed, Recipient{Address: p.External[0], Expect: RouteMX})
	}
	if len(mixed) > 1 {
		entry := EntryProxy
		if len(p.External) > 0 {
			entry = EntrySubmission
		}
		probes = append(probes, Probe{Name: "mixed", Entry: entry, Recipients: mixed})
	}

	if len(p.Local) > 0 {
		local, domain := splitAddress(p.Local[0])
		if base, _, _ := strings.Cut(local, "+"); base != "" {
			probes = append(probes, one("plus", base+"+"+plusTag+"@"+domain, EntryProxy, RouteLocal))
		}
		if up := strings.ToUpper(p.Local[0]); up != p.Local[0] {
			probes = append(probes, one("case", up, EntryProxy, RouteLocal))
		}
	}

	probes = append(probes, Probe{Name: "headerless", Entry: EntryHeaderless})

	plain := Probe{Name: "plain", Entry: EntryPlain}
	switch {
	case len(p.Local) == 0:
		plain.Skip = "the plan has no local account to deliver headerless mail to"
	default:
		plain.Recipients = []Recipient{{Address: p.Local[0], Expect: RouteLocal}}
		if !p.PlainListener {
			plain.Skip = "no plain listener configured (target.plain_smtp)"
		}
	}
	probes = append(probes, plain)
	probes = append(probes, Probe{Name: CheckRelayHeader, Entry: EntryRelay})
	return probes
}

// Checks expands probes into report lines, in order:
//
//   - a headerless probe is one check named after the probe, expecting reject;
//   - a relay probe is one relay-header check named after the probe;
//   - a plain probe gives one plain check per recipient;
//   - any other probe gives one route check per recipient;
//   - a probe with Received set adds "received/<probe>".
//
// A recipient check of a one-recipient probe is named "route/<probe>" (plain:
// "<probe>"); with several recipients it is "<probe>/<recipient>". A probe's Skip is
// copied to its checks.
func Checks(probes []Probe) []Check {
	var out []Check
	for _, p := range probes {
		switch p.Entry {
		case EntryHeaderless:
			out = append(out, Check{Name: p.Name, Kind: KindHeaderless, Probe: p.Name, Entry: p.Entry, Expect: RouteReject, Skip: p.Skip})
			continue
		case EntryRelay:
			out = append(out, Check{Name: p.Name, Kind: KindRelayHeader, Probe: p.Name, Entry: p.Entry, Skip: p.Skip})
			continue
		}
		kind := KindRoute
		if p.Entry == EntryPlain {
			kind = KindPlain
		}
		if len(p.Recipients) == 0 && p.Skip != "" {
			// A skipped probe that could not even be built still shows up once.
			out = append(out, Check{Name: p.Name, Kind: kind, Probe: p.Name, Entry: p.Entry, Skip: p.Skip})
		}
		for _, r := range p.Recipients {
			name := p.Name + "/" + r.Address
			if len(p.Recipients) == 1 {
				name = p.Name
				if kind == KindRoute {
					name = "route/" + p.Name
				}
			}
			out = append(out, Check{Name: name, Kind: kind, Probe: p.Name, Recipient: r.Address,
				Entry: p.Entry, Expect: r.Expect, Skip: p.Skip})
		}
		if p.Received {
			out = append(out, Check{Name: "received/" + p.Name, Kind: KindReceived, Probe: p.Name, Entry: p.Entry, Skip: p.Skip})
		}
	}
	return out
}

// Validate reports probes a run cannot judge: an empty or repeated probe name, an
// unknown entry or route, a headerless or relay probe with recipients (or Received)
// or another probe without any (unless skipped), a recipient that is not an address
// or is repeated in one probe (recipients are told apart case-insensitively,
// ignoring a "+tag"), and repeated check names. Errors wrap ErrInvalid.
func Validate(probes []Probe) error {
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("%w: "+format, append([]any{ErrInvalid}, args...)...))
	}
	names := map[string]bool{}
	for i, p := range probes {
		label := fmt.Sprintf("probe %d %q", i, p.Name)
		if p.Name == "" {
			bad("probe %d: empty name", i)
		} else if names[p.Name] {
			bad("%s: name used twice", label)
		}
		names[p.Name] = true
		switch p.Entry {
		case EntryProxy, EntrySubmission, EntryPlain:
			if len(p.Recipients) == 0 && p.Skip == "" {
				bad("%s: no recipients", label)
			}
		case EntryHeaderless, EntryRelay:
			if len(p.Recipients) > 0 {
				bad("%s: a %s probe carries no recipients", label, p.Entry)
			}
			if p.Received {
				bad("%s: a %s probe delivers nothing whose Received header could be read", label, p.Entry)
			}
		default:
			bad("%s: unknown entry %q", label, p.Entry)
		}
		seen := map[string]string{}
		for _, r := range p.Recipients {
			if !IsAddress(r.Address) {
				bad("%s: %q is not an e-mail address", label, r.Address)
				continue
			}
			switch r.Expect {
			case RouteLocal, RouteSource, RouteMX, RouteReject:
			default:
				bad("%s: recipient %s: %q is not an expected route (local, source, mx, reject)", label, r.Address, r.Expect)
			}
			c := Canonical(r.Address)
			if prev, ok := seen[c]; ok {
				bad("%s: recipients %s and %s are the same mailbox", label, prev, r.Address)
			}
			seen[c] = r.Address
		}
	}
	checks := map[string]bool{}
	for _, c := range Checks(probes) {
		if checks[c.Name] {
			bad("check %q is produced twice", c.Name)
		}
		checks[c.Name] = true
	}
	return errors.Join(errs...)
}

// Canonical is the mailbox an address names, for matching sightings to recipients:
// lower-cased, with any "+tag" subaddress removed ("Alice+x@Example.org" ->
// "alice@example.org").
func Canonical(addr string) string {
	local, domain := splitAddress(strings.ToLower(addr))
	if base, _, ok := strings.Cut(local, "+"); ok && base != "" {
		local = base
	}
	if domain == "" {
		return local
	}
	return local + "@" + domain
}

// SameRecipient reports whether a sighting's envelope recipient got is the probe
// recipient want: equal ignoring case.
func SameRecipient(want, got string) bool {
	return strings.EqualFold(strings.Trim(want, "<>"), strings.Trim(got, "<>"))
}

// IsAddress reports whether s looks like a bare local@domain address (no display
// name, no angle brackets, no spaces, a dot in the domain).
func IsAddress(s string) bool {
	local, domain := splitAddress(s)
	if local == "" || domain == "" || !strings.Contains(domain, ".") {
		return false
	}
	if strings.HasPrefix(domain, ".") || strings.HasSuffix(domain, ".") || strings.Contains(domain, "..") {
		return false
	}
	for _, r := range s {
		if r <= ' ' || r == 0x7f || strings.ContainsRune(`<>()[],;:\"`, r) {
			return false
		}
	}
	return strings.Count(s, "@") == 1
}

// splitAddress splits at the last '@'; domain is "" when there is none.
func splitAddress(addr string) (local, domain string) {
	i := strings.LastIndexByte(addr, '@')
	if i < 0 {
		return addr, ""
	}
	return addr[:i], addr[i+1:]
}
