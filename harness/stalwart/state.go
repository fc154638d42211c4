package stalwart

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
)

// State is the live configuration that plan and apply compare against.
type State struct {
	// Domains holds the wanted domains that exist, by lower-case name.
	Domains map[string]*Domain
	// Relay is the route named like the wanted relay, nil if there is none.
	Relay *Route
	// RelayRaw is that route exactly as read.
	RelayRaw json.RawMessage
	// Route is the live route expression, RouteRaw exactly as read.
	Route    Expression
	RouteRaw json.RawMessage
	// System is the SystemSettings singleton as read.
	System SystemSettings
	// Accounts holds the wanted test accounts that exist, by lower-case address.
	Accounts map[string]*Account
}

var (
	domainProps  = []string{"id", "name", "allowRelaying", "aliases", "createdAt"}
	accountProps = []string{"id", "@type", "name", "domainId", "emailAddress", "createdAt"}
	systemProps  = []string{"defaultHostname", "defaultDomainId", "proxyTrustedNetworks"}
)

// ReadState reads what d touches: the wanted domains (by name), the relay route
// (by name), the route expression, SystemSettings and the wanted test accounts.
// It only reads, so it is retried on transient failures.
func (c *Client) ReadState(ctx context.Context, d Desired) (*State, error) {
	b := &batch{}
	domCalls := map[string]string{}
	for _, dom := range d.Domains {
		domCalls[dom] = b.queryGet(ObjDomain, map[string]any{"name": dom}, domainProps)
	}
	routeCall := b.queryGet(ObjMtaRoute, map[string]any{"name": d.Relay.Name}, nil)
	strategyCall := b.get(ObjOutbound, []string{SingletonID}, []string{"route"})
	systemCall := b.get(ObjSystemSettings, []string{SingletonID}, systemProps)
	acctCalls := map[string]string{}
	for _, addr := range d.TestAccounts {
		local, _, _ := strings.Cut(addr, "@")
		acctCalls[addr] = b.queryGet(ObjAccount, map[string]any{"name": local}, accountProps)
	}
	if err := b.run(ctx, c); err != nil {
		return nil, fmt.Errorf("read state: %w", err)
	}
	st := &State{Domains: map[string]*Domain{}, Accounts: map[string]*Account{}}
	for dom, call := range domCalls {
		list, err := b.list(call)
		if err != nil {
			return nil, fmt.Errorf("read state: %w", err)
		}
		for _, raw := range list {
			var v Domain
			if err := json.Unmarshal(raw, &v); err != nil {
				return nil, fmt.Errorf("read state: domain %s: %w", dom, err)
			}
			if strings.EqualFold(v.Name, dom) {
				st.Domains[dom] = &v
			}
		}
	}
	routes, err := b.list(routeCall)
	if err != nil {
		return nil, fmt.Errorf("read state: %w", err)
	}
	for _, raw := range routes {
		var r Route
		if err := json.Unmarshal(raw, &r); err != nil {
			return nil, fmt.Errorf("read state: route: %w", err)
		}
		if r.Name == d.Relay.Name {
			st.Relay, st.RelayRaw = &r, raw
		}
	}
	strat, err := b.list(strategyCall)
	if err != nil {
		return nil, fmt.Errorf("read state: %w", err)
	}
	if len(strat) != 1 {
		return nil, fmt.Errorf("read state: %s: %d objects for id %q", ObjOutbound, len(strat), SingletonID)
	}
	var so struct {
		Route json.RawMessage `json:"route"`
	}
	if err := json.Unmarshal(strat[0], &so); err != nil {
		return nil, fmt.Errorf("read state: route expression: %w", err)
	}
	st.RouteRaw = so.Route
	if len(so.Route) > 0 {
		if err := json.Unmarshal(so.Route, &st.Route); err != nil {
			return nil, fmt.Errorf("read state: route expression: %w", err)
		}
	}
	sys, err := b.list(systemCall)
	if err != nil {
		return nil, fmt.Errorf("read state: %w", err)
	}
	if len(sys) != 1 {
		return nil, fmt.Errorf("read state: %s: %d objects for id %q", ObjSystemSettings, len(sys), SingletonID)
	}
	if err := json.Unmarshal(sys[0], &st.System); err != nil {
		return nil, fmt.Errorf("read state: system settings: %w", err)
	}
	for addr, call := range acctCalls {
		list, err := b.list(call)
		if err != nil {
			return nil, fmt.Errorf("read state: %w", err)
		}
		for _, raw := range list {
			var a Account
			if err := json.Unmarshal(raw, &a); err != nil {
				return nil, fmt.Errorf("read state: account %s: %w", addr, err)
			}
			local, dom, _ := strings.Cut(addr, "@")
			byParts := a.EmailAddress == "" && strings.EqualFold(a.Name, local) && st.Domains[dom] != nil && a.DomainID == st.Domains[dom].ID
			if strings.EqualFold(a.EmailAddress, addr) || byParts {
				st.Accounts[addr] = &a
			}
		}
	}
	return st, nil
}
