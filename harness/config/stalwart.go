package config

import (
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"strings"
	"time"
)

// The environment variables stalwart-cli reads; they fill in or override the
// stalwart section of the config file.
const (
	EnvStalwartURL      = "STALWART_URL"
	EnvStalwartUser     = "STALWART_USER"
	EnvStalwartPassword = "STALWART_PASSWORD"
	EnvStalwartToken    = "STALWART_TOKEN"
)

// DefaultStalwartTimeout bounds one management API request when stalwart.timeout is unset.
const DefaultStalwartTimeout = 30 * time.Second

// Stalwart says how to reach a Stalwart (>= 0.16) server's JMAP management API.
//
// Authentication is either User + Password (HTTP Basic) or Token (Bearer), as
// stalwart-cli does it. STALWART_URL, STALWART_USER, STALWART_PASSWORD and
// STALWART_TOKEN override the file: a token from the environment replaces a user
// and password from the file, and the other way round.
type Stalwart struct {
	// URL is the base URL of the server itself (not the proxy), e.g. http://127.0.0.1:8080.
	URL      string `yaml:"url"`
	User     string `yaml:"user"`
	Password Secret `yaml:"password"`
	Token    Secret `yaml:"token"`
	// Timeout bounds each HTTP request; default 30s.
	Timeout time.Duration `yaml:"timeout"`
	// Hermetic marks a throwaway server (such as a test container): apply and
	// rollback then take destructive steps without --yes.
	Hermetic bool `yaml:"hermetic"`
}

// StalwartFromEnv builds a stalwart section from the STALWART_* variables alone,
// for a config file that has none. It returns nil, nil when STALWART_URL is unset.
func StalwartFromEnv(file string, lookupEnv func(string) (string, bool)) (*Stalwart, error) {
	if u, ok := lookupEnv(EnvStalwartURL); !ok || u == "" {
		return nil, nil
	}
	s := &Stalwart{}
	v := &validator{file: file, lines: map[string]int{}, lookupEnv: lookupEnv}
	s.validate(v)
	if len(v.errs) > 0 {
		return nil, v.errs
	}
	return s, nil
}

func (s *Stalwart) applyEnv(lookupEnv func(string) (string, bool)) {
	get := func(k string) (string, bool) {
		val, ok := lookupEnv(k)
		return val, ok && val != ""
	}
	if u, ok := get(EnvStalwartURL); ok {
		s.URL = u
	}
	if tok, ok := get(EnvStalwartToken); ok {
		s.Token = Secret{Env: EnvStalwartToken, value: tok}
		s.User, s.Password = "", Secret{}
		return
	}
	user, okU := get(EnvStalwartUser)
	pw, okP := get(EnvStalwartPassword)
	if okU {
		s.User = user
	}
	if okP {
		s.Password = Secret{Env: EnvStalwartPassword, value: pw}
	}
	if okU || okP {
		s.Token = Secret{}
	}
}

func (s *Stalwart) validate(v *validator) {
	// STALWART_* first (they may replace a file secret whose variable is unset),
	// then resolve whatever {env: X} secrets remain.
	s.applyEnv(v.lookupEnv)
	v.secret("stalwart.password", &s.Password, false)
	v.secret("stalwart.token", &s.Token, false)
	if s.Timeout == 0 {
		s.Timeout = DefaultStalwartTimeout
	}
	if s.Timeout < 0 {
		v.fail("stalwart.timeout", "must not be negative")
	}
	if s.URL == "" {
		v.fail("stalwart.url", "required (the management API's base URL, or $"+EnvStalwartURL+")")
	} else if u, err := url.Parse(s.URL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		v.fail("stalwart.url", fmt.Sprintf("%q is not an http or https URL", s.URL))
	} else if u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		v.fail("stalwart.url", "must not carry a query, fragment or user info (put credentials in user/password or token)")
	}
	basic := s.User != "" || s.Password.IsSet()
	switch {
	case basic && s.Token.IsSet():
		v.fail("stalwart.token", "set either user and password, or token, not both")
	case s.Token.IsSet():
	case s.User == "" && s.Password.IsSet():
		v.fail("stalwart.user", "required with a password (or $"+EnvStalwartUser+")")
	case s.User != "" && !s.Password.IsSet():
		v.fail("stalwart.password", "required with a user (inline, {env: VARIABLE}, or $"+EnvStalwartPassword+")")
	case !basic:
		v.fail("stalwart", "credentials required: user and password, or token (or $"+EnvStalwartUser+
			" and $"+EnvStalwartPassword+", or $"+EnvStalwartToken+")")
	}
}

// The migration modes.
const (
	// ModeRehearsal points the source relay at the harness's fake source while it verifies.
	ModeRehearsal = "rehearsal"
	// ModeLive leaves the relay on the real source and observes it from Stalwart's queue.
	ModeLive = "live"
)

// Migration is the split-delivery configuration apply writes to Stalwart, as the
// migration guide's "configure the new deployment" step describes it.
type Migration struct {
	// Mode is "rehearsal" (default) or "live".
	Mode string `yaml:"mode"`
	// Domains are created and get allowRelaying; default plan.domains.
	Domains []string `yaml:"domains"`
	// Source is the real source server the "source" relay route points at.
	Source Relay `yaml:"source"`
	// RehearsalSource is host:port at which Stalwart reaches the harness's fake source
	// during a rehearsal; default fakes.source.
	RehearsalSource string `yaml:"rehearsal_source"`
	// ProxyTrustedNetworks are the proxy's addresses (IP or CIDR), written to
	// SystemSettings.proxyTrustedNetworks. Empty leaves the setting alone.
	ProxyTrustedNetworks []string `yaml:"proxy_trusted_networks"`
	// PublicURL is what JMAP autodiscovery must advertise (the proxy), e.g.
	// https://mail.example.org. It is set with STALWART_PUBLIC_URL and a restart.
	PublicURL string `yaml:"public_url"`
	// DefaultHostname is written with the first SystemSettings write on a server
	// whose settings were never saved.
	DefaultHostname string `yaml:"default_hostname"`
	// TestAccounts are created by apply with random passwords and removed by rollback.
	TestAccounts []TestAccount `yaml:"test_accounts"`
	// SourceTestAddress is an address on the real source, in a migrated domain,
	// whose mailbox SourceMailbox reads. In live mode it is an extra unmigrated
	// probe recipient, and its source verdict comes from that mailbox rather than
	// from Stalwart's queue. Set both or neither.
	SourceTestAddress string `yaml:"source_test_address"`
	// SourceMailbox says how to read SourceTestAddress's mailbox on the source
	// over IMAP (live mode only).
	SourceMailbox *SourceMailbox `yaml:"source_mailbox"`
}

// SourceMailbox is the IMAP login to the source test address's mailbox on the
// real source server: the same keys as plan.local[].mailbox, IMAP only.
type SourceMailbox struct {
	// Address is host:port of the source's IMAP server.
	Address string `yaml:"address"`
	// TLS is "none", "starttls" or "implicit" (default implicit when the port is 993, else none).
	TLS                string `yaml:"tls"`
	InsecureSkipVerify bool   `yaml:"insecure_skip_verify"`
	// Username defaults to migration.source_test_address.
	Username string `yaml:"username"`
	Password Secret `yaml:"password"`
}

// Relay is an MtaRoute/Relay target.
type Relay struct {
	// Address is a host name or IP (no port).
	Address string `yaml:"address"`
	// Port defaults to 25.
	Port int `yaml:"port"`
	// Protocol is "smtp" (default) or "lmtp".
	Protocol          string `yaml:"protocol"`
	ImplicitTLS       bool   `yaml:"implicit_tls"`
	AllowInvalidCerts bool   `yaml:"allow_invalid_certs"`
	// Auth is optional; Stalwart authenticates only when both parts are set.
	Auth *RelayAuth `yaml:"auth"`
}

// RelayAuth is the relay route's SMTP AUTH login.
type RelayAuth struct {
	Username string `yaml:"username"`
	Secret   Secret `yaml:"secret"`
}

// TestAccount is an account apply creates for local-delivery probes.
type TestAccount struct {
	// Address is name@domain; the domain must be one of the migration's domains.
	Address string `yaml:"address"`
}

// Stalwart refuses domain names under these reserved TLDs (its public-suffix check).
var refusedTLDs = []string{"example", "invalid"}

func (m *Migration) validate(v *validator) {
	if m.Mode == "" {
		m.Mode = ModeRehearsal
	}
	v.oneOf("migration.mode", m.Mode, ModeRehearsal, ModeLive)
	for i, d := range m.Domains {
		f := fmt.Sprintf("migration.domains.%d", i)
		v.domain(f, d)
		tld := d[strings.LastIndexByte(d, '.')+1:]
		for _, r := range refusedTLDs {
			if strings.EqualFold(tld, r) {
				v.fail(f, fmt.Sprintf("%q: Stalwart refuses the .%s TLD (use .test, .internal or a real domain)", d, r))
			}
		}
	}

	src := &m.Source
	if src.Port == 0 {
		src.Port = 25
	}
	if src.Protocol == "" {
		src.Protocol = "smtp"
	}
	switch {
	case src.Address == "":
		v.fail("migration.source.address", "required (the real source server's host name or IP)")
	case strings.ContainsAny(src.Address, " /@") || (strings.Contains(src.Address, ":") && !isIP(src.Address)):
		v.fail("migration.source.address", fmt.Sprintf("%q is not a host name or IP (give the port in migration.source.port)", src.Address))
	}
	if src.Port < 1 || src.Port > 65535 {
		v.fail("migration.source.port", fmt.Sprintf("%d is not a port (1-65535)", src.Port))
	}
	v.oneOf("migration.source.protocol", src.Protocol, "smtp", "lmtp")
	if src.Auth != nil {
		v.required("migration.source.auth.username", src.Auth.Username)
		v.secret("migration.source.auth.secret", &src.Auth.Secret, true)
	}
	if m.RehearsalSource != "" {
		v.addrPort("migration.rehearsal_source", m.RehearsalSource, false)
	}

	for i, n := range m.ProxyTrustedNetworks {
		f := fmt.Sprintf("migration.proxy_trusted_networks.%d", i)
		if _, err := ParseNetwork(n); err != nil {
			v.fail(f, err.Error())
		}
	}
	if m.PublicURL != "" {
		u, err := url.Parse(m.PublicURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
			v.fail("migration.public_url", fmt.Sprintf("%q is not an http or https base URL", m.PublicURL))
		}
	}
	if m.DefaultHostname != "" && (!strings.Contains(m.DefaultHostname, ".") || strings.ContainsAny(m.DefaultHostname, " /:@")) {
		v.fail("migration.default_hostname", fmt.Sprintf("%q is not a fully qualified host name", m.DefaultHostname))
	}
	if mb := m.SourceMailbox; mb != nil {
		if mb.Username == "" {
			mb.Username = m.SourceTestAddress
		}
		if mb.TLS == "" {
			mb.TLS = "none"
			if strings.HasSuffix(mb.Address, ":993") {
				mb.TLS = "implicit"
			}
		}
		v.addrPort("migration.source_mailbox.address", mb.Address, true)
		v.oneOf("migration.source_mailbox.tls", mb.TLS, "none", "starttls", "implicit")
		v.secret("migration.source_mailbox.password", &mb.Password, true)
		if m.SourceTestAddress == "" {
			v.fail("migration.source_test_address", "required with migration.source_mailbox (the address whose mailbox it is)")
		}
	} else if m.SourceTestAddress != "" {
		v.fail("migration.source_mailbox", "required with migration.source_test_address (how to read its mailbox on the source)")
	}
	v.email("migration.source_test_address", m.SourceTestAddress, false)
	for i, a := range m.TestAccounts {
		f := fmt.Sprintf("migration.test_accounts.%d.address", i)
		v.email(f, a.Address, true)
		if len(m.Domains) > 0 {
			v.inDomains(f, a.Address, m.Domains, true)
		}
	}
}

func isIP(s string) bool {
	_, err := netip.ParseAddr(strings.Trim(s, "[]"))
	return err == nil
}

// ParseNetwork parses an IP or CIDR as Stalwart's ipNetwork type accepts it:
// prefixes shorter than /8 are refused (Stalwart does not parse them).
func ParseNetwork(s string) (netip.Prefix, error) {
	if a, err := netip.ParseAddr(s); err == nil {
		return netip.PrefixFrom(a, a.BitLen()), nil
	}
	p, err := netip.ParsePrefix(s)
	if err != nil {
		if _, _, err2 := net.ParseCIDR(s); err2 != nil {
			return netip.Prefix{}, fmt.Errorf("%q is not an IP address or CIDR network", s)
		}
		return netip.Prefix{}, fmt.Errorf("%q is not a canonical CIDR network", s)
	}
	if p.Bits() < 8 {
		return netip.Prefix{}, fmt.Errorf("%q: Stalwart refuses prefixes shorter than /8", s)
	}
	return p, nil
}
