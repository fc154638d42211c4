package stalwarttest

import (
	"bytes"
	"compress/gzip"
	_ "embed"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/netip"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
)

// schemaGz is Stalwart's own schema (what GET /api/schema serves), from the 0.16 source tree.
//
//go:embed schema.json.gz
var schemaGz []byte

// Schema is the parsed schema.json the fake validates every request against.
type Schema struct {
	Objects map[string]objectDesc              `json:"objects"`
	Schemas map[string]schemaDesc              `json:"schemas"`
	Fields  map[string]fieldsDesc              `json:"fields"`
	Lists   map[string]listDesc                `json:"lists"`
	Enums   map[string][]struct{ Name string } `json:"enums"`

	enumSets map[string]map[string]bool
}

type objectDesc struct {
	Type       string `json:"type"` // object, singleton, view
	ObjectName string `json:"objectName"`
}

type schemaDesc struct {
	Type       string `json:"type"` // single, multiple
	SchemaName string `json:"schemaName"`
	Variants   []struct {
		Name       string `json:"name"`
		SchemaName string `json:"schemaName"`
	} `json:"variants"`
}

type fieldsDesc struct {
	Properties map[string]propDesc `json:"properties"`
	Defaults   map[string]any      `json:"defaults"`
}

type propDesc struct {
	Type   typeDesc `json:"type"`
	Update string   `json:"update"` // mutable, immutable, serverSet
}

type typeDesc struct {
	Type       string    `json:"type"`
	Format     string    `json:"format"`
	Nullable   bool      `json:"nullable"`
	ObjectName string    `json:"objectName"`
	EnumName   string    `json:"enumName"`
	Min        *float64  `json:"min"`
	Max        *float64  `json:"max"`
	MinItems   *int      `json:"minItems"`
	MaxLength  *int      `json:"maxLength"`
	Class      *typeDesc `json:"class"`
	KeyClass   *typeDesc `json:"keyClass"`
	ValueClass *typeDesc `json:"valueClass"`
}

type listDesc struct {
	Filters []struct {
		Field string `json:"field"`
	} `json:"filters"`
	FiltersStatic map[string]any `json:"filtersStatic"`
}

// LoadSchema parses schema.json (plain or gzipped).
func LoadSchema(data []byte) (*Schema, error) {
	if len(data) > 2 && data[0] == 0x1f && data[1] == 0x8b {
		zr, err := gzip.NewReader(bytes.NewReader(data))
		if err != nil {
			return nil, fmt.Errorf("load schema: %w", err)
		}
		if data, err = io.ReadAll(zr); err != nil {
			return nil, fmt.Errorf("load schema: %w", err)
		}
	}
	var s Schema
	if err := json.Unmarshal(data, &s); err != nil {
		return nil, fmt.Errorf("load schema: %w", err)
	}
	if len(s.Objects) == 0 || len(s.Schemas) == 0 {
		return nil, fmt.Errorf("load schema: no objects")
	}
	s.enumSets = map[string]map[string]bool{}
	for name, vals := range s.Enums {
		m := map[string]bool{}
		for _, v := range vals {
			m[v.Name] = true
		}
		s.enumSets[name] = m
	}
	return &s, nil
}

// DefaultSchema returns the embedded schema.json of Stalwart 0.16.
func DefaultSchema() *Schema {
	s, err := LoadSchema(schemaGz)
	if err != nil {
		panic("stalwarttest: embedded schema: " + err.Error())
	}
	return s
}

// baseObject resolves a view ("x:Account/User") to the object it shows.
func (s *Schema) baseObject(name string) string {
	if o, ok := s.Objects[name]; ok && o.Type == "view" && o.ObjectName != "" {
		return o.ObjectName
	}
	return name
}

// filterFields lists the query filter keys an object accepts, from its lists and views.
func (s *Schema) filterFields(object string) map[string]bool {
	out := map[string]bool{}
	for name, l := range s.Lists {
		if name != object && s.baseObject(name) != object {
			continue
		}
		for _, f := range l.Filters {
			out[f.Field] = true
		}
		for k := range l.FiltersStatic {
			out[k] = true
		}
	}
	return out
}

// fieldsFor returns the fields of the schema (and @type variant) that describe v.
// ok is false when the variant is missing or unknown.
func (s *Schema) fieldsFor(schemaName string, variant string) (fields fieldsDesc, multiple bool, ok bool) {
	sd, found := s.Schemas[schemaName]
	if !found {
		return fieldsDesc{}, false, false
	}
	if sd.Type != "multiple" {
		return s.Fields[sd.SchemaName], false, true
	}
	for _, v := range sd.Variants {
		if v.Name == variant {
			if v.SchemaName == "" {
				return fieldsDesc{}, true, true
			}
			return s.Fields[v.SchemaName], true, true
		}
	}
	return fieldsDesc{}, true, false
}

func (s *Schema) variantNames(schemaName string) []string {
	var out []string
	for _, v := range s.Schemas[schemaName].Variants {
		out = append(out, v.Name)
	}
	return out
}

// problem is one reason a value does not fit the schema, as a SetError.
type problem struct {
	Type       string // invalidProperties, invalidPatch, validationFailed
	Property   string // JSON-pointer-ish path
	Msg        string
	Validation map[string]any // for validationFailed
}

func (p *problem) Error() string { return p.Property + ": " + p.Msg }

// checkObject validates a whole object value of schemaName (create, or replace).
func (s *Schema) checkObject(schemaName string, v any, path string, required bool) *problem {
	return checker{s: s}.checkObject(schemaName, v, path, required)
}

// checkValue validates one value against a type descriptor.
func (s *Schema) checkValue(t typeDesc, v any, path string) *problem {
	return checker{s: s}.checkValue(t, v, path)
}

// checker validates values; seed allows server-set properties (for Seed).
type checker struct {
	s    *Schema
	seed bool
}

func (c checker) checkObject(schemaName string, v any, path string, required bool) *problem {
	s := c.s
	obj, ok := v.(map[string]any)
	if !ok {
		return &problem{Type: "invalidPatch", Property: path, Msg: "Invalid value for object property: want an object"}
	}
	variant, _ := obj["@type"].(string)
	fields, multiple, ok := s.fieldsFor(schemaName, variant)
	if !ok {
		if multiple {
			if _, has := obj["@type"]; !has {
				return &problem{Type: "invalidPatch", Property: join(path, "@type"), Msg: "Missing @type; one of " + strings.Join(s.variantNames(schemaName), ", ")}
			}
			return &problem{Type: "invalidPatch", Property: join(path, "@type"), Msg: fmt.Sprintf("Unknown @type %q; one of %s", variant, strings.Join(s.variantNames(schemaName), ", "))}
		}
		return &problem{Type: "invalidPatch", Property: path, Msg: "Unknown schema " + schemaName}
	}
	if _, has := obj["@type"]; has && !multiple {
		return &problem{Type: "invalidProperties", Property: join(path, "@type"), Msg: "Object has no variants"}
	}
	for _, k := range sortedKeys(obj) {
		if k == "@type" {
			continue
		}
		pd, found := fields.Properties[k]
		if !found {
			return &problem{Type: "invalidProperties", Property: join(path, k), Msg: "Unknown property"}
		}
		if pd.Update == "serverSet" && !c.seed {
			return &problem{Type: "invalidProperties", Property: join(path, k), Msg: "Property is set by the server"}
		}
		if p := c.checkValue(pd.Type, obj[k], join(path, k)); p != nil {
			return p
		}
	}
	if required {
		if p := missingRequired(fields, obj, path); p != nil {
			return p
		}
	}
	return nil
}

// requiredProps lists the properties that have no default and cannot be null.
func requiredProps(f fieldsDesc) []string {
	var out []string
	for name, pd := range f.Properties {
		if pd.Update == "serverSet" || pd.Type.Nullable {
			continue
		}
		if _, ok := f.Defaults[name]; ok {
			continue
		}
		switch pd.Type.Type {
		case "string", "objectId", "number", "enum", "blobId", "utcDateTime":
			out = append(out, name)
		}
	}
	sort.Strings(out)
	return out
}

func missingRequired(f fieldsDesc, obj map[string]any, path string) *problem {
	var errs []any
	var props []string
	for _, name := range requiredProps(f) {
		v, ok := obj[name]
		if s, isStr := v.(string); !ok || v == nil || (isStr && s == "") {
			errs = append(errs, map[string]any{"type": "Required", "property": join(path, name)})
			props = append(props, join(path, name))
		}
	}
	// A List or Set with a minimum size must have it in the final object (Custom
	// DnsResolver servers: at least one), also when it was never sent.
	for _, name := range sortedKeys(f.Properties) {
		t := f.Properties[name].Type
		if (t.Type != "objectList" && t.Type != "set") || t.MinItems == nil || *t.MinItems < 1 || t.Nullable {
			continue
		}
		if m, _ := obj[name].(map[string]any); len(m) < *t.MinItems {
			errs = append(errs, map[string]any{"type": "Required", "property": join(path, name)})
			props = append(props, join(path, name))
		}
	}
	if len(errs) == 0 {
		return nil
	}
	return &problem{Type: "validationFailed", Property: strings.Join(props, ","), Msg: "Missing required properties",
		Validation: map[string]any{"validationErrors": errs}}
}

func (c checker) checkValue(t typeDesc, v any, path string) *problem {
	s := c.s
	bad := func(msg string) *problem {
		return &problem{Type: "invalidPatch", Property: path, Msg: "Invalid value for object property: " + msg}
	}
	if v == nil {
		if t.Nullable {
			return nil
		}
		return bad("null is not allowed")
	}
	switch t.Type {
	case "string":
		str, ok := v.(string)
		if !ok {
			return bad("want a string")
		}
		if t.MaxLength != nil && len(str) > *t.MaxLength {
			return bad("too long")
		}
		switch t.Format {
		case "emailAddress":
			if i := strings.LastIndexByte(str, '@'); i <= 0 || i == len(str)-1 {
				return bad("not an e-mail address")
			}
		case "ipAddress":
			if _, err := netip.ParseAddr(str); err != nil {
				return bad("not an IP address")
			}
		case "ipNetwork":
			if _, err := parseNetwork(str); err != nil {
				return bad(err.Error())
			}
		}
	case "number":
		n, ok := v.(json.Number)
		if !ok {
			return bad("want a number")
		}
		f, err := n.Float64()
		if err != nil {
			return bad("want a number")
		}
		switch t.Format {
		case "unsignedInteger", "duration", "size":
			if f < 0 || f != math.Trunc(f) || strings.ContainsAny(string(n), ".eE") {
				return bad("want a non-negative integer")
			}
		case "integer":
			if f != math.Trunc(f) || strings.ContainsAny(string(n), ".eE") {
				return bad("want an integer")
			}
		}
		if t.Min != nil && f < *t.Min {
			return &problem{Type: "validationFailed", Property: path, Msg: "Value too small",
				Validation: map[string]any{"validationErrors": []any{map[string]any{"type": "MinValue", "property": path, "required": *t.Min}}}}
		}
		if t.Max != nil && f > *t.Max {
			return &problem{Type: "validationFailed", Property: path, Msg: "Value too large",
				Validation: map[string]any{"validationErrors": []any{map[string]any{"type": "MaxValue", "property": path, "required": *t.Max}}}}
		}
	case "boolean":
		if _, ok := v.(bool); !ok {
			return bad("want a boolean")
		}
	case "enum":
		str, ok := v.(string)
		if !ok || !s.enumSets[t.EnumName][str] {
			return bad(fmt.Sprintf("not a %s value", t.EnumName))
		}
	case "objectId":
		str, ok := v.(string)
		if !ok {
			return bad("want an id")
		}
		if _, ok := decodeID(str); !ok {
			return bad("not an id")
		}
	case "utcDateTime":
		str, ok := v.(string)
		if !ok {
			return bad("want a date")
		}
		if _, err := time.Parse(time.RFC3339, str); err != nil {
			return bad("not an RFC 3339 UTC date")
		}
	case "blobId":
		if _, ok := v.(string); !ok {
			return bad("want a blob id")
		}
	case "set":
		m, ok := v.(map[string]any)
		if !ok {
			return bad("a Set is an object {\"value\": true}")
		}
		for _, k := range sortedKeys(m) {
			if b, ok := m[k].(bool); !ok || !b {
				return &problem{Type: "invalidPatch", Property: join(path, k), Msg: "Invalid value for object property: Set members map to true"}
			}
			if t.Class != nil {
				if p := c.checkValue(*t.Class, keyValue(*t.Class, k), join(path, k)); p != nil {
					return p
				}
			}
		}
		if t.MinItems != nil && len(m) < *t.MinItems {
			return bad(fmt.Sprintf("needs at least %d items", *t.MinItems))
		}
	case "map":
		m, ok := v.(map[string]any)
		if !ok {
			return bad("want an object")
		}
		for _, k := range sortedKeys(m) {
			if t.KeyClass != nil {
				if p := c.checkValue(*t.KeyClass, keyValue(*t.KeyClass, k), join(path, k)); p != nil {
					return p
				}
			}
			if t.ValueClass != nil {
				if p := c.checkValue(*t.ValueClass, m[k], join(path, k)); p != nil {
					return p
				}
			}
		}
	case "objectList":
		m, ok := v.(map[string]any)
		if !ok {
			return bad("a List is an object keyed \"0\", \"1\", ...")
		}
		for i := range len(m) {
			item, ok := m[strconv.Itoa(i)]
			if !ok {
				return bad("List keys must be \"0\" to \"n-1\"")
			}
			if p := c.checkObject(t.ObjectName, item, join(path, strconv.Itoa(i)), true); p != nil {
				return p
			}
		}
		if t.MinItems != nil && len(m) < *t.MinItems {
			return bad(fmt.Sprintf("needs at least %d items", *t.MinItems))
		}
	case "object":
		return c.checkObject(t.ObjectName, v, path, true)
	default:
		return bad("unknown type " + t.Type)
	}
	return nil
}

// keyValue turns an object key into the value its class describes (numbers for numeric keys).
func keyValue(t typeDesc, k string) any {
	if t.Type == "number" {
		return json.Number(k)
	}
	return k
}

// parseNetwork accepts what Stalwart's ipNetwork accepts: an IP, or a CIDR of /8 or longer.
func parseNetwork(s string) (netip.Prefix, error) {
	if a, err := netip.ParseAddr(s); err == nil {
		return netip.PrefixFrom(a, a.BitLen()), nil
	}
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("invalid IP network %q", s)
	}
	if p.Bits() < 8 {
		return netip.Prefix{}, fmt.Errorf("invalid IP network %q", s)
	}
	return p, nil
}

// normalNetwork is how Stalwart reads a network back: a host prefix is a bare IP.
func normalNetwork(s string) string {
	p, err := parseNetwork(s)
	if err != nil {
		return s
	}
	if p.Bits() == p.Addr().BitLen() {
		return p.Addr().String()
	}
	return p.Masked().String()
}

func join(path, k string) string {
	if path == "" {
		return k
	}
	return path + "/" + k
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// wireDefaults returns the defaults of a fields description in wire form.
func (s *Schema) wireDefaults(f fieldsDesc) map[string]any {
	out := map[string]any{}
	for k, v := range f.Defaults {
		pd, ok := f.Properties[k]
		if !ok {
			continue
		}
		out[k] = s.toWire(pd.Type, normaliseJSON(v))
	}
	return out
}

// toWire converts a schema default (where lists may be JSON arrays) to the wire form.
func (s *Schema) toWire(t typeDesc, v any) any {
	switch t.Type {
	case "objectList":
		if arr, ok := v.([]any); ok {
			m := map[string]any{}
			for i, item := range arr {
				m[strconv.Itoa(i)] = item
			}
			return m
		}
	case "set":
		if arr, ok := v.([]any); ok {
			m := map[string]any{}
			for _, item := range arr {
				m[fmt.Sprint(item)] = true
			}
			return m
		}
	case "object":
		obj, ok := v.(map[string]any)
		if !ok {
			return v
		}
		if t.ObjectName == "x:Expression" {
			if d, ok := obj["default"]; ok && len(obj) == 1 {
				return map[string]any{"match": map[string]any{}, "else": d}
			}
		}
		variant, _ := obj["@type"].(string)
		fields, _, ok := s.fieldsFor(t.ObjectName, variant)
		if !ok {
			return v
		}
		out := map[string]any{}
		for k, item := range obj {
			if pd, ok := fields.Properties[k]; ok {
				out[k] = s.toWire(pd.Type, item)
			} else {
				out[k] = item
			}
		}
		return out
	}
	return v
}

// normaliseJSON round-trips v so numbers are json.Number, as the request decoder makes them.
func normaliseJSON(v any) any {
	b, err := json.Marshal(v)
	if err != nil {
		return v
	}
	out, err := decodeJSON(b)
	if err != nil {
		return v
	}
	return out
}

func decodeJSON(b []byte) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	if dec.More() {
		return nil, fmt.Errorf("trailing data after JSON value")
	}
	return v, nil
}

// deepCopy copies a decoded JSON value.
func deepCopy(v any) any {
	switch x := v.(type) {
	case map[string]any:
		m := make(map[string]any, len(x))
		for k, item := range x {
			m[k] = deepCopy(item)
		}
		return m
	case []any:
		a := make([]any, len(x))
		for i, item := range x {
			a[i] = deepCopy(item)
		}
		return a
	default:
		return v
	}
}
