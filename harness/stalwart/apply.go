package stalwart

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/splitcheck/splitcheck/harness/config"
)

// DefaultRestoreTimeout bounds restoring the snapshot after a failed apply.
const DefaultRestoreTimeout = 2 * time.Minute

// ApplyOptions tune Apply.
type ApplyOptions struct {
	// SnapshotPath is where the snapshot is written before the first change; the
	// file must not exist. Required unless DryRun.
	SnapshotPath string
	// DryRun computes the plan and writes nothing.
	DryRun bool
	// Confirmed allows destructive changes against a server that is not Hermetic (--yes).
	Confirmed bool
	// Hermetic marks a throwaway server: destructive changes need no confirmation.
	Hermetic bool
	// Verify re-reads the server after applying and checks the changes took
	// effect, and checks the public URL when one is wanted.
	Verify bool
	// RestoreTimeout bounds restoring the snapshot after a failure; 0 means DefaultRestoreTimeout.
	RestoreTimeout time.Duration
	// KnownRelaySecret is the secret the existing relay route holds, when the
	// caller knows it: the server masks secrets, so a snapshot cannot read it and
	// a rollback could not put it back. The run command's rehearsal swap passes
	// the configured one, which the apply just before wrote. It is kept in the
	// snapshot (RelaySnapshot.BeforeSecret) so that a rollback restores it.
	KnownRelaySecret config.Secret
	// Now is the clock (default time.Now), for tests.
	Now func() time.Time
}

// ApplyResult is what Apply did.
type ApplyResult struct {
	Plan *Plan
	// Applied are the changes made, in order (empty for a dry run or nothing to do).
	Applied []Change
	// Snapshot and SnapshotPath are nil/empty when nothing was changed.
	Snapshot     *Snapshot
	SnapshotPath string
	// Restart lists changes that only take effect after a server restart.
	Restart []string
	// Verified and Pending are filled by Verify: checks that passed, and
	// restart-dependent settings not in effect yet.
	Verified []string
	Pending  []string
}

// applier carries one apply run.
type applier struct {
	c         *Client
	log       *slog.Logger
	snap      *Snapshot
	path      string
	domainIDs map[string]string
	applied   []Change
	kept      []string
}

// Apply brings the server to d: it reads the live state, writes a snapshot of
// every value it will change to opts.SnapshotPath, then changes them in
// dependency order (domains; allowRelaying; the relay route; the route
// expression; SystemSettings; test accounts; ReloadSettings; InvalidateCaches).
// A second Apply with the same d changes nothing but the relay's auth secret, which
// the server never reveals and so is written every time (Change.Unverifiable).
//
// If a step fails (an error reply, a timeout, a dropped connection, ctx
// cancelled), Apply restores the snapshot before returning an *ApplyError that
// says what it restored. Secrets never appear in errors or logs.
func (c *Client) Apply(ctx context.Context, d Desired, opts ApplyOptions) (*ApplyResult, error) {
	secrets := append(d.secrets(), c.Credentials.secrets()...)
	secrets = append(secrets, opts.KnownRelaySecret.Value())
	res, err := c.apply(ctx, d, opts)
	if res != nil && res.Snapshot != nil {
		secrets = append(secrets, res.Snapshot.secrets()...)
	}
	return res, redactErr(err, secrets)
}

func (c *Client) apply(ctx context.Context, d Desired, opts ApplyOptions) (*ApplyResult, error) {
	log := c.logger()
	now := time.Now
	if opts.Now != nil {
		now = opts.Now
	}
	st, err := c.ReadState(ctx, d)
	if err != nil {
		return nil, fmt.Errorf("apply: %w", err)
	}
	steps, notes, err := buildSteps(d, st)
	if err != nil {
		return nil, fmt.Errorf("apply: %w", err)
	}
	plan := planOf(c.URL, steps, notes)
	res := &ApplyResult{Plan: plan, Restart: plan.Restart}
	if opts.DryRun {
		return res, nil
	}
	if len(steps) == 0 {
		log.Info("stalwart: nothing to change")
		if opts.Verify {
			if err := c.verify(ctx, d, res); err != nil {
				return res, err
			}
		}
		return res, nil
	}
	if dc := plan.Destructive(); len(dc) > 0 && !opts.Hermetic && !opts.Confirmed {
		return res, &ConfirmationError{Changes: dc}
	}
	if opts.SnapshotPath == "" {
		return res, errors.New("apply: no snapshot path")
	}
	passwords := map[string]string{}
	for _, addr := range d.TestAccounts {
		if _, ok := st.Accounts[addr]; !ok {
			pw, err := GeneratePassword(DefaultPasswordLength)
			if err != nil {
				return res, fmt.Errorf("apply: %w", err)
			}
			passwords[addr] = pw
		}
	}
	snap := takeSnapshot(c.URL, d, st, steps, passwords, now())
	if r := snap.Relay; r != nil && r.Existed && isMaskedSecret(liveRelayFields(r.Before)["authSecret"]) {
		r.BeforeSecret = opts.KnownRelaySecret.Value()
	}
	if err := WriteSnapshotFile(opts.SnapshotPath, snap); err != nil {
		return res, fmt.Errorf("apply: %w", err)
	}
	res.Snapshot, res.SnapshotPath = snap, opts.SnapshotPath
	log.Info("stalwart: snapshot written", "path", opts.SnapshotPath, "changes", len(plan.Changes))

	a := &applier{c: c, log: log, snap: snap, path: opts.SnapshotPath, domainIDs: map[string]string{}}
	for dom, v := range st.Domains {
		a.domainIDs[dom] = v.ID
	}
	for _, s := range steps {
		log.Info("stalwart: applying", "step", s.name, "changes", len(s.changes))
		err := s.run(ctx, a)
		if err == nil {
			a.applied = append(a.applied, s.changes...)
			continue
		}
		res.Applied = a.applied
		log.Warn("stalwart: apply failed; restoring the snapshot", "step", s.name, "err", err)
		ae := &ApplyError{Step: s.name, Err: err}
		timeout := opts.RestoreTimeout
		if timeout <= 0 {
			timeout = DefaultRestoreTimeout
		}
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), timeout)
		rb, rerr := c.restore(rctx, snap)
		cancel()
		if rb != nil {
			ae.Restored, ae.Kept = rb.Changes, rb.Kept
		}
		ae.RestoreErr = rerr
		return res, ae
	}
	res.Applied = a.applied
	if opts.Verify {
		if err := c.verify(ctx, d, res); err != nil {
			return res, err
		}
	}
	return res, nil
}

// verify re-reads the server: the plan must now be empty but for the secrets the
// server never reveals (Change.Unverifiable), and the public URL (a
// restart-dependent setting) is checked when wanted.
func (c *Client) verify(ctx context.Context, d Desired, res *ApplyResult) error {
	p, err := c.Plan(ctx, d)
	if err != nil {
		return fmt.Errorf("verify: %w", err)
	}
	if p.Verifiable() > 0 {
		var items []string
		for _, ch := range p.Changes {
			if ch.Op != OpRun && !ch.Unverifiable {
				items = append(items, ch.Summary())
			}
		}
		return fmt.Errorf("verify: the server does not hold what apply wrote: %s", strings.Join(items, "; "))
	}
	if p.Writes() == 0 {
		res.Verified = append(res.Verified, "the server holds every value apply wrote (a fresh plan is empty)")
	} else {
		res.Verified = append(res.Verified, "the server holds every value apply wrote that it reveals (a fresh plan is empty but for masked secrets)")
	}
	for _, ch := range p.Changes {
		if ch.Unverifiable {
			res.Pending = append(res.Pending, fmt.Sprintf("%s %s %s was written but cannot be read back (the server masks secrets): "+
				"splitcheck verify's source checks show whether the relay is accepted", ch.Object, ch.Name, ch.Field))
		}
	}
	for _, r := range res.Restart {
		if strings.HasSuffix(r, "proxyTrustedNetworks") {
			res.Pending = append(res.Pending, "proxyTrustedNetworks is stored, but listeners copy it when they start: "+
				"restart Stalwart; the API cannot show whether it is in effect (splitcheck verify's headerless check does)")
		}
	}
	if d.PublicURL != "" {
		chk, err := c.CheckPublicURL(ctx, "", d.PublicURL)
		if err != nil {
			return fmt.Errorf("verify: %w", err)
		}
		if chk.OK {
			res.Verified = append(res.Verified, "JMAP autodiscovery advertises "+chk.APIURL)
		} else {
			res.Pending = append(res.Pending, fmt.Sprintf("JMAP autodiscovery advertises %s, not %s: set STALWART_PUBLIC_URL=%s and restart Stalwart",
				chk.APIURL, d.PublicURL, d.PublicURL))
		}
	}
	return nil
}

func (a *applier) saveSnapshot() error {
	if err := updateSnapshotFile(a.path, a.snap); err != nil {
		a.log.Error("stalwart: could not record created ids in the snapshot", "err", err)
		return err
	}
	return nil
}

func (a *applier) createDomains(ctx context.Context, names []string) error {
	req := SetRequest{Create: map[string]any{}}
	cids := map[string]string{}
	for i, dom := range names {
		cid := fmt.Sprintf("d%d", i)
		cids[cid] = dom
		req.Create[cid] = map[string]any{"name": dom}
	}
	resp, err := a.c.Set(ctx, ObjDomain, req)
	if resp != nil {
		for cid, dom := range cids {
			if id, ok := resp.CreatedID(cid); ok {
				a.domainIDs[dom] = id
				for i := range a.snap.Domains {
					if a.snap.Domains[i].Name == dom {
						a.snap.Domains[i].ID = id
					}
				}
			}
		}
		if serr := a.saveSnapshot(); serr != nil && err == nil {
			err = serr
		}
	}
	return err
}

func (a *applier) allowRelaying(ctx context.Context, names []string) error {
	req := SetRequest{Update: map[string]any{}}
	for _, dom := range names {
		id, ok := a.domainIDs[dom]
		if !ok {
			return fmt.Errorf("domain %s has no id", dom)
		}
		req.Update[id] = map[string]any{"allowRelaying": true}
	}
	_, err := a.c.Set(ctx, ObjDomain, req)
	return err
}

func (a *applier) createRelay(ctx context.Context, obj map[string]any) error {
	resp, err := a.c.Set(ctx, ObjMtaRoute, SetRequest{Create: map[string]any{"r0": obj}})
	if resp != nil {
		if id, ok := resp.CreatedID("r0"); ok && a.snap.Relay != nil {
			a.snap.Relay.ID = id
			if serr := a.saveSnapshot(); serr != nil && err == nil {
				err = serr
			}
		}
	}
	return err
}

func (a *applier) update(ctx context.Context, object, id string, patch map[string]any) error {
	for k, v := range patch {
		if isMaskedSecret(v) {
			// The server's mask read back from a get: writing it would replace a
			// real secret with "****".
			return fmt.Errorf("refusing to write %s %s %s: its secret is the server's mask %q, not a secret", object, id, k, maskedSecret)
		}
	}
	_, err := a.c.Set(ctx, object, SetRequest{Update: map[string]any{id: patch}})
	return err
}

func (a *applier) createAccounts(ctx context.Context, addrs []string) error {
	req := SetRequest{Create: map[string]any{}}
	cids := map[string]string{}
	for i, addr := range addrs {
		local, dom, _ := strings.Cut(addr, "@")
		acct, ok := a.snap.Account(addr)
		if !ok || acct.Password == "" {
			return fmt.Errorf("account %s: no password in the snapshot", addr)
		}
		did, ok := a.domainIDs[dom]
		if !ok {
			return fmt.Errorf("account %s: domain %s has no id", addr, dom)
		}
		cid := fmt.Sprintf("a%d", i)
		cids[cid] = addr
		req.Create[cid] = map[string]any{
			"@type":            accountVariantUser,
			"name":             local,
			"domainId":         did,
			"credentials":      ListOf(map[string]any{"@type": "Password", "secret": acct.Password}),
			"roles":            map[string]any{"@type": "User"},
			"permissions":      map[string]any{"@type": "Inherit"},
			"encryptionAtRest": map[string]any{"@type": "Disabled"},
		}
	}
	resp, err := a.c.Set(ctx, ObjAccount, req)
	if resp != nil {
		for cid, addr := range cids {
			if id, ok := resp.CreatedID(cid); ok {
				for i := range a.snap.Accounts {
					if a.snap.Accounts[i].Address == addr {
						a.snap.Accounts[i].ID = id
					}
				}
			}
		}
		if serr := a.saveSnapshot(); serr != nil && err == nil {
			err = serr
		}
	}
	return err
}

func (a *applier) action(ctx context.Context, action string) error {
	_, err := a.c.Set(ctx, ObjAction, SetRequest{Create: map[string]any{"x0": map[string]any{"@type": action}}})
	return err
}

// DefaultPasswordLength is the length of generated test-account passwords.
const DefaultPasswordLength = 28

const passwordAlphabet = "ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789-_.!"

// GeneratePassword returns a random password of n characters (n >= 24) from
// crypto/rand, with upper and lower case letters, digits and punctuation, which
// Stalwart's strength check (zxcvbn score 3) accepts.
func GeneratePassword(n int) (string, error) {
	if n < 24 {
		n = 24
	}
	for {
		b := make([]byte, n)
		if _, err := rand.Read(b); err != nil {
			return "", fmt.Errorf("generate password: %w", err)
		}
		// 256 is not a multiple of len(alphabet): reject the biased tail.
		out := make([]byte, 0, n)
		limit := 256 - 256%len(passwordAlphabet)
		for len(out) < n {
			for _, x := range b {
				if int(x) < limit && len(out) < n {
					out = append(out, passwordAlphabet[int(x)%len(passwordAlphabet)])
				}
			}
			if len(out) < n {
				if _, err := rand.Read(b); err != nil {
					return "", fmt.Errorf("generate password: %w", err)
				}
			}
		}
		pw := string(out)
		if strings.ContainsAny(pw, "ABCDEFGHJKLMNPQRSTUVWXYZ") && strings.ContainsAny(pw, "abcdefghijkmnopqrstuvwxyz") &&
			strings.ContainsAny(pw, "23456789") && strings.ContainsAny(pw, "-_.!") {
			return pw, nil
		}
	}
}
