package stalwart

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// The steps of apply, in dependency order.
const (
	StepDomains       = "domains"
	StepAllowRelaying = "allowRelaying"
	StepRelay         = "relay"
	StepRoute         = "route"
	StepSystem        = "systemSettings"
	StepAccounts      = "accounts"
	StepReload        = "reload"
	StepInvalidate    = "invalidateCaches"
)

// Change operations.
const (
	OpCreate  = "create"
	OpUpdate  = "update"
	OpDestroy = "destroy"
	OpRun     = "run" // an x:Action
)

// Change is one change plan shows and apply (or rollback) makes: one object
// created or destroyed, one field updated, or one action run. Values are JSON;
// secrets are shown as "(redacted)".
type Change struct {
	Step    string `json:"step"`
	Object  string `json:"object"`
	ID      string `json:"id,omitempty"` // empty when the object does not exist yet
	Name    string `json:"name"`         // domain name, route name, address, or the singleton
	Op      string `json:"op"`
	Field   string `json:"field,omitempty"`
	Current string `json:"current,omitempty"`
	Wanted  string `json:"wanted,omitempty"`
	// Destructive changes replace or delete something the operator had; against a
	// server that is not hermetic they need confirmation.
	Destructive bool `json:"destructive,omitempty"`
	// Restart is set when the change only takes effect after a server restart.
	Restart bool `json:"restart,omitempty"`
	// Unverifiable is set when the server never returns the value (a secret: it
	// reads back as "****"), so whether it already holds the wanted one cannot be
	// known: apply writes it every time, and a rollback cannot restore the old one.
	Unverifiable bool `json:"unverifiable,omitempty"`
	// CLI is the equivalent stalwart-cli command.
	CLI string `json:"cli"`
}

// Summary is a one-line description: "update x:Domain example.org allowRelaying: false -> true".
func (c Change) Summary() string {
	s := c.Op + " " + c.Object + " " + c.Name
	if c.Field != "" {
		s += " " + c.Field
	}
	switch {
	case c.Op == OpUpdate:
		cur := c.Current
		if cur == "" {
			cur = "(unset)"
		}
		s += ": " + cur + " -> " + c.Wanted
	case c.Op == OpCreate && c.Wanted != "":
		s += ": " + c.Wanted
	}
	return s
}

// Plan is what apply would change, in the order it would change it.
type Plan struct {
	Server  string   `json:"server"`
	Changes []Change `json:"changes"`
	// Restart lists what needs a server restart before it takes effect.
	Restart []string `json:"restart,omitempty"`
	// Notes are things apply will not do but the operator should know.
	Notes []string `json:"notes,omitempty"`
}

// Writes counts the changes that write configuration (not the reload/cache actions).
func (p *Plan) Writes() int {
	n := 0
	for _, c := range p.Changes {
		if c.Op != OpRun {
			n++
		}
	}
	return n
}

// Verifiable counts the writes whose result can be read back: Writes less the
// Unverifiable ones. A server holding the desired state has none.
func (p *Plan) Verifiable() int {
	n := 0
	for _, c := range p.Changes {
		if c.Op != OpRun && !c.Unverifiable {
			n++
		}
	}
	return n
}

// Destructive returns the destructive changes.
func (p *Plan) Destructive() []Change {
	var out []Change
	for _, c := range p.Changes {
		if c.Destructive {
			out = append(out, c)
		}
	}
	return out
}

// Plan reads the live state and returns what Apply would change. It writes nothing.
func (c *Client) Plan(ctx context.Context, d Desired) (*Plan, error) {
	st, err := c.ReadState(ctx, d)
	if err != nil {
		return nil, err
	}
	steps, notes, err := buildSteps(d, st)
	if err != nil {
		return nil, err
	}
	return planOf(c.URL, steps, notes), nil
}

func planOf(server string, steps []*step, notes []string) *Plan {
	p := &Plan{Server: server, Changes: []Change{}, Notes: notes}
	for _, s := range steps {
		p.Changes = append(p.Changes, s.changes...)
		for _, ch := range s.changes {
			if ch.Restart {
				p.Restart = append(p.Restart, ch.Object+" "+ch.Field)
			}
		}
	}
	if p.Writes() > 0 || len(p.Restart) > 0 {
		p.Restart = slices.Compact(p.Restart)
	}
	return p
}

// step is one group of changes and the write that makes them.
type step struct {
	name    string
	changes []Change
	run     func(ctx context.Context, a *applier) error
}

// buildSteps computes apply's steps from the wanted and the live state.
func buildSteps(d Desired, st *State) ([]*step, []string, error) {
	var steps []*step
	var notes []string
	if len(d.Domains) == 0 {
		return nil, nil, fmt.Errorf("%w: no domains wanted", ErrConflict)
	}
	domainID := func(dom string) string {
		if v, ok := st.Domains[dom]; ok {
			return v.ID
		}
		return idPlaceholder(dom)
	}

	// 1. Domains.
	var missing []string
	for _, dom := range d.Domains {
		if _, ok := st.Domains[dom]; !ok {
			missing = append(missing, dom)
		}
	}
	if len(missing) > 0 {
		s := &step{name: StepDomains}
		for _, dom := range missing {
			s.changes = append(s.changes, Change{Step: StepDomains, Object: ObjDomain, Name: dom, Op: OpCreate,
				Wanted: jsonText(map[string]any{"name": dom}),
				CLI:    cliCommand("create", ObjDomain, "", []cliField{{"name", dom}})})
		}
		s.run = func(ctx context.Context, a *applier) error { return a.createDomains(ctx, missing) }
		steps = append(steps, s)
	}

	// 2. allowRelaying.
	var relayOff []string
	for _, dom := range d.Domains {
		if v, ok := st.Domains[dom]; !ok || !v.AllowRelaying {
			relayOff = append(relayOff, dom)
		}
	}
	if len(relayOff) > 0 {
		s := &step{name: StepAllowRelaying}
		for _, dom := range relayOff {
			id := ""
			if v, ok := st.Domains[dom]; ok {
				id = v.ID
			}
			s.changes = append(s.changes, Change{Step: StepAllowRelaying, Object: ObjDomain, ID: id, Name: dom, Op: OpUpdate,
				Field: "allowRelaying", Current: "false", Wanted: "true",
				CLI: cliCommand("update", ObjDomain, domainID(dom), []cliField{{"allowRelaying", "true"}})})
		}
		s.run = func(ctx context.Context, a *applier) error { return a.allowRelaying(ctx, relayOff) }
		steps = append(steps, s)
	}

	// 3. The relay route.
	relayFields := wantedRelayFields(d.Relay)
	if st.Relay == nil {
		obj := map[string]any{"@type": routeVariantRelay, "name": d.Relay.Name}
		fields := []cliField{{"name", d.Relay.Name}}
		shown := map[string]any{"@type": routeVariantRelay, "name": d.Relay.Name}
		for _, f := range relayFields {
			if f.absent {
				continue
			}
			obj[f.key] = f.value
			shown[f.key] = f.shown
			fields = append(fields, cliField{f.key, f.cliValue()})
		}
		steps = append(steps, &step{name: StepRelay,
			changes: []Change{{Step: StepRelay, Object: ObjMtaRoute, Name: d.Relay.Name, Op: OpCreate, Wanted: jsonText(shown),
				CLI: cliCommand("create", ObjMtaRoute+"/"+routeVariantRelay, "", fields)}},
			run: func(ctx context.Context, a *applier) error { return a.createRelay(ctx, obj) }})
	} else {
		if st.Relay.Type != routeVariantRelay {
			return nil, nil, fmt.Errorf("%w: route %q exists and is a %s route, not a Relay; rename or remove it first",
				ErrConflict, d.Relay.Name, st.Relay.Type)
		}
		live := liveRelayFields(st.RelayRaw)
		patch := map[string]any{}
		s := &step{name: StepRelay}
		for _, f := range relayFields {
			cur, has := live[f.key]
			if f.absent && (!has || isUnset(f.key, cur)) {
				continue
			}
			if has && jsonEqual(cur, f.value) {
				continue
			}
			// A masked secret may or may not be the wanted one: write it.
			unverifiable := f.secret && !f.absent && isMaskedSecret(cur)
			want := f.value
			if f.absent {
				want = f.clear
			}
			patch[f.key] = want
			curShown := jsonText(cur)
			if f.secret {
				curShown = redactedJSON(cur)
			}
			if unverifiable {
				curShown = jsonText(secretValue("(set, not readable)"))
				notes = append(notes, fmt.Sprintf("route %q has an authSecret the server does not reveal (it reads back as %s): "+
					"apply writes the configured one every time, cannot tell whether it changes anything, and a rollback "+
					"cannot put the old one back", d.Relay.Name, maskedSecret))
			}
			if !has {
				curShown = ""
			}
			wantShown, cli := f.shown, f.cliValue()
			if f.absent {
				wantShown, cli = f.clear, jsonOrPlain(f.clear)
			}
			s.changes = append(s.changes, Change{Step: StepRelay, Object: ObjMtaRoute, ID: st.Relay.ID, Name: d.Relay.Name,
				Op: OpUpdate, Field: f.key, Current: curShown, Wanted: jsonText(wantShown), Destructive: true, Unverifiable: unverifiable,
				CLI: cliCommand("update", ObjMtaRoute, st.Relay.ID, []cliField{{f.key, cli}})})
		}
		if len(patch) > 0 {
			id := st.Relay.ID
			s.run = func(ctx context.Context, a *applier) error { return a.update(ctx, ObjMtaRoute, id, patch) }
			steps = append(steps, s)
		}
	}

	// 4. The route expression: match and else are both sent, every name quoted.
	if len(st.RouteRaw) == 0 || !st.Route.Equal(d.Route) {
		cur := compactJSON(st.RouteRaw)
		destructive := len(st.RouteRaw) > 0 && !st.Route.Equal(DefaultRoute())
		route := d.Route
		steps = append(steps, &step{name: StepRoute,
			changes: []Change{{Step: StepRoute, Object: ObjOutbound, ID: SingletonID, Name: SingletonID, Op: OpUpdate,
				Field: "route", Current: cur, Wanted: route.String(), Destructive: destructive,
				CLI: cliCommand("update", ObjOutbound, SingletonID, []cliField{{"route", route.String()}})}},
			run: func(ctx context.Context, a *applier) error {
				return a.update(ctx, ObjOutbound, SingletonID, map[string]any{"route": route})
			}})
	}

	// 5. SystemSettings: proxy trust, with defaultHostname/defaultDomainId on a
	// server whose settings were never saved.
	if d.ProxyTrustedNetworks != nil {
		have := NormalizeNetworks(setKeys(st.System.ProxyTrustedNetworks))
		want := NormalizeNetworks(d.ProxyTrustedNetworks)
		if !slices.Equal(have, want) {
			s := &step{name: StepSystem}
			wantSet := SetOf(d.ProxyTrustedNetworks...)
			cur := ""
			if len(have) > 0 {
				cur = jsonText(SetOf(have...))
			}
			s.changes = append(s.changes, Change{Step: StepSystem, Object: ObjSystemSettings, ID: SingletonID, Name: SingletonID,
				Op: OpUpdate, Field: "proxyTrustedNetworks", Current: cur, Wanted: jsonText(wantSet),
				Destructive: len(have) > 0, Restart: true})
			fields := []cliField{{"proxyTrustedNetworks", jsonText(wantSet)}}
			needHost := st.System.DefaultHostname == ""
			needDomain := st.System.DefaultDomainID == ""
			if needHost {
				if d.DefaultHostname == "" {
					return nil, nil, ErrNoDefaultHostname
				}
				s.changes = append(s.changes, Change{Step: StepSystem, Object: ObjSystemSettings, ID: SingletonID, Name: SingletonID,
					Op: OpUpdate, Field: "defaultHostname", Wanted: jsonText(d.DefaultHostname)})
				fields = append(fields, cliField{"defaultHostname", d.DefaultHostname})
			}
			if needDomain {
				s.changes = append(s.changes, Change{Step: StepSystem, Object: ObjSystemSettings, ID: SingletonID, Name: SingletonID,
					Op: OpUpdate, Field: "defaultDomainId", Wanted: jsonText(domainID(d.Domains[0]))})
				fields = append(fields, cliField{"defaultDomainId", domainID(d.Domains[0])})
			}
			for i := range s.changes {
				s.changes[i].CLI = cliCommand("update", ObjSystemSettings, SingletonID, fields)
			}
			nets := slices.Clone(d.ProxyTrustedNetworks)
			host, firstDomain := d.DefaultHostname, d.Domains[0]
			s.run = func(ctx context.Context, a *applier) error {
				patch := map[string]any{"proxyTrustedNetworks": SetOf(nets...)}
				if needHost {
					patch["defaultHostname"] = host
				}
				if needDomain {
					patch["defaultDomainId"] = a.domainIDs[firstDomain]
				}
				return a.update(ctx, ObjSystemSettings, SingletonID, patch)
			}
			steps = append(steps, s)
		}
	}

	// 6. Test accounts.
	var newAccounts []string
	for _, addr := range d.TestAccounts {
		if a, ok := st.Accounts[addr]; ok {
			notes = append(notes, fmt.Sprintf("test account %s exists already (id %s): apply leaves accounts it did not create alone; "+
				"its password is in the snapshot of the apply that created it", addr, a.ID))
			continue
		}
		newAccounts = append(newAccounts, addr)
	}
	if len(newAccounts) > 0 {
		s := &step{name: StepAccounts}
		for _, addr := range newAccounts {
			local, dom, _ := strings.Cut(addr, "@")
			shown := map[string]any{"@type": accountVariantUser, "name": local, "domainId": domainID(dom),
				"credentials": ListOf(map[string]any{"@type": "Password", "secret": redactedText})}
			s.changes = append(s.changes, Change{Step: StepAccounts, Object: ObjAccount, Name: addr, Op: OpCreate, Wanted: jsonText(shown),
				CLI: cliCommand("create", ObjAccount+"/"+accountVariantUser, "", []cliField{{"name", local}, {"domainId", domainID(dom)},
					{"credentials", jsonText(ListOf(map[string]any{"@type": "Password", "secret": "<password from the snapshot>"}))}})})
		}
		s.run = func(ctx context.Context, a *applier) error { return a.createAccounts(ctx, newAccounts) }
		steps = append(steps, s)
	}

	// 7. Reload what registry writes do not rebuild (routes, strategy, settings).
	needReload := false
	for _, s := range steps {
		if s.name == StepRelay || s.name == StepRoute || s.name == StepSystem {
			needReload = true
		}
	}
	if needReload {
		steps = append(steps, actionStep(StepReload, ActionReload))
	}
	if len(newAccounts) > 0 {
		steps = append(steps, actionStep(StepInvalidate, ActionInvalidate))
	}
	if d.PublicURL != "" {
		notes = append(notes, fmt.Sprintf("the public URL is not written through the API: start Stalwart with STALWART_PUBLIC_URL=%s "+
			"(a restart); apply --verify checks what JMAP autodiscovery advertises", d.PublicURL))
	}
	return steps, notes, nil
}

func actionStep(name, action string) *step {
	return &step{name: name,
		changes: []Change{{Step: name, Object: ObjAction, Name: action, Op: OpRun,
			CLI: "stalwart-cli create " + cliObject(ObjAction) + "/" + action}},
		run: func(ctx context.Context, a *applier) error { return a.action(ctx, action) }}
}

// relayField is one wanted field of the relay route.
type relayField struct {
	key    string
	value  any  // what is sent
	shown  any  // what is displayed (secrets redacted)
	absent bool // the field should be unset; clear is the value that unsets it
	clear  any
	secret bool
	cli    any // what the stalwart-cli line shows, when not shown
}

func (f relayField) cliValue() string {
	if f.cli != nil {
		return jsonOrPlain(f.cli)
	}
	return jsonOrPlain(f.shown)
}

const redactedText = "(redacted)"

func wantedRelayFields(r Relay) []relayField {
	if r.Port == 0 {
		r.Port = 25
	}
	if r.Protocol == "" {
		r.Protocol = "smtp"
	}
	out := []relayField{
		{key: "address", value: r.Address, shown: r.Address},
		{key: "port", value: r.Port, shown: r.Port},
		{key: "protocol", value: r.Protocol, shown: r.Protocol},
		{key: "implicitTls", value: r.ImplicitTLS, shown: r.ImplicitTLS},
		{key: "allowInvalidCerts", value: r.AllowInvalidCerts, shown: r.AllowInvalidCerts},
	}
	if r.AuthUsername != "" {
		out = append(out,
			relayField{key: "authUsername", value: r.AuthUsername, shown: r.AuthUsername},
			relayField{key: "authSecret", value: secretValue(r.AuthSecret.Value()), shown: secretValue(redactedText),
				cli: secretValue("<secret>"), secret: true})
	} else {
		out = append(out,
			relayField{key: "authUsername", absent: true, clear: nil},
			relayField{key: "authSecret", absent: true, clear: noSecret(), secret: true})
	}
	return out
}

// liveRelayFields decodes a route's fields generically, for comparison.
func liveRelayFields(raw json.RawMessage) map[string]any {
	var m map[string]any
	dec := json.NewDecoder(strings.NewReader(string(raw)))
	dec.UseNumber()
	if err := dec.Decode(&m); err != nil {
		return map[string]any{}
	}
	return m
}

// isUnset reports whether a live relay field is in its "no value" form.
func isUnset(key string, v any) bool {
	if v == nil {
		return true
	}
	if key == "authSecret" {
		m, _ := v.(map[string]any)
		return m == nil || m["@type"] == "None"
	}
	return false
}

// jsonEqual compares two JSON-able values by their canonical encoding.
func jsonEqual(a, b any) bool {
	return canonical(a) == canonical(b)
}

func canonical(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprint(v)
	}
	var x any
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.UseNumber()
	if dec.Decode(&x) != nil {
		return string(b)
	}
	out, _ := json.Marshal(x)
	return string(out)
}

// jsonText is v as compact JSON without HTML escaping.
func jsonText(v any) string {
	var b strings.Builder
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return fmt.Sprint(v)
	}
	return strings.TrimSuffix(b.String(), "\n")
}

func compactJSON(raw json.RawMessage) string {
	if len(raw) == 0 {
		return ""
	}
	var v any
	dec := json.NewDecoder(strings.NewReader(string(raw)))
	dec.UseNumber()
	if dec.Decode(&v) != nil {
		return string(raw)
	}
	return jsonText(v)
}

// jsonOrPlain renders a --field value: strings as they are, anything else as JSON.
func jsonOrPlain(v any) string {
	switch x := v.(type) {
	case string:
		return x
	case int:
		return strconv.Itoa(x)
	case bool:
		return strconv.FormatBool(x)
	case nil:
		return "null"
	}
	return jsonText(v)
}

// redactedJSON shows a SecretKeyOptional without its secret.
func redactedJSON(v any) string {
	m, ok := v.(map[string]any)
	if !ok {
		return jsonText(v)
	}
	out := map[string]any{}
	for k, x := range m {
		if k == "secret" {
			x = redactedText
		}
		out[k] = x
	}
	return jsonText(out)
}
