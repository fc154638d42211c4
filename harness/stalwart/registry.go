package stalwart

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
)

// SingletonID is the id of every singleton object (MtaOutboundStrategy, SystemSettings, ...).
const SingletonID = "singleton"

var registryUsing = []string{CapCore, CapStalwart}

// SetRequest is the body of an x:Object/set call. Create maps creation ids to
// new objects, Update maps ids to patches (JSON-pointer keys allowed), Destroy lists ids.
type SetRequest struct {
	Create  map[string]any `json:"create,omitempty"`
	Update  map[string]any `json:"update,omitempty"`
	Destroy []string       `json:"destroy,omitempty"`
}

// SetResponse is the reply of a /set call. Stalwart omits empty maps; they
// decode as nil maps here, which read as empty.
type SetResponse struct {
	Created      map[string]json.RawMessage `json:"created"`
	Updated      map[string]json.RawMessage `json:"updated"`
	Destroyed    []string                   `json:"destroyed"`
	NotCreated   map[string]*SetError       `json:"notCreated"`
	NotUpdated   map[string]*SetError       `json:"notUpdated"`
	NotDestroyed map[string]*SetError       `json:"notDestroyed"`
}

// CreatedID returns the server id of creation id cid.
func (r *SetResponse) CreatedID(cid string) (string, bool) {
	raw, ok := r.Created[cid]
	if !ok {
		return "", false
	}
	var v struct {
		ID string `json:"id"`
	}
	if json.Unmarshal(raw, &v) != nil || v.ID == "" {
		return "", false
	}
	return v.ID, true
}

// ParseSetResponse decodes the arguments of a /set response for method (e.g.
// "x:Domain/set") and checks them against the request: every creation id,
// update and destroy must be acknowledged. The error joins one *SetError per
// refused item (errors.As finds the first) and ErrNotAcknowledged for items the
// reply does not mention.
func ParseSetResponse(method string, req SetRequest, args json.RawMessage) (*SetResponse, error) {
	var r SetResponse
	if err := json.Unmarshal(args, &r); err != nil {
		return nil, fmt.Errorf("stalwart: %s: decode reply: %w", method, err)
	}
	var errs []error
	for _, cid := range sortedKeys(req.Create) {
		if e, ok := r.NotCreated[cid]; ok && e != nil {
			e.Method, e.Op, e.ID = method, "create", cid
			errs = append(errs, e)
		} else if _, ok := r.CreatedID(cid); !ok {
			errs = append(errs, fmt.Errorf("%w: %s: create %s", ErrNotAcknowledged, method, cid))
		}
	}
	for _, id := range sortedKeys(req.Update) {
		if e, ok := r.NotUpdated[id]; ok && e != nil {
			e.Method, e.Op, e.ID = method, "update", id
			errs = append(errs, e)
		} else if _, ok := r.Updated[id]; !ok {
			errs = append(errs, fmt.Errorf("%w: %s: update %s (is %q a valid id?)", ErrNotAcknowledged, method, id, id))
		}
	}
	for _, id := range req.Destroy {
		if e, ok := r.NotDestroyed[id]; ok && e != nil {
			e.Method, e.Op, e.ID = method, "destroy", id
			errs = append(errs, e)
		} else if !slices.Contains(r.Destroyed, id) {
			errs = append(errs, fmt.Errorf("%w: %s: destroy %s", ErrNotAcknowledged, method, id))
		}
	}
	return &r, errors.Join(errs...)
}

// Set runs one x:Object/set call. The reply is returned even when some items
// were refused; see ParseSetResponse for the error.
func (c *Client) Set(ctx context.Context, object string, req SetRequest) (*SetResponse, error) {
	method := object + "/set"
	resps, err := c.Do(ctx, registryUsing, Invocation{Name: method, Args: req, CallID: "s0"})
	if err != nil {
		return nil, err
	}
	if err := resps[0].Err(method); err != nil {
		return nil, err
	}
	return ParseSetResponse(method, req, resps[0].Args)
}

// GetResponse is the reply of a /get call.
type GetResponse struct {
	List     []json.RawMessage `json:"list"`
	NotFound []string          `json:"notFound"`
}

// Get runs x:Object/get. ids nil means every object; properties nil means all.
func (c *Client) Get(ctx context.Context, object string, ids []string, properties ...string) (*GetResponse, error) {
	method := object + "/get"
	args := map[string]any{"ids": ids} // nil encodes as null: every object
	if properties != nil {
		args["properties"] = properties
	}
	resps, err := c.Do(ctx, registryUsing, Invocation{Name: method, Args: args, CallID: "g0"})
	if err != nil {
		return nil, err
	}
	if err := resps[0].Err(method); err != nil {
		return nil, err
	}
	var g GetResponse
	if err := json.Unmarshal(resps[0].Args, &g); err != nil {
		return nil, fmt.Errorf("stalwart: %s: decode reply: %w", method, err)
	}
	return &g, nil
}

// Query runs x:Object/query with a filter and returns the matching ids.
func (c *Client) Query(ctx context.Context, object string, filter map[string]any) ([]string, error) {
	method := object + "/query"
	resps, err := c.Do(ctx, registryUsing, Invocation{Name: method, Args: queryArgs(filter), CallID: "q0"})
	if err != nil {
		return nil, err
	}
	if err := resps[0].Err(method); err != nil {
		return nil, err
	}
	var q struct {
		IDs []string `json:"ids"`
	}
	if err := json.Unmarshal(resps[0].Args, &q); err != nil {
		return nil, fmt.Errorf("stalwart: %s: decode reply: %w", method, err)
	}
	return q.IDs, nil
}

func queryArgs(filter map[string]any) map[string]any {
	args := map[string]any{}
	if filter != nil {
		args["filter"] = filter
	}
	return args
}

// QueryGet finds objects with a filter and fetches them in one request, with a
// back-reference from the get to the query's ids (as stalwart-cli query does).
func (c *Client) QueryGet(ctx context.Context, object string, filter map[string]any, properties ...string) ([]json.RawMessage, error) {
	b := &batch{}
	idx := b.queryGet(object, filter, properties)
	if err := b.run(ctx, c); err != nil {
		return nil, err
	}
	return b.list(idx)
}

// batch packs several query+get pairs and gets into as few requests as the
// server's call limit allows, and decodes the results.
type batch struct {
	groups [][]Invocation // calls that must travel together (back-references)
	resps  map[string]Response
	n      int
}

const maxCallsPerRequest = 16

func (b *batch) add(calls ...Invocation) {
	b.groups = append(b.groups, calls)
}

func (b *batch) nextID(prefix string) string {
	b.n++
	return fmt.Sprintf("%s%d", prefix, b.n)
}

// queryGet adds a query and a get by back-reference; it returns the get's call id.
func (b *batch) queryGet(object string, filter map[string]any, properties []string) string {
	q, g := b.nextID("q"), b.nextID("g")
	args := map[string]any{"#ids": map[string]any{"resultOf": q, "name": object + "/query", "path": "/ids"}}
	if properties != nil {
		args["properties"] = properties
	}
	b.add(Invocation{Name: object + "/query", Args: queryArgs(filter), CallID: q},
		Invocation{Name: object + "/get", Args: args, CallID: g})
	return g
}

// get adds a get by ids; it returns the call id.
func (b *batch) get(object string, ids []string, properties []string) string {
	g := b.nextID("g")
	args := map[string]any{"ids": ids}
	if properties != nil {
		args["properties"] = properties
	}
	b.add(Invocation{Name: object + "/get", Args: args, CallID: g})
	return g
}

func (b *batch) run(ctx context.Context, c *Client) error {
	b.resps = map[string]Response{}
	var cur []Invocation
	flush := func() error {
		if len(cur) == 0 {
			return nil
		}
		resps, err := c.Do(ctx, registryUsing, cur...)
		if err != nil {
			return err
		}
		for i, r := range resps {
			if err := r.Err(cur[i].Name); err != nil {
				return err
			}
			b.resps[r.CallID] = r
		}
		cur = nil
		return nil
	}
	for _, g := range b.groups {
		if len(cur)+len(g) > maxCallsPerRequest {
			if err := flush(); err != nil {
				return err
			}
		}
		cur = append(cur, g...)
	}
	return flush()
}

func (b *batch) list(callID string) ([]json.RawMessage, error) {
	r, ok := b.resps[callID]
	if !ok {
		return nil, fmt.Errorf("stalwart: no response for call %s", callID)
	}
	var g GetResponse
	if err := json.Unmarshal(r.Args, &g); err != nil {
		return nil, fmt.Errorf("stalwart: %s: decode reply: %w", r.Name, err)
	}
	return g.List, nil
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
