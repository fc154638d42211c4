package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/spf13/cobra"

	"github.com/splitcheck/splitcheck/harness/config"
	"github.com/splitcheck/splitcheck/harness/stalwart"
	"github.com/splitcheck/splitcheck/harness/stalwart/stalwarttest"
)

// Secrets the Stalwart command tests grep every output for.
const (
	swAdminPassword = "Cmd-Admin-Secret-Zr81Lq"
	swRelaySecret   = "Cmd-Relay-Secret-Kp27Wd"
)

var swSchema = sync.OnceValue(stalwarttest.DefaultSchema)

const swConfigTemplate = `target:
  smtp: 127.0.0.1:25
plan:
  domains: [example.org]
  unmigrated: [bob@example.org]
fakes:
  source: 127.0.0.4:2525
proxy:
  announce: 198.51.100.7
stalwart:
  url: %s
  user: admin
  password: {env: SPLITCHECK_TEST_ADMIN_PW}
  timeout: 5s
  hermetic: %v
migration:
  domains: [example.org, migrated.test]
  source:
    address: source.internal.example.org
    allow_invalid_certs: true
    auth:
      username: relay-user
      secret: {env: SPLITCHECK_TEST_RELAY_SECRET}
  proxy_trusted_networks: [203.0.113.10/32]
  default_hostname: mx.example.org
  test_accounts:
    - address: probe@migrated.test
`

type swEnv struct {
	srv    *stalwarttest.Server
	dir    string
	config string
}

// newSwEnv starts the fake (set up as by the wizard unless fresh) and writes a config for it.
func newSwEnv(t *testing.T, hermetic, fresh bool) *swEnv {
	t.Helper()
	srv := stalwarttest.NewUnstartedServer()
	srv.Schema = swSchema()
	srv.AdminPassword = swAdminPassword
	srv.Start()
	t.Cleanup(srv.Close)
	if !fresh {
		if _, err := srv.SeedWizard("mx.example.org", "example.org"); err != nil {
			t.Fatal(err)
		}
	}
	for _, k := range []string{config.EnvStalwartURL, config.EnvStalwartUser, config.EnvStalwartPassword, config.EnvStalwartToken} {
		t.Setenv(k, "")
	}
	t.Setenv("SPLITCHECK_TEST_ADMIN_PW", swAdminPassword)
	t.Setenv("SPLITCHECK_TEST_RELAY_SECRET", swRelaySecret)
	dir := t.TempDir()
	path := filepath.Join(dir, "run.yaml")
	if err := os.WriteFile(path, []byte(fmt.Sprintf(swConfigTemplate, srv.URL, hermetic)), 0o600); err != nil {
		t.Fatal(err)
	}
	return &swEnv{srv: srv, dir: dir, config: path}
}

func (e *swEnv) path(name string) string { return filepath.Join(e.dir, name) }

// runSw runs splitcheck with args and returns the exit code and both streams.
// It adds plan, apply and rollback to the root command when root.go does not (yet).
func runSw(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errOut bytes.Buffer
	ios := &ioStreams{In: strings.NewReader(""), Out: &out, ErrOut: &errOut}
	root := newRootCmd(ios)
	for name, mk := range map[string]func(*ioStreams) *cobra.Command{
		"plan": newPlanCmd, "apply": newApplyCmd, "rollback": newRollbackCmd} {
		if found, _, err := root.Find([]string{name}); err != nil || found == root {
			root.AddCommand(mk(ios))
		}
	}
	root.SetArgs(args)
	err := root.ExecuteContext(context.Background())
	if err != nil {
		fmt.Fprintf(&errOut, "splitcheck: %v\n", err)
	}
	return exitCode(err), out.String(), errOut.String()
}

// noSecrets fails if any output shows a secret.
// hasSecret reports whether a stored route (read from the fake's store, which
// keeps what get masks) holds secret as its authSecret.
func hasSecret(route map[string]any, secret string) bool {
	v, _ := route["authSecret"].(map[string]any)
	return v["@type"] == "Value" && v["secret"] == secret
}

func noSecrets(t *testing.T, outputs []string, secrets ...string) {
	t.Helper()
	all := strings.Join(outputs, "\n")
	for _, s := range append(secrets, swAdminPassword, swRelaySecret) {
		if s != "" && strings.Contains(all, s) {
			t.Errorf("output shows the secret %s***", s[:3])
		}
	}
}

func TestPlanCommand(t *testing.T) {
	e := newSwEnv(t, false, false)
	before := e.srv.Dump()
	code, out, errOut := runSw(t, "plan", "--config", e.config)
	if code != 0 {
		t.Fatalf("plan exit %d; stderr:\n%s", code, errOut)
	}
	for _, want := range []string{
		"apply would make 9 change(s)",
		"create x:Domain migrated.test",
		"update x:Domain example.org (b) allowRelaying",
		"current: false",
		`wanted:  {"match":{"0":{"if":"is_local_address(rcpt)","then":"'local'"}`,
		"update x:SystemSettings singleton proxyTrustedNetworks  [needs restart]",
		"Needs a Stalwart restart to take effect: x:SystemSettings proxyTrustedNetworks",
		"stalwart-cli create Domain --field name=migrated.test",
		"stalwart-cli create Action/ReloadSettings",
		`"authSecret":{"@type":"Value","secret":"(redacted)"}`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("plan output lacks %q:\n%s", want, out)
		}
	}
	code, jsonOut, errOut := runSw(t, "plan", "--config", e.config, "--json")
	if code != 0 {
		t.Fatalf("plan --json exit %d: %s", code, errOut)
	}
	var p stalwart.Plan
	if err := json.Unmarshal([]byte(jsonOut), &p); err != nil || len(p.Changes) != 9 || p.Changes[0].CLI == "" {
		t.Errorf("plan --json = %v, %d changes; want 9 with CLI commands:\n%s", err, len(p.Changes), jsonOut)
	}
	if e.srv.Dump() != before {
		t.Errorf("plan changed the server")
	}
	noSecrets(t, []string{out, errOut, jsonOut})
}

func TestPlanUsageAndConfigErrors(t *testing.T) {
	e := newSwEnv(t, false, false)
	noSection := e.path("nosection.yaml")
	data, _ := os.ReadFile(e.config)
	cut := strings.Index(string(data), "stalwart:")
	end := strings.Index(string(data), "migration:")
	if err := os.WriteFile(noSection, append(data[:cut:cut], data[end:]...), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name     string
		args     []string
		env      map[string]string
		wantCode int
		wantErr  string
	}{
		{"no --config", []string{"plan"}, nil, 2, "--config FILE is required"},
		{"positional argument", []string{"plan", e.config}, nil, 2, "takes no arguments"},
		{"unknown flag", []string{"plan", "--config", e.config, "--nope"}, nil, 2, "unknown flag"},
		{"missing file", []string{"plan", "--config", e.path("missing.yaml")}, nil, 2, "missing.yaml"},
		{"no stalwart section", []string{"plan", "--config", noSection}, nil, 2, "field stalwart"},
		{"stalwart section from the environment", []string{"plan", "--config", noSection},
			map[string]string{config.EnvStalwartURL: e.srv.URL, config.EnvStalwartUser: "admin", config.EnvStalwartPassword: swAdminPassword}, 0, ""},
		{"wrong password", []string{"plan", "--config", e.config}, map[string]string{config.EnvStalwartPassword: "Wrong-Secret-Pw-5521"}, 3,
			`refused the credentials (user "admin")`},
		{"rollback without a snapshot", []string{"rollback", "--config", e.config}, nil, 2, "--snapshot FILE is required"},
		{"rollback of a missing snapshot", []string{"rollback", "--config", e.config, "--snapshot", e.path("none.json")}, nil, 2, "read snapshot"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			code, out, errOut := runSw(t, tt.args...)
			if code != tt.wantCode || !strings.Contains(errOut, tt.wantErr) {
				t.Errorf("exit %d, stderr %q; want exit %d and %q", code, errOut, tt.wantCode, tt.wantErr)
			}
			noSecrets(t, []string{out, errOut}, "Wrong-Secret-Pw-5521")
		})
	}
}
