package config

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

const validYAML = `target:
  smtp: 127.0.0.1:25
  plain_smtp: 127.0.0.2:25
  submission: 127.0.0.1:587
plan:
  domains: [example.org]
  local:
    - address: alice@example.org
      mailbox:
        address: 127.0.0.1:143
        password: {env: ALICE_PW}
  unmigrated: [bob@example.org]
  external: [erin@external.test]
submitter:
  username: alice@example.org
  password: inline-secret-1
fakes:
  source: 127.0.0.4:2525
  mx: 127.0.0.5:25
  dns: 127.0.0.53:53
proxy:
  version: 1
  announce: 198.51.100.7
timeouts:
  delivery: 20s
`

func env(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

func TestParseValid(t *testing.T) {
	cfg, err := Parse("run.yaml", []byte(validYAML), env(map[string]string{"ALICE_PW": "from-env-pw"}))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	if got := cfg.Plan.Local[0].Mailbox.Password.Value(); got != "from-env-pw" {
		t.Errorf("alice password = %q; want the env value", got)
	}
	if got := cfg.Plan.Local[0].Mailbox.Username; got != "alice@example.org" {
		t.Errorf("mailbox username = %q; want the address", got)
	}
	if cfg.Timeouts.Delivery != 20*time.Second || cfg.Timeouts.Absence != 2*time.Second {
		t.Errorf("timeouts = %+v; want delivery 20s and default absence 2s", cfg.Timeouts)
	}
	if cfg.Fakes.MXAddress != "127.0.0.5" {
		t.Errorf("fakes.mx_address = %q; want 127.0.0.5 from fakes.mx", cfg.Fakes.MXAddress)
	}
	if cfg.Proxy.Version != 1 {
		t.Errorf("proxy.version = %d; want 1", cfg.Proxy.Version)
	}
}

func TestParseErrorsNameLineAndField(t *testing.T) {
	for _, tt := range []struct {
		name      string
		edit      func(string) string
		env       map[string]string
		wantLine  int
		wantField string
		wantMsg   string
	}{
		{"unknown key", func(s string) string { return strings.Replace(s, "  plain_smtp:", "  plain_smpt:", 1) },
			map[string]string{"ALICE_PW": "x"}, 3, "plain_smpt", "unknown key"},
		{"bad address", func(s string) string { return strings.Replace(s, "127.0.0.4:2525", "127.0.0.4", 1) },
			map[string]string{"ALICE_PW": "x"}, 18, "fakes.source", "not host:port"},
		{"missing field", func(s string) string { return strings.Replace(s, "  smtp: 127.0.0.1:25\n", "", 1) },
			map[string]string{"ALICE_PW": "x"}, 1, "target.smtp", "required"},
		{"env secret unset", func(s string) string { return s }, nil, 11, "plan.local.0.mailbox.password", "ALICE_PW is not set"},
		{"external in migrated domain", func(s string) string { return strings.Replace(s, "erin@external.test", "erin@example.org", 1) },
			map[string]string{"ALICE_PW": "x"}, 13, "plan.external.0", "migrated domain"},
		{"bad proxy version", func(s string) string { return strings.Replace(s, "version: 1", "version: 3", 1) },
			map[string]string{"ALICE_PW": "x"}, 22, "proxy.version", "must be 1 or 2"},
		{"bad duration", func(s string) string { return strings.Replace(s, "delivery: 20s", "delivery: soon", 1) },
			map[string]string{"ALICE_PW": "x"}, 25, "", "soon"},
		{"bad yaml", func(s string) string { return strings.Replace(s, "plan:", "plan: [", 1) },
			map[string]string{"ALICE_PW": "x"}, 0, "", ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse("run.yaml", []byte(tt.edit(validYAML)), env(tt.env))
			var ce *Error
			if !errors.As(err, &ce) {
				t.Fatalf("Parse error = %v (%T); want a *config.Error", err, err)
			}
			if !strings.HasPrefix(err.Error(), "run.yaml") {
				t.Errorf("error %q does not name the file", err)
			}
			if tt.wantLine != 0 && ce.Line != tt.wantLine {
				t.Errorf("line = %d; want %d (%v)", ce.Line, tt.wantLine, err)
			}
			if tt.wantField != "" && ce.Field != tt.wantField {
				t.Errorf("field = %q; want %q (%v)", ce.Field, tt.wantField, err)
			}
			if !strings.Contains(err.Error(), tt.wantMsg) {
				t.Errorf("error %q; want it to mention %q", err, tt.wantMsg)
			}
		})
	}
}

func TestSecretNeverPrints(t *testing.T) {
	cfg, err := Parse("run.yaml", []byte(validYAML), env(map[string]string{"ALICE_PW": "from-env-pw"}))
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{fmt.Sprintf("%v", cfg), fmt.Sprintf("%+v", cfg), fmt.Sprintf("%#v", cfg)} {
		for _, secret := range []string{"from-env-pw", "inline-secret-1"} {
			if strings.Contains(s, secret) {
				t.Errorf("formatted config contains secret %q", secret)
			}
		}
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(validYAML))
	f.Add([]byte("target: {smtp: x}\n"))
	f.Add([]byte("plan:\n  local:\n    - mailbox: {password: {env: [1]}}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := Parse("fuzz.yaml", data, env(nil))
		if err == nil && cfg == nil {
			t.Fatal("nil config without error")
		}
		if err != nil {
			var ce *Error
			if !errors.As(err, &ce) {
				t.Fatalf("error %v (%T) is not a *config.Error", err, err)
			}
		}
	})
}
