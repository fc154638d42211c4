package stalwart

import (
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"

	"github.com/splitcheck/splitcheck/harness/config"
)

// RelayRouteName is the name of the relay route to the source server.
const RelayRouteName = "source"

// Desired is the split-delivery configuration apply brings Stalwart to.
type Desired struct {
	// Domains are created if missing and get allowRelaying=true (lower case).
	Domains []string
	// Relay is the MtaRoute/Relay that carries mail for unmigrated addresses.
	Relay Relay
	// Route is the whole route expression of MtaOutboundStrategy.
	Route Expression
	// ProxyTrustedNetworks replaces SystemSettings.proxyTrustedNetworks; nil leaves it alone.
	ProxyTrustedNetworks []string
	// DefaultHostname goes with the first SystemSettings write on a server whose
	// settings were never saved.
	DefaultHostname string
	// TestAccounts are addresses of accounts to create with random passwords.
	TestAccounts []string
	// PublicURL is what JMAP autodiscovery must advertise (checked, not written:
	// it is STALWART_PUBLIC_URL plus a restart).
	PublicURL string
}

// Relay is the wanted MtaRoute/Relay.
type Relay struct {
	Name              string
	Address           string
	Port              int
	Protocol          string // smtp or lmtp
	ImplicitTLS       bool
	AllowInvalidCerts bool
	AuthUsername      string
	// AuthSecret is sent only when AuthUsername is set; it never prints.
	AuthSecret config.Secret
}

// DesiredFromConfig builds the wanted state from the migration section; the
// domains default to plan.domains.
func DesiredFromConfig(cfg *config.Config) (Desired, error) {
	m := cfg.Migration
	if m == nil {
		return Desired{}, &config.Error{File: cfg.File, Field: "migration", Msg: "required by plan, apply and rollback"}
	}
	d := Desired{
		DefaultHostname: m.DefaultHostname,
		PublicURL:       m.PublicURL,
		Relay: Relay{
			Name:              RelayRouteName,
			Address:           m.Source.Address,
			Port:              m.Source.Port,
			Protocol:          m.Source.Protocol,
			ImplicitTLS:       m.Source.ImplicitTLS,
			AllowInvalidCerts: m.Source.AllowInvalidCerts,
		},
	}
	if d.DefaultHostname == "" {
		d.DefaultHostname = cfg.Target.Hostname
	}
	if m.Source.Auth != nil {
		d.Relay.AuthUsername = m.Source.Auth.Username
		d.Relay.AuthSecret = m.Source.Auth.Secret
	}
	domains := m.Domains
	if len(domains) == 0 {
		domains = cfg.Plan.Domains
	}
	for _, dom := range domains {
		dom = strings.ToLower(strings.TrimSuffix(dom, "."))
		if !slices.Contains(d.Domains, dom) {
			d.Domains = append(d.Domains, dom)
		}
	}
	if len(d.Domains) == 0 {
		return Desired{}, &config.Error{File: cfg.File, Field: "migration.domains", Msg: "no domains (set migration.domains or plan.domains)"}
	}
	for i, a := range m.TestAccounts {
		_, dom, ok := strings.Cut(strings.ToLower(a.Address), "@")
		if !ok || !slices.Contains(d.Domains, dom) {
			return Desired{}, &config.Error{File: cfg.File, Field: fmt.Sprintf("migration.test_accounts.%d.address", i),
				Msg: fmt.Sprintf("%q is not in a migrated domain", a.Address)}
		}
		d.TestAccounts = append(d.TestAccounts, strings.ToLower(a.Address))
	}
	if m.ProxyTrustedNetworks != nil {
		d.ProxyTrustedNetworks = slices.Clone(m.ProxyTrustedNetworks)
	}
	d.Route = SplitDeliveryRoute(d.Relay.Name)
	return d, nil
}

// Rehearsal returns a copy of d whose relay points at the harness's fake source
// (host:port as Stalwart reaches it). Applying it after the live configuration
// changes only the relay's address and port; rolling that apply back restores
// the real source.
func (d Desired) Rehearsal(hostPort string) (Desired, error) {
	host, portStr, err := net.SplitHostPort(hostPort)
	if err != nil {
		return Desired{}, fmt.Errorf("rehearsal source %q: %w", hostPort, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil || port < 1 || port > 65535 {
		return Desired{}, fmt.Errorf("rehearsal source %q: bad port", hostPort)
	}
	out := d
	out.Domains = slices.Clone(d.Domains)
	out.TestAccounts = slices.Clone(d.TestAccounts)
	out.Relay.Address, out.Relay.Port = host, port
	out.Relay.ImplicitTLS = false
	out.Relay.AuthUsername, out.Relay.AuthSecret = "", config.Secret{}
	return out, nil
}

// RehearsalSource is where Stalwart reaches the fake source in a rehearsal:
// migration.rehearsal_source, else fakes.source.
func RehearsalSource(cfg *config.Config) string {
	if cfg.Migration != nil && cfg.Migration.RehearsalSource != "" {
		return cfg.Migration.RehearsalSource
	}
	return cfg.Fakes.Source
}

// secrets lists the secret values d carries (for redaction).
func (d Desired) secrets() []string {
	return []string{d.Relay.AuthSecret.Value()}
}
