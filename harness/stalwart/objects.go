package stalwart

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
)

// The registry objects this package reads and writes.
const (
	ObjDomain          = "x:Domain"
	ObjMtaRoute        = "x:MtaRoute"
	ObjOutbound        = "x:MtaOutboundStrategy"
	ObjSystemSettings  = "x:SystemSettings"
	ObjAccount         = "x:Account"
	ObjAction          = "x:Action"
	ObjQueuedMessage   = "x:QueuedMessage"
	ActionReload       = "ReloadSettings"
	ActionInvalidate   = "InvalidateCaches"
	routeVariantRelay  = "Relay"
	accountVariantUser = "User"
)

// Domain is the part of an x:Domain this package uses.
type Domain struct {
	ID            string          `json:"id"`
	Name          string          `json:"name"`
	AllowRelaying bool            `json:"allowRelaying"`
	Aliases       map[string]bool `json:"aliases,omitempty"`
	CreatedAt     string          `json:"createdAt,omitempty"`
}

// Route is an x:MtaRoute; only Relay routes carry the connection fields.
type Route struct {
	ID                string          `json:"id"`
	Type              string          `json:"@type"`
	Name              string          `json:"name"`
	Address           string          `json:"address,omitempty"`
	Port              int             `json:"port,omitempty"`
	Protocol          string          `json:"protocol,omitempty"`
	ImplicitTLS       bool            `json:"implicitTls"`
	AllowInvalidCerts bool            `json:"allowInvalidCerts"`
	AuthUsername      *string         `json:"authUsername,omitempty"`
	AuthSecret        json.RawMessage `json:"authSecret,omitempty"`
	CreatedAt         string          `json:"createdAt,omitempty"`
}

// Rule is one "if ... then ..." of an Expression.
type Rule struct {
	If   string `json:"if"`
	Then string `json:"then"`
}

// Expression is Stalwart's {"match": List<{if, then}>, "else": ...}. It marshals
// with match first and the list keyed "0", "1", ... in order, and always sends
// match (an empty list as {}), because an update patches nested objects property
// by property and would otherwise keep the old match list.
type Expression struct {
	Match []Rule
	Else  string
}

// MarshalJSON writes the wire form: {"match":{"0":{"if":..,"then":..},...},"else":..}.
func (e Expression) MarshalJSON() ([]byte, error) {
	var b bytes.Buffer
	b.WriteString(`{"match":{`)
	for i, r := range e.Match {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `"%d":{"if":%s,"then":%s}`, i, jsonString(r.If), jsonString(r.Then))
	}
	b.WriteString(`},"else":`)
	b.WriteString(jsonString(e.Else))
	b.WriteByte('}')
	return b.Bytes(), nil
}

// UnmarshalJSON reads the wire form; a missing match is an empty list, and a
// JSON array is accepted for match too.
func (e *Expression) UnmarshalJSON(data []byte) error {
	var raw struct {
		Match json.RawMessage `json:"match"`
		Else  *string         `json:"else"`
	}
	if err := json.Unmarshal(data, &raw); err != nil {
		return fmt.Errorf("expression: %w", err)
	}
	*e = Expression{}
	if raw.Else != nil {
		e.Else = *raw.Else
	}
	m := bytes.TrimSpace(raw.Match)
	switch {
	case len(m) == 0 || bytes.Equal(m, []byte("null")):
	case m[0] == '[':
		if err := json.Unmarshal(m, &e.Match); err != nil {
			return fmt.Errorf("expression match: %w", err)
		}
	default:
		var list map[string]Rule
		if err := json.Unmarshal(m, &list); err != nil {
			return fmt.Errorf("expression match: %w", err)
		}
		items, err := listOrder(list)
		if err != nil {
			return fmt.Errorf("expression match: %w", err)
		}
		e.Match = items
	}
	return nil
}

// listOrder turns a wire List {"0":a,"1":b} into [a b].
func listOrder[T any](m map[string]T) ([]T, error) {
	out := make([]T, len(m))
	for k, v := range m {
		i, err := strconv.Atoi(k)
		if err != nil || i < 0 || i >= len(m) || strconv.Itoa(i) != k {
			return nil, fmt.Errorf("list key %q is not an index 0..%d", k, len(m)-1)
		}
		out[i] = v
	}
	return out, nil
}

// Equal compares two expressions rule by rule.
func (e Expression) Equal(o Expression) bool {
	return e.Else == o.Else && slices.Equal(e.Match, o.Match)
}

// String is the wire JSON.
func (e Expression) String() string {
	b, _ := e.MarshalJSON()
	return string(b)
}

func jsonString(s string) string {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(s)
	return strings.TrimSuffix(b.String(), "\n")
}

// QuoteRoute makes a route name an expression string literal: 'source'. An
// unquoted name is a variable or a compile error, never the route.
func QuoteRoute(name string) string {
	return "'" + strings.ReplaceAll(strings.ReplaceAll(name, `\`, `\\`), "'", `\'`) + "'"
}

// SplitDeliveryRoute is the guide's route expression: local accounts are
// delivered locally, other addresses in local domains go to the relay route
// (relayName), everything else to MX. Every route name is quoted.
func SplitDeliveryRoute(relayName string) Expression {
	return Expression{
		Match: []Rule{
			{If: "is_local_address(rcpt)", Then: QuoteRoute("local")},
			{If: "is_local_domain(rcpt_domain)", Then: QuoteRoute(relayName)},
		},
		Else: QuoteRoute("mx"),
	}
}

// DefaultRoute is Stalwart's default route expression (schema.json defaults).
func DefaultRoute() Expression {
	return Expression{Match: []Rule{{If: "is_local_domain(rcpt_domain)", Then: QuoteRoute("local")}}, Else: QuoteRoute("mx")}
}

// SystemSettings is the part of the x:SystemSettings singleton this package uses.
type SystemSettings struct {
	DefaultHostname      string          `json:"defaultHostname"`
	DefaultDomainID      string          `json:"defaultDomainId"`
	ProxyTrustedNetworks map[string]bool `json:"proxyTrustedNetworks"`
}

// Account is the part of an x:Account this package uses.
type Account struct {
	ID           string `json:"id"`
	Type         string `json:"@type"`
	Name         string `json:"name"`
	DomainID     string `json:"domainId"`
	EmailAddress string `json:"emailAddress"`
	CreatedAt    string `json:"createdAt,omitempty"`
}

// SetOf builds a wire Set: {"a": true, "b": true}.
func SetOf(items ...string) map[string]bool {
	m := make(map[string]bool, len(items))
	for _, it := range items {
		m[it] = true
	}
	return m
}

// ListOf builds a wire List: {"0": a, "1": b}.
func ListOf[T any](items ...T) map[string]T {
	m := make(map[string]T, len(items))
	for i, it := range items {
		m[strconv.Itoa(i)] = it
	}
	return m
}

// NormalizeNetwork is how Stalwart reads an ipNetwork back: a host prefix
// (/32, /128) is the bare address, any other prefix is masked. Unparseable
// input is returned unchanged.
func NormalizeNetwork(s string) string {
	s = strings.TrimSpace(s)
	if a, err := netip.ParseAddr(s); err == nil {
		return a.Unmap().String()
	}
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return s
	}
	if p.Bits() == p.Addr().BitLen() {
		return p.Addr().String()
	}
	return p.Masked().String()
}

// NormalizeNetworks normalises, de-duplicates and sorts a list of networks.
func NormalizeNetworks(nets []string) []string {
	out := make([]string, 0, len(nets))
	for _, n := range nets {
		out = append(out, NormalizeNetwork(n))
	}
	slices.Sort(out)
	return slices.Compact(out)
}

func setKeys(m map[string]bool) []string {
	var out []string
	for k, v := range m {
		if v {
			out = append(out, k)
		}
	}
	slices.Sort(out)
	return out
}

// secretValue is SecretKeyOptional {"@type":"Value","secret":"..."}.
func secretValue(s string) map[string]any {
	return map[string]any{"@type": "Value", "secret": s}
}

// maskedSecret is what Stalwart returns in place of every secret it holds
// (MASKED_PASSWORD in its registry): a relay's authSecret reads back as
// {"@type":"Value","secret":"****"} whatever the secret is. A secret read through
// the API can be neither compared nor restored, and "****" must never be written.
const maskedSecret = "****"

// isMaskedSecret reports whether v (a decoded SecretKeyOptional) is a Value whose
// secret the server masked.
func isMaskedSecret(v any) bool {
	m, ok := v.(map[string]any)
	return ok && m["@type"] == "Value" && m["secret"] == maskedSecret
}

// noSecret is SecretKeyOptional {"@type":"None"}.
func noSecret() map[string]any { return map[string]any{"@type": "None"} }

// readSecret returns the secret of a SecretKeyOptional value, and whether it is a plain Value.
func readSecret(raw json.RawMessage) (typ, secret string) {
	var v struct {
		Type   string `json:"@type"`
		Secret string `json:"secret"`
	}
	if len(raw) == 0 || json.Unmarshal(raw, &v) != nil {
		return "None", ""
	}
	if v.Type == "" {
		v.Type = "None"
	}
	return v.Type, v.Secret
}
