package config

import (
	"fmt"
	"strings"
	"time"
)

// Bulk tunes bulk verification (splitcheck bulk): how hard the target is pushed and
// how the recipient list is read. Every field has a default; the section may be
// left out of the file entirely (see BulkDefaults).
type Bulk struct {
	// Concurrency is the most SMTP connections open to the target at once. Default 4.
	Concurrency int `yaml:"concurrency"`
	// BatchSize is the most recipients per transaction. The run lowers it when the
	// server answers 452 "too many recipients" (or advertises LIMITS RCPTMAX), and
	// never raises it. Default 100.
	BatchSize int `yaml:"batch_size"`
	// Retries is how many times a recipient deferred by a rate limit or another
	// temporary failure (4xx) is sent again before it is reported as an error.
	// Default 5; -1 means never retry.
	Retries int `yaml:"retries"`
	// Backoff is the wait before the first retry; each further retry doubles it,
	// up to MaxBackoff. Defaults 500ms and 30s.
	Backoff    time.Duration `yaml:"backoff"`
	MaxBackoff time.Duration `yaml:"max_backoff"`
	// InFlight bounds the recipients sent but not yet judged, and with it the
	// memory of a run, whatever the length of the list. Default 20000.
	InFlight int `yaml:"in_flight"`
	// ErrorsPerConnection is how many refused commands (5xx and 4xx replies) one
	// connection may collect before it is replaced by a fresh one: servers slow
	// down or drop a session after a few (Postfix after 10 and 20, Stalwart
	// after 5). Expected refusals (route reject) are sent at most this many to
	// a transaction. Default 4.
	ErrorsPerConnection int `yaml:"errors_per_connection"`
	// Pipelining is "auto" (pipeline MAIL and RCPT when the server offers
	// PIPELINING; the default) or "off".
	Pipelining string `yaml:"pipelining"`
	// OnMalformed says what a malformed row of the list does: "stop" (the default:
	// the run ends with a usage error naming the line) or "continue" (the row is
	// reported with its line number and skipped).
	OnMalformed string `yaml:"on_malformed"`
	// ObserveWorkers is how many mailbox searches (IMAP) run at once; lookups in
	// the fake source and MX have two workers of their own. Default 4.
	ObserveWorkers int `yaml:"observe_workers"`
	// MaxListed is how many mismatches the report keeps to list in full; the rest
	// are counted (and still written to --json and --junit). Default 1000.
	MaxListed int `yaml:"max_listed"`
	// Mailbox reads the mailboxes of local addresses that plan.local does not
	// list (a list of thousands of migrated accounts cannot carry a password
	// each). Nil: a local address outside plan.local cannot be observed and is
	// reported as an error.
	Mailbox *BulkMailbox `yaml:"mailbox"`
}

// BulkMailbox is how to read any local account's mailbox in a bulk run: one IMAP
// server and a login built from the address, such as a Dovecot master user
// ("{address}*master") or a shared test password.
type BulkMailbox struct {
	// Address is host:port of the IMAP server.
	Address string `yaml:"address"`
	// TLS is "none", "starttls" or "implicit" (default implicit on port 993, else none).
	TLS                string `yaml:"tls"`
	InsecureSkipVerify bool   `yaml:"insecure_skip_verify"`
	// Username is the login; "{address}" in it is replaced by the account's
	// address. Default "{address}".
	Username string `yaml:"username"`
	Password Secret `yaml:"password"`
}

// LoginFor returns the IMAP login for address.
func (m *BulkMailbox) LoginFor(address string) string {
	return strings.ReplaceAll(m.Username, "{address}", address)
}

// BulkDefaults returns the bulk settings used when the file has no bulk section.
func BulkDefaults() *Bulk {
	b := &Bulk{}
	b.applyDefaults()
	return b
}

func (b *Bulk) applyDefaults() {
	setInt := func(p *int, v int) {
		if *p == 0 {
			*p = v
		}
	}
	setInt(&b.Concurrency, 4)
	setInt(&b.BatchSize, 100)
	setInt(&b.InFlight, 20000)
	setInt(&b.ObserveWorkers, 4)
	setInt(&b.ErrorsPerConnection, 4)
	setInt(&b.MaxListed, 1000)
	if b.Retries == 0 {
		b.Retries = 5
	}
	setDefault(&b.Backoff, 500*time.Millisecond)
	setDefault(&b.MaxBackoff, 30*time.Second)
	if b.Pipelining == "" {
		b.Pipelining = "auto"
	}
	if b.OnMalformed == "" {
		b.OnMalformed = "stop"
	}
	if m := b.Mailbox; m != nil {
		if m.Username == "" {
			m.Username = "{address}"
		}
		if m.TLS == "" {
			m.TLS = "none"
			if strings.HasSuffix(m.Address, ":993") {
				m.TLS = "implicit"
			}
		}
	}
}

func (b *Bulk) validate(v *validator) {
	b.applyDefaults()
	between := func(field string, val, lo, hi int) {
		if val < lo || val > hi {
			v.fail(field, fmt.Sprintf("%d is out of range (%d to %d)", val, lo, hi))
		}
	}
	between("bulk.concurrency", b.Concurrency, 1, 256)
	between("bulk.batch_size", b.BatchSize, 1, 10000)
	between("bulk.retries", b.Retries, -1, 100)
	between("bulk.in_flight", b.InFlight, 1, 10_000_000)
	between("bulk.observe_workers", b.ObserveWorkers, 1, 64)
	between("bulk.errors_per_connection", b.ErrorsPerConnection, 1, 1000)
	between("bulk.max_listed", b.MaxListed, 0, 10_000_000)
	if b.InFlight < b.BatchSize {
		v.fail("bulk.in_flight", fmt.Sprintf("%d is smaller than bulk.batch_size (%d)", b.InFlight, b.BatchSize))
	}
	if b.Backoff < 0 {
		v.fail("bulk.backoff", "must not be negative")
	}
	if b.MaxBackoff < b.Backoff {
		v.fail("bulk.max_backoff", fmt.Sprintf("%s is shorter than bulk.backoff (%s)", b.MaxBackoff, b.Backoff))
	}
	v.oneOf("bulk.pipelining", b.Pipelining, "auto", "off")
	v.oneOf("bulk.on_malformed", b.OnMalformed, "stop", "continue")
	if m := b.Mailbox; m != nil {
		v.addrPort("bulk.mailbox.address", m.Address, true)
		v.oneOf("bulk.mailbox.tls", m.TLS, "none", "starttls", "implicit")
		if !strings.Contains(m.Username, "{address}") {
			v.fail("bulk.mailbox.username", fmt.Sprintf("%q does not contain {address}: every account would log in as the same user", m.Username))
		}
		v.secret("bulk.mailbox.password", &m.Password, true)
	}
}
