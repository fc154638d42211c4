package hermetic

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/splitcheck/splitcheck/harness/config"
	"github.com/splitcheck/splitcheck/harness/stalwart"
)

// Plan is the migration plan a hermetic run checks: the addresses of
// config.Plan, without the mailbox settings (a hermetic run creates every local
// account on its own Stalwart, with a random password, and reads it over IMAPS).
type Plan struct {
	// Domains are the migrated domains; Stalwart refuses .example and .invalid.
	Domains []string
	// Local are accounts created on Stalwart: delivered locally.
	Local []string
	// Unmigrated are other addresses in the migrated domains: relayed to the source.
	Unmigrated []string
	// External are addresses in other domains: delivered by MX when submitted
	// with authentication, refused on port 25.
	External []string
}

// DefaultPlan is the plan of `splitcheck run --hermetic` without --config: one
// migrated domain with a local account and an unmigrated address, and one
// external address.
func DefaultPlan() Plan {
	return Plan{
		Domains:    []string{"migrated.test"},
		Local:      []string{"alice@migrated.test"},
		Unmigrated: []string{"bob@migrated.test"},
		External:   []string{"carol@elsewhere.test"},
	}
}

// PlanFromConfig takes the plan of a config file; its target, fakes, stalwart and
// migration sections are ignored (the hermetic run sets them).
func PlanFromConfig(cfg *config.Config) Plan {
	p := Plan{
		Domains:    slices.Clone(cfg.Plan.Domains),
		Unmigrated: slices.Clone(cfg.Plan.Unmigrated),
		External:   slices.Clone(cfg.Plan.External),
	}
	for _, a := range cfg.Plan.Local {
		p.Local = append(p.Local, a.Address)
	}
	return p
}

// IsZero reports whether p has no domains (then DefaultPlan is used).
func (p Plan) IsZero() bool { return len(p.Domains) == 0 }

// Hostname is the server name a hermetic run gives Stalwart: mx.<first domain>.
func (p Plan) Hostname() string { return "mx." + strings.ToLower(p.Domains[0]) }

// PublicURL is the default STALWART_PUBLIC_URL: https://mail.<first domain>, the
// proxy's name in the migration guide's layout.
func (p Plan) PublicURL() string { return "https://mail." + strings.ToLower(p.Domains[0]) }

// settings is everything the verify configuration is built from.
type settings struct {
	plan      Plan
	layout    Layout
	hostname  string
	publicURL string

	// Host-side endpoints of the containers (127.0.0.1:port).
	proxySMTP, plainSMTP, submission, imaps, management string

	adminUser, adminPassword string
	passwords                map[string]string // local address -> password

	proxyVersion int
	announce     string
	timeouts     config.Timeouts
}

// secretEnv names the pseudo environment variables that carry the run's secrets
// into config.Parse (they never reach the process environment).
const secretEnvPrefix = "SPLITCHECK_HERMETIC_SECRET_"

// verifyConfig renders the run's configuration as a config file and parses it
// with config.Parse, so it gets the same defaults and validation as a file a
// person wrote. Secrets go in as {env: NAME} resolved from memory.
func verifyConfig(s settings) (*config.Config, error) {
	secrets := map[string]string{}
	secret := func(v string) map[string]string {
		name := fmt.Sprintf("%s%d", secretEnvPrefix, len(secrets))
		secrets[name] = v
		return map[string]string{"env": name}
	}
	var local []map[string]any
	for _, addr := range s.plan.Local {
		local = append(local, map[string]any{
			"address": addr,
			"mailbox": map[string]any{
				"protocol":             "imap",
				"address":              s.imaps,
				"tls":                  "implicit",
				"insecure_skip_verify": true,
				"username":             addr,
				"password":             secret(s.passwords[strings.ToLower(addr)]),
			},
		})
	}
	doc := map[string]any{
		"target": map[string]any{
			"smtp":                 s.proxySMTP,
			"plain_smtp":           s.plainSMTP,
			"submission":           s.submission,
			"submission_tls":       "starttls",
			"insecure_skip_verify": true,
			"hostname":             s.hostname,
		},
		"plan": map[string]any{
			"domains":    s.plan.Domains,
			"local":      local,
			"unmigrated": s.plan.Unmigrated,
			"external":   s.plan.External,
		},
		"fakes": map[string]any{
			"source":     s.layout.FakeSource.String(),
			"mx":         s.layout.FakeMX.String(),
			"dns":        s.layout.FakeDNS.String(),
			"mx_address": s.layout.MXHost.String(),
		},
		"proxy": map[string]any{
			"version":  s.proxyVersion,
			"announce": s.announce,
			"listen":   "127.0.0.1:0",
		},
		"stalwart": map[string]any{
			"url":      s.management,
			"user":     s.adminUser,
			"password": secret(s.adminPassword),
			"hermetic": true,
		},
		"migration": map[string]any{
			"mode":    config.ModeRehearsal,
			"domains": s.plan.Domains,
			"source": map[string]any{
				"address":             s.layout.FakeSource.Addr().String(),
				"port":                int(s.layout.FakeSource.Port()),
				"allow_invalid_certs": true,
			},
			"rehearsal_source":       s.layout.FakeSource.String(),
			"proxy_trusted_networks": []string{s.layout.TrustedProxy.String()},
			"public_url":             s.publicURL,
			"default_hostname":       s.hostname,
		},
	}
	if len(s.plan.Local) > 0 {
		first := s.plan.Local[0]
		doc["submitter"] = map[string]any{"username": first, "password": secret(s.passwords[strings.ToLower(first)])}
	}
	t := map[string]any{}
	for _, d := range []struct {
		key string
		val time.Duration
	}{{"connect", s.timeouts.Connect}, {"delivery", s.timeouts.Delivery}, {"absence", s.timeouts.Absence}, {"run", s.timeouts.Run}} {
		if d.val > 0 {
			t[d.key] = d.val.String()
		}
	}
	if len(t) > 0 {
		doc["timeouts"] = t
	}
	data, err := yaml.Marshal(doc)
	if err != nil {
		return nil, fmt.Errorf("hermetic config: %w", err)
	}
	cfg, err := config.Parse("(hermetic run)", data, func(k string) (string, bool) {
		v, ok := secrets[k]
		return v, ok
	})
	if err != nil {
		return nil, fmt.Errorf("hermetic config: %w", err)
	}
	return cfg, nil
}

// accounts pairs each local address with a new strong password.
func accounts(p Plan) ([]stalwart.BootstrapAccount, map[string]string, error) {
	var out []stalwart.BootstrapAccount
	pw := map[string]string{}
	for _, addr := range p.Local {
		addr = strings.ToLower(addr)
		if _, dup := pw[addr]; dup {
			continue
		}
		p, err := stalwart.GeneratePassword(stalwart.DefaultPasswordLength)
		if err != nil {
			return nil, nil, err
		}
		pw[addr] = p
		out = append(out, stalwart.BootstrapAccount{Address: addr, Password: p})
	}
	return out, pw, nil
}
