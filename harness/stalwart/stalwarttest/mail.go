package stalwarttest

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"mime"
	"net/textproto"
	"slices"
	"strings"
	"time"
)

// mailStore is one account's mailboxes and messages.
type mailStore struct {
	mailboxes []mailboxRec
	emails    []*emailRec
	nextID    uint64
}

type mailboxRec struct{ id, name, role string }

type emailRec struct {
	id         string
	mailboxIDs map[string]bool
	receivedAt time.Time
	headers    [][2]string // name, raw value (unfolded), in message order
}

func newMailStore() *mailStore {
	return &mailStore{
		mailboxes: []mailboxRec{{"a", "Inbox", "inbox"}, {"b", "Deleted Items", "trash"}, {"c", "Junk Mail", "junk"},
			{"d", "Drafts", "drafts"}, {"e", "Sent Items", "sent"}},
		nextID: 1,
	}
}

func (m *mailStore) mailboxByRole(role string) (mailboxRec, bool) {
	for _, b := range m.mailboxes {
		if b.role == role {
			return b, true
		}
	}
	return mailboxRec{}, false
}

// Deliver stores a raw RFC 5322 message in the mailbox with the given role
// ("inbox" or "junk") of the account whose e-mail address is address. The
// account must exist (created through the API or Seed). It returns the Email id.
func (s *Server) Deliver(address, role string, raw []byte) (string, error) {
	headers, err := parseHeaders(raw)
	if err != nil {
		return "", fmt.Errorf("deliver: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, id := range s.st.order["x:Account"] {
		a := s.st.objects["x:Account"][id]
		if !strings.EqualFold(fmt.Sprint(a["emailAddress"]), address) {
			continue
		}
		ms := s.st.mail[id]
		if ms == nil {
			return "", fmt.Errorf("deliver: %s has no mailboxes", address)
		}
		mb, ok := ms.mailboxByRole(role)
		if !ok {
			return "", fmt.Errorf("deliver: no mailbox with role %q", role)
		}
		eid := encodeID(ms.nextID)
		ms.nextID++
		ms.emails = append(ms.emails, &emailRec{id: eid, mailboxIDs: map[string]bool{mb.id: true},
			receivedAt: time.Now().UTC().Truncate(time.Second), headers: headers})
		return eid, nil
	}
	return "", fmt.Errorf("deliver: no account %s", address)
}

func parseHeaders(raw []byte) ([][2]string, error) {
	r := textproto.NewReader(bufio.NewReader(bytes.NewReader(raw)))
	var out [][2]string
	for {
		line, err := r.ReadContinuedLine()
		if err != nil && err != io.EOF {
			return nil, err
		}
		if line == "" {
			break
		}
		name, value, ok := strings.Cut(line, ":")
		if !ok {
			return nil, fmt.Errorf("malformed header line %q", line)
		}
		out = append(out, [2]string{name, value})
		if err == io.EOF {
			break
		}
	}
	return out, nil
}

func (e *emailRec) header(name string) []string {
	var out []string
	for _, h := range e.headers {
		if strings.EqualFold(h[0], name) {
			out = append(out, h[1])
		}
	}
	return out
}

func asText(raw string) string {
	dec := new(mime.WordDecoder)
	s, err := dec.DecodeHeader(strings.TrimSpace(raw))
	if err != nil {
		return strings.TrimSpace(raw)
	}
	return s
}

func messageIDs(raw string) []any {
	var out []any
	for _, f := range strings.Fields(raw) {
		f = strings.TrimSuffix(strings.TrimPrefix(f, "<"), ">")
		if f != "" {
			out = append(out, f)
		}
	}
	return out
}

func (s *Server) dispatchMail(p principal, using []string, object, method string, args map[string]any) (map[string]any, *methodError) {
	name := object + "/" + method
	known := map[string]bool{"Mailbox/get": true, "Mailbox/query": true, "Email/get": true, "Email/query": true}
	if !known[name] {
		return nil, malformed("unknownMethod", "unknown method %q", name)
	}
	if !slices.Contains(using, CapMail) {
		return nil, malformed("unknownMethod", "%s needs %s in using", name, CapMail)
	}
	acct, _ := args["accountId"].(string)
	if acct == "" {
		return nil, malformed("invalidArguments", "accountId is required for mail methods")
	}
	ms := s.st.mail[acct]
	if ms == nil || acct != p.accountID {
		return nil, refused("accountNotFound", "account %s not found", acct)
	}
	switch name {
	case "Mailbox/get":
		if e := checkArgs(args, "accountId", "ids", "properties"); e != nil {
			return nil, e
		}
		ids, ok := stringList(args["ids"])
		props, ok2 := stringList(args["properties"])
		if !ok || !ok2 {
			return nil, malformed("invalidArguments", "ids and properties are arrays")
		}
		for _, pr := range props {
			if !slices.Contains([]string{"id", "name", "role", "parentId", "sortOrder", "totalEmails", "unreadEmails"}, pr) {
				return nil, malformed("invalidArguments", "unknown Mailbox property %q", pr)
			}
		}
		list, notFound := []any{}, []any{}
		for _, b := range ms.mailboxes {
			if args["ids"] != nil && !slices.Contains(ids, b.id) {
				continue
			}
			n := 0
			for _, e := range ms.emails {
				if e.mailboxIDs[b.id] {
					n++
				}
			}
			full := map[string]any{"id": b.id, "name": b.name, "role": b.role, "parentId": nil, "sortOrder": 0, "totalEmails": n, "unreadEmails": n}
			list = append(list, pick(full, props))
		}
		for _, id := range ids {
			if !slices.ContainsFunc(ms.mailboxes, func(b mailboxRec) bool { return b.id == id }) {
				notFound = append(notFound, id)
			}
		}
		return map[string]any{"accountId": acct, "state": "m0", "list": list, "notFound": notFound}, nil
	case "Mailbox/query":
		if e := checkArgs(args, "accountId", "filter", "sort", "position", "limit", "calculateTotal"); e != nil {
			return nil, e
		}
		filter, _ := args["filter"].(map[string]any)
		for k := range filter {
			if k != "role" && k != "name" {
				return nil, malformed("unsupportedFilter", "unsupported Mailbox filter %q", k)
			}
		}
		ids := []any{}
		for _, b := range ms.mailboxes {
			if r, ok := filter["role"]; ok && r != b.role {
				continue
			}
			if n, ok := filter["name"]; ok && n != b.name {
				continue
			}
			ids = append(ids, b.id)
		}
		return map[string]any{"accountId": acct, "queryState": "m0", "canCalculateChanges": false, "position": 0, "ids": ids}, nil
	case "Email/query":
		if e := checkArgs(args, "accountId", "filter", "sort", "position", "anchor", "anchorOffset", "limit", "calculateTotal", "collapseThreads"); e != nil {
			return nil, e
		}
		filter, _ := args["filter"].(map[string]any)
		for k := range filter {
			if k != "inMailbox" && k != "inMailboxOtherThan" {
				return nil, malformed("unsupportedFilter", "unsupported Email filter %q in this fake (match headers yourself)", k)
			}
		}
		asc := false
		if sortArg, ok := args["sort"].([]any); ok {
			for _, c := range sortArg {
				m, _ := c.(map[string]any)
				if m["property"] != "receivedAt" {
					return nil, malformed("unsupportedSort", "unsupported sort %v", c)
				}
				asc, _ = m["isAscending"].(bool)
			}
		}
		var matched []*emailRec
		for _, e := range ms.emails {
			if mb, ok := filter["inMailbox"].(string); ok && !e.mailboxIDs[mb] {
				continue
			}
			if others, ok := filter["inMailboxOtherThan"].([]any); ok {
				skip := false
				for _, o := range others {
					if id, _ := o.(string); e.mailboxIDs[id] {
						skip = true
					}
				}
				if skip {
					continue
				}
			}
			matched = append(matched, e)
		}
		slices.SortStableFunc(matched, func(a, b *emailRec) int {
			c := a.receivedAt.Compare(b.receivedAt)
			if c == 0 {
				c = strings.Compare(a.id, b.id)
				if len(a.id) != len(b.id) {
					c = len(a.id) - len(b.id)
				}
			}
			if !asc {
				c = -c
			}
			return c
		})
		total := len(matched)
		if pos, ok := args["position"]; ok && pos != nil {
			n, err := intArg(pos)
			if err != nil || n < 0 {
				return nil, malformed("invalidArguments", "bad position")
			}
			matched = matched[min(n, len(matched)):]
		}
		if lim, ok := args["limit"]; ok && lim != nil {
			n, err := intArg(lim)
			if err != nil || n < 0 {
				return nil, malformed("invalidArguments", "bad limit")
			}
			matched = matched[:min(n, len(matched))]
		}
		ids := []any{}
		for _, e := range matched {
			ids = append(ids, e.id)
		}
		res := map[string]any{"accountId": acct, "queryState": "e0", "canCalculateChanges": false, "position": 0, "ids": ids}
		if b, _ := args["calculateTotal"].(bool); b {
			res["total"] = total
		}
		return res, nil
	case "Email/get":
		if e := checkArgs(args, "accountId", "ids", "properties", "bodyProperties", "fetchTextBodyValues", "fetchHTMLBodyValues", "fetchAllBodyValues", "maxBodyValueBytes"); e != nil {
			return nil, e
		}
		ids, ok := stringList(args["ids"])
		props, ok2 := stringList(args["properties"])
		if !ok || !ok2 || args["ids"] == nil {
			return nil, malformed("invalidArguments", "ids (required here) and properties are arrays")
		}
		list, notFound := []any{}, []any{}
		for _, id := range ids {
			i := slices.IndexFunc(ms.emails, func(e *emailRec) bool { return e.id == id })
			if i < 0 {
				notFound = append(notFound, id)
				continue
			}
			obj, err := emailProps(ms.emails[i], props)
			if err != nil {
				return nil, malformed("invalidArguments", "%v", err)
			}
			list = append(list, obj)
		}
		return map[string]any{"accountId": acct, "state": "e0", "list": list, "notFound": notFound}, nil
	}
	return nil, malformed("unknownMethod", "unknown method %q", name)
}

func pick(full map[string]any, props []string) map[string]any {
	if props == nil {
		return full
	}
	out := map[string]any{"id": full["id"]}
	for _, p := range props {
		out[p] = full[p]
	}
	return out
}

func emailProps(e *emailRec, props []string) (map[string]any, error) {
	if props == nil {
		props = []string{"id", "messageId", "subject", "mailboxIds", "receivedAt"}
	}
	out := map[string]any{"id": e.id}
	for _, p := range props {
		switch {
		case p == "id":
		case p == "mailboxIds":
			m := map[string]any{}
			for id := range e.mailboxIDs {
				m[id] = true
			}
			out[p] = m
		case p == "receivedAt":
			out[p] = e.receivedAt.Format(time.RFC3339)
		case p == "subject":
			if v := e.header("Subject"); len(v) > 0 {
				out[p] = asText(v[len(v)-1])
			} else {
				out[p] = nil
			}
		case p == "messageId":
			if v := e.header("Message-ID"); len(v) > 0 {
				out[p] = messageIDs(v[len(v)-1])
			} else {
				out[p] = nil
			}
		case p == "headers":
			hs := []any{}
			for _, h := range e.headers {
				hs = append(hs, map[string]any{"name": h[0], "value": h[1]})
			}
			out[p] = hs
		case strings.HasPrefix(p, "header:"):
			parts := strings.Split(strings.TrimPrefix(p, "header:"), ":")
			name, form, all := parts[0], "raw", false
			for _, x := range parts[1:] {
				switch x {
				case "all":
					all = true
				case "asText", "asRaw", "asMessageIds":
					form = x
				default:
					return nil, fmt.Errorf("unsupported header form %q in %q", x, p)
				}
			}
			vals := e.header(name)
			conv := func(v string) any {
				switch form {
				case "asText":
					return asText(v)
				case "asMessageIds":
					return messageIDs(v)
				}
				return v
			}
			if all {
				arr := []any{}
				for _, v := range vals {
					arr = append(arr, conv(v))
				}
				out[p] = arr
			} else if len(vals) > 0 {
				out[p] = conv(vals[len(vals)-1])
			} else {
				out[p] = nil
			}
		default:
			return nil, fmt.Errorf("unknown Email property %q", p)
		}
	}
	return out, nil
}
