package main

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/splitcheck/splitcheck/harness"
	"github.com/splitcheck/splitcheck/harness/config"
	"github.com/splitcheck/splitcheck/harness/imapobs"
	"github.com/splitcheck/splitcheck/scenarios"
)

// sourceObserver watches the source route in live mode when
// migration.source_mailbox is set: the source test address in its mailbox on the
// real source (IMAP), every other recipient through fallback (Stalwart's queue).
// Only one of the two speaks for a recipient, so one relayed copy is never
// counted twice.
type sourceObserver struct {
	// addr is migration.source_test_address; server the source's IMAP host:port.
	addr, server string
	mailbox      *imapobs.Observer
	fallback     harness.Observer
}

// newSourceMailbox is the IMAP observer of the source test mailbox m.
func newSourceMailbox(addr string, m *config.SourceMailbox, timeout time.Duration, r *runState) *imapobs.Observer {
	return &imapobs.Observer{
		Accounts: []imapobs.Account{{Address: addr, Server: m.Address, TLS: m.TLS,
			InsecureSkipVerify: m.InsecureSkipVerify, Username: m.Username, Password: m.Password.Value()}},
		Timeout:      timeout,
		PollInterval: 250 * time.Millisecond,
		Logger:       r.log.With("observer", "source mailbox"),
	}
}

func (s *sourceObserver) isTest(rcpt string) bool {
	return scenarios.Canonical(rcpt) == scenarios.Canonical(s.addr)
}

// Observe finds the probe for rcpt: in the source mailbox for the test address
// (one sighting at source per copy), else through the fallback.
func (s *sourceObserver) Observe(ctx context.Context, probeID, rcpt string) ([]scenarios.Observation, error) {
	if !s.isTest(rcpt) {
		return s.fallback.Observe(ctx, probeID, rcpt)
	}
	hits, err := s.mailbox.Find(ctx, probeID, rcpt)
	if err != nil {
		return nil, fmt.Errorf("source mailbox: %w", err)
	}
	out := make([]scenarios.Observation, 0, len(hits))
	for _, h := range hits {
		out = append(out, h.Observation(scenarios.RouteSource, "source mailbox IMAP"))
	}
	return out, nil
}

// describe says where the source verdicts come from, for the report.
func (s *sourceObserver) describe(queue string) string {
	return fmt.Sprintf("the source mailbox of %s over IMAP at %s; for the other recipients %s", s.addr, s.server, queue)
}

// addMailboxEvidence appends to each failed or errored source check of the test
// address that saw nothing at the source where it was looked for. It returns how
// many verdicts it annotated.
func (s *sourceObserver) addMailboxEvidence(verdicts []scenarios.Verdict) int {
	n := 0
	for i := range verdicts {
		v := &verdicts[i]
		c := v.Check
		if (c.Kind != scenarios.KindRoute && c.Kind != scenarios.KindPlain) || c.Expect != scenarios.RouteSource ||
			!s.isTest(c.Recipient) || (v.Status != scenarios.StatusFail && v.Status != scenarios.StatusError) ||
			slices.ContainsFunc(v.Observed, func(o scenarios.Observation) bool { return o.Place == scenarios.RouteSource }) {
			continue
		}
		v.AddDetail(fmt.Sprintf("source mailbox IMAP %s: no copy of the probe for %s (searched INBOX and the junk folder by Message-ID)", s.server, s.addr))
		n++
	}
	return n
}

// withSourceTestAddress returns cfg with the source test address added to
// plan.unmigrated (a copy; cfg is not changed), unless it is there already.
func withSourceTestAddress(cfg *config.Config) *config.Config {
	addr := cfg.Migration.SourceTestAddress
	if slices.ContainsFunc(cfg.Plan.Unmigrated, func(a string) bool { return scenarios.Canonical(a) == scenarios.Canonical(addr) }) {
		return cfg
	}
	c := *cfg
	c.Plan.Unmigrated = append(slices.Clone(cfg.Plan.Unmigrated), addr)
	return &c
}
