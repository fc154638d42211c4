package bulk

import (
	"regexp"
)

// outcome is what a reply means for the recipients it answers.
type outcome int

const (
	// outcomeOK: accepted (2xx, 3xx).
	outcomeOK outcome = iota
	// outcomeRejected: refused for good (5xx); for a recipient, the route "reject".
	outcomeRejected
	// outcomeTooMany: the transaction's recipient limit was reached (452 4.5.3,
	// or the legacy 552 "too many recipients"); send the rest in another one.
	outcomeTooMany
	// outcomeRateLimited: the server is throttling us (421/450/451/452 with
	// rate-limit wording); retry after a backoff. Never a routing verdict.
	outcomeRateLimited
	// outcomeTemporary: another temporary failure (4xx, or no reply); retry.
	outcomeTemporary
)

func (o outcome) String() string {
	switch o {
	case outcomeOK:
		return "ok"
	case outcomeRejected:
		return "rejected"
	case outcomeTooMany:
		return "too many recipients"
	case outcomeRateLimited:
		return "rate limited"
	default:
		return "temporary failure"
	}
}

var (
	// tooManyRcpts is the wording of a per-transaction recipient limit.
	tooManyRcpts = regexp.MustCompile(`(?i)too many recipients|maximum (limit of )?\d* ?recipients|recipient limit`)
	// rateWords is the wording of rate and connection limits: Postfix's anvil
	// ("too many connections from", "too much mail from", "too many recipients
	// from"), Stalwart's ("rate limit exceeded", "too many concurrent"), and the
	// usual "throttled", "slow down", "try again later".
	rateWords = regexp.MustCompile(`(?i)rate.?limit|\brate\b|too many|too much|throttl|slow down|try (again )?later|exceeded|concurren`)
	// fromWords marks a limit on the client ("too many recipients from 1.2.3.4").
	fromWords = regexp.MustCompile(`(?i)too many recipients from|per (hour|minute|second|day)`)
)

// classify says what r means.
func classify(r reply) outcome {
	switch {
	case r.Code == 0:
		return outcomeTemporary
	case r.Code < 400:
		return outcomeOK
	case isTooMany(r):
		return outcomeTooMany
	case r.Code >= 500:
		return outcomeRejected
	case (r.Code == 421 || r.Code == 450 || r.Code == 451 || r.Code == 452) && isRate(r):
		return outcomeRateLimited
	default:
		return outcomeTemporary
	}
}

// isTooMany recognises the per-transaction recipient limit: the enhanced code
// x.5.3 on a 452 or 552, or its wording without an enhanced code.
func isTooMany(r reply) bool {
	if r.Code != 452 && r.Code != 552 {
		return false
	}
	if r.Enhanced != "" {
		return r.Enhanced == "4.5.3" || r.Enhanced == "5.5.3"
	}
	return tooManyRcpts.MatchString(r.Text) && !fromWords.MatchString(r.Text)
}

// isRate recognises a rate or connection limit by its enhanced code (4.7.x is
// a policy refusal, 4.3.2 "system not accepting messages") and wording.
func isRate(r reply) bool {
	return rateWords.MatchString(r.Text) || r.Enhanced == "4.7.0" && r.Code == 421
}
