// Package stalwartobs connects Stalwart's own view of delivery to the verify
// engine (package harness): it implements harness.Observer on top of package
// stalwart, which cannot import harness itself.
//
//   - Local observes the "local" route: accounts whose mailbox protocol is
//     "jmap" are read through Stalwart's JMAP mail API (stalwart.MailObserver,
//     Inbox and Junk), the others over IMAP (package imapobs), so a run can mix
//     both. Pass it as harness.VerifyOptions.LocalObserver.
//   - Queue observes the "source" route in live mode, from Stalwart's outbound
//     queue: a recipient completed with the real source as the responding host.
//     Pass it in harness.VerifyOptions.Observers.
//   - AddQueueEvidence adds what the queue holds to the verdicts of source and
//     mx checks whose probe was late or missing.
//
// Nothing here starts a goroutine; Local.Close closes the IMAP connections.
package stalwartobs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/splitcheck/splitcheck/harness/config"
	"github.com/splitcheck/splitcheck/harness/imapobs"
	"github.com/splitcheck/splitcheck/harness/stalwart"
	"github.com/splitcheck/splitcheck/scenarios"
)

// ProtocolJMAP is the mailbox protocol (plan.local[].mailbox.protocol) that
// Local reads through Stalwart's JMAP mail API.
const ProtocolJMAP = "jmap"

// preflightProbe is a probe id no probe ever has: Check looks for it to prove the
// login and the mailboxes work.
const preflightProbe = "splitcheck-preflight-login-check"

// UsesJMAP reports whether any local account of cfg is read over JMAP, that is
// whether a run needs a Local observer (the engine itself reads only IMAP).
func UsesJMAP(cfg *config.Config) bool {
	for _, a := range cfg.Plan.Local {
		if strings.EqualFold(a.Mailbox.Protocol, ProtocolJMAP) {
			return true
		}
	}
	return false
}

// LocalOptions tune NewLocal.
type LocalOptions struct {
	// Snapshot is the snapshot of the apply that prepared the run (nil: none).
	// The passwords of the test accounts it created replace the config's for
	// those accounts (apply generated them; the config cannot know them).
	Snapshot *stalwart.Snapshot
	// Timeout bounds each request and IMAP command; 0 means the config's
	// timeouts.connect.
	Timeout time.Duration
	// HTTPClient is used for JMAP (nil: a default client).
	HTTPClient *http.Client
	// Logger receives debug records; nil is silent.
	Logger *slog.Logger
}

// Local observes local delivery in a run against Stalwart. It is safe for
// concurrent use. Build it with NewLocal and Close it after the run.
type Local struct {
	jmap []jmapAccount
	imap *imapobs.Observer // nil when no account is read over IMAP
	log  *slog.Logger
	now  func() time.Time

	mu   sync.Mutex
	seen map[string]time.Time // account + email id -> first noticed
}

type jmapAccount struct {
	address string // as configured
	url     string
	obs     *stalwart.MailObserver
}

// NewLocal builds the observer for cfg's local accounts: JMAP for those whose
// mailbox protocol is "jmap" (Mailbox.Address is Stalwart's base URL, the login
// Mailbox.Username or the address), IMAP for the rest.
func NewLocal(cfg *config.Config, opts LocalOptions) (*Local, error) {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	timeout := opts.Timeout
	if timeout <= 0 {
		timeout = cfg.Timeouts.Connect
	}
	l := &Local{log: log, now: time.Now, seen: map[string]time.Time{}}
	var imapAccts []imapobs.Account
	for i, a := range cfg.Plan.Local {
		m := a.Mailbox
		if !strings.EqualFold(m.Protocol, ProtocolJMAP) {
			imapAccts = append(imapAccts, imapobs.Account{
				Address: a.Address, Server: m.Address, TLS: m.TLS, InsecureSkipVerify: m.InsecureSkipVerify,
				Username: m.Username, Password: m.Password.Value(),
			})
			continue
		}
		if m.Address == "" {
			return nil, &config.Error{File: cfg.File, Field: fmt.Sprintf("plan.local.%d.mailbox.address", i),
				Msg: "required: Stalwart's base URL for JMAP"}
		}
		user, password := m.Username, m.Password.Value()
		if user == "" {
			user = a.Address
		}
		if opts.Snapshot != nil {
			if sa, ok := opts.Snapshot.Account(a.Address); ok && sa.Password != "" {
				user, password = sa.Address, sa.Password
			}
		}
		l.jmap = append(l.jmap, jmapAccount{address: a.Address, url: m.Address, obs: &stalwart.MailObserver{
			URL: m.Address, Credentials: stalwart.BasicAuth(user, password), HTTPClient: opts.HTTPClient,
			Timeout: timeout, Logger: log.With("observer", "jmap", "account", a.Address),
		}})
	}
	if len(imapAccts) > 0 {
		l.imap = &imapobs.Observer{Accounts: imapAccts, Timeout: timeout, PollInterval: 100 * time.Millisecond,
			Logger: log.With("observer", "imap")}
	}
	return l, nil
}

// account returns the JMAP account whose mailbox receives rcpt ("+tag" and case
// ignored).
func (l *Local) account(rcpt string) (jmapAccount, bool) {
	c := scenarios.Canonical(rcpt)
	for _, a := range l.jmap {
		if scenarios.Canonical(a.address) == c {
			return a, true
		}
	}
	return jmapAccount{}, false
}

// Observe returns the copies of the probe that the local mailboxes hold for
// rcpt. For an account read over JMAP these are the messages in its Inbox and
// Junk whose probe header carries probeID; any other recipient is asked of the
// IMAP observer (which also looks for misrouted copies in its accounts'
// mailboxes). A copy in a JMAP mailbox is counted for that account only.
func (l *Local) Observe(ctx context.Context, probeID, rcpt string) ([]scenarios.Observation, error) {
	a, ok := l.account(rcpt)
	if !ok {
		if l.imap == nil {
			return nil, nil
		}
		return l.imap.Observe(ctx, probeID, rcpt)
	}
	found, err := a.obs.Find(ctx, stalwart.Match{Header: scenarios.ProbeHeader, Value: probeID})
	if err != nil {
		return nil, fmt.Errorf("observe %s over JMAP: %w", a.address, err)
	}
	out := make([]scenarios.Observation, 0, len(found))
	for _, f := range found {
		out = append(out, scenarios.Observation{
			Place:    scenarios.RouteLocal,
			Where:    a.address + " " + f.Mailbox,
			Evidence: fmt.Sprintf("JMAP %s: %s %s", a.url, a.address, f),
			Received: f.Received,
			At:       l.firstSeen(a.address + "\x00" + f.EmailID),
		})
	}
	return out, nil
}

// firstSeen is when this observer first noticed a copy. The server's own
// receivedAt is in the evidence, not in the timing: a remote clock could make a
// copy look early or late.
func (l *Local) firstSeen(key string) time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	if t, ok := l.seen[key]; ok {
		return t
	}
	t := l.now()
	l.seen[key] = t
	return t
}

// Copies describes every copy of the probe in the mailboxes of rcpt's domain,
// whoever it would count for: evidence for a recipient seen nowhere.
func (l *Local) Copies(ctx context.Context, probeID, rcpt string) ([]string, error) {
	var out []string
	domain := domainOf(rcpt)
	for _, a := range l.jmap {
		if domainOf(a.address) != domain {
			continue
		}
		found, err := a.obs.Find(ctx, stalwart.Match{Header: scenarios.ProbeHeader, Value: probeID})
		if err != nil {
			return out, fmt.Errorf("copies in %s over JMAP: %w", a.address, err)
		}
		for _, f := range found {
			out = append(out, fmt.Sprintf("JMAP %s: %s %s", a.url, a.address, f))
		}
	}
	if l.imap != nil {
		more, err := l.imap.Copies(ctx, probeID, rcpt)
		out = append(out, more...)
		if err != nil {
			return out, err
		}
	}
	return out, nil
}

// Check logs in to every mailbox once (JMAP session and mailbox discovery, IMAP
// login), so that a wrong password or an unreachable server is found before any
// probe is sent. The error names the account, never the password.
func (l *Local) Check(ctx context.Context) error {
	var errs []error
	for _, a := range l.jmap {
		if _, err := a.obs.Find(ctx, stalwart.Match{Header: scenarios.ProbeHeader, Value: preflightProbe}); err != nil {
			errs = append(errs, fmt.Errorf("local mailbox %s (JMAP %s): %w", a.address, a.url, err))
		}
	}
	if l.imap != nil {
		if err := l.imap.Check(ctx); err != nil {
			errs = append(errs, fmt.Errorf("local mailbox (IMAP): %w", err))
		}
	}
	return errors.Join(errs...)
}

// Close closes the IMAP connections (JMAP keeps none open). It returns nil.
func (l *Local) Close() error {
	if l.imap != nil {
		return l.imap.Close()
	}
	return nil
}

func domainOf(addr string) string {
	_, d, _ := strings.Cut(strings.ToLower(addr), "@")
	return d
}
