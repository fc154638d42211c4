package stalwart

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// SnapshotVersion is the format version of snapshot files.
const SnapshotVersion = 1

// Snapshot is every value apply is about to change, as it was before, plus what
// apply creates (with the ids, once known) and the passwords of the test
// accounts it creates. It is written to a file (mode 0600) before the first
// write, and rewritten as objects are created. Rollback restores exactly this.
//
// The file holds secrets (the test account passwords, and an existing relay's
// auth secret when the caller of apply knew it): keep it like a password file.
// The server never reveals a relay's secret, so without that a rollback cannot
// restore one that apply replaced (it says so).
type Snapshot struct {
	Version int       `json:"version"`
	Server  string    `json:"server"`
	TakenAt time.Time `json:"takenAt"`

	Domains  []DomainSnapshot  `json:"domains,omitempty"`
	Relay    *RelaySnapshot    `json:"relay,omitempty"`
	Route    *RouteSnapshot    `json:"route,omitempty"`
	System   *SystemSnapshot   `json:"systemSettings,omitempty"`
	Accounts []AccountSnapshot `json:"accounts,omitempty"`
}

// DomainSnapshot is a domain apply creates or changes.
type DomainSnapshot struct {
	Name string `json:"name"`
	// ID is the domain's id: the existing one, or the one apply got on create.
	ID string `json:"id,omitempty"`
	// Existed is false for a domain apply creates (rollback destroys it).
	Existed bool `json:"existed"`
	// AllowRelaying is the value before apply (false for a created domain).
	AllowRelaying bool `json:"allowRelaying"`
}

// RelaySnapshot is the relay route before apply.
type RelaySnapshot struct {
	Name    string `json:"name"`
	ID      string `json:"id,omitempty"`
	Existed bool   `json:"existed"`
	// Before is the whole route as read, when it existed. Its authSecret, when a
	// plain value, is as the server returns it: masked ("****").
	Before json.RawMessage `json:"before,omitempty"`
	// SecretWritten is set when apply writes the existing route's authSecret.
	SecretWritten bool `json:"secretWritten,omitempty"`
	// BeforeSecret is the masked secret's value, when the caller of apply knew it
	// (ApplyOptions.KnownRelaySecret); rollback restores it. Empty otherwise.
	BeforeSecret string `json:"beforeSecret,omitempty"`
}

// RouteSnapshot is the live route expression before apply, exactly as read.
type RouteSnapshot struct {
	Before json.RawMessage `json:"before"`
}

// SystemSnapshot is SystemSettings before apply.
type SystemSnapshot struct {
	ProxyTrustedNetworks []string `json:"proxyTrustedNetworks"`
	DefaultHostname      string   `json:"defaultHostname"`
	DefaultDomainID      string   `json:"defaultDomainId"`
}

// AccountSnapshot is a test account apply creates.
type AccountSnapshot struct {
	Address string `json:"address"`
	ID      string `json:"id,omitempty"`
	// Password is the account's generated password (for probes that log in as it).
	Password string `json:"password"`
}

// secrets lists the secret values the snapshot holds (for redaction).
func (s *Snapshot) secrets() []string {
	var out []string
	for _, a := range s.Accounts {
		out = append(out, a.Password)
	}
	if s.Relay != nil && len(s.Relay.Before) > 0 {
		if _, sec := readSecret(liveRelayRaw(s.Relay.Before, "authSecret")); sec != "" && sec != maskedSecret {
			out = append(out, sec)
		}
	}
	if s.Relay != nil && s.Relay.BeforeSecret != "" {
		out = append(out, s.Relay.BeforeSecret)
	}
	return out
}

func liveRelayRaw(route json.RawMessage, field string) json.RawMessage {
	var m map[string]json.RawMessage
	if json.Unmarshal(route, &m) != nil {
		return nil
	}
	return m[field]
}

// Account returns the recorded test account with this address.
func (s *Snapshot) Account(address string) (AccountSnapshot, bool) {
	for _, a := range s.Accounts {
		if strings.EqualFold(a.Address, address) {
			return a, true
		}
	}
	return AccountSnapshot{}, false
}

// ErrSnapshotExists is returned instead of overwriting a snapshot file: it may
// be the only record needed to roll back an earlier apply.
var ErrSnapshotExists = errors.New("stalwart: snapshot file exists")

// WriteSnapshotFile creates path (mode 0600) and writes s; it refuses to
// overwrite an existing file.
func WriteSnapshotFile(path string, s *Snapshot) error {
	data, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return fmt.Errorf("write snapshot: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		if errors.Is(err, os.ErrExist) {
			return fmt.Errorf("%w: %s (choose another --snapshot path; it may hold the only record needed to roll back)", ErrSnapshotExists, path)
		}
		return fmt.Errorf("write snapshot: %w", err)
	}
	if _, err := f.Write(append(data, '\n')); err != nil {
		f.Close()
		return fmt.Errorf("write snapshot: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("write snapshot: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write snapshot: %w", err)
	}
	return nil
}

// updateSnapshotFile replaces path atomically (temp file, fsync, rename) with s.
func updateSnapshotFile(path string, s *Snapshot) error {
	data, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return fmt.Errorf("update snapshot: %w", err)
	}
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("update snapshot: %w", err)
	}
	tmp := f.Name()
	cleanup := func(err error) error {
		f.Close()
		os.Remove(tmp)
		return fmt.Errorf("update snapshot: %w", err)
	}
	if err := f.Chmod(0o600); err != nil {
		return cleanup(err)
	}
	if _, err := f.Write(append(data, '\n')); err != nil {
		return cleanup(err)
	}
	if err := f.Sync(); err != nil {
		return cleanup(err)
	}
	if err := f.Close(); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("update snapshot: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("update snapshot: %w", err)
	}
	return nil
}

// ReadSnapshotFile reads a snapshot written by apply.
func ReadSnapshotFile(path string) (*Snapshot, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read snapshot: %w", err)
	}
	return ParseSnapshot(data)
}

// ParseSnapshot decodes and checks a snapshot.
func ParseSnapshot(data []byte) (*Snapshot, error) {
	var s Snapshot
	dec := json.NewDecoder(strings.NewReader(string(data)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&s); err != nil {
		return nil, fmt.Errorf("read snapshot: %w", err)
	}
	if s.Version != SnapshotVersion {
		return nil, fmt.Errorf("read snapshot: version %d, want %d", s.Version, SnapshotVersion)
	}
	for _, d := range s.Domains {
		if d.Name == "" {
			return nil, errors.New("read snapshot: a domain has no name")
		}
	}
	if s.Relay != nil && s.Relay.Name == "" {
		return nil, errors.New("read snapshot: the relay has no name")
	}
	if s.Route != nil && len(s.Route.Before) > 0 {
		var e Expression
		if err := json.Unmarshal(s.Route.Before, &e); err != nil {
			return nil, fmt.Errorf("read snapshot: route: %w", err)
		}
	}
	for _, a := range s.Accounts {
		if !strings.Contains(a.Address, "@") {
			return nil, fmt.Errorf("read snapshot: account %q is not an address", a.Address)
		}
	}
	return &s, nil
}

// takeSnapshot records the live values the steps will change.
func takeSnapshot(server string, d Desired, st *State, steps []*step, passwords map[string]string, now time.Time) *Snapshot {
	s := &Snapshot{Version: SnapshotVersion, Server: server, TakenAt: now.UTC()}
	touched := map[string]bool{}
	for _, stp := range steps {
		touched[stp.name] = true
	}
	if touched[StepDomains] || touched[StepAllowRelaying] {
		for _, dom := range d.Domains {
			v, ok := st.Domains[dom]
			switch {
			case !ok:
				s.Domains = append(s.Domains, DomainSnapshot{Name: dom})
			case !v.AllowRelaying:
				s.Domains = append(s.Domains, DomainSnapshot{Name: dom, ID: v.ID, Existed: true, AllowRelaying: false})
			}
		}
	}
	if touched[StepRelay] {
		r := &RelaySnapshot{Name: d.Relay.Name}
		if st.Relay != nil {
			r.ID, r.Existed, r.Before = st.Relay.ID, true, st.RelayRaw
			for _, stp := range steps {
				for _, ch := range stp.changes {
					if ch.Step == StepRelay && ch.Field == "authSecret" {
						r.SecretWritten = true
					}
				}
			}
		}
		s.Relay = r
	}
	if touched[StepRoute] {
		s.Route = &RouteSnapshot{Before: st.RouteRaw}
	}
	if touched[StepSystem] {
		s.System = &SystemSnapshot{ProxyTrustedNetworks: setKeys(st.System.ProxyTrustedNetworks),
			DefaultHostname: st.System.DefaultHostname, DefaultDomainID: st.System.DefaultDomainID}
		if s.System.ProxyTrustedNetworks == nil {
			s.System.ProxyTrustedNetworks = []string{}
		}
	}
	for _, addr := range d.TestAccounts {
		if _, ok := st.Accounts[addr]; !ok {
			s.Accounts = append(s.Accounts, AccountSnapshot{Address: addr, Password: passwords[addr]})
		}
	}
	return s
}
