package stalwarttest

import (
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// methodError is a JMAP method-level error.
type methodError struct {
	Type        string
	Description string
	// malformed marks requests the real server refuses as malformed (recorded as violations).
	malformed bool
}

func (e *methodError) Error() string { return e.Type + ": " + e.Description }

func malformed(typ, format string, args ...any) *methodError {
	return &methodError{Type: typ, Description: fmt.Sprintf(format, args...), malformed: true}
}

func refused(typ, format string, args ...any) *methodError {
	return &methodError{Type: typ, Description: fmt.Sprintf(format, args...)}
}

type callResult struct {
	name string
	args map[string]any
}

// process runs the method calls of one request; s.mu is held.
func (s *Server) process(n int, p principal, using []string, calls []Call, fault *Fault) []any {
	var responses []any
	results := map[string]callResult{}
	for _, c := range calls {
		var res map[string]any
		var merr *methodError
		args, err := decodeJSON(c.Args)
		argMap, isMap := args.(map[string]any)
		switch {
		case err != nil || !isMap:
			merr = malformed("invalidArguments", "arguments are not a JSON object")
		case fault != nil && fault.Kind == FaultMethodError && (fault.Method == "" || fault.Method == c.Name):
			merr = refused("serverFail", "injected fault")
		default:
			merr = resolveBackRefs(argMap, results)
			if merr == nil {
				setFault := fault != nil && fault.Kind == FaultSetError && (fault.Method == "" || fault.Method == c.Name)
				res, merr = s.dispatch(p, using, c.Name, argMap, setFault)
			}
		}
		if merr != nil {
			if merr.malformed {
				s.violate("request %d: %s: %s: %s", n, c.Name, merr.Type, merr.Description)
			}
			e := map[string]any{"type": merr.Type}
			if merr.Description != "" {
				e["description"] = merr.Description
			}
			responses = append(responses, []any{"error", e, c.CallID})
			results[c.CallID] = callResult{name: "error", args: e}
			continue
		}
		responses = append(responses, []any{c.Name, res, c.CallID})
		results[c.CallID] = callResult{name: c.Name, args: res}
	}
	return responses
}

// resolveBackRefs replaces "#name": {resultOf, name, path} arguments with their values.
func resolveBackRefs(args map[string]any, results map[string]callResult) *methodError {
	for _, k := range sortedKeys(args) {
		if !strings.HasPrefix(k, "#") {
			continue
		}
		ref, ok := args[k].(map[string]any)
		resultOf, _ := ref["resultOf"].(string)
		name, _ := ref["name"].(string)
		path, _ := ref["path"].(string)
		if !ok || resultOf == "" || name == "" || path == "" || len(ref) != 3 {
			return malformed("invalidArguments", "back-reference %s needs resultOf, name and path", k)
		}
		plain := strings.TrimPrefix(k, "#")
		if _, dup := args[plain]; dup {
			return malformed("invalidArguments", "both %s and %s given", plain, k)
		}
		res, found := results[resultOf]
		if !found || res.name != name {
			return malformed("invalidResultReference", "no result %q of %s", resultOf, name)
		}
		v, err := evalPointer(res.args, path)
		if err != nil {
			return malformed("invalidResultReference", "%s: %v", path, err)
		}
		delete(args, k)
		args[plain] = v
	}
	return nil
}

// evalPointer evaluates a JMAP result-reference path (RFC 6901 plus "*").
func evalPointer(v any, path string) (any, error) {
	if path == "" {
		return v, nil
	}
	if !strings.HasPrefix(path, "/") {
		return nil, fmt.Errorf("path must start with /")
	}
	segs := strings.Split(path[1:], "/")
	return evalSegs(v, segs)
}

func evalSegs(v any, segs []string) (any, error) {
	if len(segs) == 0 {
		return v, nil
	}
	seg := unescapePointer(segs[0])
	switch x := v.(type) {
	case map[string]any:
		item, ok := x[seg]
		if !ok {
			return nil, fmt.Errorf("no property %q", seg)
		}
		return evalSegs(item, segs[1:])
	case []any:
		if seg == "*" {
			var out []any
			for _, item := range x {
				r, err := evalSegs(item, segs[1:])
				if err != nil {
					return nil, err
				}
				if arr, ok := r.([]any); ok {
					out = append(out, arr...)
				} else {
					out = append(out, r)
				}
			}
			if out == nil {
				out = []any{}
			}
			return out, nil
		}
		i, err := strconv.Atoi(seg)
		if err != nil || i < 0 || i >= len(x) {
			return nil, fmt.Errorf("bad index %q", seg)
		}
		return evalSegs(x[i], segs[1:])
	}
	return nil, fmt.Errorf("cannot descend into a scalar at %q", seg)
}

func unescapePointer(s string) string {
	return strings.ReplaceAll(strings.ReplaceAll(s, "~1", "/"), "~0", "~")
}

func (s *Server) dispatch(p principal, using []string, name string, args map[string]any, setFault bool) (map[string]any, *methodError) {
	i := strings.LastIndexByte(name, '/')
	if i <= 0 {
		return nil, malformed("unknownMethod", "%q is not Object/method", name)
	}
	object, method := name[:i], name[i+1:]
	if !strings.HasPrefix(object, "x:") {
		if name == "Core/echo" {
			return args, nil
		}
		return s.dispatchMail(p, using, object, method, args)
	}
	od, ok := s.Schema.Objects[object]
	if !ok || (od.Type != "object" && od.Type != "singleton") {
		return nil, malformed("unknownMethod", "unknown object %q", object)
	}
	if !slices.Contains(using, CapCore) {
		s.violate("%s: using lacks %s", name, CapCore)
	}
	if !slices.Contains(using, CapStalwart) {
		s.violate("%s: using lacks %s", name, CapStalwart)
	}
	if !p.admin {
		return nil, refused("forbidden", "You do not have enough permissions to access this resource.")
	}
	if acct, ok := args["accountId"]; ok {
		if id, _ := acct.(string); id != adminAccountID {
			return nil, refused("accountNotFound", "account %v not found", acct)
		}
	}
	switch method {
	case "get":
		return s.st.get(object, od.Type == "singleton", args)
	case "query":
		return s.st.query(object, od.Type == "singleton", args)
	case "set":
		res, merr := s.st.set(object, od.Type == "singleton", args, setFault)
		if merr == nil {
			s.actions = append(s.actions, s.st.lastActions...)
			s.st.lastActions = nil
			for _, v := range s.st.lastViolations {
				s.violate("%s: %s", name, v)
			}
			s.st.lastViolations = nil
		}
		return res, merr
	}
	return nil, malformed("unknownMethod", "unknown method %q", name)
}

// checkArgs refuses argument names a method does not take.
func checkArgs(args map[string]any, allowed ...string) *methodError {
	for _, k := range sortedKeys(args) {
		if !slices.Contains(allowed, k) {
			return malformed("invalidArguments", "unknown argument %q", k)
		}
	}
	return nil
}

// stringList reads an array of strings argument; null gives nil, true.
func stringList(v any) ([]string, bool) {
	if v == nil {
		return nil, true
	}
	arr, ok := v.([]any)
	if !ok {
		return nil, false
	}
	out := make([]string, 0, len(arr))
	for _, item := range arr {
		s, ok := item.(string)
		if !ok {
			return nil, false
		}
		out = append(out, s)
	}
	return out, true
}

func marshalCanonical(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}
