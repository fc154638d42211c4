package scenarios

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/splitcheck/splitcheck/internal/yamlpos"
)

// FileError is one problem in a scenario file, with where it is.
type FileError struct {
	File  string
	Line  int    // 0 when unknown
	Field string // e.g. "probes.1.recipients.0.expect"; "" for the whole file
	Msg   string
}

func (e *FileError) Error() string { return yamlpos.Format(e.File, e.Line, e.Field, e.Msg) }

// Unwrap lets errors.Is find ErrInvalid.
func (e *FileError) Unwrap() error { return ErrInvalid }

// FileErrors is every problem found in one scenario file.
type FileErrors []*FileError

func (es FileErrors) Error() string {
	msgs := make([]string, len(es))
	for i, e := range es {
		msgs[i] = e.Error()
	}
	return strings.Join(msgs, "\n")
}

// As lets errors.As find the first *FileError.
func (es FileErrors) As(target any) bool {
	if p, ok := target.(**FileError); ok && len(es) > 0 {
		*p = es[0]
		return true
	}
	return false
}

// Is lets errors.Is match ErrInvalid.
func (es FileErrors) Is(target error) bool { return target == ErrInvalid }

// ParseFile reads a scenario file: YAML with one key, probes, a list of probes:
//
//	probes:
//	  - name: late-account          # unique; names the checks
//	    entry: proxy                # proxy | submission | plain | headerless
//	    received: true              # optional: also check the Received header
//	    skip: "reason"              # optional: report the checks as skipped
//	    recipients:                 # none for headerless, at least one otherwise
//	      - address: dave@example.org
//	        expect: local           # local | source | mx | reject
//
// Parsing is strict: unknown or repeated keys, wrong types, bad values and probes that
// Validate would refuse are errors naming name, the line and the field (FileErrors,
// which match ErrInvalid). YAML anchors and aliases are refused.
func ParseFile(name string, data []byte) ([]Probe, error) {
	p := &fileParser{file: name}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var root yaml.Node
	if err := dec.Decode(&root); err != nil && !errors.Is(err, io.EOF) {
		return nil, FileErrors{p.yamlError(err)}
	}
	if root.Kind == 0 || len(root.Content) == 0 {
		return nil, FileErrors{{File: name, Msg: "empty file: want a list of probes under \"probes\""}}
	}
	var more yaml.Node
	if err := dec.Decode(&more); !errors.Is(err, io.EOF) {
		if err != nil {
			return nil, FileErrors{p.yamlError(err)}
		}
		return nil, FileErrors{{File: name, Line: more.Line, Msg: "more than one YAML document"}}
	}
	probes := p.document(root.Content[0])
	if len(p.errs) > 0 {
		return nil, p.errs
	}
	return probes, nil
}

type fileParser struct {
	file string
	errs FileErrors
}

func (p *fileParser) fail(n *yaml.Node, field, format string, args ...any) {
	line := 0
	if n != nil {
		line = n.Line
	}
	p.errs = append(p.errs, &FileError{File: p.file, Line: line, Field: field, Msg: fmt.Sprintf(format, args...)})
}

// yamlError turns yaml's "yaml: line 3: ..." into a FileError.
func (p *fileParser) yamlError(err error) *FileError {
	line, msg := yamlpos.Split(err.Error())
	return &FileError{File: p.file, Line: line, Msg: msg}
}

// mapping checks that n is a mapping with only known, unrepeated keys, and returns
// its values by key.
func (p *fileParser) mapping(n *yaml.Node, field string, known ...string) (map[string]*yaml.Node, bool) {
	if !p.plain(n, field) {
		return nil, false
	}
	if n.Kind != yaml.MappingNode {
		p.fail(n, field, "want a mapping with keys %s, got %s", strings.Join(known, ", "), kindName(n))
		return nil, false
	}
	out := map[string]*yaml.Node{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if k.Kind != yaml.ScalarNode {
			p.fail(k, field, "keys must be plain words, got %s", kindName(k))
			continue
		}
		kf := join(field, k.Value)
		switch {
		case !slices.Contains(known, k.Value):
			p.fail(k, kf, "unknown key (known: %s)", strings.Join(known, ", "))
		case out[k.Value] != nil:
			p.fail(k, kf, "key repeated")
		default:
			out[k.Value] = v
		}
	}
	return out, true
}

// plain refuses aliases and anchors, which a scenario file has no use for.
func (p *fileParser) plain(n *yaml.Node, field string) bool {
	if n.Kind == yaml.AliasNode || n.Anchor != "" {
		p.fail(n, field, "YAML anchors and aliases are not supported")
		return false
	}
	return true
}

func (p *fileParser) str(n *yaml.Node, field string) (string, bool) {
	if !p.plain(n, field) {
		return "", false
	}
	if n.Kind != yaml.ScalarNode || (n.Tag != "!!str" && n.Tag != "!!int" && n.Tag != "!!float") {
		p.fail(n, field, "want a string, got %s", kindName(n))
		return "", false
	}
	return n.Value, true
}

func (p *fileParser) document(n *yaml.Node) []Probe {
	top, ok := p.mapping(n, "", "probes")
	if !ok {
		return nil
	}
	list := top["probes"]
	if list == nil {
		p.fail(n, "probes", "required: a list of probes")
		return nil
	}
	if !p.plain(list, "probes") {
		return nil
	}
	if list.Kind != yaml.SequenceNode {
		p.fail(list, "probes", "want a list of probes, got %s", kindName(list))
		return nil
	}
	if len(list.Content) == 0 {
		p.fail(list, "probes", "empty list: a scenario file needs at least one probe")
		return nil
	}
	var probes []Probe
	names := map[string]int{}
	for i, pn := range list.Content {
		field := fmt.Sprintf("probes.%d", i)
		pr, ok := p.probe(pn, field)
		if !ok {
			continue
		}
		if first, dup := names[pr.Name]; dup {
			p.fail(pn, field+".name", "probe name %q already used by probes.%d", pr.Name, first)
			continue
		}
		names[pr.Name] = i
		probes = append(probes, pr)
	}
	if len(p.errs) == 0 {
		// Whatever the per-field checks missed (check-name collisions).
		if err := Validate(probes); err != nil {
			p.fail(list, "probes", "%s", strings.TrimPrefix(err.Error(), ErrInvalid.Error()+": "))
		}
	}
	return probes
}

func (p *fileParser) probe(n *yaml.Node, field string) (Probe, bool) {
	m, ok := p.mapping(n, field, "name", "entry", "recipients", "received", "skip")
	if !ok {
		return Probe{}, false
	}
	nerr := len(p.errs)
	var pr Probe
	if v := m["name"]; v == nil {
		p.fail(n, field+".name", "required")
	} else if s, ok := p.str(v, field+".name"); ok {
		switch {
		case strings.TrimSpace(s) == "":
			p.fail(v, field+".name", "must not be empty")
		case strings.ContainsAny(s, "\r\n\t"):
			p.fail(v, field+".name", "must be one line")
		default:
			pr.Name = s
		}
	}
	if v := m["entry"]; v == nil {
		p.fail(n, field+".entry", "required (proxy, submission, plain or headerless)")
	} else if s, ok := p.str(v, field+".entry"); ok {
		switch e := Entry(s); e {
		case EntryProxy, EntrySubmission, EntryPlain, EntryHeaderless:
			pr.Entry = e
		default:
			p.fail(v, field+".entry", "%q is not one of proxy, submission, plain, headerless", s)
		}
	}
	if v := m["received"]; v != nil {
		if v.Kind != yaml.ScalarNode || v.Tag != "!!bool" {
			p.fail(v, field+".received", "want true or false, got %s", kindName(v))
		} else {
			pr.Received = v.Value == "true" || v.Value == "True" || v.Value == "TRUE"
		}
	}
	if v := m["skip"]; v != nil {
		if s, ok := p.str(v, field+".skip"); ok {
			if strings.TrimSpace(s) == "" {
				p.fail(v, field+".skip", "give the reason for skipping, or leave the key out")
			}
			pr.Skip = s
		}
	}
	if v := m["recipients"]; v != nil {
		pr.Recipients = p.recipients(v, field+".recipients")
	}
	switch {
	case pr.Entry == EntryHeaderless && m["recipients"] != nil:
		p.fail(m["recipients"], field+".recipients", "a headerless probe carries no recipients")
	case pr.Entry == EntryHeaderless && pr.Received:
		p.fail(m["received"], field+".received", "a headerless probe delivers nothing whose Received header could be read")
	case pr.Entry != EntryHeaderless && pr.Entry != "" && m["recipients"] == nil:
		p.fail(n, field+".recipients", "required: at least one recipient")
	}
	return pr, len(p.errs) == nerr
}

func (p *fileParser) recipients(n *yaml.Node, field string) []Recipient {
	if !p.plain(n, field) {
		return nil
	}
	if n.Kind != yaml.SequenceNode {
		p.fail(n, field, "want a list of {address, expect}, got %s", kindName(n))
		return nil
	}
	if len(n.Content) == 0 {
		p.fail(n, field, "empty list: at least one recipient")
		return nil
	}
	var out []Recipient
	seen := map[string]int{}
	for i, rn := range n.Content {
		f := fmt.Sprintf("%s.%d", field, i)
		m, ok := p.mapping(rn, f, "address", "expect")
		if !ok {
			continue
		}
		var r Recipient
		if v := m["address"]; v == nil {
			p.fail(rn, f+".address", "required")
		} else if s, ok := p.str(v, f+".address"); ok {
			if !IsAddress(s) {
				p.fail(v, f+".address", "%q is not a bare e-mail address", s)
			} else if prev, dup := seen[Canonical(s)]; dup {
				p.fail(v, f+".address", "%q is the same mailbox as %s.%d", s, field, prev)
			} else {
				seen[Canonical(s)] = i
				r.Address = s
			}
		}
		if v := m["expect"]; v == nil {
			p.fail(rn, f+".expect", "required (local, source, mx or reject)")
		} else if s, ok := p.str(v, f+".expect"); ok {
			switch rt := Route(s); rt {
			case RouteLocal, RouteSource, RouteMX, RouteReject:
				r.Expect = rt
			default:
				p.fail(v, f+".expect", "%q is not one of local, source, mx, reject", s)
			}
		}
		out = append(out, r)
	}
	return out
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.ScalarNode:
		switch n.Tag {
		case "!!null":
			return "nothing"
		case "!!bool":
			return "a boolean"
		case "!!int", "!!float":
			return "a number"
		default:
			return "a string"
		}
	case yaml.SequenceNode:
		return "a list"
	case yaml.MappingNode:
		return "a mapping"
	case yaml.AliasNode:
		return "an alias"
	default:
		return "a document"
	}
}

func join(field, key string) string {
	if field == "" {
		return key
	}
	return field + "." + key
}
