package scenarios

import (
	"fmt"
	"net/netip"
	"strings"
	"time"
)

// Judge decides one check from every sighting gathered for it. elapsed is the time from
// sending the probe to the verdict.
//
// A skipped check (Skip set) is skipped whatever was observed. A route, plain or
// headerless check passes only with exactly one observation and that one at Expect: two
// sightings (say local and source) fail, and none fails with "not seen anywhere within
// <deadline>". A received check passes when the probe was delivered and every delivered
// copy has a Received header carrying Want, the announced client address.
//
// A relay-header check's observations are the connections the server opened to the
// fake source and the fake MX, one each. It fails when any began with a PROXY header
// (ProxyHeader set; Observed then keeps only those), passes when none did (Observed
// is emptied and Detail counts the connections), and is skipped when there was no
// connection at all: nothing was checked, so nothing passed.
func Judge(c Check, obs []Observation, elapsed time.Duration) Verdict {
	v := Verdict{Check: c, Observed: obs, Elapsed: elapsed}
	if c.Skip != "" {
		v.Status, v.Detail = StatusSkip, c.Skip
		return v
	}
	switch c.Kind {
	case KindRoute, KindPlain, KindHeaderless:
		judgeRoute(&v, elapsed)
	case KindReceived:
		judgeReceived(&v)
	case KindRelayHeader:
		judgeRelayHeader(&v)
	default:
		v.Status, v.Detail = StatusError, fmt.Sprintf("unknown kind of check %q", c.Kind)
	}
	return v
}

// Errored is the verdict for a check that could not be judged because err stopped it
// (the probe could not be sent, a mailbox could not be read).
func Errored(c Check, err error, elapsed time.Duration) Verdict {
	return Verdict{Check: c, Status: StatusError, Detail: err.Error(), Elapsed: elapsed}
}

func judgeRoute(v *Verdict, elapsed time.Duration) {
	c, obs := v.Check, v.Observed
	switch {
	case len(obs) == 1 && obs[0].Place == c.Expect:
		v.Status = StatusPass
	case len(obs) == 0:
		deadline := c.Deadline
		if deadline <= 0 {
			deadline = elapsed
		}
		v.Status = StatusFail
		v.Detail = fmt.Sprintf("want %s, got none: not seen anywhere within %s", c.Expect, roundDuration(deadline))
	case len(obs) == 1:
		v.Status = StatusFail
		v.Detail = fmt.Sprintf("want %s, got %s: %s", c.Expect, obs[0].Place, describe(obs[0]))
	default:
		parts := make([]string, len(obs))
		for i, o := range obs {
			parts[i] = fmt.Sprintf("%s (%s)", o.Place, describe(o))
		}
		v.Status = StatusFail
		v.Detail = fmt.Sprintf("want %s exactly once, seen %d times: %s", c.Expect, len(obs), strings.Join(parts, "; "))
	}
}

func judgeReceived(v *Verdict) {
	c := v.Check
	if c.Want == "" {
		v.Status, v.Detail = StatusError, "no announced client address to look for"
		return
	}
	var copies, lines []Observation
	var bad []string
	for _, o := range v.Observed {
		if !delivered(o.Place) {
			continue
		}
		copies = append(copies, o)
		line, ok := findReceived(o.Received, c.Want)
		if !ok {
			if line = "no Received header"; len(o.Received) > 0 {
				line = "Received: " + o.Received[len(o.Received)-1]
			}
			bad = append(bad, fmt.Sprintf("%s copy (%s): %s", o.Place, o.Where, line))
		} else {
			line = "Received: " + line
		}
		lines = append(lines, Observation{Place: o.Place, Where: o.Where, Evidence: line, After: o.After, Received: o.Received})
	}
	v.Observed = lines
	switch {
	case len(copies) == 0:
		v.Status = StatusFail
		v.Detail = fmt.Sprintf("probe %q was not delivered anywhere: no Received header to read", c.Probe)
	case len(bad) > 0:
		v.Status = StatusFail
		v.Detail = fmt.Sprintf("want a Received header with [%s], got %s", c.Want, strings.Join(bad, "; "))
	default:
		v.Status = StatusPass
	}
}

// maxListed bounds the connections a failed relay-header detail lists.
const maxListed = 3

func judgeRelayHeader(v *Verdict) {
	var bad []Observation
	per := map[Route]int{}
	var order []Route
	for _, o := range v.Observed {
		if per[o.Place] == 0 {
			order = append(order, o.Place)
		}
		per[o.Place]++
		if o.ProxyHeader {
			bad = append(bad, o)
		}
	}
	n := len(v.Observed)
	switch {
	case n == 0:
		v.Status = StatusSkip
		v.Detail = "no connection reached the fake source or the fake MX during the run: nothing to check"
	case len(bad) > 0:
		parts := make([]string, 0, maxListed+1)
		for _, o := range bad[:min(len(bad), maxListed)] {
			parts = append(parts, describe(o))
		}
		if len(bad) > maxListed {
			parts = append(parts, fmt.Sprintf("and %d more", len(bad)-maxListed))
		}
		v.Status, v.Observed = StatusFail, bad
		v.Detail = fmt.Sprintf("want no PROXY header on the server's outbound connections, got %d of %d beginning with one: %s",
			len(bad), n, strings.Join(parts, "; "))
	default:
		counts := make([]string, len(order))
		for i, p := range order {
			counts[i] = fmt.Sprintf("%d to %s", per[p], p)
		}
		v.Status, v.Observed = StatusPass, nil
		v.Detail = fmt.Sprintf("%d connection(s) (%s), none began with a PROXY header", n, strings.Join(counts, ", "))
	}
}

// delivered reports whether place is a delivery (as opposed to a refusal or nothing).
func delivered(p Route) bool { return p == RouteLocal || p == RouteSource || p == RouteMX }

// findReceived returns the first Received value that carries ip as a bracketed
// address literal ("[198.51.100.7]" or "[IPv6:2001:db8::7]").
func findReceived(received []string, ip string) (string, bool) {
	for _, r := range received {
		if ReceivedCarries(r, ip) {
			return r, true
		}
	}
	return "", false
}

// ReceivedCarries reports whether one Received header value names ip as a bracketed
// address literal, as MTAs write the client address: "[198.51.100.7]" or
// "[IPv6:2001:db8::7]". An IPv6 literal is compared in canonical form.
func ReceivedCarries(received, ip string) bool {
	want, err := netip.ParseAddr(ip)
	if err != nil {
		return false
	}
	want = want.Unmap()
	rest := received
	for {
		i := strings.IndexByte(rest, '[')
		if i < 0 {
			return false
		}
		rest = rest[i+1:]
		j := strings.IndexByte(rest, ']')
		if j < 0 {
			return false
		}
		lit := rest[:j]
		if len(lit) > 5 && strings.EqualFold(lit[:5], "ipv6:") {
			lit = lit[5:]
		}
		if got, err := netip.ParseAddr(lit); err == nil && got.Unmap() == want {
			return true
		}
		rest = rest[j+1:]
	}
}

// describe renders an observation's evidence for a detail line.
func describe(o Observation) string {
	switch {
	case o.Evidence != "" && o.Where != "" && !strings.Contains(o.Evidence, o.Where):
		return o.Where + ": " + o.Evidence
	case o.Evidence != "":
		return o.Evidence
	case o.Where != "":
		return o.Where
	default:
		return "no evidence recorded"
	}
}

// roundDuration keeps deadlines readable: 30s, 1.5s, 250ms.
func roundDuration(d time.Duration) time.Duration {
	switch {
	case d >= 10*time.Second:
		return d.Round(time.Second)
	case d >= time.Second:
		return d.Round(100 * time.Millisecond)
	default:
		return d.Round(time.Millisecond)
	}
}
