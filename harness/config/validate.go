package config

import (
	"fmt"
	"net"
	"net/mail"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// validator collects errors, each tied to the line of the field it is about.
type validator struct {
	file      string
	lines     map[string]int // dotted path ("plan.local.0.address") -> line
	lookupEnv func(string) (string, bool)
	errs      Errors
}

// index records the line of every mapping key and sequence item below n.
func (v *validator) index(path string, n *yaml.Node) {
	switch n.Kind {
	case yaml.DocumentNode:
		for _, c := range n.Content {
			v.index(path, c)
		}
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			p := join(path, n.Content[i].Value)
			v.lines[p] = n.Content[i].Line
			v.index(p, n.Content[i+1])
		}
	case yaml.SequenceNode:
		for i, c := range n.Content {
			p := join(path, strconv.Itoa(i))
			v.lines[p] = c.Line
			v.index(p, c)
		}
	}
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// line finds the line of field, or of its nearest parent that is in the file.
func (v *validator) line(field string) int {
	for p := field; p != ""; {
		if l, ok := v.lines[p]; ok {
			return l
		}
		i := strings.LastIndexByte(p, '.')
		if i < 0 {
			break
		}
		p = p[:i]
	}
	return 0
}

func (v *validator) fail(field, msg string) {
	v.errs = append(v.errs, &Error{File: v.file, Line: v.line(field), Field: field, Msg: msg})
}

func (v *validator) required(field, val string) bool {
	if val == "" {
		v.fail(field, "required")
		return false
	}
	return true
}

func (v *validator) addrPort(field, val string, required bool) {
	if val == "" {
		if required {
			v.fail(field, "required (host:port)")
		}
		return
	}
	host, port, err := net.SplitHostPort(val)
	if err != nil {
		v.fail(field, fmt.Sprintf("%q is not host:port", val))
		return
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		v.fail(field, fmt.Sprintf("%q has a bad port", val))
		return
	}
	if host == "" {
		v.fail(field, fmt.Sprintf("%q has no host", val))
	}
}

func (v *validator) ip(field, val string, required bool) {
	if val == "" {
		if required {
			v.fail(field, "required (an IP address)")
		}
		return
	}
	if _, err := netip.ParseAddr(val); err != nil {
		v.fail(field, fmt.Sprintf("%q is not an IP address", val))
	}
}

func (v *validator) email(field, val string, required bool) {
	if val == "" {
		if required {
			v.fail(field, "required (an e-mail address)")
		}
		return
	}
	a, err := mail.ParseAddress(val)
	if err != nil || a.Address != val || a.Name != "" {
		v.fail(field, fmt.Sprintf("%q is not a bare e-mail address", val))
	}
}

func (v *validator) domain(field, val string) {
	if val == "" || strings.ContainsAny(val, "@ /:") || !strings.Contains(val, ".") {
		v.fail(field, fmt.Sprintf("%q is not a domain name", val))
	}
}

// inDomains checks that addr's domain is (want=true) or is not (want=false) migrated.
func (v *validator) inDomains(field, addr string, domains []string, want bool) {
	i := strings.LastIndexByte(addr, '@')
	if i < 0 {
		return
	}
	d := strings.ToLower(addr[i+1:])
	in := slices.ContainsFunc(domains, func(x string) bool { return strings.EqualFold(x, d) })
	switch {
	case want && !in:
		v.fail(field, fmt.Sprintf("%q is not in a migrated domain (plan.domains)", addr))
	case !want && in:
		v.fail(field, fmt.Sprintf("%q is in a migrated domain; external addresses must be in other domains", addr))
	}
}

func (v *validator) oneOf(field, val string, allowed ...string) {
	if !slices.Contains(allowed, val) {
		v.fail(field, fmt.Sprintf("%q is not one of %s", val, strings.Join(allowed, ", ")))
	}
}

// secret resolves s from the environment when it names a variable.
func (v *validator) secret(field string, s *Secret, required bool) {
	if s.Env != "" {
		val, ok := v.lookupEnv(s.Env)
		if !ok || val == "" {
			v.fail(field, fmt.Sprintf("environment variable %s is not set", s.Env))
			return
		}
		s.value = val
	}
	if required && s.value == "" {
		v.fail(field, "required (inline, or {env: VARIABLE})")
	}
}
