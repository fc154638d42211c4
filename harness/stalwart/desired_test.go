package stalwart

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/splitcheck/splitcheck/harness/config"
)

const desiredYAML = `target:
  smtp: 127.0.0.1:25
  hostname: mx.target.test
plan:
  domains: [Example.ORG, migrated.test]
  unmigrated: [bob@example.org]
fakes:
  source: 127.0.0.4:2525
proxy:
  announce: 198.51.100.7
stalwart:
  url: http://127.0.0.1:8080
  token: tok
migration:
  source:
    address: source.internal.example.org
    port: 587
    implicit_tls: true
    auth:
      username: relay
      secret: s3cret-relay
  proxy_trusted_networks: [203.0.113.10/32]
  test_accounts:
    - address: Probe@Migrated.test
`

func parseDesired(t *testing.T, yaml string) (*config.Config, Desired, error) {
	t.Helper()
	cfg, err := config.Parse("run.yaml", []byte(yaml), func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatalf("config.Parse: %v", err)
	}
	d, err := DesiredFromConfig(cfg)
	return cfg, d, err
}

func TestDesiredFromConfig(t *testing.T) {
	cfg, d, err := parseDesired(t, desiredYAML)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(d.Domains, []string{"example.org", "migrated.test"}) {
		t.Errorf("domains = %v; want plan.domains, lower case", d.Domains)
	}
	if d.DefaultHostname != "mx.target.test" {
		t.Errorf("default hostname = %q; want target.hostname when migration.default_hostname is unset", d.DefaultHostname)
	}
	if d.Relay.Name != "source" || d.Relay.Port != 587 || !d.Relay.ImplicitTLS || d.Relay.AuthSecret.Value() != "s3cret-relay" {
		t.Errorf("relay = %+v", d.Relay)
	}
	if !slices.Equal(d.TestAccounts, []string{"probe@migrated.test"}) {
		t.Errorf("test accounts = %v", d.TestAccounts)
	}
	if !d.Route.Equal(SplitDeliveryRoute("source")) {
		t.Errorf("route = %v", d.Route)
	}
	if got := RehearsalSource(cfg); got != "127.0.0.4:2525" {
		t.Errorf("RehearsalSource = %q; want fakes.source", got)
	}
	cfg.Migration = nil
	var ce *config.Error
	if _, err := DesiredFromConfig(cfg); !errors.As(err, &ce) || ce.Field != "migration" {
		t.Errorf("no migration section = %v; want a config error", err)
	}
}

func TestDesiredTestAccountOutsideDomains(t *testing.T) {
	yaml := strings.Replace(desiredYAML, "Probe@Migrated.test", "probe@elsewhere.test", 1)
	_, _, err := parseDesired(t, yaml)
	var ce *config.Error
	if !errors.As(err, &ce) || ce.Field != "migration.test_accounts.0.address" {
		t.Errorf("DesiredFromConfig = %v; want a config error on the account", err)
	}
}

// TestRehearsalRoundTrip is the run command's rehearsal: apply the live
// configuration, point the relay at the fake source, verify, then restore the
// real source by rolling back the rehearsal's snapshot.
func TestRehearsalRoundTrip(t *testing.T) {
	f := newFixture(t, "")
	ctx := context.Background()
	if _, err := f.c.Apply(ctx, f.d, ApplyOptions{SnapshotPath: f.snapPath("live.json"), Hermetic: true}); err != nil {
		t.Fatal(err)
	}
	live := f.srv.Dump()
	reh, err := f.d.Rehearsal("127.0.0.4:2525")
	if err != nil {
		t.Fatal(err)
	}
	// As the run command does: the route's secret, masked on reads, is the
	// configured one the apply above wrote.
	res, err := f.c.Apply(ctx, reh, ApplyOptions{SnapshotPath: f.snapPath("rehearsal.json"), Hermetic: true,
		KnownRelaySecret: f.d.Relay.AuthSecret})
	if err != nil {
		t.Fatal(err)
	}
	if res.Snapshot.Relay == nil || res.Snapshot.Relay.BeforeSecret != testRelaySecret {
		t.Errorf("rehearsal snapshot relay = %+v; want the known secret recorded", res.Snapshot.Relay)
	}
	var fields []string
	for _, c := range res.Applied {
		fields = append(fields, c.Step+"/"+c.Field)
	}
	want := []string{"relay/address", "relay/port", "relay/authUsername", "relay/authSecret", "reload/"}
	if !slices.Equal(fields, want) {
		t.Errorf("rehearsal changed %v; want only the relay's target and auth, then a reload", fields)
	}
	if _, r := f.srv.Find("x:MtaRoute", "name", "source"); r["address"] != "127.0.0.4" || r["port"] != jsonNumber(2525) {
		t.Errorf("relay during the rehearsal = %v", r)
	}
	// Rolled back from the file, as `splitcheck rollback` would.
	snap, err := ReadSnapshotFile(f.snapPath("rehearsal.json"))
	if err != nil {
		t.Fatal(err)
	}
	rb, err := f.c.Rollback(ctx, snap, RollbackOptions{Hermetic: true})
	if err != nil {
		t.Fatal(err)
	}
	if after := f.srv.Dump(); after != live {
		t.Errorf("after the rehearsal the live configuration was not restored (kept %q):\nlive %s\nafter %s", rb.Kept, live, after)
	}
	if _, err := f.d.Rehearsal("127.0.0.4"); err == nil {
		t.Errorf("Rehearsal without a port = nil error")
	}
	f.checkNoViolations(t)
}

func jsonNumber(n int) json.Number { return json.Number(strconv.Itoa(n)) }
