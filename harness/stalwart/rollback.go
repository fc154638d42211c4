package stalwart

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
)

// RollbackOptions tune Rollback.
type RollbackOptions struct {
	// DryRun lists what rollback would change and writes nothing.
	DryRun bool
	// Confirmed allows destructive changes against a server that is not Hermetic (--yes).
	Confirmed bool
	// Hermetic marks a throwaway server.
	Hermetic bool
}

// RollbackResult is what a rollback changed (or, for a dry run, would change).
type RollbackResult struct {
	Changes []Change
	// Kept lists what could not or must not be undone, and why.
	Kept []string
}

// Rollback restores what snap recorded: the route expression, the relay route's
// fields, allowRelaying and proxyTrustedNetworks get their old values back, and
// the domains, relay route and test accounts apply created are destroyed. It
// never destroys an object apply did not create: one found by name is destroyed
// only when its id is the one recorded, or, when apply did not live to record
// it, when it was created after the snapshot was taken. Rollback compares with
// the live state first, so a second run changes nothing.
func (c *Client) Rollback(ctx context.Context, snap *Snapshot, opts RollbackOptions) (*RollbackResult, error) {
	secrets := append(snap.secrets(), c.Credentials.secrets()...)
	st, err := c.ReadState(ctx, snap.desired())
	if err != nil {
		return nil, redactErr(fmt.Errorf("rollback: %w", err), secrets)
	}
	steps, kept := restoreSteps(snap, st, false)
	res := &RollbackResult{Kept: kept}
	for _, s := range steps {
		res.Changes = append(res.Changes, s.changes...)
	}
	if opts.DryRun || len(steps) == 0 {
		return res, nil
	}
	var destructive []Change
	for _, ch := range res.Changes {
		if ch.Destructive {
			destructive = append(destructive, ch)
		}
	}
	if len(destructive) > 0 && !opts.Hermetic && !opts.Confirmed {
		return res, &ConfirmationError{Changes: destructive}
	}
	done, kept2, err := c.runRestore(ctx, steps)
	res.Changes, res.Kept = done, append(res.Kept, kept2...)
	return res, redactErr(err, secrets)
}

// restore is Rollback without confirmation, for a failed apply: it tries every
// step, and reports everything that failed.
func (c *Client) restore(ctx context.Context, snap *Snapshot) (*RollbackResult, error) {
	st, err := c.ReadState(ctx, snap.desired())
	if err != nil {
		return nil, fmt.Errorf("restore: %w", err)
	}
	steps, kept := restoreSteps(snap, st, true)
	done, kept2, err := c.runRestore(ctx, steps)
	return &RollbackResult{Changes: done, Kept: append(kept, kept2...)}, err
}

func (c *Client) runRestore(ctx context.Context, steps []*step) ([]Change, []string, error) {
	a := &applier{c: c, log: c.logger()}
	var errs []error
	var done []Change
	for _, s := range steps {
		if err := s.run(ctx, a); err != nil {
			var se *SetError
			if s.name == StepDomains && errors.As(err, &se) && se.Type == "objectIsLinked" {
				a.kept = append(a.kept, fmt.Sprintf("kept %s: %v", s.changes[0].Name, se))
				continue
			}
			c.logger().Warn("stalwart: restore step failed", "step", s.name, "err", err)
			errs = append(errs, fmt.Errorf("restore %s: %w", s.name, err))
			continue
		}
		done = append(done, s.changes...)
	}
	return done, a.kept, errors.Join(errs...)
}

// desired is the query shape for reading what the snapshot names.
func (s *Snapshot) desired() Desired {
	d := Desired{Relay: Relay{Name: RelayRouteName}}
	for _, dom := range s.Domains {
		d.Domains = append(d.Domains, dom.Name)
	}
	if s.Relay != nil {
		d.Relay.Name = s.Relay.Name
	}
	for _, a := range s.Accounts {
		d.TestAccounts = append(d.TestAccounts, strings.ToLower(a.Address))
	}
	return d
}

// createdAfter reports whether an object's createdAt is surely after the
// snapshot. The server stores whole seconds, so an object created in the same
// second as the snapshot is not surely after it.
func createdAfter(createdAt string, taken time.Time) bool {
	t, err := time.Parse(time.RFC3339, createdAt)
	if err != nil {
		return false
	}
	return t.After(taken.Truncate(time.Second))
}

// restoreSteps computes rollback's steps in the order finalize.md gives: route
// expression, relay route, test accounts, allowRelaying, proxy trust, created
// domains; then ReloadSettings and InvalidateCaches.
//
// An object the snapshot says apply creates is destroyed when its id is the one
// recorded. When no id was recorded (the reply to the create was lost), it is
// destroyed only if inApply (restoring moments after apply read the state and
// found no such object) or if its createdAt is surely after the snapshot;
// otherwise it is kept and reported.
func restoreSteps(snap *Snapshot, st *State, inApply bool) ([]*step, []string) {
	var steps []*step
	var kept []string
	owned := func(what, recordedID, liveID, createdAt string) bool {
		switch {
		case recordedID != "" && recordedID == liveID:
			return true
		case recordedID != "":
			kept = append(kept, fmt.Sprintf("kept %s (id %s): apply created id %s, not this one", what, liveID, recordedID))
			return false
		case inApply || createdAfter(createdAt, snap.TakenAt):
			return true
		}
		kept = append(kept, fmt.Sprintf("kept %s (id %s): apply did not record creating it and it may be older than the snapshot; "+
			"delete it by hand if apply made it", what, liveID))
		return false
	}

	// Route expression.
	if snap.Route != nil {
		var before Expression
		hasBefore := len(snap.Route.Before) > 0 && json.Unmarshal(snap.Route.Before, &before) == nil
		if hasBefore && (len(st.RouteRaw) == 0 || !st.Route.Equal(before)) {
			steps = append(steps, &step{name: StepRoute,
				changes: []Change{{Step: StepRoute, Object: ObjOutbound, ID: SingletonID, Name: SingletonID, Op: OpUpdate,
					Field: "route", Current: compactJSON(st.RouteRaw), Wanted: before.String(),
					CLI: cliCommand("update", ObjOutbound, SingletonID, []cliField{{"route", before.String()}})}},
				run: func(ctx context.Context, a *applier) error {
					return a.update(ctx, ObjOutbound, SingletonID, map[string]any{"route": before})
				}})
		}
	}

	// Relay route.
	if r := snap.Relay; r != nil && st.Relay != nil {
		if !r.Existed {
			if owned("route "+r.Name, r.ID, st.Relay.ID, st.Relay.CreatedAt) {
				steps = append(steps, destroyStep(StepRelay, ObjMtaRoute, st.Relay.ID, r.Name))
			}
		} else {
			before := liveRelayFields(r.Before)
			live := liveRelayFields(st.RelayRaw)
			patch := map[string]any{}
			s := &step{name: StepRelay}
			for _, k := range []string{"address", "port", "protocol", "implicitTls", "allowInvalidCerts", "authUsername", "authSecret"} {
				bv, bok := before[k]
				lv, lok := live[k]
				if k == "authSecret" && isMaskedSecret(bv) && r.BeforeSecret != "" {
					// Masked when read, but the caller of apply knew it.
					bv = secretValue(r.BeforeSecret)
					if !r.SecretWritten && isMaskedSecret(lv) {
						continue // apply did not touch it
					}
				} else if k == "authSecret" && isMaskedSecret(bv) {
					// The secret before apply was never readable: it cannot be put
					// back, and the mask must never be written as a secret.
					if r.SecretWritten || !isMaskedSecret(lv) {
						kept = append(kept, fmt.Sprintf("kept route %s (id %s) authSecret: apply replaced a secret the server never "+
							"reveals (it reads back as %s), so it cannot be restored; set it again by hand: %s", r.Name, st.Relay.ID, maskedSecret,
							cliCommand("update", ObjMtaRoute, st.Relay.ID, []cliField{{k, `{"@type":"Value","secret":"<the old secret>"}`}})))
					}
					continue
				}
				if bok == lok && jsonEqual(bv, lv) {
					continue
				}
				if !bok {
					bv = nil
					if k == "authSecret" {
						bv = noSecret()
					}
					if isUnset(k, lv) {
						continue
					}
				}
				patch[k] = bv
				cur, want, cli := jsonText(lv), jsonText(bv), jsonOrPlain(bv)
				if k == "authSecret" {
					cur, want, cli = redactedJSON(lv), redactedJSON(bv), redactedJSON(bv)
				}
				s.changes = append(s.changes, Change{Step: StepRelay, Object: ObjMtaRoute, ID: st.Relay.ID, Name: r.Name, Op: OpUpdate,
					Field: k, Current: cur, Wanted: want,
					CLI: cliCommand("update", ObjMtaRoute, st.Relay.ID, []cliField{{k, cli}})})
			}
			if len(patch) > 0 {
				id := st.Relay.ID
				s.run = func(ctx context.Context, a *applier) error { return a.update(ctx, ObjMtaRoute, id, patch) }
				steps = append(steps, s)
			}
		}
	}

	// Test accounts apply created.
	for _, acct := range snap.Accounts {
		live, ok := st.Accounts[strings.ToLower(acct.Address)]
		if !ok {
			continue
		}
		if owned("account "+acct.Address, acct.ID, live.ID, live.CreatedAt) {
			steps = append(steps, destroyStep(StepAccounts, ObjAccount, live.ID, acct.Address))
		}
	}

	// allowRelaying on domains that existed.
	var relayBack []DomainSnapshot
	for _, dom := range snap.Domains {
		if live, ok := st.Domains[dom.Name]; ok && dom.Existed && live.AllowRelaying != dom.AllowRelaying {
			relayBack = append(relayBack, DomainSnapshot{Name: dom.Name, ID: live.ID, AllowRelaying: dom.AllowRelaying})
		}
	}
	if len(relayBack) > 0 {
		s := &step{name: StepAllowRelaying}
		req := SetRequest{Update: map[string]any{}}
		for _, dom := range relayBack {
			s.changes = append(s.changes, Change{Step: StepAllowRelaying, Object: ObjDomain, ID: dom.ID, Name: dom.Name, Op: OpUpdate,
				Field: "allowRelaying", Current: jsonText(!dom.AllowRelaying), Wanted: jsonText(dom.AllowRelaying),
				CLI: cliCommand("update", ObjDomain, dom.ID, []cliField{{"allowRelaying", jsonText(dom.AllowRelaying)}})})
			req.Update[dom.ID] = map[string]any{"allowRelaying": dom.AllowRelaying}
		}
		s.run = func(ctx context.Context, a *applier) error {
			_, err := a.c.Set(ctx, ObjDomain, req)
			return err
		}
		steps = append(steps, s)
	}

	// Proxy trust.
	if sys := snap.System; sys != nil {
		have := NormalizeNetworks(setKeys(st.System.ProxyTrustedNetworks))
		want := NormalizeNetworks(sys.ProxyTrustedNetworks)
		if !slices.Equal(have, want) {
			wantSet := SetOf(sys.ProxyTrustedNetworks...)
			steps = append(steps, &step{name: StepSystem,
				changes: []Change{{Step: StepSystem, Object: ObjSystemSettings, ID: SingletonID, Name: SingletonID, Op: OpUpdate,
					Field: "proxyTrustedNetworks", Current: jsonText(SetOf(have...)), Wanted: jsonText(wantSet), Restart: true,
					CLI: cliCommand("update", ObjSystemSettings, SingletonID, []cliField{{"proxyTrustedNetworks", jsonText(wantSet)}})}},
				run: func(ctx context.Context, a *applier) error {
					return a.update(ctx, ObjSystemSettings, SingletonID, map[string]any{"proxyTrustedNetworks": wantSet})
				}})
		}
		if sys.DefaultHostname == "" && st.System.DefaultHostname != "" {
			kept = append(kept, fmt.Sprintf("kept SystemSettings.defaultHostname %q: apply set it on a server whose settings were never saved, "+
				"and Stalwart cannot unset it", st.System.DefaultHostname))
		}
		if sys.DefaultDomainID == "" && st.System.DefaultDomainID != "" {
			kept = append(kept, fmt.Sprintf("kept SystemSettings.defaultDomainId %q: Stalwart cannot unset it", st.System.DefaultDomainID))
		}
	}

	// Domains apply created.
	for _, dom := range snap.Domains {
		live, ok := st.Domains[dom.Name]
		if !ok || dom.Existed {
			continue
		}
		if live.ID == st.System.DefaultDomainID {
			kept = append(kept, fmt.Sprintf("kept domain %s (id %s): SystemSettings.defaultDomainId refers to it", dom.Name, live.ID))
			continue
		}
		if owned("domain "+dom.Name, dom.ID, live.ID, live.CreatedAt) {
			steps = append(steps, destroyStep(StepDomains, ObjDomain, live.ID, dom.Name))
		}
	}

	reload, invalidate := false, false
	for _, s := range steps {
		switch s.name {
		case StepRoute, StepRelay, StepSystem:
			reload = true
		case StepAccounts:
			invalidate = true
		}
	}
	if reload {
		steps = append(steps, actionStep(StepReload, ActionReload))
	}
	if invalidate {
		steps = append(steps, actionStep(StepInvalidate, ActionInvalidate))
	}
	return steps, kept
}

func destroyStep(name, object, id, label string) *step {
	return &step{name: name,
		changes: []Change{{Step: name, Object: object, ID: id, Name: label, Op: OpDestroy, Destructive: true,
			CLI: cliCommand("delete", object, id, nil)}},
		run: func(ctx context.Context, a *applier) error {
			_, err := a.c.Set(ctx, object, SetRequest{Destroy: []string{id}})
			return err
		}}
}
