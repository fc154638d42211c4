package stalwarttest

import (
	"encoding/json"
	"fmt"
	"time"
)

// Seed stores an object as if it had been created earlier (server-set properties
// such as a QueuedMessage's returnPath are allowed) and returns its id. Values
// use Go types (strings, bools, ints, nested maps); Lists and Sets use the wire
// form. The value is validated against the schema.
func (s *Server) Seed(object string, value map[string]any) (string, error) {
	v, ok := normaliseJSON(value).(map[string]any)
	if !ok {
		return "", fmt.Errorf("seed %s: not an object", object)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	od, ok := s.Schema.Objects[object]
	if !ok || od.Type != "object" {
		return "", fmt.Errorf("seed %s: not a collection object", object)
	}
	if p := s.Schema.checkSeed(object, v); p != nil {
		return "", fmt.Errorf("seed %s: %s (%s)", object, p.Error(), p.Type)
	}
	if e := s.st.semantics(object, "", v); e != nil {
		return "", fmt.Errorf("seed %s: %v", object, e)
	}
	v = s.st.withDefaults(object, v)
	fields := s.Schema.Fields[s.st.fieldsName(object, v)]
	if _, ok := fields.Properties["createdAt"]; ok && v["createdAt"] == nil {
		v["createdAt"] = time.Now().UTC().Format(time.RFC3339)
	}
	if object == "x:Account" && v["@type"] == "User" {
		v["emailAddress"] = s.st.emailOf(v)
	}
	normaliseNetworks(s.Schema, object, v)
	id := s.st.insert(object, v)
	if object == "x:Account" && v["@type"] == "User" {
		s.st.mail[id] = newMailStore()
	}
	return id, nil
}

func (s *Schema) checkSeed(object string, v map[string]any) *problem {
	return checker{s: s, seed: true}.checkObject(object, v, "", true)
}

// SetSingleton stores a singleton as the web wizard or an earlier admin would
// have: patch is applied to the current value and must leave it valid.
func (s *Server) SetSingleton(object string, patch map[string]any) error {
	p, ok := normaliseJSON(patch).(map[string]any)
	if !ok {
		return fmt.Errorf("set %s: not an object", object)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if od, ok := s.Schema.Objects[object]; !ok || od.Type != "singleton" {
		return fmt.Errorf("set %s: not a singleton", object)
	}
	if e := s.st.update(object, true, singletonID, p); e != nil {
		return fmt.Errorf("set %s: %v", object, e)
	}
	s.st.lastViolations = nil
	return nil
}

// SeedWizard makes the server look set up through the setup wizard: the domain
// exists and SystemSettings carries defaultHostname and defaultDomainId. It
// returns the domain's id.
func (s *Server) SeedWizard(hostname, domain string) (string, error) {
	id, err := s.Seed("x:Domain", map[string]any{"name": domain})
	if err != nil {
		return "", err
	}
	return id, s.SetSingleton("x:SystemSettings", map[string]any{"defaultHostname": hostname, "defaultDomainId": id})
}

// Object returns a copy of a stored object, or nil.
func (s *Server) Object(object, id string) map[string]any {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, ok := s.st.objects[object][id]
	if !ok {
		return nil
	}
	return deepCopy(v).(map[string]any)
}

// Find returns the id and a copy of the first object (oldest first) whose
// property prop equals value, or "", nil.
func (s *Server) Find(object, prop string, value any) (string, map[string]any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	want := marshalCanonical(normaliseJSON(value))
	for _, id := range s.st.order[object] {
		v := s.st.objects[object][id]
		if marshalCanonical(v[prop]) == want {
			return id, deepCopy(v).(map[string]any)
		}
	}
	return "", nil
}

// Count is the number of stored objects of a kind.
func (s *Server) Count(object string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.st.objects[object])
}

// Singleton returns a copy of a singleton's value and whether it was ever stored.
func (s *Server) Singleton(object string) (map[string]any, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, stored := s.st.singleton(object)
	return deepCopy(v).(map[string]any), stored
}

// Dump is the registry as canonical JSON, for comparing states before and after:
// every stored object, and every singleton whose value differs from its default.
// Nulls and empty Lists, Sets and Maps are left out, so a value cleared with null
// or {} equals one never set.
func (s *Server) Dump() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]any{}
	for name, objs := range s.st.objects {
		if len(objs) == 0 {
			continue
		}
		m := map[string]any{}
		for id, v := range objs {
			m[id] = pruneEmpty(deepCopy(v))
		}
		out[name] = m
	}
	for name, v := range s.st.singletons {
		def := s.st.singletonDefault(name)
		if marshalCanonical(pruneEmpty(deepCopy(v))) != marshalCanonical(pruneEmpty(def)) {
			out[name] = pruneEmpty(deepCopy(v))
		}
	}
	b, _ := json.MarshalIndent(out, "", "  ")
	return string(b)
}

func pruneEmpty(v any) any {
	m, ok := v.(map[string]any)
	if !ok {
		return v
	}
	for k, item := range m {
		item = pruneEmpty(item)
		if sub, ok := item.(map[string]any); (ok && len(sub) == 0) || item == nil {
			delete(m, k)
			continue
		}
		m[k] = item
	}
	return m
}
