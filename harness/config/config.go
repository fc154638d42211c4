// Package config loads and validates a splitcheck run description (one YAML file).
//
// Parsing is strict: unknown keys, bad addresses and missing fields are reported as
// *Error values that name the file, the line and the field. Secrets may be written
// inline or taken from the environment, and never print themselves.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/splitcheck/splitcheck/internal/yamlpos"
)

// Config is one run of splitcheck.
type Config struct {
	// File is the path the config was read from (not a YAML key).
	File string `yaml:"-"`

	Target    Target    `yaml:"target"`
	Plan      Plan      `yaml:"plan"`
	Submitter Submitter `yaml:"submitter"`
	Fakes     Fakes     `yaml:"fakes"`
	Proxy     Proxy     `yaml:"proxy"`
	Probe     Probe     `yaml:"probe"`
	Timeouts  Timeouts  `yaml:"timeouts"`
	// Scenarios lists scenario files (YAML) that add or replace probes; relative
	// paths are resolved against the config file's folder.
	Scenarios []string `yaml:"scenarios"`

	// Stalwart and Migration are only needed by plan, apply, rollback and run.
	Stalwart  *Stalwart  `yaml:"stalwart"`
	Migration *Migration `yaml:"migration"`

	// Bulk is only needed by splitcheck bulk.
	Bulk *Bulk `yaml:"bulk"`
}

// Target names the mail server under test.
type Target struct {
	// SMTP is the port-25 listener that expects a PROXY header (reached through the proxy).
	SMTP string `yaml:"smtp"`
	// PlainSMTP is an optional port-25 listener without PROXY protocol, for the
	// "headerless mail from elsewhere still works" check.
	PlainSMTP string `yaml:"plain_smtp"`
	// Submission is the authenticated submission listener (587 or 465).
	Submission string `yaml:"submission"`
	// SubmissionTLS is "starttls" (default), "implicit" or "none".
	SubmissionTLS string `yaml:"submission_tls"`
	// InsecureSkipVerify accepts a self-signed certificate on submission.
	InsecureSkipVerify bool `yaml:"insecure_skip_verify"`
	// Hostname is the server's own name: the TLS server name for submission, and evidence.
	Hostname string `yaml:"hostname"`
}

// Plan is the migration plan the routes are checked against.
type Plan struct {
	// Domains are the migrated domains (the new server is their MX).
	Domains []string `yaml:"domains"`
	// Local are accounts that already live on the new server.
	Local []LocalAccount `yaml:"local"`
	// Unmigrated are addresses in migrated domains that still live on the source.
	Unmigrated []string `yaml:"unmigrated"`
	// External are addresses in other domains (delivered by MX when authenticated).
	External []string `yaml:"external"`
}

// LocalAccount is an account on the new server and how to read its mailbox.
type LocalAccount struct {
	Address string  `yaml:"address"`
	Mailbox Mailbox `yaml:"mailbox"`
}

// Mailbox says how to read a local account's mail.
type Mailbox struct {
	// Protocol is "imap" (default) or "jmap".
	Protocol string `yaml:"protocol"`
	// Address is host:port of the IMAP server, or the base URL for JMAP.
	Address string `yaml:"address"`
	// TLS is "none", "starttls" or "implicit" (IMAP only; default implicit when the port is 993, else none).
	TLS                string `yaml:"tls"`
	InsecureSkipVerify bool   `yaml:"insecure_skip_verify"`
	// Username defaults to the account's address.
	Username string `yaml:"username"`
	Password Secret `yaml:"password"`
}

// Submitter is the account the authenticated submission probes log in as.
type Submitter struct {
	Username string `yaml:"username"`
	Password Secret `yaml:"password"`
	// Mechanism is "plain" (default) or "login".
	Mechanism string `yaml:"mechanism"`
}

// Fakes are the listen addresses of the harness's own servers.
type Fakes struct {
	// Source is where the target's source relay route points.
	Source string `yaml:"source"`
	// MX is the fake MX; MX delivery always uses port 25.
	MX string `yaml:"mx"`
	// DNS is the fake DNS (UDP and TCP) that answers MX and A for the external domains.
	DNS string `yaml:"dns"`
	// MXAddress is the A record the fake DNS gives for the MX host; defaults to MX's IP.
	MXAddress string `yaml:"mx_address"`
}

// Proxy configures the PROXY-protocol front door the port-25 probes go through.
type Proxy struct {
	// Version is 1 or 2.
	Version int `yaml:"version"`
	// Announce is the client address the header claims, IP or IP:port.
	Announce string `yaml:"announce"`
	// SourceAddress is the loopback IP the proxy connects to the target from.
	SourceAddress string `yaml:"source_address"`
	// Listen is where the proxy listens; default 127.0.0.1:0.
	Listen string `yaml:"listen"`
}

// Probe configures the probe messages.
type Probe struct {
	// Helo is the fully qualified EHLO name; default probe.splitcheck.test.
	Helo string `yaml:"helo"`
	// Sender is the envelope sender; default probe@splitcheck.test.
	Sender string `yaml:"sender"`
	// PlainSource is the local IP the headerless plain-listener probe connects from.
	PlainSource string `yaml:"plain_source"`
}

// Timeouts bound every wait of a run.
type Timeouts struct {
	// Connect bounds each dial and SMTP command; default 10s.
	Connect time.Duration `yaml:"connect"`
	// Delivery is how long a probe may take to arrive where it is expected; default 30s.
	Delivery time.Duration `yaml:"delivery"`
	// Absence is the quiet window during which a probe must not appear anywhere else; default 2s.
	Absence time.Duration `yaml:"absence"`
	// Run bounds the whole run; default 5m.
	Run time.Duration `yaml:"run"`
}

// Error is a configuration error that names where it is.
type Error struct {
	File  string
	Line  int // 0 when unknown
	Field string
	Msg   string
}

func (e *Error) Error() string { return yamlpos.Format(e.File, e.Line, e.Field, e.Msg) }

// Errors is every error found in one file.
type Errors []*Error

func (es Errors) Error() string {
	msgs := make([]string, len(es))
	for i, e := range es {
		msgs[i] = e.Error()
	}
	return strings.Join(msgs, "\n")
}

// As lets errors.As find the first *Error.
func (es Errors) As(target any) bool {
	if p, ok := target.(**Error); ok && len(es) > 0 {
		*p = es[0]
		return true
	}
	return false
}

// Load reads and validates the file at path, looking secrets up with os.LookupEnv.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, &Error{File: path, Msg: err.Error()}
	}
	return Parse(path, data, os.LookupEnv)
}

// Parse decodes and validates data; name is used in errors, lookupEnv resolves secrets.
func Parse(name string, data []byte, lookupEnv func(string) (string, bool)) (*Config, error) {
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return nil, yamlError(name, err)
	}
	if root.Kind == 0 {
		return nil, &Error{File: name, Msg: "empty file"}
	}
	cfg := &Config{File: name}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(cfg); err != nil && !errors.Is(err, io.EOF) {
		return nil, yamlError(name, err)
	}
	v := &validator{file: name, lines: map[string]int{}, lookupEnv: lookupEnv}
	v.index("", &root)
	cfg.applyDefaults()
	cfg.validate(v)
	if len(v.errs) > 0 {
		return nil, v.errs
	}
	return cfg, nil
}

// yamlError turns yaml's "yaml: line 3: ..." messages into *Error values.
func yamlError(name string, err error) error {
	var te *yaml.TypeError
	if errors.As(err, &te) {
		var es Errors
		for _, msg := range te.Errors {
			es = append(es, lineError(name, msg))
		}
		return es
	}
	return lineError(name, err.Error())
}

func lineError(name, msg string) *Error {
	e := &Error{File: name}
	e.Line, e.Msg = yamlpos.Split(msg)
	if f, ok := strings.CutPrefix(e.Msg, "field "); ok {
		if name, _, ok := strings.Cut(f, " not found"); ok {
			e.Field, e.Msg = name, "unknown key"
		}
	}
	return e
}

func (c *Config) applyDefaults() {
	if c.Target.SubmissionTLS == "" {
		c.Target.SubmissionTLS = "starttls"
	}
	if c.Submitter.Mechanism == "" {
		c.Submitter.Mechanism = "plain"
	}
	if c.Proxy.Version == 0 {
		c.Proxy.Version = 2
	}
	if c.Proxy.Listen == "" {
		c.Proxy.Listen = "127.0.0.1:0"
	}
	if c.Probe.Helo == "" {
		c.Probe.Helo = "probe.splitcheck.test"
	}
	if c.Probe.Sender == "" {
		c.Probe.Sender = "probe@splitcheck.test"
	}
	if c.Fakes.MXAddress == "" {
		if ap, err := netip.ParseAddrPort(c.Fakes.MX); err == nil {
			c.Fakes.MXAddress = ap.Addr().String()
		}
	}
	for i := range c.Plan.Local {
		m := &c.Plan.Local[i].Mailbox
		if m.Protocol == "" {
			m.Protocol = "imap"
		}
		if m.Username == "" {
			m.Username = c.Plan.Local[i].Address
		}
		if m.TLS == "" && m.Protocol == "imap" {
			m.TLS = "none"
			if strings.HasSuffix(m.Address, ":993") {
				m.TLS = "implicit"
			}
		}
	}
	t := &c.Timeouts
	setDefault(&t.Connect, 10*time.Second)
	setDefault(&t.Delivery, 30*time.Second)
	setDefault(&t.Absence, 2*time.Second)
	setDefault(&t.Run, 5*time.Minute)
}

func setDefault(d *time.Duration, v time.Duration) {
	if *d == 0 {
		*d = v
	}
}

func (c *Config) validate(v *validator) {
	v.addrPort("target.smtp", c.Target.SMTP, true)
	v.addrPort("target.plain_smtp", c.Target.PlainSMTP, false)
	v.addrPort("target.submission", c.Target.Submission, len(c.Plan.External) > 0)
	v.oneOf("target.submission_tls", c.Target.SubmissionTLS, "starttls", "implicit", "none")

	if len(c.Plan.Domains) == 0 {
		v.fail("plan.domains", "at least one migrated domain is required")
	}
	for i, d := range c.Plan.Domains {
		v.domain(fmt.Sprintf("plan.domains.%d", i), d)
	}
	for i, a := range c.Plan.Local {
		p := fmt.Sprintf("plan.local.%d", i)
		v.email(p+".address", a.Address, true)
		v.inDomains(p+".address", a.Address, c.Plan.Domains, true)
		m := a.Mailbox
		v.oneOf(p+".mailbox.protocol", m.Protocol, "imap", "jmap")
		if m.Protocol == "imap" {
			v.addrPort(p+".mailbox.address", m.Address, true)
			v.oneOf(p+".mailbox.tls", m.TLS, "none", "starttls", "implicit")
		} else if m.Address == "" {
			v.fail(p+".mailbox.address", "required")
		}
		v.secret(p+".mailbox.password", &c.Plan.Local[i].Mailbox.Password, true)
	}
	for i, a := range c.Plan.Unmigrated {
		p := fmt.Sprintf("plan.unmigrated.%d", i)
		v.email(p, a, true)
		v.inDomains(p, a, c.Plan.Domains, true)
	}
	for i, a := range c.Plan.External {
		p := fmt.Sprintf("plan.external.%d", i)
		v.email(p, a, true)
		v.inDomains(p, a, c.Plan.Domains, false)
	}
	if len(c.Plan.Local)+len(c.Plan.Unmigrated)+len(c.Plan.External) == 0 {
		v.fail("plan", "no recipients: list local, unmigrated or external addresses")
	}

	if len(c.Plan.External) > 0 {
		if c.Submitter.Username == "" {
			v.fail("submitter.username", "required when plan.external is set")
		}
		v.secret("submitter.password", &c.Submitter.Password, true)
	}
	v.oneOf("submitter.mechanism", c.Submitter.Mechanism, "plain", "login")

	v.addrPort("fakes.source", c.Fakes.Source, true)
	v.addrPort("fakes.mx", c.Fakes.MX, len(c.Plan.External) > 0)
	v.addrPort("fakes.dns", c.Fakes.DNS, len(c.Plan.External) > 0)
	v.ip("fakes.mx_address", c.Fakes.MXAddress, false)

	if c.Proxy.Version != 1 && c.Proxy.Version != 2 {
		v.fail("proxy.version", fmt.Sprintf("must be 1 or 2, not %d", c.Proxy.Version))
	}
	if c.Proxy.Announce == "" {
		v.fail("proxy.announce", "required (the client address the PROXY header claims)")
	} else if _, err := ParseIPPort(c.Proxy.Announce); err != nil {
		v.fail("proxy.announce", err.Error())
	}
	v.ip("proxy.source_address", c.Proxy.SourceAddress, false)
	v.addrPort("proxy.listen", c.Proxy.Listen, true)
	v.ip("probe.plain_source", c.Probe.PlainSource, false)
	if !strings.Contains(c.Probe.Helo, ".") {
		v.fail("probe.helo", fmt.Sprintf("%q is not fully qualified", c.Probe.Helo))
	}
	v.email("probe.sender", c.Probe.Sender, true)

	for _, d := range []struct {
		field string
		val   time.Duration
	}{{"timeouts.connect", c.Timeouts.Connect}, {"timeouts.delivery", c.Timeouts.Delivery},
		{"timeouts.absence", c.Timeouts.Absence}, {"timeouts.run", c.Timeouts.Run}} {
		if d.val < 0 {
			v.fail(d.field, "must not be negative")
		}
	}
	if c.Stalwart != nil {
		c.Stalwart.validate(v)
	}
	if c.Migration != nil {
		c.Migration.validate(v)
		if a := c.Migration.SourceTestAddress; a != "" {
			f := "migration.source_test_address"
			v.inDomains(f, a, c.Plan.Domains, true)
			for _, l := range c.Plan.Local {
				if strings.EqualFold(l.Address, a) {
					v.fail(f, fmt.Sprintf("%q is a local account (plan.local); the source test address lives on the source", a))
				}
			}
		}
	}
	if c.Bulk != nil {
		c.Bulk.validate(v)
	}
}

// ParseIPPort parses "IP" or "IP:port"; a missing port is 0.
func ParseIPPort(s string) (netip.AddrPort, error) {
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return ap, nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("%q is not an IP or IP:port", s)
	}
	return netip.AddrPortFrom(a, 0), nil
}
