package stalwarttest

import (
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
)

// store is the registry of x: objects; Server.mu guards it.
type store struct {
	schema     *Schema
	objects    map[string]map[string]map[string]any // object -> id -> value
	order      map[string][]string                  // object -> ids in creation order
	singletons map[string]map[string]any            // stored singletons
	seq        map[string]uint64
	longSeq    uint64
	mail       map[string]*mailStore // account id -> mailbox store
	state      int

	lastActions    []string
	lastViolations []string
}

// Objects with short sequential ids; every other object gets long time-ordered ids.
var shortIDObjects = map[string]bool{"x:Domain": true, "x:Account": true, "x:MailingList": true,
	"x:OAuthClient": true, "x:Role": true, "x:Tenant": true}

func newStore(schema *Schema) *store {
	return &store{
		schema:     schema,
		objects:    map[string]map[string]map[string]any{},
		order:      map[string][]string{},
		singletons: map[string]map[string]any{},
		seq:        map[string]uint64{},
		longSeq:    1 << 46,
		mail:       map[string]*mailStore{},
	}
}

func (st *store) newID(object string) string {
	if shortIDObjects[object] {
		st.seq[object]++
		return encodeID(st.seq[object])
	}
	st.longSeq += 7919
	return encodeID(st.longSeq)
}

// seedRoutes adds the routes Stalwart seeds on its first normal start.
func (st *store) seedRoutes() {
	for _, r := range []map[string]any{
		{"@type": "Mx", "name": "mx", "maxMxHosts": int64(2)},
		{"@type": "Local", "name": "local"},
	} {
		v := normaliseJSON(r).(map[string]any)
		st.insert("x:MtaRoute", st.withDefaults("x:MtaRoute", v))
	}
}

func (st *store) insert(object string, v map[string]any) string {
	id := st.newID(object)
	if st.objects[object] == nil {
		st.objects[object] = map[string]map[string]any{}
	}
	st.objects[object][id] = v
	st.order[object] = append(st.order[object], id)
	st.state++
	return id
}

func (st *store) remove(object, id string) {
	delete(st.objects[object], id)
	st.order[object] = slices.DeleteFunc(st.order[object], func(x string) bool { return x == id })
	delete(st.mail, id)
	st.state++
}

// singleton returns the effective value of a singleton (stored, or the defaults).
func (st *store) singleton(object string) (map[string]any, bool) {
	if v, ok := st.singletons[object]; ok {
		return v, true
	}
	return st.singletonDefault(object), false
}

// singletonDefault is the value of a singleton that was never stored: its schema
// defaults and, for a multi-variant singleton, its first variant, which is the one
// Stalwart's Default gives (System for x:DnsResolver, Disabled for x:Asn, ...).
func (st *store) singletonDefault(object string) map[string]any {
	v := map[string]any{}
	if sd := st.schema.Schemas[object]; sd.Type == "multiple" && len(sd.Variants) > 0 {
		v["@type"] = sd.Variants[0].Name
	}
	return st.withDefaults(object, v)
}

// switchVariant handles an update whose "@type" names another variant of a
// multi-variant singleton (api-notes §2.6: {"@type":"Custom","servers":...} on
// x:DnsResolver). The stored value is replaced by the new variant's defaults
// and the rest of the patch applies to that. It returns cur unchanged when the
// patch keeps the variant, and a SetError for an unknown variant.
func (st *store) switchVariant(object string, cur, patch map[string]any) (map[string]any, map[string]any) {
	t, ok := patch["@type"]
	if !ok || t == cur["@type"] {
		return cur, nil
	}
	name, _ := t.(string)
	if _, _, ok := st.schema.fieldsFor(object, name); !ok || name == "" {
		st.lastViolations = append(st.lastViolations, fmt.Sprintf("update: @type: unknown variant %v of %s", t, object))
		return nil, problemError(&problem{Type: "invalidPatch", Property: "@type", Msg: "Unknown object variant"})
	}
	return st.withDefaults(object, map[string]any{"@type": name}), nil
}

// withDefaults fills the properties the server fills on create: schema defaults,
// false booleans, empty lists, sets and maps, and the first variant of objects.
func (st *store) withDefaults(schemaName string, v map[string]any) map[string]any {
	variant, _ := v["@type"].(string)
	fields, multiple, ok := st.schema.fieldsFor(schemaName, variant)
	if !ok {
		return v
	}
	if multiple && variant == "" {
		return v
	}
	defs := st.schema.wireDefaults(fields)
	for name, pd := range fields.Properties {
		if _, has := v[name]; has || pd.Update == "serverSet" {
			continue
		}
		if d, ok := defs[name]; ok {
			v[name] = d
			continue
		}
		switch pd.Type.Type {
		case "boolean":
			v[name] = false
		case "set", "map", "objectList":
			v[name] = map[string]any{}
		case "object":
			sd := st.schema.Schemas[pd.Type.ObjectName]
			if sd.Type == "multiple" && len(sd.Variants) > 0 && !pd.Type.Nullable {
				v[name] = st.withDefaults(pd.Type.ObjectName, map[string]any{"@type": sd.Variants[0].Name})
			}
		}
	}
	return v
}

func objectRef(object, id string) map[string]any {
	return map[string]any{"object": strings.TrimPrefix(object, "x:"), "id": id}
}

func (st *store) get(object string, singleton bool, args map[string]any) (map[string]any, *methodError) {
	if e := checkArgs(args, "accountId", "ids", "properties"); e != nil {
		return nil, e
	}
	ids, ok := stringList(args["ids"])
	if !ok {
		return nil, malformed("invalidArguments", "ids must be an array of ids or null")
	}
	props, ok := stringList(args["properties"])
	if !ok {
		return nil, malformed("invalidArguments", "properties must be an array of strings or null")
	}
	for _, p := range props {
		if p != "id" && p != "@type" && !st.knownProperty(object, p) {
			return nil, malformed("invalidArguments", "unknown property %q", p)
		}
	}
	if args["ids"] == nil {
		if singleton {
			ids = []string{singletonID}
		} else {
			ids = slices.Clone(st.order[object])
		}
	}
	list := []any{}
	notFound := []any{}
	for _, id := range ids {
		var v map[string]any
		if singleton {
			if id != singletonID {
				notFound = append(notFound, id)
				continue
			}
			v, _ = st.singleton(object)
		} else {
			obj, ok := st.objects[object][id]
			if !ok {
				notFound = append(notFound, id)
				continue
			}
			v = obj
		}
		out := map[string]any{"id": id}
		for k, val := range v {
			if props == nil || slices.Contains(props, k) || (k == "@type" && props != nil) {
				out[k] = deepCopy(val)
			}
		}
		st.maskSecrets(object, out)
		list = append(list, out)
	}
	return map[string]any{"accountId": adminAccountID, "state": strconv.Itoa(st.state), "list": list, "notFound": notFound}, nil
}

func (st *store) knownProperty(object, prop string) bool {
	sd := st.schema.Schemas[object]
	if sd.Type != "multiple" {
		_, ok := st.schema.Fields[sd.SchemaName].Properties[prop]
		return ok
	}
	for _, v := range sd.Variants {
		if _, ok := st.schema.Fields[v.SchemaName].Properties[prop]; ok {
			return true
		}
	}
	return false
}

func (st *store) query(object string, singleton bool, args map[string]any) (map[string]any, *methodError) {
	if singleton {
		return nil, malformed("unknownMethod", "%s is a singleton: use get with id %q", object, singletonID)
	}
	if e := checkArgs(args, "accountId", "filter", "sort", "position", "anchor", "anchorOffset", "limit", "calculateTotal"); e != nil {
		return nil, e
	}
	var filter map[string]any
	if f, ok := args["filter"]; ok && f != nil {
		if filter, ok = f.(map[string]any); !ok {
			return nil, malformed("invalidArguments", "filter must be an object")
		}
	}
	allowed := st.schema.filterFields(object)
	for _, k := range sortedKeys(filter) {
		if !allowed[k] {
			return nil, malformed("unsupportedFilter", "unsupported filter %q for %s", k, object)
		}
	}
	if sortArg, ok := args["sort"]; ok && sortArg != nil {
		arr, ok := sortArg.([]any)
		if !ok {
			return nil, malformed("invalidArguments", "sort must be an array")
		}
		for _, c := range arr {
			m, _ := c.(map[string]any)
			prop, _ := m["property"].(string)
			if prop == "" || !st.knownProperty(object, prop) {
				return nil, malformed("unsupportedSort", "unsupported sort %v", c)
			}
		}
	}
	// Newest first, as the real server returns by default.
	var ids []string
	order := st.order[object]
	for i := len(order) - 1; i >= 0; i-- {
		id := order[i]
		if st.matches(object, st.objects[object][id], filter) {
			ids = append(ids, id)
		}
	}
	total := len(ids)
	if pos, ok := args["position"]; ok && pos != nil {
		p, err := intArg(pos)
		if err != nil || p < 0 {
			return nil, malformed("invalidArguments", "position must be a non-negative integer")
		}
		ids = ids[min(p, len(ids)):]
	}
	if lim, ok := args["limit"]; ok && lim != nil {
		l, err := intArg(lim)
		if err != nil || l < 0 {
			return nil, malformed("invalidArguments", "limit must be a non-negative integer")
		}
		ids = ids[:min(l, len(ids))]
	}
	idList := make([]any, len(ids))
	for i, id := range ids {
		idList[i] = id
	}
	res := map[string]any{"accountId": adminAccountID, "queryState": strconv.Itoa(st.state),
		"canCalculateChanges": false, "position": 0, "ids": idList}
	if b, _ := args["calculateTotal"].(bool); b {
		res["total"] = total
	}
	return res, nil
}

func intArg(v any) (int, error) {
	switch x := v.(type) {
	case interface{ Int64() (int64, error) }:
		n, err := x.Int64()
		if err != nil || n > math.MaxInt32 {
			return 0, fmt.Errorf("not an integer")
		}
		return int(n), nil
	}
	return 0, fmt.Errorf("not an integer")
}

func (st *store) matches(object string, obj map[string]any, filter map[string]any) bool {
	for k, want := range filter {
		switch k {
		case "text":
			w := strings.ToLower(fmt.Sprint(want))
			found := false
			for _, v := range obj {
				if s, ok := v.(string); ok && strings.Contains(strings.ToLower(s), w) {
					found = true
				}
			}
			if !found {
				return false
			}
		case "name":
			got, _ := obj["name"].(string)
			if !strings.EqualFold(got, fmt.Sprint(want)) {
				return false
			}
		case "aliases":
			al, _ := obj["aliases"].(map[string]any)
			if _, ok := al[strings.ToLower(fmt.Sprint(want))]; !ok {
				return false
			}
		case "to":
			rcpts, _ := obj["recipients"].(map[string]any)
			found := false
			for r := range rcpts {
				if strings.Contains(strings.ToLower(r), strings.ToLower(fmt.Sprint(want))) {
					found = true
				}
			}
			if !found {
				return false
			}
		default:
			got := obj[k]
			if set, ok := got.(map[string]any); ok {
				if _, in := set[fmt.Sprint(want)]; !in {
					return false
				}
				continue
			}
			if fmt.Sprint(got) != fmt.Sprint(want) {
				return false
			}
		}
	}
	return true
}

// set runs create, update and destroy, in that order (RFC 8620 5.3).
func (st *store) set(object string, singleton bool, args map[string]any, fault bool) (map[string]any, *methodError) {
	if e := checkArgs(args, "accountId", "ifInState", "create", "update", "destroy"); e != nil {
		return nil, e
	}
	create, ok1 := args["create"].(map[string]any)
	update, ok2 := args["update"].(map[string]any)
	destroy, ok3 := stringList(args["destroy"])
	if (args["create"] != nil && !ok1) || (args["update"] != nil && !ok2) || (args["destroy"] != nil && !ok3) {
		return nil, malformed("invalidArguments", "create and update are objects, destroy an array of ids")
	}
	old := strconv.Itoa(st.state)
	created, notCreated := map[string]any{}, map[string]any{}
	updated, notUpdated := map[string]any{}, map[string]any{}
	destroyed, notDestroyed := []any{}, map[string]any{}
	injected := map[string]any{"type": "forbidden", "description": "injected fault"}

	for _, cid := range sortedKeys(create) {
		if fault {
			notCreated[cid] = injected
			continue
		}
		id, e := st.create(object, singleton, create[cid])
		if e != nil {
			notCreated[cid] = e
			continue
		}
		created[cid] = map[string]any{"id": id}
	}
	for _, id := range sortedKeys(update) {
		if _, ok := decodeID(id); !ok {
			// Stalwart drops ids it cannot parse: they show up nowhere.
			st.lastViolations = append(st.lastViolations, fmt.Sprintf("update of %q: not an id (silently dropped by the server)", id))
			continue
		}
		if fault {
			notUpdated[id] = injected
			continue
		}
		if e := st.update(object, singleton, id, update[id]); e != nil {
			notUpdated[id] = e
			continue
		}
		updated[id] = nil
	}
	for _, id := range destroy {
		if _, ok := decodeID(id); !ok {
			st.lastViolations = append(st.lastViolations, fmt.Sprintf("destroy of %q: not an id (silently dropped by the server)", id))
			continue
		}
		if fault {
			notDestroyed[id] = injected
			continue
		}
		if e := st.destroy(object, singleton, id); e != nil {
			notDestroyed[id] = e
			continue
		}
		destroyed = append(destroyed, id)
	}
	res := map[string]any{"accountId": adminAccountID, "oldState": old, "newState": strconv.Itoa(st.state)}
	// Empty maps are omitted, not sent as {} (jmap-proto/src/method/set.rs).
	for k, m := range map[string]map[string]any{"created": created, "notCreated": notCreated, "updated": updated,
		"notUpdated": notUpdated, "notDestroyed": notDestroyed} {
		if len(m) > 0 {
			res[k] = m
		}
	}
	if len(destroyed) > 0 {
		res["destroyed"] = destroyed
	}
	return res, nil
}

func setError(typ, desc string, props ...string) map[string]any {
	e := map[string]any{"type": typ}
	if desc != "" {
		e["description"] = desc
	}
	if len(props) > 0 {
		ps := make([]any, len(props))
		for i, p := range props {
			ps[i] = p
		}
		e["properties"] = ps
	}
	return e
}

func problemError(p *problem) map[string]any {
	e := setError(p.Type, p.Msg, strings.Split(p.Property, ",")...)
	for k, v := range p.Validation {
		e[k] = v
	}
	return e
}

func (st *store) create(object string, singleton bool, raw any) (string, map[string]any) {
	if singleton {
		st.lastViolations = append(st.lastViolations, "create on a singleton (always update id \"singleton\")")
		return "", setError("singleton", "Singleton objects cannot be created")
	}
	v, ok := raw.(map[string]any)
	if !ok {
		st.lastViolations = append(st.lastViolations, "create value is not an object")
		return "", setError("invalidProperties", "Object expected")
	}
	if p := st.schema.checkObject(object, v, "", true); p != nil {
		st.lastViolations = append(st.lastViolations, "create: "+p.Error())
		return "", problemError(p)
	}
	v = deepCopy(v).(map[string]any)
	if object == "x:Action" {
		st.lastActions = append(st.lastActions, v["@type"].(string))
		st.longSeq += 7919
		return encodeID(st.longSeq), nil
	}
	if e := st.semantics(object, "", v); e != nil {
		return "", e
	}
	v = st.withDefaults(object, v)
	if _, ok := st.schema.Fields[st.fieldsName(object, v)].Properties["createdAt"]; ok {
		v["createdAt"] = time.Now().UTC().Format(time.RFC3339)
	}
	if object == "x:Account" && v["@type"] == "User" {
		v["emailAddress"] = st.emailOf(v)
	}
	normaliseNetworks(st.schema, object, v)
	id := st.insert(object, v)
	if object == "x:Account" && v["@type"] == "User" {
		st.mail[id] = newMailStore()
	}
	return id, nil
}

func (st *store) fieldsName(object string, v map[string]any) string {
	sd := st.schema.Schemas[object]
	if sd.Type != "multiple" {
		return sd.SchemaName
	}
	for _, vr := range sd.Variants {
		if vr.Name == v["@type"] {
			return vr.SchemaName
		}
	}
	return ""
}

func (st *store) emailOf(acct map[string]any) string {
	name, _ := acct["name"].(string)
	did, _ := acct["domainId"].(string)
	dom, _ := st.objects["x:Domain"][did]["name"].(string)
	return name + "@" + dom
}

func (st *store) update(object string, singleton bool, id string, raw any) map[string]any {
	patch, ok := raw.(map[string]any)
	if !ok {
		st.lastViolations = append(st.lastViolations, "update value is not an object")
		return setError("invalidPatch", "Patch object expected")
	}
	var cur map[string]any
	if singleton {
		if id != singletonID {
			return setError("notFound", "")
		}
		cur, _ = st.singleton(object)
		var e map[string]any
		if cur, e = st.switchVariant(object, cur, patch); e != nil {
			return e
		}
	} else {
		obj, ok := st.objects[object][id]
		if !ok {
			return setError("notFound", "")
		}
		cur = obj
	}
	next := deepCopy(cur).(map[string]any)
	if p := st.schema.applyPatch(object, next, patch); p != nil {
		if p.Type != "validationFailed" {
			st.lastViolations = append(st.lastViolations, "update: "+p.Error())
		}
		return problemError(p)
	}
	if e := st.semantics(object, id, next); e != nil {
		return e
	}
	normaliseNetworks(st.schema, object, next)
	if singleton {
		st.singletons[object] = next
	} else {
		st.objects[object][id] = next
		if object == "x:Account" && next["@type"] == "User" {
			next["emailAddress"] = st.emailOf(next)
		}
	}
	st.state++
	return nil
}

func (st *store) destroy(object string, singleton bool, id string) map[string]any {
	if singleton {
		return setError("singleton", "Singleton objects cannot be destroyed")
	}
	if _, ok := st.objects[object][id]; !ok {
		return setError("notFound", "")
	}
	if links := st.linksTo(object, id); len(links) > 0 {
		e := setError("objectIsLinked", "Object is referenced by other objects")
		e["linkedObjects"] = links
		return e
	}
	st.remove(object, id)
	return nil
}

// linksTo lists objects whose objectId properties point at object/id.
func (st *store) linksTo(object, id string) []any {
	var out []any
	for _, other := range sortedKeys(st.objects) {
		for _, oid := range st.order[other] {
			if st.refersTo(other, st.objects[other][oid], object, id) {
				out = append(out, objectRef(other, oid))
			}
		}
	}
	for _, name := range sortedKeys(st.singletons) {
		if st.refersTo(name, st.singletons[name], object, id) {
			out = append(out, objectRef(name, singletonID))
		}
	}
	return out
}

func (st *store) refersTo(schemaName string, v map[string]any, object, id string) bool {
	found := false
	st.walkIDs(schemaName, v, func(target, ref string) {
		if st.schema.baseObject(target) == object && ref == id {
			found = true
		}
	})
	return found
}

// MaskedSecret is what Stalwart returns in place of every secret on get
// (MASKED_PASSWORD in its registry): a relay's authSecret, a password
// credential. Nothing read back through the API reveals a secret.
const MaskedSecret = "****"

// maskSecrets replaces, in v (a copy, about to be returned by get), every string
// whose schema format is secret or secretText with MaskedSecret, as Stalwart's
// IntoValue implementations do.
func (st *store) maskSecrets(schemaName string, v map[string]any) {
	variant, _ := v["@type"].(string)
	fields, _, ok := st.schema.fieldsFor(schemaName, variant)
	if !ok {
		return
	}
	for k, val := range v {
		pd, ok := fields.Properties[k]
		if !ok {
			continue
		}
		if masked, ok := st.maskValue(pd.Type, val); ok {
			v[k] = masked
		}
	}
}

// maskValue masks val of type t; ok is true when val itself is to be replaced.
func (st *store) maskValue(t typeDesc, val any) (any, bool) {
	switch t.Type {
	case "string":
		if _, isString := val.(string); isString && (t.Format == "secret" || t.Format == "secretText") {
			return MaskedSecret, true
		}
	case "map":
		if m, ok := val.(map[string]any); ok && t.ValueClass != nil {
			for k, item := range m {
				if masked, ok := st.maskValue(*t.ValueClass, item); ok {
					m[k] = masked
				}
			}
		}
	case "objectList":
		if m, ok := val.(map[string]any); ok {
			for _, item := range m {
				if obj, ok := item.(map[string]any); ok {
					st.maskSecrets(t.ObjectName, obj)
				}
			}
		}
	case "object":
		if obj, ok := val.(map[string]any); ok {
			st.maskSecrets(t.ObjectName, obj)
		}
	}
	return nil, false
}

// walkIDs calls fn for every objectId inside v (a value of schemaName).
func (st *store) walkIDs(schemaName string, v map[string]any, fn func(object, id string)) {
	variant, _ := v["@type"].(string)
	fields, _, ok := st.schema.fieldsFor(schemaName, variant)
	if !ok {
		return
	}
	for k, val := range v {
		if pd, ok := fields.Properties[k]; ok {
			st.walkValue(pd.Type, val, fn)
		}
	}
}

func (st *store) walkValue(t typeDesc, v any, fn func(object, id string)) {
	switch t.Type {
	case "objectId":
		if s, ok := v.(string); ok {
			fn(t.ObjectName, s)
		}
	case "set":
		if m, ok := v.(map[string]any); ok && t.Class != nil && t.Class.Type == "objectId" {
			for k := range m {
				fn(t.Class.ObjectName, k)
			}
		}
	case "map":
		if m, ok := v.(map[string]any); ok && t.ValueClass != nil {
			for _, item := range m {
				st.walkValue(*t.ValueClass, item, fn)
			}
		}
	case "objectList":
		if m, ok := v.(map[string]any); ok {
			for _, item := range m {
				if obj, ok := item.(map[string]any); ok {
					st.walkIDs(t.ObjectName, obj, fn)
				}
			}
		}
	case "object":
		if obj, ok := v.(map[string]any); ok {
			st.walkIDs(t.ObjectName, obj, fn)
		}
	}
}

// semantics applies the per-object rules beyond the schema; id is "" on create.
func (st *store) semantics(object, id string, v map[string]any) map[string]any {
	// Foreign keys must exist.
	var bad []string
	st.walkIDs(object, v, func(target, ref string) {
		base := st.schema.baseObject(target)
		if od, ok := st.schema.Objects[base]; ok && od.Type == "object" {
			if _, ok := st.objects[base][ref]; !ok {
				bad = append(bad, fmt.Sprintf("%s %s", strings.TrimPrefix(base, "x:"), ref))
			}
		}
	})
	if len(bad) > 0 {
		return setError("invalidForeignKey", "Referenced objects do not exist: "+strings.Join(bad, ", "))
	}
	switch object {
	case "x:Domain":
		name, _ := v["name"].(string)
		if !validDomainName(name) {
			return setError("invalidPatch", "Invalid domain name", "name")
		}
		v["name"] = strings.ToLower(name)
		for _, oid := range st.order[object] {
			if oid == id {
				continue
			}
			other := st.objects[object][oid]
			al, _ := other["aliases"].(map[string]any)
			if strings.EqualFold(fmt.Sprint(other["name"]), name) || al[strings.ToLower(name)] != nil {
				e := setError("primaryKeyViolation", "A domain with this name already exists", "name")
				e["objectId"] = objectRef(object, oid)
				return e
			}
		}
	case "x:MtaRoute", "x:NetworkListener":
		name, _ := v["name"].(string)
		for _, oid := range st.order[object] {
			if oid != id && st.objects[object][oid]["name"] == name {
				e := setError("primaryKeyViolation", "An object with this name already exists", "name")
				e["objectId"] = objectRef(object, oid)
				return e
			}
		}
		if id != "" && st.objects[object][id]["name"] != name {
			return setError("invalidProperties", "Property is immutable", "name")
		}
	case "x:Account":
		name, _ := v["name"].(string)
		did, _ := v["domainId"].(string)
		for _, oid := range st.order[object] {
			other := st.objects[object][oid]
			if oid != id && strings.EqualFold(fmt.Sprint(other["name"]), name) && other["domainId"] == did {
				e := setError("primaryKeyViolation", "An account with this name already exists", "name")
				e["objectId"] = objectRef(object, oid)
				return e
			}
		}
		creds, _ := v["credentials"].(map[string]any)
		for _, k := range sortedKeys(creds) {
			c, _ := creds[k].(map[string]any)
			if c["@type"] != "Password" {
				continue
			}
			secret, _ := c["secret"].(string)
			if !strings.HasPrefix(secret, "$") && !strings.HasPrefix(secret, "{") && !strongPassword(secret) {
				return setError("invalidProperties", "Password is too weak: add more words or characters", "secret")
			}
		}
	}
	// Expressions must compile.
	fields := st.schema.Fields[st.fieldsName(object, v)]
	for _, k := range sortedKeys(v) {
		pd, ok := fields.Properties[k]
		if !ok || pd.Type.Type != "object" || pd.Type.ObjectName != "x:Expression" {
			continue
		}
		if msg := checkExpression(v[k]); msg != "" {
			return map[string]any{"type": "validationFailed", "properties": []any{k},
				"validationErrors": []any{map[string]any{"type": "Invalid", "property": k, "value": msg}}}
		}
	}
	return nil
}

func checkExpression(v any) string {
	e, _ := v.(map[string]any)
	var srcs []string
	match, _ := e["match"].(map[string]any)
	for _, k := range sortedKeys(match) {
		m, _ := match[k].(map[string]any)
		for _, part := range []string{"if", "then"} {
			if s, ok := m[part].(string); ok {
				srcs = append(srcs, s)
			}
		}
	}
	if s, ok := e["else"].(string); ok {
		srcs = append(srcs, s)
	}
	for _, src := range srcs {
		if err := compileExpr(src); err != nil {
			return fmt.Sprintf("Failed to compile expression %q: %v", src, err)
		}
	}
	return ""
}

// validDomainName approximates Stalwart's check: a public-suffix TLD or one of a
// few private ones; reserved documentation TLDs such as .example are refused.
func validDomainName(name string) bool {
	if name == "" || len(name) > 253 || !strings.Contains(name, ".") {
		return false
	}
	labels := strings.Split(strings.ToLower(name), ".")
	for _, l := range labels {
		if l == "" || len(l) > 63 || strings.HasPrefix(l, "-") || strings.HasSuffix(l, "-") {
			return false
		}
		for _, c := range l {
			if !(c == '-' || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9')) {
				return false
			}
		}
	}
	tld := labels[len(labels)-1]
	switch tld {
	case "example", "invalid", "onion", "alt":
		return false
	}
	for _, c := range tld {
		if c < 'a' || c > 'z' {
			return false
		}
	}
	return len(tld) >= 2
}

// strongPassword approximates zxcvbn's score "three": long, varied, no common words.
func strongPassword(pw string) bool {
	if len(pw) < 12 {
		return false
	}
	low := strings.ToLower(pw)
	for _, w := range []string{"password", "123456", "qwerty", "letmein", "admin", "welcome", "secret", "abc123"} {
		if strings.Contains(low, w) {
			return false
		}
	}
	var lower, upper, digit, other bool
	distinct := map[rune]bool{}
	for _, c := range pw {
		distinct[c] = true
		switch {
		case c >= 'a' && c <= 'z':
			lower = true
		case c >= 'A' && c <= 'Z':
			upper = true
		case c >= '0' && c <= '9':
			digit = true
		default:
			other = true
		}
	}
	size := 0
	for _, c := range []struct {
		ok bool
		n  int
	}{{lower, 26}, {upper, 26}, {digit, 10}, {other, 33}} {
		if c.ok {
			size += c.n
		}
	}
	bits := float64(len(pw)) * math.Log2(float64(size))
	return bits >= 60 && len(distinct) >= 8
}

// normaliseNetworks stores ipNetwork sets the way Stalwart reads them back.
func normaliseNetworks(schema *Schema, object string, v map[string]any) {
	variant, _ := v["@type"].(string)
	fields, _, ok := schema.fieldsFor(object, variant)
	if !ok {
		return
	}
	for k, pd := range fields.Properties {
		if pd.Type.Type != "set" || pd.Type.Class == nil || pd.Type.Class.Format != "ipNetwork" {
			continue
		}
		set, ok := v[k].(map[string]any)
		if !ok {
			continue
		}
		out := map[string]any{}
		for n := range set {
			out[normalNetwork(n)] = true
		}
		v[k] = out
	}
}

// login checks an account's e-mail address and password.
func (st *store) login(user, pass string) (string, bool) {
	for _, id := range st.order["x:Account"] {
		a := st.objects["x:Account"][id]
		if !strings.EqualFold(fmt.Sprint(a["emailAddress"]), user) {
			continue
		}
		creds, _ := a["credentials"].(map[string]any)
		for _, c := range creds {
			cm, _ := c.(map[string]any)
			if cm["@type"] == "Password" && cm["secret"] == pass {
				return id, true
			}
		}
	}
	return "", false
}
