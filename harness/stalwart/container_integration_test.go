//go:build integration

package stalwart_test

import (
	"context"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/testcontainers/testcontainers-go"

	"github.com/splitcheck/splitcheck/harness/config"
	"github.com/splitcheck/splitcheck/harness/hermetic"
	"github.com/splitcheck/splitcheck/harness/stalwart"
)

// stalwartImage is the image under test: $SPLITCHECK_STALWART_IMAGE or the pinned one.
func stalwartImage() string {
	if img := os.Getenv("SPLITCHECK_STALWART_IMAGE"); img != "" {
		return img
	}
	return stalwart.DefaultImage
}

// TestContainerIntegration starts the real image, bootstraps it and checks what
// only a real server can show: the headless start, the admin login, the submission
// listener after the restart, the public URL through autodiscovery, and the banner
// on port 25. Run with: go test -tags integration ./harness/stalwart/
func TestContainerIntegration(t *testing.T) {
	hermetic.SkipWithoutDocker(t)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Minute)
	defer cancel()

	const publicURL = "https://mail.migrated.test"
	ctr, err := stalwart.Run(ctx, stalwartImage(),
		stalwart.WithPublicURL(publicURL),
		stalwart.WithHostIP("127.0.0.1"),
		stalwart.WithTrustedProxy("10.255.255.254"),
	)
	testcontainers.CleanupContainer(t, ctr)
	if err != nil {
		if ctr != nil {
			t.Logf("stalwart output:\n%s", ctr.LogTail())
		}
		t.Fatalf("stalwart.Run: %v", err)
	}

	mgmt, err := ctr.ManagementClient(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := mgmt.Session(ctx); err != nil {
		t.Fatalf("admin session with the generated recovery password: %v", err)
	}

	pw, err := stalwart.GeneratePassword(stalwart.DefaultPasswordLength)
	if err != nil {
		t.Fatal(err)
	}
	err = ctr.Bootstrap(ctx, stalwart.BootstrapConfig{
		Domains:  []string{"migrated.test"},
		Hostname: "mx.migrated.test",
		Accounts: []stalwart.BootstrapAccount{{Address: "alice@migrated.test", Password: pw}},
	})
	if err != nil {
		t.Logf("stalwart output:\n%s", ctr.LogTail())
		t.Fatalf("Bootstrap: %v", err)
	}

	// After the restart: a new client (the published port may have moved).
	mgmt, err = ctr.ManagementClient(ctx)
	if err != nil {
		t.Fatal(err)
	}
	chk, err := mgmt.CheckPublicURL(ctx, "", publicURL)
	if err != nil || !chk.OK {
		t.Errorf("public URL check = %+v, %v; want apiUrl on %s", chk, err, publicURL)
	}
	alice := &stalwart.Client{URL: mgmt.URL, Credentials: stalwart.BasicAuth("alice@migrated.test", pw)}
	if _, err := alice.Session(ctx); err != nil {
		t.Errorf("alice cannot log in: %v", err)
	}

	for name, get := range map[string]func(context.Context) (string, error){
		"smtp (25)": ctr.SMTPEndpoint, "submission (587)": ctr.SubmissionEndpoint,
	} {
		ep, err := get(ctx)
		if err != nil {
			t.Errorf("%s endpoint: %v", name, err)
			continue
		}
		if banner := readBanner(t, ep); !strings.HasPrefix(banner, "220") {
			t.Errorf("%s at %s: banner %q; want 220", name, ep, banner)
		}
	}
	if ctr.LogTail() == "" {
		t.Errorf("no container output captured (the stdout tracer should log)")
	}
	checkMaskedRelaySecret(ctx, t, mgmt)
}

// checkMaskedRelaySecret checks on the real server what the fake reproduces: a
// relay's authSecret reads back as "****", so apply --verify passes with it
// pending, and a second apply writes it again as an unverifiable change.
func checkMaskedRelaySecret(ctx context.Context, t *testing.T, mgmt *stalwart.Client) {
	const secret = "Integration-Relay-Secret-4417"
	d := stalwart.Desired{
		Domains: []string{"migrated.test"},
		Relay: stalwart.Relay{Name: stalwart.RelayRouteName, Address: "source.migrated.test", Port: 2525, Protocol: "smtp",
			AuthUsername: "relay-user", AuthSecret: config.NewSecret(secret)},
		Route:           stalwart.SplitDeliveryRoute(stalwart.RelayRouteName),
		DefaultHostname: "mx.migrated.test",
	}
	dir := t.TempDir()
	res, err := mgmt.Apply(ctx, d, stalwart.ApplyOptions{SnapshotPath: dir + "/s1.json", Hermetic: true, Verify: true})
	if err != nil {
		t.Fatalf("apply with relay auth: %v", err)
	}
	if !strings.Contains(strings.Join(res.Pending, "\n"), "authSecret was written but cannot be read back") {
		t.Errorf("apply --verify pending = %q; want the masked relay secret", res.Pending)
	}
	raw, err := mgmt.QueryGet(ctx, stalwart.ObjMtaRoute, map[string]any{"name": stalwart.RelayRouteName})
	if err != nil || len(raw) != 1 {
		t.Fatalf("read the relay route: %d, %v", len(raw), err)
	}
	if got := string(raw[0]); !strings.Contains(got, `"secret":"****"`) || strings.Contains(got, secret) {
		t.Errorf("relay route as read = %s; want the secret masked as ****", got)
	}
	p, err := mgmt.Plan(ctx, d)
	if err != nil {
		t.Fatal(err)
	}
	if p.Verifiable() != 0 || len(p.Changes) == 0 || !p.Changes[0].Unverifiable {
		t.Errorf("plan after apply = %+v; want only the unverifiable relay secret", p.Changes)
	}
	snap, err := stalwart.ReadSnapshotFile(dir + "/s1.json")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := mgmt.Rollback(ctx, snap, stalwart.RollbackOptions{Hermetic: true}); err != nil {
		t.Errorf("rollback: %v", err)
	}
}

func readBanner(t *testing.T, addr string) string {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		t.Errorf("dial %s: %v", addr, err)
		return ""
	}
	defer c.Close()
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 512)
	n, _ := c.Read(buf)
	return string(buf[:n])
}
