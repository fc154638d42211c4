package config

import (
	"encoding/json"
	"fmt"

	"go.yaml.in/yaml/v3"
)

// Secret is a password or token. In YAML it is either a string or {env: NAME}.
// It never prints or marshals its value.
type Secret struct {
	// Env names the environment variable the value came from, if any.
	Env   string
	value string
}

// NewSecret returns a Secret holding v (for tests and for values from flags or env).
func NewSecret(v string) Secret { return Secret{value: v} }

// Value is the secret itself. Only pass it to the protocol that needs it.
func (s Secret) Value() string { return s.value }

// IsSet reports whether a value is present.
func (s Secret) IsSet() bool { return s.value != "" }

// String hides the value.
func (s Secret) String() string {
	switch {
	case s.value == "":
		return "(unset)"
	case s.Env != "":
		return fmt.Sprintf("(from $%s)", s.Env)
	default:
		return "(redacted)"
	}
}

// GoString hides the value from %#v.
func (s Secret) GoString() string { return s.String() }

// MarshalJSON hides the value.
func (s Secret) MarshalJSON() ([]byte, error) { return json.Marshal(s.String()) }

// MarshalYAML hides the value.
func (s Secret) MarshalYAML() (any, error) { return s.String(), nil }

// UnmarshalYAML accepts "value" or {env: NAME}.
func (s *Secret) UnmarshalYAML(n *yaml.Node) error {
	switch n.Kind {
	case yaml.ScalarNode:
		s.value = n.Value
		return nil
	case yaml.MappingNode:
		var m struct {
			Env string `yaml:"env"`
		}
		dec := n.Decode
		if err := dec(&m); err != nil {
			return err
		}
		if len(n.Content) != 2 || n.Content[0].Value != "env" || m.Env == "" {
			return fmt.Errorf("line %d: a secret is a string or {env: VARIABLE}", n.Line)
		}
		s.Env = m.Env
		return nil
	default:
		return fmt.Errorf("line %d: a secret is a string or {env: VARIABLE}", n.Line)
	}
}
