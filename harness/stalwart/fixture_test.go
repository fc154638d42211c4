package stalwart

import (
	"bytes"
	"log/slog"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/splitcheck/splitcheck/harness/config"
	"github.com/splitcheck/splitcheck/harness/stalwart/stalwarttest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// testSchema is parsed once per test binary; it is read-only.
var testSchema = sync.OnceValue(stalwarttest.DefaultSchema)

// Secrets of the fixture; tests grep every output for them.
const (
	testAdminPassword = "Adm1n-Secret-Qx7vTz93"
	testRelaySecret   = "Relay-Secret-Wq48Zp"
)

type fixture struct {
	srv  *stalwarttest.Server
	c    *Client
	d    Desired
	dir  string
	logs *syncBuffer
}

// syncBuffer is a bytes.Buffer safe for the logger's concurrent writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

type fixtureOpt func(*stalwarttest.Server)

// fresh leaves SystemSettings never saved and creates no domain.
const fresh = "fresh"

// newFixture starts a fake that looks set up by the wizard (domain
// example.org, SystemSettings saved) unless kind is fresh, and a client at debug
// log level, and the migration's wanted state: example.org and migrated.test,
// a relay with auth, the proxy's /32, one test account.
func newFixture(t *testing.T, kind string, opts ...fixtureOpt) *fixture {
	t.Helper()
	srv := stalwarttest.NewUnstartedServer()
	srv.Schema = testSchema()
	srv.AdminPassword = testAdminPassword
	for _, o := range opts {
		o(srv)
	}
	srv.Start()
	t.Cleanup(srv.Close)
	if kind != fresh {
		if _, err := srv.SeedWizard("mx.example.org", "example.org"); err != nil {
			t.Fatal(err)
		}
	}
	logs := &syncBuffer{}
	c := &Client{URL: srv.URL, Credentials: BasicAuth(srv.AdminUser, srv.AdminPassword), Timeout: 5 * time.Second,
		Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))}
	d := Desired{
		Domains: []string{"example.org", "migrated.test"},
		Relay: Relay{Name: RelayRouteName, Address: "source.internal.example.org", Port: 25, Protocol: "smtp",
			AllowInvalidCerts: true, AuthUsername: "relay-user", AuthSecret: config.NewSecret(testRelaySecret)},
		Route:                SplitDeliveryRoute(RelayRouteName),
		ProxyTrustedNetworks: []string{"203.0.113.10/32"},
		DefaultHostname:      "mx.example.org",
		TestAccounts:         []string{"probe@migrated.test"},
	}
	return &fixture{srv: srv, c: c, d: d, dir: t.TempDir(), logs: logs}
}

func (f *fixture) snapPath(name string) string { return filepath.Join(f.dir, name) }

// checkNoViolations fails when the client sent anything the real server would refuse as malformed.
func (f *fixture) checkNoViolations(t *testing.T) {
	t.Helper()
	if v := f.srv.Violations(); len(v) > 0 {
		t.Errorf("the client sent requests Stalwart refuses:\n%v", v)
	}
}

// setCalls counts the /set calls received.
func (f *fixture) setCalls() int {
	n := 0
	for _, c := range f.srv.Calls() {
		if len(c.Name) > 4 && c.Name[len(c.Name)-4:] == "/set" {
			n++
		}
	}
	return n
}
