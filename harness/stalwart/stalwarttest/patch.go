package stalwarttest

import (
	"strconv"
	"strings"
)

// applyPatch applies a JMAP /set update to obj (a value of object), the way
// Stalwart's registry does it (crates/registry/src/jmap/patch.rs):
//   - "prop": value sets a property; for a nested object of the same @type the
//     supplied keys are patched into the existing value one by one (so
//     {"route":{"else":"'mx'"}} keeps the existing match list);
//   - a List, Set or Map value replaces the old one whole;
//   - "prop/key/..." is a JSON pointer that patches one element (null removes it).
//
// After patching, the whole object must still have its required properties: this
// is what makes the first SystemSettings write need defaultHostname and defaultDomainId.
func (s *Schema) applyPatch(object string, obj map[string]any, patch map[string]any) *problem {
	variant, _ := obj["@type"].(string)
	fields, _, ok := s.fieldsFor(object, variant)
	if !ok {
		return &problem{Type: "invalidPatch", Property: "@type", Msg: "Unknown object variant"}
	}
	if t, ok := patch["@type"]; ok && t != obj["@type"] {
		return &problem{Type: "invalidProperties", Property: "@type", Msg: "Property is immutable"}
	}
	for _, k := range sortedKeys(patch) {
		if k == "@type" {
			continue
		}
		var p *problem
		if strings.Contains(k, "/") {
			p = s.patchPointer(fields, obj, k, patch[k])
		} else {
			p = s.setProp(fields, obj, k, patch[k], "", true)
		}
		if p != nil {
			return p
		}
	}
	return missingRequired(fields, obj, "")
}

// setProp sets or merges one property of obj.
func (s *Schema) setProp(fields fieldsDesc, obj map[string]any, key string, val any, path string, top bool) *problem {
	p := join(path, key)
	pd, ok := fields.Properties[key]
	if !ok {
		return &problem{Type: "invalidProperties", Property: p, Msg: "Unknown property"}
	}
	switch pd.Update {
	case "serverSet":
		return &problem{Type: "invalidProperties", Property: p, Msg: "Property is set by the server"}
	case "immutable":
		if top && obj[key] != nil && !jsonEqual(obj[key], val) {
			return &problem{Type: "invalidProperties", Property: p, Msg: "Property is immutable"}
		}
	}
	if val == nil {
		if !pd.Type.Nullable {
			return &problem{Type: "invalidPatch", Property: p, Msg: "Invalid value for object property: null is not allowed"}
		}
		obj[key] = nil
		return nil
	}
	if pd.Type.Type == "object" {
		cur, curOK := obj[key].(map[string]any)
		next, nextOK := val.(map[string]any)
		if curOK && nextOK {
			curType, _ := cur["@type"].(string)
			nextType, has := next["@type"].(string)
			if !has || nextType == curType {
				nf, _, ok := s.fieldsFor(pd.Type.ObjectName, curType)
				if !ok {
					return &problem{Type: "invalidPatch", Property: p, Msg: "Unknown object variant"}
				}
				merged := deepCopy(cur).(map[string]any)
				for _, k := range sortedKeys(next) {
					if k == "@type" {
						continue
					}
					if e := s.setProp(nf, merged, k, next[k], p, false); e != nil {
						return e
					}
				}
				if e := s.checkObject(pd.Type.ObjectName, merged, p, true); e != nil {
					return e
				}
				obj[key] = merged
				return nil
			}
		}
	}
	if e := s.checkValue(pd.Type, val, p); e != nil {
		return e
	}
	obj[key] = deepCopy(val)
	return nil
}

// patchPointer applies one JSON-pointer update key.
func (s *Schema) patchPointer(fields fieldsDesc, obj map[string]any, key string, val any) *problem {
	segs := strings.Split(key, "/")
	for i := range segs {
		segs[i] = unescapePointer(segs[i])
	}
	prop := segs[0]
	pd, ok := fields.Properties[prop]
	if !ok {
		return &problem{Type: "invalidProperties", Property: key, Msg: "Unknown property"}
	}
	if pd.Update != "mutable" {
		return &problem{Type: "invalidProperties", Property: key, Msg: "Property cannot be patched"}
	}
	bad := func(msg string) *problem {
		return &problem{Type: "invalidPatch", Property: key, Msg: "Invalid patch: " + msg}
	}
	t := pd.Type
	parent := obj
	parentKey := prop
	for i, seg := range segs[1:] {
		last := i == len(segs)-2
		cur := parent[parentKey]
		container, _ := cur.(map[string]any)
		if container == nil {
			switch t.Type {
			case "set", "map", "objectList":
				container = map[string]any{}
				parent[parentKey] = container
			default:
				return bad("no value to patch at " + parentKey)
			}
		}
		switch t.Type {
		case "set":
			if !last {
				return bad("cannot descend into a Set member")
			}
			if val == nil {
				delete(container, seg)
				return nil
			}
			if b, ok := val.(bool); !ok || !b {
				return bad("Set members are patched with true or null")
			}
			if t.Class != nil {
				if e := s.checkValue(*t.Class, keyValue(*t.Class, seg), key); e != nil {
					return e
				}
			}
			container[seg] = true
			return nil
		case "map":
			if t.KeyClass != nil {
				if e := s.checkValue(*t.KeyClass, keyValue(*t.KeyClass, seg), key); e != nil {
					return e
				}
			}
			if last {
				if val == nil {
					delete(container, seg)
					return nil
				}
				if t.ValueClass != nil {
					if e := s.checkValue(*t.ValueClass, val, key); e != nil {
						return e
					}
				}
				container[seg] = deepCopy(val)
				return nil
			}
			if t.ValueClass == nil {
				return bad("cannot descend")
			}
			t = *t.ValueClass
			parent, parentKey = container, seg
		case "objectList":
			idx, err := strconv.Atoi(seg)
			if err != nil || idx < 0 || idx > len(container) || strconv.Itoa(idx) != seg {
				return bad("bad List index " + seg)
			}
			if last {
				if val == nil {
					if idx >= len(container) {
						return bad("no List item " + seg)
					}
					// Remove and renumber.
					for j := idx; j < len(container)-1; j++ {
						container[strconv.Itoa(j)] = container[strconv.Itoa(j+1)]
					}
					delete(container, strconv.Itoa(len(container)-1))
					return nil
				}
				if e := s.checkObject(t.ObjectName, val, key, true); e != nil {
					return e
				}
				container[seg] = deepCopy(val)
				return nil
			}
			if idx >= len(container) {
				return bad("no List item " + seg)
			}
			t = typeDesc{Type: "object", ObjectName: t.ObjectName}
			parent, parentKey = container, seg
		case "object":
			variant, _ := container["@type"].(string)
			nf, _, ok := s.fieldsFor(t.ObjectName, variant)
			if !ok {
				return bad("unknown variant")
			}
			if last {
				if e := s.setProp(nf, container, seg, val, strings.Join(segs[:i+1], "/"), false); e != nil {
					return e
				}
				return s.checkObject(t.ObjectName, container, strings.Join(segs[:i+1], "/"), true)
			}
			npd, ok := nf.Properties[seg]
			if !ok {
				return &problem{Type: "invalidProperties", Property: key, Msg: "Unknown property"}
			}
			t = npd.Type
			parent, parentKey = container, seg
		default:
			return bad("cannot descend into a " + t.Type)
		}
	}
	// A pointer with one segment never gets here (no "/").
	return bad("empty pointer")
}

func jsonEqual(a, b any) bool {
	return marshalCanonical(a) == marshalCanonical(b)
}
