package stalwart

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/splitcheck/splitcheck/harness/config"
	"github.com/splitcheck/splitcheck/harness/stalwart/stalwarttest"
)

func steps(changes []Change) []string {
	var out []string
	for _, c := range changes {
		out = append(out, c.Step+"/"+c.Op+"/"+c.Name+"/"+c.Field)
	}
	return out
}

func TestPlanShowsEveryChangeAndWritesNothing(t *testing.T) {
	f := newFixture(t, "")
	before := f.srv.Dump()
	p, err := f.c.Plan(context.Background(), f.d)
	if err != nil {
		t.Fatalf("Plan: %v", err)
	}
	want := []string{
		"domains/create/migrated.test/",
		"allowRelaying/update/example.org/allowRelaying",
		"allowRelaying/update/migrated.test/allowRelaying",
		"relay/create/source/",
		"route/update/singleton/route",
		"systemSettings/update/singleton/proxyTrustedNetworks",
		"accounts/create/probe@migrated.test/",
		"reload/run/ReloadSettings/",
		"invalidateCaches/run/InvalidateCaches/",
	}
	if got := steps(p.Changes); !slices.Equal(got, want) {
		t.Errorf("plan steps =\n%q\nwant\n%q", got, want)
	}
	cli := map[string]string{}
	for _, c := range p.Changes {
		cli[c.Step+"/"+c.Name] = c.CLI
	}
	for key, wantCLI := range map[string]string{
		"domains/migrated.test":       "stalwart-cli create Domain --field name=migrated.test",
		"allowRelaying/example.org":   "stalwart-cli update Domain b --field allowRelaying=true",
		"allowRelaying/migrated.test": "stalwart-cli update Domain '<id of migrated.test>' --field allowRelaying=true",
		"route/singleton": `stalwart-cli update MtaOutboundStrategy singleton --field 'route={"match":{"0":{"if":"is_local_address(rcpt)","then":"'\''local'\''"},` +
			`"1":{"if":"is_local_domain(rcpt_domain)","then":"'\''source'\''"}},"else":"'\''mx'\''"}'`,
		"systemSettings/singleton": `stalwart-cli update SystemSettings singleton --field 'proxyTrustedNetworks={"203.0.113.10/32":true}'`,
		"reload/ReloadSettings":    "stalwart-cli create Action/ReloadSettings",
	} {
		if cli[key] != wantCLI {
			t.Errorf("CLI for %s =\n%s\nwant\n%s", key, cli[key], wantCLI)
		}
	}
	if !strings.Contains(cli["relay/source"], "create MtaRoute/Relay --field name=source --field address=source.internal.example.org --field port=25") {
		t.Errorf("relay CLI = %s", cli["relay/source"])
	}
	var rc Change
	for _, c := range p.Changes {
		if c.Step == StepRoute {
			rc = c
		}
	}
	if rc.Current != `{"else":"'mx'","match":{"0":{"if":"is_local_domain(rcpt_domain)","then":"'local'"}}}` || rc.Destructive {
		t.Errorf("route change current = %s (destructive %v); want the live default, not destructive", rc.Current, rc.Destructive)
	}
	if len(p.Restart) != 1 || !strings.Contains(p.Restart[0], "proxyTrustedNetworks") {
		t.Errorf("Restart = %v; want proxyTrustedNetworks", p.Restart)
	}
	if after := f.srv.Dump(); after != before || f.setCalls() != 0 {
		t.Errorf("Plan wrote to the server (%d /set calls)", f.setCalls())
	}
	f.checkNoViolations(t)
}

func TestApplyIdempotentAndRollbackRestoresExactly(t *testing.T) {
	f := newFixture(t, "")
	ctx := context.Background()
	before := f.srv.Dump()
	res, err := f.c.Apply(ctx, f.d, ApplyOptions{SnapshotPath: f.snapPath("s1.json"), Hermetic: true, Verify: true})
	if err != nil {
		t.Fatalf("Apply: %v", err)
	}
	if len(res.Applied) != 9 {
		t.Errorf("applied %d changes; want 9: %q", len(res.Applied), steps(res.Applied))
	}
	// What the server holds now.
	_, route := f.srv.Find("x:MtaRoute", "name", "source")
	if route == nil || route["address"] != "source.internal.example.org" || route["@type"] != "Relay" || route["authUsername"] != "relay-user" {
		t.Errorf("source route = %v", route)
	}
	_, dom := f.srv.Find("x:Domain", "name", "migrated.test")
	if dom == nil || dom["allowRelaying"] != true {
		t.Errorf("migrated.test = %v; want created with allowRelaying", dom)
	}
	sys, _ := f.srv.Singleton("x:SystemSettings")
	if nets, _ := sys["proxyTrustedNetworks"].(map[string]any); len(nets) != 1 || nets["203.0.113.10"] != true {
		t.Errorf("proxyTrustedNetworks = %v; want 203.0.113.10", sys["proxyTrustedNetworks"])
	}
	acct, ok := res.Snapshot.Account("probe@migrated.test")
	if !ok || len(acct.Password) < 24 || acct.ID == "" {
		t.Errorf("snapshot account = %+v; want a recorded id and a 24+ character password", acct)
	}
	if got := f.srv.Actions(); !slices.Equal(got, []string{"ReloadSettings", "InvalidateCaches"}) {
		t.Errorf("actions = %v; want ReloadSettings then InvalidateCaches", got)
	}
	// The relay's secret was written, as the server holds it (a get shows "****").
	if sec, _ := route["authSecret"].(map[string]any); sec["secret"] != testRelaySecret {
		t.Errorf("stored authSecret = %v; want the configured secret", route["authSecret"])
	}
	if len(res.Verified) == 0 || len(res.Pending) != 2 || !strings.Contains(res.Pending[0], "authSecret was written but cannot be read back") {
		t.Errorf("verify: verified %v pending %v; want the re-read verified, the masked relay secret and proxy trust pending", res.Verified, res.Pending)
	}

	// Second apply: nothing changes but the relay secret, which the server never
	// reveals, so it is written again (and said so).
	sets := f.setCalls()
	res2, err := f.c.Apply(ctx, f.d, ApplyOptions{SnapshotPath: f.snapPath("s2.json"), Hermetic: true})
	if err != nil {
		t.Fatalf("second Apply: %v", err)
	}
	got := steps(res2.Plan.Changes)
	if !slices.Equal(got, []string{"relay/update/source/authSecret", "reload/run/ReloadSettings/"}) || res2.Plan.Verifiable() != 0 ||
		!res2.Plan.Changes[0].Unverifiable || f.setCalls() != sets+2 {
		t.Errorf("second apply: plan %q (%d verifiable), %d /set calls; want only the unverifiable relay secret", got, res2.Plan.Verifiable(), f.setCalls()-sets)
	}
	if notes := strings.Join(res2.Plan.Notes, "\n"); !strings.Contains(notes, "authSecret the server does not reveal") {
		t.Errorf("second apply notes = %q; want the masked secret explained", notes)
	}

	// Rollback from the file, twice.
	snap, err := ReadSnapshotFile(f.snapPath("s1.json"))
	if err != nil {
		t.Fatal(err)
	}
	rb, err := f.c.Rollback(ctx, snap, RollbackOptions{Hermetic: true})
	if err != nil {
		t.Fatalf("Rollback: %v", err)
	}
	if after := f.srv.Dump(); after != before {
		t.Errorf("state after rollback differs from before apply:\nbefore %s\nafter %s", before, after)
	}
	if len(rb.Kept) != 0 {
		t.Errorf("rollback kept %v; want nothing", rb.Kept)
	}
	sets = f.setCalls()
	rb2, err := f.c.Rollback(ctx, snap, RollbackOptions{Hermetic: true})
	if err != nil || len(rb2.Changes) != 0 || f.setCalls() != sets {
		t.Errorf("second rollback: %v, changes %q; want nothing", err, steps(rb2.Changes))
	}
	f.checkNoViolations(t)
}

func TestRouteExpressionBytes(t *testing.T) {
	f := newFixture(t, "")
	if _, err := f.c.Apply(context.Background(), f.d, ApplyOptions{SnapshotPath: f.snapPath("s.json"), Hermetic: true}); err != nil {
		t.Fatal(err)
	}
	const want = `{"update":{"singleton":{"route":{"match":{"0":{"if":"is_local_address(rcpt)","then":"'local'"},` +
		`"1":{"if":"is_local_domain(rcpt_domain)","then":"'source'"}},"else":"'mx'"}}}}`
	var got []string
	for _, c := range f.srv.Calls() {
		if c.Name == "x:MtaOutboundStrategy/set" {
			got = append(got, string(c.Args))
		}
	}
	if len(got) != 1 || got[0] != want {
		t.Errorf("route writes =\n%q\nwant exactly\n%q", got, want)
	}
}

func TestExpressionQuotesEveryRouteName(t *testing.T) {
	e := SplitDeliveryRoute("it's")
	b, _ := json.Marshal(e)
	if !strings.Contains(string(b), `"then":"'it\\'s'"`) || !strings.Contains(string(b), `"else":"'mx'"`) {
		t.Errorf("route = %s; want quoted names with the quote escaped", b)
	}
	for _, r := range append(e.Match, Rule{Then: e.Else}) {
		if !strings.HasPrefix(r.Then, "'") || !strings.HasSuffix(r.Then, "'") {
			t.Errorf("route name %s is not quoted", r.Then)
		}
	}
}

func TestSnapshotFileFirstAndPrivate(t *testing.T) {
	f := newFixture(t, "")
	// The fake's first write fails; the snapshot must already be on disk with the live route.
	f.srv.InjectFault(stalwarttest.Fault{Kind: stalwarttest.FaultSetError, Method: "x:Domain/set"})
	path := f.snapPath("s.json")
	_, err := f.c.Apply(context.Background(), f.d, ApplyOptions{SnapshotPath: path, Hermetic: true})
	var ae *ApplyError
	if !errors.As(err, &ae) || ae.Step != StepDomains {
		t.Fatalf("Apply = %v; want an ApplyError at the domains step", err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatalf("snapshot file: %v", err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("snapshot mode = %v; want 0600", fi.Mode().Perm())
	}
	snap, err := ReadSnapshotFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var before Expression
	if snap.Route == nil || json.Unmarshal(snap.Route.Before, &before) != nil || !before.Equal(DefaultRoute()) {
		t.Errorf("snapshot route = %+v; want the live (default) route", snap.Route)
	}
	if snap.System == nil || len(snap.System.ProxyTrustedNetworks) != 0 || snap.System.DefaultHostname != "mx.example.org" {
		t.Errorf("snapshot system settings = %+v", snap.System)
	}
	// A second apply must not overwrite it.
	_, err = f.c.Apply(context.Background(), f.d, ApplyOptions{SnapshotPath: path, Hermetic: true})
	if !errors.Is(err, ErrSnapshotExists) {
		t.Errorf("apply over an existing snapshot = %v; want ErrSnapshotExists", err)
	}
	if f.setCalls() != 1 {
		t.Errorf("%d /set calls; want only the one that failed", f.setCalls())
	}
}

func TestDryRunWritesNothing(t *testing.T) {
	f := newFixture(t, "")
	path := f.snapPath("s.json")
	res, err := f.c.Apply(context.Background(), f.d, ApplyOptions{SnapshotPath: path, DryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Plan.Changes) != 9 || len(res.Applied) != 0 || f.setCalls() != 0 {
		t.Errorf("dry run: plan %d changes, applied %d, %d /set calls; want 9, 0, 0", len(res.Plan.Changes), len(res.Applied), f.setCalls())
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("dry run wrote a snapshot")
	}
}

func TestFreshServerFirstSystemSettingsWrite(t *testing.T) {
	f := newFixture(t, fresh)
	ctx := context.Background()
	noHost := f.d
	noHost.DefaultHostname = ""
	if _, err := f.c.Plan(ctx, noHost); !errors.Is(err, ErrNoDefaultHostname) || !strings.Contains(err.Error(), "default_hostname") {
		t.Errorf("plan without a hostname on a fresh server = %v; want ErrNoDefaultHostname naming migration.default_hostname", err)
	}
	before := f.srv.Dump()
	res, err := f.c.Apply(ctx, f.d, ApplyOptions{SnapshotPath: f.snapPath("s.json"), Hermetic: true})
	if err != nil {
		t.Fatalf("Apply: %v", err)
	}
	var fields []string
	for _, c := range res.Applied {
		if c.Step == StepSystem {
			fields = append(fields, c.Field)
		}
	}
	if !slices.Equal(fields, []string{"proxyTrustedNetworks", "defaultHostname", "defaultDomainId"}) {
		t.Errorf("system settings fields written = %v; want the networks with defaultHostname and defaultDomainId", fields)
	}
	sys, stored := f.srv.Singleton("x:SystemSettings")
	did, _ := f.srv.Find("x:Domain", "name", "example.org")
	if !stored || sys["defaultHostname"] != "mx.example.org" || sys["defaultDomainId"] != did {
		t.Errorf("system settings = %v (stored %v); want hostname and the first domain", sys, stored)
	}
	rb, err := f.c.Rollback(ctx, res.Snapshot, RollbackOptions{Hermetic: true})
	if err != nil {
		t.Fatalf("Rollback: %v", err)
	}
	kept := strings.Join(rb.Kept, "\n")
	for _, want := range []string{"defaultHostname", "defaultDomainId", "kept domain example.org"} {
		if !strings.Contains(kept, want) {
			t.Errorf("rollback kept = %q; want it to say %q", kept, want)
		}
	}
	if _, d := f.srv.Find("x:Domain", "name", "migrated.test"); d != nil {
		t.Errorf("migrated.test survived rollback")
	}
	if f.srv.Dump() == before {
		t.Errorf("state equals the fresh state; want the kept settings to remain")
	}
	f.checkNoViolations(t)
}

func TestExistingRelayNeedsConfirmationAndIsRestored(t *testing.T) {
	f := newFixture(t, "")
	ctx := context.Background()
	if _, err := f.srv.Seed("x:MtaRoute", map[string]any{"@type": "Relay", "name": "source", "address": "old-source.example.org",
		"port": 2525, "protocol": "lmtp", "authUsername": "old-user",
		"authSecret": map[string]any{"@type": "Value", "secret": "Old-Relay-Secret-55"}}); err != nil {
		t.Fatal(err)
	}
	if err := f.srv.SetSingleton("x:SystemSettings", map[string]any{"proxyTrustedNetworks": map[string]any{"198.51.100.0/24": true}}); err != nil {
		t.Fatal(err)
	}
	before := f.srv.Dump()
	_, err := f.c.Apply(ctx, f.d, ApplyOptions{SnapshotPath: f.snapPath("s1.json")})
	var ce *ConfirmationError
	if !errors.As(err, &ce) || !errors.Is(err, ErrNeedsConfirmation) {
		t.Fatalf("apply over an existing relay without --yes = %v; want a ConfirmationError", err)
	}
	var fields []string
	for _, c := range ce.Changes {
		fields = append(fields, c.Step+"/"+c.Field)
	}
	if !slices.Contains(fields, "relay/address") || !slices.Contains(fields, "systemSettings/proxyTrustedNetworks") {
		t.Errorf("destructive changes = %v; want the relay address and the trusted networks", fields)
	}
	if strings.Contains(err.Error(), "Old-Relay-Secret-55") || strings.Contains(err.Error(), testRelaySecret) {
		t.Errorf("confirmation error shows a secret: %v", err)
	}
	if f.setCalls() != 0 || f.srv.Dump() != before {
		t.Fatalf("refused apply changed the server")
	}
	res, err := f.c.Apply(ctx, f.d, ApplyOptions{SnapshotPath: f.snapPath("s2.json"), Confirmed: true})
	if err != nil {
		t.Fatalf("Apply --yes: %v", err)
	}
	if _, r := f.srv.Find("x:MtaRoute", "name", "source"); r["address"] != "source.internal.example.org" || r["protocol"] != "smtp" {
		t.Errorf("relay after apply = %v", r)
	}
	// Rollback destroys what apply created: needs confirmation too.
	if _, err := f.c.Rollback(ctx, res.Snapshot, RollbackOptions{}); !errors.Is(err, ErrNeedsConfirmation) {
		t.Errorf("rollback without --yes = %v; want ErrNeedsConfirmation", err)
	}
	// Every field is back but the secret: the server never revealed the old one,
	// so it stays as apply wrote it (never the mask), and rollback says so.
	rb, err := f.c.Rollback(ctx, res.Snapshot, RollbackOptions{Confirmed: true})
	if err != nil {
		t.Fatalf("Rollback: %v", err)
	}
	if kept := strings.Join(rb.Kept, "\n"); !strings.Contains(kept, "authSecret: apply replaced a secret the server never reveals") {
		t.Errorf("rollback kept = %q; want the relay secret named as not restorable", kept)
	}
	after := f.srv.Dump()
	if strings.Contains(after, `"****"`) {
		t.Errorf("rollback wrote the server's mask as a secret:\n%s", after)
	}
	if after = strings.Replace(after, testRelaySecret, "Old-Relay-Secret-55", 1); after != before {
		t.Errorf("rollback did not restore the relay but for its secret:\nbefore %s\nafter %s", before, after)
	}
	f.checkNoViolations(t)
}

func TestRelayOfAnotherKindIsAConflict(t *testing.T) {
	f := newFixture(t, "")
	if _, err := f.srv.Seed("x:MtaRoute", map[string]any{"@type": "Local", "name": "source"}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.c.Plan(context.Background(), f.d); !errors.Is(err, ErrConflict) {
		t.Errorf("plan with a Local route named source = %v; want ErrConflict", err)
	}
}

func TestNeverTouchesAccountsItDidNotCreate(t *testing.T) {
	f := newFixture(t, "")
	ctx := context.Background()
	did, _ := f.srv.Find("x:Domain", "name", "example.org")
	theirs, err := f.srv.Seed("x:Account", map[string]any{"@type": "User", "name": "probe", "domainId": did,
		"credentials": map[string]any{"0": map[string]any{"@type": "Password", "secret": "Their-0wn-Strong-Passphrase"}}})
	if err != nil {
		t.Fatal(err)
	}
	f.d.TestAccounts = []string{"probe@example.org", "probe@migrated.test"}
	res, err := f.c.Apply(ctx, f.d, ApplyOptions{SnapshotPath: f.snapPath("s.json"), Hermetic: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := res.Snapshot.Account("probe@example.org"); ok {
		t.Errorf("snapshot records the existing account as created")
	}
	if !strings.Contains(strings.Join(res.Plan.Notes, " "), "probe@example.org exists already") {
		t.Errorf("notes = %v; want one about the existing account", res.Plan.Notes)
	}
	// A snapshot that (wrongly) lists it without an id must not destroy it either:
	// it was created before the snapshot.
	res.Snapshot.Accounts = append(res.Snapshot.Accounts, AccountSnapshot{Address: "probe@example.org", Password: "x"})
	rb, err := f.c.Rollback(ctx, res.Snapshot, RollbackOptions{Hermetic: true})
	if err != nil {
		t.Fatal(err)
	}
	if f.srv.Object("x:Account", theirs) == nil {
		t.Errorf("rollback destroyed an account apply did not create")
	}
	if !strings.Contains(strings.Join(rb.Kept, " "), "account probe@example.org") {
		t.Errorf("kept = %v; want the foreign account reported", rb.Kept)
	}
	if _, a := f.srv.Find("x:Account", "name", "probe"); a == nil || a["emailAddress"] != "probe@example.org" {
		t.Errorf("accounts after rollback: %v", a)
	}
	if n := f.srv.Count("x:Account"); n != 1 {
		t.Errorf("%d accounts after rollback; want only theirs", n)
	}
}

// TestFaultAtEveryStep injects each kind of fault into each request of an apply
// and checks that the server ends exactly as before (the apply failed and
// restored the snapshot) or exactly as after a clean apply (a read was retried).
func TestFaultAtEveryStep(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: skips the fault matrix")
	}
	ref := newFixture(t, "")
	if _, err := ref.c.Apply(context.Background(), ref.d, ApplyOptions{SnapshotPath: ref.snapPath("s.json"), Hermetic: true}); err != nil {
		t.Fatal(err)
	}
	requests := ref.srv.Requests()
	var posts []stalwarttest.Request
	for _, r := range requests {
		if r.N > 0 {
			posts = append(posts, r)
		}
	}
	if len(posts) < 9 {
		t.Fatalf("a clean apply made %d API requests; want at least 9 (one read, eight steps)", len(posts))
	}
	type variant struct {
		kind   stalwarttest.FaultKind
		commit bool
	}
	variants := []variant{
		{stalwarttest.FaultMethodError, false}, {stalwarttest.FaultSetError, false},
		{stalwarttest.FaultHTTP500, false}, {stalwarttest.FaultHTTP500, true},
		{stalwarttest.FaultDrop, false}, {stalwarttest.FaultDrop, true},
		{stalwarttest.FaultTimeout, true},
	}
	for _, req := range posts {
		readOnly := true
		var names []string
		for _, c := range req.Calls {
			names = append(names, c.Name)
			readOnly = readOnly && safeMethod(c.Name)
		}
		for _, v := range variants {
			if v.kind == stalwarttest.FaultSetError && readOnly {
				continue // nothing to refuse
			}
			name := strings.Join(names, "+") + "/" + v.kind.String()
			if v.commit {
				name += "/committed"
			}
			t.Run(name, func(t *testing.T) {
				f := newFixture(t, "")
				if v.kind == stalwarttest.FaultTimeout {
					f.c.Timeout = 750e6
				}
				f.srv.InjectFault(stalwarttest.Fault{Kind: v.kind, Request: req.N, Commit: v.commit})
				before := f.srv.Dump()
				_, err := f.c.Apply(context.Background(), f.d, ApplyOptions{SnapshotPath: f.snapPath("s.json"), Hermetic: true})
				if f.srv.FaultsFired() != 1 {
					t.Fatalf("the fault did not fire (%d)", f.srv.FaultsFired())
				}
				got := f.srv.Dump()
				retried := readOnly && v.kind != stalwarttest.FaultMethodError
				switch {
				case retried:
					if err != nil {
						t.Errorf("a fault on a read should be retried: Apply = %v", err)
					} else if p, err := f.c.Plan(context.Background(), f.d); err != nil || p.Verifiable() != 0 {
						t.Errorf("after the retried apply, plan = %v, %v; want no changes but the masked relay secret", err, steps(p.Changes))
					}
				case err == nil:
					t.Errorf("Apply succeeded; want the fault reported")
				default:
					var ae *ApplyError
					if readOnly && req.N == 1 {
						if errors.As(err, &ae) {
							t.Errorf("a failed first read = %v; want a plain error (nothing to restore)", err)
						}
					} else if !errors.As(err, &ae) || ae.RestoreErr != nil {
						t.Errorf("Apply = %v; want an ApplyError with the snapshot restored", err)
					}
					if got != before {
						t.Errorf("state after the failed apply differs from before:\nbefore %s\nafter %s", before, got)
					}
				}
				f.checkNoViolations(t)
			})
		}
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

func TestInterruptedApplyRestores(t *testing.T) {
	for _, n := range []int{2, 4, 6} {
		t.Run(fmt.Sprintf("interrupt at request %d", n), func(t *testing.T) {
			f := newFixture(t, "")
			before := f.srv.Dump()
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			hc := *f.srv.Client()
			tr := hc.Transport
			hc.Timeout = 5 * time.Second
			seen := 0
			hc.Transport = roundTripFunc(func(r *http.Request) (*http.Response, error) {
				if r.Method == "POST" {
					seen++
					if seen == n {
						cancel() // the operator pressed Ctrl-C while this request was going out
					}
				}
				return tr.RoundTrip(r)
			})
			f.c.HTTPClient = &hc
			_, err := f.c.Apply(ctx, f.d, ApplyOptions{SnapshotPath: f.snapPath("s.json"), Hermetic: true})
			var ae *ApplyError
			if !errors.As(err, &ae) || !errors.Is(err, context.Canceled) || ae.RestoreErr != nil {
				t.Fatalf("interrupted Apply = %v; want an ApplyError wrapping context.Canceled, restored", err)
			}
			if got := f.srv.Dump(); got != before {
				t.Errorf("state after interrupt differs from before:\nbefore %s\nafter %s", before, got)
			}
		})
	}
}

// TestPartialSetFailureRestores: one /set creates one domain and is refused the
// other (an alias of an existing domain); apply records the one it got and
// destroys it when restoring.
func TestPartialSetFailureRestores(t *testing.T) {
	f := newFixture(t, "")
	did, _ := f.srv.Find("x:Domain", "name", "example.org")
	if _, err := f.c.Set(context.Background(), ObjDomain, SetRequest{Update: map[string]any{did: map[string]any{"aliases/alias.test": true}}}); err != nil {
		t.Fatal(err)
	}
	before := f.srv.Dump()
	f.d.Domains = []string{"example.org", "a-new.test", "alias.test"}
	_, err := f.c.Apply(context.Background(), f.d, ApplyOptions{SnapshotPath: f.snapPath("s.json"), Hermetic: true})
	var se *SetError
	var ae *ApplyError
	if !errors.As(err, &ae) || !errors.As(err, &se) || se.Type != "primaryKeyViolation" || ae.RestoreErr != nil {
		t.Fatalf("Apply = %v; want an ApplyError carrying the primaryKeyViolation, restored", err)
	}
	if len(ae.Restored) != 1 || ae.Restored[0].Op != OpDestroy || ae.Restored[0].Name != "a-new.test" {
		t.Errorf("restored %q; want a-new.test destroyed", steps(ae.Restored))
	}
	snap, err := ReadSnapshotFile(f.snapPath("s.json"))
	if err != nil {
		t.Fatal(err)
	}
	if i := slices.IndexFunc(snap.Domains, func(d DomainSnapshot) bool { return d.Name == "a-new.test" }); i < 0 || snap.Domains[i].ID == "" {
		t.Errorf("snapshot domains = %+v; want a-new.test's id recorded", snap.Domains)
	}
	if f.srv.Dump() != before {
		t.Errorf("the server was left changed")
	}
}

// TestRollbackNeverWritesTheMask: an existing relay's secret reads back as
// "****". When apply removed it (the configuration has no relay auth), rollback
// cannot put it back: it says so and leaves it unset, never writing the mask as
// the secret. With the secret known to apply's caller, it is put back.
func TestRollbackNeverWritesTheMask(t *testing.T) {
	for _, tt := range []struct {
		name  string
		known string
	}{{"unknown", ""}, {"known", "Old-Relay-Secret-55"}} {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, "")
			ctx := context.Background()
			if _, err := f.srv.Seed("x:MtaRoute", map[string]any{"@type": "Relay", "name": "source", "address": "old-source.example.org",
				"authUsername": "old-user", "authSecret": map[string]any{"@type": "Value", "secret": "Old-Relay-Secret-55"}}); err != nil {
				t.Fatal(err)
			}
			d := f.d
			d.Relay.AuthUsername, d.Relay.AuthSecret = "", config.Secret{}
			res, err := f.c.Apply(ctx, d, ApplyOptions{SnapshotPath: f.snapPath("s.json"), Hermetic: true,
				KnownRelaySecret: config.NewSecret(tt.known)})
			if err != nil {
				t.Fatal(err)
			}
			if _, r := f.srv.Find("x:MtaRoute", "name", "source"); mapOf(r["authSecret"])["@type"] != "None" {
				t.Fatalf("after apply authSecret = %v; want None", r["authSecret"])
			}
			if raw, _ := os.ReadFile(f.snapPath("s.json")); tt.known == "" && strings.Contains(string(raw), "Old-Relay-Secret-55") {
				t.Errorf("snapshot holds a secret nobody gave it")
			}
			rb, err := f.c.Rollback(ctx, res.Snapshot, RollbackOptions{Hermetic: true})
			if err != nil {
				t.Fatal(err)
			}
			_, r := f.srv.Find("x:MtaRoute", "name", "source")
			sec := mapOf(r["authSecret"])
			kept := strings.Join(rb.Kept, "\n")
			switch {
			case sec["secret"] == maskedSecret:
				t.Fatalf("rollback wrote the mask as the relay's secret")
			case tt.known == "" && (sec["@type"] != "None" || !strings.Contains(kept, "cannot be restored")):
				t.Errorf("unknown secret: authSecret %v, kept %q; want it left unset and said so", sec, kept)
			case tt.known != "" && (sec["secret"] != tt.known || kept != ""):
				t.Errorf("known secret: authSecret %v, kept %q; want it restored", sec, kept)
			}
			if r["authUsername"] != "old-user" {
				t.Errorf("authUsername = %v; want old-user back", r["authUsername"])
			}
			f.checkNoViolations(t)
		})
	}
}

func mapOf(v any) map[string]any {
	m, _ := v.(map[string]any)
	return m
}

func TestApplierRefusesToWriteTheMask(t *testing.T) {
	f := newFixture(t, "")
	a := &applier{c: f.c, log: f.c.logger()}
	err := a.update(context.Background(), ObjMtaRoute, "x", map[string]any{"authSecret": secretValue(maskedSecret)})
	if err == nil || !strings.Contains(err.Error(), "refusing to write") {
		t.Errorf("update with the mask = %v; want a refusal", err)
	}
	if f.setCalls() != 0 {
		t.Errorf("%d /set calls; want none", f.setCalls())
	}
}
