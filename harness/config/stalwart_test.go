package config

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

const stalwartBaseYAML = `target:
  smtp: 127.0.0.1:25
plan:
  domains: [example.org]
  unmigrated: [bob@example.org]
fakes:
  source: 127.0.0.4:2525
proxy:
  announce: 198.51.100.7
`

const stalwartSectionYAML = `stalwart:
  url: http://127.0.0.1:8080
  user: admin
  password: {env: ADMIN_PW}
migration:
  domains: [example.org]
  source:
    address: source.internal.example.org
    allow_invalid_certs: true
    auth:
      username: relay
      secret: relay-secret-1
  proxy_trusted_networks: [203.0.113.10/32, 127.0.0.9]
  public_url: https://mail.example.org
  default_hostname: mx.example.org
  test_accounts:
    - address: probe@example.org
`

func TestStalwartSection(t *testing.T) {
	cfg, err := Parse("run.yaml", []byte(stalwartBaseYAML+stalwartSectionYAML), env(map[string]string{"ADMIN_PW": "pw-from-env"}))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	s, m := cfg.Stalwart, cfg.Migration
	if s.URL != "http://127.0.0.1:8080" || s.User != "admin" || s.Password.Value() != "pw-from-env" {
		t.Errorf("stalwart = %+v (password %q); want the file's url and user, the env password", s, s.Password.Value())
	}
	if s.Timeout != DefaultStalwartTimeout {
		t.Errorf("timeout = %v; want default %v", s.Timeout, DefaultStalwartTimeout)
	}
	if m.Mode != ModeRehearsal || m.Source.Port != 25 || m.Source.Protocol != "smtp" {
		t.Errorf("migration defaults: mode %q port %d protocol %q; want rehearsal 25 smtp", m.Mode, m.Source.Port, m.Source.Protocol)
	}
	if m.Source.Auth == nil || m.Source.Auth.Secret.Value() != "relay-secret-1" {
		t.Errorf("relay auth = %+v; want the inline secret", m.Source.Auth)
	}
}

func TestStalwartEnvOverrides(t *testing.T) {
	for _, tt := range []struct {
		name               string
		env                map[string]string
		wantURL, wantUser  string
		wantPW, wantToken  string
		wantErrField       string
		wantErrMsgContains string
	}{
		{name: "file only", env: map[string]string{"ADMIN_PW": "a"},
			wantURL: "http://127.0.0.1:8080", wantUser: "admin", wantPW: "a"},
		{name: "url and password from env", env: map[string]string{"ADMIN_PW": "a", EnvStalwartURL: "https://10.0.0.1:443", EnvStalwartPassword: "b"},
			wantURL: "https://10.0.0.1:443", wantUser: "admin", wantPW: "b"},
		{name: "token replaces file user and an unset file password variable", env: map[string]string{EnvStalwartToken: "tok"},
			wantURL: "http://127.0.0.1:8080", wantToken: "tok"},
		{name: "file password variable unset", env: map[string]string{},
			wantErrField: "stalwart.password", wantErrMsgContains: "ADMIN_PW is not set"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := Parse("run.yaml", []byte(stalwartBaseYAML+stalwartSectionYAML), env(tt.env))
			if tt.wantErrField != "" {
				var ce *Error
				if !errors.As(err, &ce) || ce.Field != tt.wantErrField || !strings.Contains(ce.Msg, tt.wantErrMsgContains) {
					t.Fatalf("Parse error = %v; want field %s containing %q", err, tt.wantErrField, tt.wantErrMsgContains)
				}
				return
			}
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			s := cfg.Stalwart
			if s.URL != tt.wantURL || s.User != tt.wantUser || s.Password.Value() != tt.wantPW || s.Token.Value() != tt.wantToken {
				t.Errorf("got url %q user %q pw %q token %q; want %q %q %q %q", s.URL, s.User, s.Password.Value(), s.Token.Value(),
					tt.wantURL, tt.wantUser, tt.wantPW, tt.wantToken)
			}
		})
	}
}

func TestStalwartFromEnv(t *testing.T) {
	s, err := StalwartFromEnv("run.yaml", env(map[string]string{}))
	if s != nil || err != nil {
		t.Errorf("StalwartFromEnv(no vars) = %+v, %v; want nil, nil", s, err)
	}
	s, err = StalwartFromEnv("run.yaml", env(map[string]string{EnvStalwartURL: "http://127.0.0.1:8080", EnvStalwartUser: "admin", EnvStalwartPassword: "pw"}))
	if err != nil || s == nil || s.User != "admin" || s.Password.Value() != "pw" || s.Timeout != DefaultStalwartTimeout {
		t.Errorf("StalwartFromEnv = %+v, %v; want admin/pw with default timeout", s, err)
	}
	if _, err := StalwartFromEnv("run.yaml", env(map[string]string{EnvStalwartURL: "http://127.0.0.1:8080"})); err == nil {
		t.Errorf("StalwartFromEnv(url only) = nil error; want missing credentials")
	}
}

func TestMigrationErrors(t *testing.T) {
	for _, tt := range []struct {
		name, from, to, wantField string
	}{
		{"reserved tld", "  domains: [example.org]\n  source:", "  domains: [corp.example]\n  source:", "migration.domains.0"},
		{"port in address", "address: source.internal.example.org", "address: source.internal.example.org:25", "migration.source.address"},
		{"bad protocol", "    allow_invalid_certs: true", "    allow_invalid_certs: true\n    protocol: http", "migration.source.protocol"},
		{"short prefix", "[203.0.113.10/32, 127.0.0.9]", "[0.0.0.0/0]", "migration.proxy_trusted_networks.0"},
		{"bad network", "[203.0.113.10/32, 127.0.0.9]", "[203.0.113.10/33]", "migration.proxy_trusted_networks.0"},
		{"public url", "https://mail.example.org", "mail.example.org", "migration.public_url"},
		{"hostname", "default_hostname: mx.example.org", "default_hostname: mx", "migration.default_hostname"},
		{"account outside domains", "probe@example.org", "probe@other.org", "migration.test_accounts.0.address"},
		{"relay auth without secret", "      secret: relay-secret-1\n", "", "migration.source.auth.secret"},
		{"both auth kinds", "  user: admin\n", "  user: admin\n  token: t\n", "stalwart.token"},
		{"bad url", "url: http://127.0.0.1:8080", "url: 127.0.0.1:8080", "stalwart.url"},
		{"mode", "migration:\n", "migration:\n  mode: prod\n", "migration.mode"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			doc := stalwartBaseYAML + strings.Replace(stalwartSectionYAML, tt.from, tt.to, 1)
			if !strings.Contains(stalwartSectionYAML, tt.from) {
				t.Fatalf("test edit %q does not apply", tt.from)
			}
			_, err := Parse("run.yaml", []byte(doc), env(map[string]string{"ADMIN_PW": "x"}))
			var es Errors
			if !errors.As(err, &es) {
				t.Fatalf("Parse error = %v; want config errors", err)
			}
			var fields []string
			for _, e := range es {
				fields = append(fields, e.Field)
				if e.Field == tt.wantField && e.Line == 0 {
					t.Errorf("error for %s has no line", e.Field)
				}
			}
			if !strings.Contains(strings.Join(fields, " "), tt.wantField) {
				t.Errorf("error fields = %v; want %s", fields, tt.wantField)
			}
		})
	}
}

func TestSecretsNotPrinted(t *testing.T) {
	cfg, err := Parse("run.yaml", []byte(stalwartBaseYAML+stalwartSectionYAML), env(map[string]string{"ADMIN_PW": "pw-from-env-42"}))
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{sprintAll(cfg.Stalwart), sprintAll(cfg.Migration)} {
		for _, secret := range []string{"pw-from-env-42", "relay-secret-1"} {
			if strings.Contains(s, secret) {
				t.Errorf("formatted config contains the secret %q: %s", secret, s)
			}
		}
	}
}

func sprintAll(x any) string {
	return fmt.Sprintf("%v %+v %#v", x, x, x)
}

func TestSourceMailbox(t *testing.T) {
	const mailbox = `  source_test_address: tester@example.org
  source_mailbox:
    address: imap.source.test:993
    password: {env: SOURCE_PW}
`
	cfg, err := Parse("run.yaml", []byte(stalwartBaseYAML+stalwartSectionYAML+mailbox), env(map[string]string{"ADMIN_PW": "x", "SOURCE_PW": "src-pw-7"}))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	m := cfg.Migration
	if mb := m.SourceMailbox; m.SourceTestAddress != "tester@example.org" || mb == nil || mb.Address != "imap.source.test:993" ||
		mb.TLS != "implicit" || mb.Username != "tester@example.org" || mb.Password.Value() != "src-pw-7" {
		t.Errorf("source test address %q, mailbox %+v; want tester@example.org read over implicit TLS as itself with the env password",
			m.SourceTestAddress, mb)
	}
	if s := sprintAll(m); strings.Contains(s, "src-pw-7") {
		t.Errorf("formatted migration contains the source mailbox password: %s", s)
	}

	for _, tt := range []struct {
		name, from, to, wantField, wantMsg string
	}{
		{"address outside the migrated domains", "tester@example.org", "tester@other.test", "migration.source_test_address", "not in a migrated domain"},
		{"not an address", "tester@example.org", "tester", "migration.source_test_address", "not a bare e-mail address"},
		{"mailbox without address", "  source_test_address: tester@example.org\n", "", "migration.source_test_address", "required with migration.source_mailbox"},
		{"address without mailbox", "  source_mailbox:\n    address: imap.source.test:993\n    password: {env: SOURCE_PW}\n", "",
			"migration.source_mailbox", "required with migration.source_test_address"},
		{"bad imap address", "imap.source.test:993", "imap.source.test", "migration.source_mailbox.address", "not host:port"},
		{"bad tls", "    password:", "    tls: ssl\n    password:", "migration.source_mailbox.tls", `"ssl" is not one of`},
		{"password unset", "{env: SOURCE_PW}", "{env: NOPE}", "migration.source_mailbox.password", "NOPE is not set"},
		{"no password", "    password: {env: SOURCE_PW}\n", "", "migration.source_mailbox.password", "required"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if !strings.Contains(mailbox, tt.from) {
				t.Fatalf("test edit %q does not apply", tt.from)
			}
			doc := stalwartBaseYAML + stalwartSectionYAML + strings.Replace(mailbox, tt.from, tt.to, 1)
			_, err := Parse("run.yaml", []byte(doc), env(map[string]string{"ADMIN_PW": "x", "SOURCE_PW": "y"}))
			var es Errors
			if !errors.As(err, &es) {
				t.Fatalf("Parse error = %v; want config errors", err)
			}
			for _, e := range es {
				if e.Field == tt.wantField && strings.Contains(e.Msg, tt.wantMsg) {
					if e.Line == 0 {
						t.Errorf("error for %s has no line", e.Field)
					}
					return
				}
			}
			t.Errorf("errors %v; want field %s with %q", err, tt.wantField, tt.wantMsg)
		})
	}

	// A local account cannot be the source's test address.
	doc := strings.Replace(stalwartBaseYAML, "  unmigrated: [bob@example.org]\n",
		"  local:\n    - address: tester@example.org\n      mailbox: {address: 127.0.0.1:143, password: p}\n", 1) +
		stalwartSectionYAML + mailbox
	if _, err := Parse("run.yaml", []byte(doc), env(map[string]string{"ADMIN_PW": "x", "SOURCE_PW": "y"})); err == nil ||
		!strings.Contains(err.Error(), "field migration.source_test_address: \"tester@example.org\" is a local account") {
		t.Errorf("Parse = %v; want the local account refused as the source test address", err)
	}
}
