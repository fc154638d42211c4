package scenarios

import "time"

// Route is where a recipient's mail must go (or that it must be refused).
type Route string

// The routes of a split-delivery server.
const (
	RouteLocal  Route = "local"  // delivered into a mailbox on the server under test
	RouteSource Route = "source" // relayed to the old server (the fake source)
	RouteMX     Route = "mx"     // delivered to the recipient domain's MX (the fake MX)
	RouteReject Route = "reject" // refused in the SMTP dialogue
	RouteNone   Route = "none"   // observed nowhere (only ever an observation, never an expectation)
	// RouteAccepted means the server accepted what it should have refused, such as a
	// headerless connection on the PROXY listener (only ever an observation).
	RouteAccepted Route = "accepted"
	// RouteDeferred means the server refused only for now (a 4xx reply): the client
	// would try again later, so it is no refusal (only ever an observation).
	RouteDeferred Route = "deferred"
)

// Entry is how a probe enters the server under test.
type Entry string

// The entries a probe can take.
const (
	EntryProxy      Entry = "proxy"      // port 25 through the PROXY-protocol proxy, unauthenticated
	EntrySubmission Entry = "submission" // authenticated submission (SASL)
	EntryPlain      Entry = "plain"      // port 25 on the plain listener, no PROXY header, from another address
	// EntryHeaderless is a connection to the PROXY listener, from the proxy's own
	// address, that sends no PROXY header. It carries no recipients: it must be refused.
	EntryHeaderless Entry = "headerless"
	// EntryRelay sends nothing: its check looks at the connections the server
	// under test opened to the fake source and the fake MX during the run, once
	// every other probe is judged. It carries no recipients.
	EntryRelay Entry = "relay"
)

// Kind says what a check asserts.
type Kind string

// The kinds of check.
const (
	KindRoute      Kind = "route"      // a recipient's probe arrives exactly once, exactly where Expect says
	KindReceived   Kind = "received"   // the delivered probe's Received header carries the announced client address
	KindHeaderless Kind = "headerless" // a connection without a PROXY header on the PROXY listener is refused
	KindPlain      Kind = "plain"      // headerless mail on the plain listener still works
	// KindRelayHeader: no connection the server opened to the fake source or the
	// fake MX began with a PROXY header (the relay must not send one).
	KindRelayHeader Kind = "relay-header"
)

// CheckRelayHeader is the name of the built-in relay-header check (and of its probe).
const CheckRelayHeader = "relay/no-proxy-header"

// Recipient is one RCPT TO of a probe and the route the plan expects for it.
type Recipient struct {
	Address string
	Expect  Route
}

// Probe is one message: its entry and recipients. A probe with several recipients
// checks that the route is chosen per recipient.
type Probe struct {
	// Name identifies the probe in reports ("local alice@example.org", "mixed").
	Name       string
	Entry      Entry
	Recipients []Recipient
	// Received asks for a further check: every delivered copy of this probe carries
	// the client address the PROXY header announced in a Received header.
	Received bool
	// Skip, when set, is why the probe's checks are skipped instead of run
	// (for example "target.plain_smtp is not set").
	Skip string
}

// Check is one line of the report.
type Check struct {
	// Name is unique within a run, e.g. "route/local/alice@example.org" or "mixed/bob@example.org".
	Name      string
	Kind      Kind
	Probe     string // Probe.Name this check belongs to ("" for connection-level checks)
	Recipient string
	Entry     Entry
	Expect    Route
	// Want is what a received check looks for: the announced client IP. The
	// engine fills it in; a received check without it cannot be judged.
	Want string
	// Deadline is how long the engine waits for the probe to arrive, used in
	// "not seen anywhere within ..." (zero: Judge uses the elapsed time).
	Deadline time.Duration
	// Skip, when set, is why the check is skipped instead of run.
	Skip string
}

// Status is a check's outcome.
type Status string

// The outcomes. Skipped is never counted as passed.
const (
	StatusPass Status = "pass"
	StatusFail Status = "fail"
	StatusSkip Status = "skip"
	// StatusError means the check could not be judged (environment broken).
	StatusError Status = "error"
)

// Observation is one sighting of a probe for one recipient.
type Observation struct {
	Place    Route         // local, source, mx, reject (a 5xx reply) or deferred (a 4xx reply)
	Where    string        // mailbox/folder, sink address, or the SMTP command that was refused
	Evidence string        // e.g. `RCPT 554 5.7.1 Relay access denied`, `INBOX uid 7`, `Received: ... [198.51.100.7]`
	After    time.Duration // since the probe was sent
	// Received holds the delivered copy's Received header values, topmost first
	// (empty for rejections and when the observer cannot read headers).
	Received []string
	// At is when the sighting happened or was first noticed (zero: unknown; the
	// engine then fills After from when it noticed).
	At time.Time
	// ProxyHeader marks a sighting of a relay-header check (one connection to a
	// fake) whose first bytes were a PROXY protocol header.
	ProxyHeader bool
}

// Verdict is the judged outcome of one check.
type Verdict struct {
	Check    Check
	Status   Status
	Observed []Observation // every sighting (exactly one when a route check passes)
	Detail   string        // why it failed or was skipped, with the evidence
	Elapsed  time.Duration // from send to verdict
	Mode     string        // "rehearsal", "live" or "" (who produced the verdict)
}

// AddDetail appends note to the verdict's detail, "; "-separated.
func (v *Verdict) AddDetail(note string) {
	if v.Detail == "" {
		v.Detail = note
	} else {
		v.Detail += "; " + note
	}
}
