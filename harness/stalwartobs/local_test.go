package stalwartobs_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapserver"
	"github.com/emersion/go-imap/v2/imapserver/imapmemserver"
	"go.uber.org/goleak"

	"github.com/splitcheck/splitcheck/harness/config"
	"github.com/splitcheck/splitcheck/harness/stalwart"
	"github.com/splitcheck/splitcheck/harness/stalwart/stalwarttest"
	"github.com/splitcheck/splitcheck/harness/stalwartobs"
	"github.com/splitcheck/splitcheck/scenarios"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var testSchema = sync.OnceValue(stalwarttest.DefaultSchema)

// The config's placeholder password for the JMAP test account: apply generates
// the real one, so NewLocal must take the snapshot's.
const placeholderPassword = "Placeholder-From-Config-7Hq2"

// fakeStalwart starts the JMAP fake.
func fakeStalwart(t *testing.T) *stalwarttest.Server {
	t.Helper()
	srv := stalwarttest.NewUnstartedServer()
	srv.Schema = testSchema()
	srv.Start()
	t.Cleanup(srv.Close)
	if _, err := srv.SeedWizard("mx.migrated.test", "migrated.test"); err != nil {
		t.Fatal(err)
	}
	return srv
}

// imapServer serves one IMAP account (alice@migrated.test, password pw-alice)
// from memory and returns its address and user.
func imapServer(t *testing.T) (string, *imapmemserver.User) {
	t.Helper()
	mem := imapmemserver.New()
	u := imapmemserver.NewUser("alice@migrated.test", "pw-alice")
	if err := u.Create("INBOX", nil); err != nil {
		t.Fatal(err)
	}
	mem.AddUser(u)
	srv := imapserver.New(&imapserver.Options{
		NewSession: func(*imapserver.Conn) (imapserver.Session, *imapserver.GreetingData, error) {
			return mem.NewSession(), nil, nil
		},
		Caps:         imap.CapSet{imap.CapIMAP4rev1: {}, imap.CapIMAP4rev2: {}},
		InsecureAuth: true,
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(ln)
	}()
	t.Cleanup(func() {
		srv.Close()
		ln.Close() // in case Serve had not registered it yet
		<-done
	})
	return ln.Addr().String(), u
}

// runConfig is a run description with a JMAP account (probe@, created by apply
// as a test account) and, when imapAddr is set, an IMAP one (alice@).
func runConfig(t *testing.T, stalwartURL, imapAddr string) *config.Config {
	t.Helper()
	local := fmt.Sprintf(`
    - address: probe@migrated.test
      mailbox: {protocol: jmap, address: %q, password: %s}`, stalwartURL, placeholderPassword)
	if imapAddr != "" {
		local += fmt.Sprintf(`
    - address: alice@migrated.test
      mailbox: {address: %s, password: pw-alice}`, imapAddr)
	}
	y := fmt.Sprintf(`
target: {smtp: 127.0.0.1:2525}
plan:
  domains: [migrated.test]
  local:%s
  unmigrated: [bob@migrated.test]
fakes: {source: 127.0.0.1:2526}
proxy: {version: 1, announce: 198.51.100.7}
timeouts: {connect: 5s}
stalwart: {url: %q, user: admin, password: %s}
migration:
  source: {address: source.internal.test}
  test_accounts: [{address: probe@migrated.test}]
`, local, stalwartURL, stalwarttest.DefaultAdminPassword)
	cfg, err := config.Parse("run.yaml", []byte(y), func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	return cfg
}

// applied applies cfg's migration to the fake and returns the snapshot.
func applied(t *testing.T, srv *stalwarttest.Server, cfg *config.Config) *stalwart.Snapshot {
	t.Helper()
	d, err := stalwart.DesiredFromConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	cl := &stalwart.Client{URL: srv.URL, Credentials: stalwart.BasicAuth(srv.AdminUser, srv.AdminPassword)}
	res, err := cl.Apply(context.Background(), d, stalwart.ApplyOptions{
		SnapshotPath: filepath.Join(t.TempDir(), "snap.json"), Hermetic: true})
	if err != nil {
		t.Fatalf("apply: %v", err)
	}
	if _, ok := res.Snapshot.Account("probe@migrated.test"); !ok {
		t.Fatal("apply did not record the test account")
	}
	return res.Snapshot
}

func probeMessage(probeID, to string) []byte {
	return []byte("Received: from probe.splitcheck.test (unknown [198.51.100.7])\r\n\tby mx.migrated.test with ESMTP\r\n" +
		"Message-ID: " + scenarios.MessageID(probeID) + "\r\n" + scenarios.ProbeHeader + ": " + probeID + "\r\n" +
		"To: " + to + "\r\nSubject: probe\r\n\r\nbody\r\n")
}

func TestUsesJMAP(t *testing.T) {
	cfg := runConfig(t, "http://127.0.0.1:1", "127.0.0.1:143")
	if !stalwartobs.UsesJMAP(cfg) {
		t.Error("UsesJMAP = false; want true (probe@ is read over JMAP)")
	}
	cfg.Plan.Local = cfg.Plan.Local[1:]
	if stalwartobs.UsesJMAP(cfg) {
		t.Error("UsesJMAP = true with only an IMAP account; want false")
	}
}

// TestLocalObservesJMAPAndIMAP: probes delivered into the JMAP account's Inbox
// and Junk, and into the IMAP account's INBOX, are each seen for their
// recipient only, with evidence naming where.
func TestLocalObservesJMAPAndIMAP(t *testing.T) {
	srv := fakeStalwart(t)
	imapAddr, alice := imapServer(t)
	cfg := runConfig(t, srv.URL, imapAddr)
	snap := applied(t, srv, cfg)
	ctx := context.Background()

	deliveries := []struct{ role, probe, to string }{
		{"inbox", "run-01", "probe@migrated.test"},
		{"junk", "run-02", "probe@migrated.test"},
		{"inbox", "run-03", "probe@migrated.test"},
		{"junk", "run-03", "probe@migrated.test"},
		{"inbox", "other", "probe@migrated.test"},
	}
	for _, d := range deliveries {
		if _, err := srv.Deliver("probe@migrated.test", d.role, probeMessage(d.probe, d.to)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := alice.Append("INBOX", bytes.NewReader(probeMessage("run-04", "alice@migrated.test")), &imap.AppendOptions{}); err != nil {
		t.Fatal(err)
	}

	l, err := stalwartobs.NewLocal(cfg, stalwartobs.LocalOptions{Snapshot: snap})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if err := l.Check(ctx); err != nil {
		t.Fatalf("Check: %v", err)
	}
	for _, tt := range []struct {
		probe, rcpt string
		want        []string // Where of each sighting
		evidence    string
	}{
		{"run-01", "probe@migrated.test", []string{"probe@migrated.test Inbox"}, "JMAP " + srv.URL + ": probe@migrated.test Inbox (role inbox) email "},
		{"run-02", "probe@migrated.test", []string{"probe@migrated.test Junk Mail"}, "(role junk)"},
		{"run-02", "PROBE+tag@Migrated.test", []string{"probe@migrated.test Junk Mail"}, "(role junk)"},
		{"run-03", "probe@migrated.test", []string{"probe@migrated.test Inbox", "probe@migrated.test Junk Mail"}, "Message-ID <run-03@splitcheck.test>"},
		{"run-09", "probe@migrated.test", nil, ""},
		{"run-01", "bob@migrated.test", nil, ""},   // not counted for another recipient
		{"run-01", "alice@migrated.test", nil, ""}, // nor for the IMAP account
		{"run-04", "alice@migrated.test", []string{"alice@migrated.test INBOX"}, "IMAP " + imapAddr},
		{"run-04", "probe@migrated.test", nil, ""},
	} {
		t.Run(tt.probe+"/"+tt.rcpt, func(t *testing.T) {
			obs, err := l.Observe(ctx, tt.probe, tt.rcpt)
			if err != nil {
				t.Fatalf("Observe: %v", err)
			}
			var where []string
			for _, o := range obs {
				where = append(where, o.Where)
				if o.Place != scenarios.RouteLocal {
					t.Errorf("place = %s; want local", o.Place)
				}
				if !strings.Contains(o.Evidence, tt.evidence) {
					t.Errorf("evidence = %q; want it to contain %q", o.Evidence, tt.evidence)
				}
				if len(o.Received) == 0 || !strings.Contains(o.Received[0], "[198.51.100.7]") {
					t.Errorf("received = %q; want the copy's Received header", o.Received)
				}
				if o.At.IsZero() {
					t.Error("At is zero; want when the copy was first noticed")
				}
			}
			if strings.Join(where, ",") != strings.Join(tt.want, ",") {
				t.Errorf("sightings in %q; want %q", where, tt.want)
			}
		})
	}

	// A second look reports the same first-noticed time.
	a, _ := l.Observe(ctx, "run-01", "probe@migrated.test")
	b, _ := l.Observe(ctx, "run-01", "probe@migrated.test")
	if len(a) != 1 || len(b) != 1 || !a[0].At.Equal(b[0].At) {
		t.Errorf("first-noticed times %v and %v; want one sighting each, the same time", a, b)
	}

	copies, err := l.Copies(ctx, "run-03", "bob@migrated.test")
	if err != nil {
		t.Fatal(err)
	}
	if len(copies) != 2 || !strings.Contains(copies[0], "probe@migrated.test Inbox") {
		t.Errorf("Copies = %q; want the two copies in probe@'s mailboxes", copies)
	}
	if v := srv.Violations(); len(v) > 0 {
		t.Errorf("requests the real server would refuse: %q", v)
	}
}

// TestLocalCredentials: without the snapshot the config's password is used
// (and refused); the error names the account and never a password.
func TestLocalCredentials(t *testing.T) {
	srv := fakeStalwart(t)
	cfg := runConfig(t, srv.URL, "")
	snap := applied(t, srv, cfg)
	ctx := context.Background()
	for _, tt := range []struct {
		name    string
		snap    *stalwart.Snapshot
		wantErr bool
	}{
		{"password from the snapshot", snap, false},
		{"password from the config", nil, true},
		{"snapshot without the account", &stalwart.Snapshot{}, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			l, err := stalwartobs.NewLocal(cfg, stalwartobs.LocalOptions{Snapshot: tt.snap})
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			err = l.Check(ctx)
			if (err != nil) != tt.wantErr {
				t.Fatalf("Check = %v; want error: %v", err, tt.wantErr)
			}
			if err == nil {
				return
			}
			if !errors.Is(err, stalwart.ErrUnauthorized) || !strings.Contains(err.Error(), "probe@migrated.test") {
				t.Errorf("Check = %v; want ErrUnauthorized naming the account", err)
			}
			acct, _ := snap.Account("probe@migrated.test")
			for _, secret := range []string{placeholderPassword, acct.Password} {
				if strings.Contains(err.Error(), secret) {
					t.Errorf("Check error carries a password: %v", err)
				}
			}
			if _, oerr := l.Observe(ctx, "run-01", "probe@migrated.test"); oerr == nil {
				t.Error("Observe with refused credentials = nil error")
			}
		})
	}
}

func TestNewLocalNeedsJMAPAddress(t *testing.T) {
	cfg := runConfig(t, "http://127.0.0.1:1", "")
	cfg.Plan.Local[0].Mailbox.Address = ""
	_, err := stalwartobs.NewLocal(cfg, stalwartobs.LocalOptions{})
	var ce *config.Error
	if !errors.As(err, &ce) || ce.Field != "plan.local.0.mailbox.address" {
		t.Errorf("NewLocal = %v; want a config error on plan.local.0.mailbox.address", err)
	}
}
