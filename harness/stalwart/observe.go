package stalwart

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"
)

// DefaultMailLimit is how many of the newest messages per mailbox MailObserver reads.
const DefaultMailLimit = 100

// MailObserver finds probe messages in a test account's mailbox through JMAP
// mail (Email/query + Email/get), logging in as the account. It looks in the
// Inbox and in Junk (probes may be classified as spam) and matches the
// Message-ID, or a probe header, itself: server-side header filters go through
// the search index, which may lag.
type MailObserver struct {
	// URL is the JMAP server's base URL (Stalwart itself, or the proxy).
	URL string
	// Credentials are the account's: BasicAuth("probe@example.org", password).
	Credentials Credentials
	HTTPClient  *http.Client
	Timeout     time.Duration
	// Limit bounds the newest messages read per mailbox; 0 means DefaultMailLimit.
	Limit  int
	Logger *slog.Logger

	once      sync.Once
	client    *Client
	mu        sync.Mutex
	accountID string
	mailboxes map[string]mailboxInfo // role -> mailbox
}

type mailboxInfo struct{ id, name string }

// Match says which message is the probe: by Message-ID (with or without angle
// brackets), or by a header's value (e.g. Header "X-Splitcheck-Probe").
// Both set means both must match.
type Match struct {
	MessageID string
	Header    string
	Value     string
}

// Found is one copy of a probe in the mailbox.
type Found struct {
	// Mailbox is the mailbox's name, Role its role ("inbox" or "junk").
	Mailbox    string
	Role       string
	EmailID    string
	MessageID  string
	Subject    string
	ReceivedAt time.Time
	// Received are the message's Received header values, topmost first.
	Received []string
}

// String is a one-line description for reports.
func (f Found) String() string {
	return fmt.Sprintf("%s (role %s) email %s, Message-ID <%s>, received %s", f.Mailbox, f.Role, f.EmailID, f.MessageID,
		f.ReceivedAt.UTC().Format(time.RFC3339))
}

func (o *MailObserver) jmap() *Client {
	o.once.Do(func() {
		o.client = &Client{URL: o.URL, Credentials: o.Credentials, HTTPClient: o.HTTPClient, Timeout: o.Timeout, Logger: o.Logger}
	})
	return o.client
}

var mailUsing = []string{CapCore, CapMail}

// Find returns every copy of the probe in the Inbox and Junk (none: an empty
// slice and a nil error). Call it again to poll; it keeps no other state than
// the account's mailbox ids.
func (o *MailObserver) Find(ctx context.Context, m Match) ([]Found, error) {
	if m.MessageID == "" && (m.Header == "" || m.Value == "") {
		return nil, errors.New("find probe: no Message-ID or header to match")
	}
	if err := o.discover(ctx); err != nil {
		return nil, fmt.Errorf("find probe: %w", err)
	}
	o.mu.Lock()
	acct := o.accountID
	boxes := map[string]mailboxInfo{}
	for k, v := range o.mailboxes {
		boxes[k] = v
	}
	o.mu.Unlock()
	limit := o.Limit
	if limit <= 0 {
		limit = DefaultMailLimit
	}
	props := []string{"id", "messageId", "subject", "mailboxIds", "receivedAt", "header:Received:asText:all"}
	headerProp := ""
	if m.Header != "" {
		headerProp = "header:" + m.Header + ":asText"
		props = append(props, headerProp)
	}
	var calls []Invocation
	var roles []string
	for _, role := range []string{"inbox", "junk"} {
		box, ok := boxes[role]
		if !ok {
			continue
		}
		q, g := "q"+role, "g"+role
		calls = append(calls,
			Invocation{Name: "Email/query", CallID: q, Args: map[string]any{"accountId": acct,
				"filter": map[string]any{"inMailbox": box.id},
				"sort":   []any{map[string]any{"property": "receivedAt", "isAscending": false}}, "limit": limit}},
			Invocation{Name: "Email/get", CallID: g, Args: map[string]any{"accountId": acct,
				"#ids": map[string]any{"resultOf": q, "name": "Email/query", "path": "/ids"}, "properties": props}})
		roles = append(roles, role)
	}
	if len(calls) == 0 {
		return nil, errors.New("find probe: the account has neither an Inbox nor a Junk mailbox")
	}
	resps, err := o.jmap().Do(ctx, mailUsing, calls...)
	if err != nil {
		return nil, fmt.Errorf("find probe: %w", err)
	}
	want := strings.Trim(m.MessageID, "<> ")
	found := []Found{}
	for i, role := range roles {
		for j := 0; j < 2; j++ {
			if err := resps[2*i+j].Err(calls[2*i+j].Name); err != nil {
				return nil, fmt.Errorf("find probe: %w", err)
			}
		}
		var g struct {
			List []map[string]json.RawMessage `json:"list"`
		}
		if err := json.Unmarshal(resps[2*i+1].Args, &g); err != nil {
			return nil, fmt.Errorf("find probe: decode Email/get: %w", err)
		}
		for _, e := range g.List {
			f, ok := matchEmail(e, want, headerProp, m.Value)
			if !ok {
				continue
			}
			f.Role, f.Mailbox = role, boxes[role].name
			found = append(found, f)
		}
	}
	return found, nil
}

func matchEmail(e map[string]json.RawMessage, messageID, headerProp, value string) (Found, bool) {
	var f Found
	var ids []string
	_ = json.Unmarshal(e["id"], &f.EmailID)
	_ = json.Unmarshal(e["messageId"], &ids)
	_ = json.Unmarshal(e["subject"], &f.Subject)
	_ = json.Unmarshal(e["header:Received:asText:all"], &f.Received)
	var received string
	if json.Unmarshal(e["receivedAt"], &received) == nil {
		f.ReceivedAt, _ = time.Parse(time.RFC3339, received)
	}
	if len(ids) > 0 {
		f.MessageID = ids[0]
	}
	if messageID != "" && !containsFold(ids, messageID) {
		return f, false
	}
	if headerProp != "" {
		var hv string
		if json.Unmarshal(e[headerProp], &hv) != nil || strings.TrimSpace(hv) != value {
			return f, false
		}
	}
	return f, true
}

func containsFold(list []string, s string) bool {
	for _, x := range list {
		if strings.EqualFold(strings.Trim(x, "<> "), s) {
			return true
		}
	}
	return false
}

// discover finds the mail account id and the Inbox and Junk mailboxes once.
func (o *MailObserver) discover(ctx context.Context) error {
	o.mu.Lock()
	done := o.mailboxes != nil
	o.mu.Unlock()
	if done {
		return nil
	}
	sess, err := o.jmap().Session(ctx)
	if err != nil {
		return err
	}
	acct := sess.PrimaryAccounts[CapMail]
	if acct == "" {
		return fmt.Errorf("session of %s has no mail account", o.Credentials)
	}
	resps, err := o.jmap().Do(ctx, mailUsing, Invocation{Name: "Mailbox/get", CallID: "m",
		Args: map[string]any{"accountId": acct, "ids": nil, "properties": []string{"id", "name", "role"}}})
	if err != nil {
		return err
	}
	if err := resps[0].Err("Mailbox/get"); err != nil {
		return err
	}
	var g struct {
		List []struct {
			ID   string  `json:"id"`
			Name string  `json:"name"`
			Role *string `json:"role"`
		} `json:"list"`
	}
	if err := json.Unmarshal(resps[0].Args, &g); err != nil {
		return fmt.Errorf("decode Mailbox/get: %w", err)
	}
	boxes := map[string]mailboxInfo{}
	for _, b := range g.List {
		if b.Role != nil && (*b.Role == "inbox" || *b.Role == "junk") {
			boxes[*b.Role] = mailboxInfo{id: b.ID, name: b.Name}
		}
	}
	o.mu.Lock()
	o.accountID, o.mailboxes = acct, boxes
	o.mu.Unlock()
	return nil
}

// QueueEntry is one recipient of one message in Stalwart's outbound queue.
type QueueEntry struct {
	QueueID        string
	ReturnPath     string
	ReceivedFromIP string
	CreatedAt      string
	Recipient      string
	QueueName      string
	// Status is Scheduled, Completed, TemporaryFailure or PermanentFailure.
	Status string
	// ResponseHostname is the host that answered the last attempt: the relay's
	// address for the source route, an MX host for mx (the route name itself is
	// not stored).
	ResponseHostname string
	ResponseCode     int
	ResponseMessage  string
	ErrorType        string
	ErrorMessage     string
	RetryCount       int
}

// String is a one-line description for reports.
func (e QueueEntry) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "queue %s: %s %s", e.QueueID, e.Recipient, e.Status)
	if e.ResponseHostname != "" {
		fmt.Fprintf(&b, " at %s", e.ResponseHostname)
	}
	if e.ResponseCode != 0 {
		fmt.Fprintf(&b, " (%d %s)", e.ResponseCode, e.ResponseMessage)
	}
	if e.ErrorType != "" {
		fmt.Fprintf(&b, " (%s: %s)", e.ErrorType, e.ErrorMessage)
	}
	if e.RetryCount > 0 {
		fmt.Fprintf(&b, ", %d retries", e.RetryCount)
	}
	if e.QueueName != "" {
		fmt.Fprintf(&b, ", queue %q", e.QueueName)
	}
	if e.ReceivedFromIP != "" {
		fmt.Fprintf(&b, ", from %s", e.ReceivedFromIP)
	}
	return b.String()
}

// DeliveredTo reports whether the recipient completed with host as the
// responding server: the evidence of a relay to the source in live mode.
func (e QueueEntry) DeliveredTo(host string) bool {
	return e.Status == "Completed" && strings.EqualFold(strings.TrimSuffix(e.ResponseHostname, "."), strings.TrimSuffix(host, "."))
}

// QueueEvidence lists the queue entries for a recipient (x:QueuedMessage, filter
// "to"). A message leaves the queue once every recipient is done, so an empty
// list means delivered, bounced or never queued.
func (c *Client) QueueEvidence(ctx context.Context, rcpt string) ([]QueueEntry, error) {
	list, err := c.QueryGet(ctx, ObjQueuedMessage, map[string]any{"to": rcpt},
		"id", "returnPath", "receivedFromIp", "createdAt", "recipients")
	if err != nil {
		return nil, fmt.Errorf("queue evidence for %s: %w", rcpt, err)
	}
	return parseQueue(list, rcpt)
}

// ParseQueuedMessages turns x:QueuedMessage objects into entries, keeping only
// recipient rcpt ("" keeps all).
func ParseQueuedMessages(list []json.RawMessage, rcpt string) ([]QueueEntry, error) {
	return parseQueue(list, rcpt)
}

func parseQueue(list []json.RawMessage, rcpt string) ([]QueueEntry, error) {
	var out []QueueEntry
	for _, raw := range list {
		var m struct {
			ID             string `json:"id"`
			ReturnPath     string `json:"returnPath"`
			ReceivedFromIP string `json:"receivedFromIp"`
			CreatedAt      string `json:"createdAt"`
			Recipients     map[string]struct {
				QueueName  string `json:"queueName"`
				RetryCount int    `json:"retryCount"`
				Status     struct {
					Type             string `json:"@type"`
					ResponseHostname string `json:"responseHostname"`
					ResponseCode     int    `json:"responseCode"`
					ResponseMessage  string `json:"responseMessage"`
					ErrorType        string `json:"errorType"`
					ErrorMessage     string `json:"errorMessage"`
				} `json:"status"`
			} `json:"recipients"`
		}
		if err := json.Unmarshal(raw, &m); err != nil {
			return nil, fmt.Errorf("decode queued message: %w", err)
		}
		for _, addr := range sortedKeys(m.Recipients) {
			if rcpt != "" && !strings.EqualFold(addr, rcpt) {
				continue
			}
			r := m.Recipients[addr]
			out = append(out, QueueEntry{QueueID: m.ID, ReturnPath: m.ReturnPath, ReceivedFromIP: m.ReceivedFromIP,
				CreatedAt: m.CreatedAt, Recipient: addr, QueueName: r.QueueName, Status: r.Status.Type,
				ResponseHostname: r.Status.ResponseHostname, ResponseCode: r.Status.ResponseCode, ResponseMessage: r.Status.ResponseMessage,
				ErrorType: r.Status.ErrorType, ErrorMessage: r.Status.ErrorMessage, RetryCount: r.RetryCount})
		}
	}
	return out, nil
}

// PublicURLCheck is the result of CheckPublicURL.
type PublicURLCheck struct {
	// Want is the configured public URL, APIURL what the session advertises.
	Want   string
	APIURL string
	// OK is true when APIURL is on Want (same scheme and host, path below it).
	OK bool
}

// CheckPublicURL follows JMAP autodiscovery (GET /.well-known/jmap, then the
// session it redirects to) on base (default c.URL) and checks that the
// session's apiUrl is on publicURL: the proxy, so autodiscovering clients stay
// on it. Redirects are followed on base's host (only their path is used).
func (c *Client) CheckPublicURL(ctx context.Context, base, publicURL string) (*PublicURLCheck, error) {
	if base == "" {
		base = c.URL
	}
	bu, err := url.Parse(strings.TrimSuffix(base, "/"))
	if err != nil || bu.Host == "" {
		return nil, fmt.Errorf("check public URL: bad base URL %q", base)
	}
	pu, err := url.Parse(strings.TrimSuffix(publicURL, "/"))
	if err != nil || pu.Host == "" {
		return nil, fmt.Errorf("check public URL: bad public URL %q", publicURL)
	}
	hc := *c.httpClient()
	hc.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	path := "/.well-known/jmap"
	for hop := 0; hop < 5; hop++ {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, bu.Scheme+"://"+bu.Host+path, nil)
		if err != nil {
			return nil, fmt.Errorf("check public URL: %w", err)
		}
		c.Credentials.apply(req)
		resp, err := hc.Do(req)
		if err != nil {
			return nil, fmt.Errorf("check public URL: %w", err)
		}
		var body []byte
		body, err = readAllLimit(resp)
		if err != nil {
			return nil, fmt.Errorf("check public URL: %w", err)
		}
		switch {
		case resp.StatusCode >= 300 && resp.StatusCode < 400:
			loc, err := url.Parse(resp.Header.Get("Location"))
			if err != nil || loc.Path == "" {
				return nil, fmt.Errorf("check public URL: redirect without a usable Location")
			}
			path = loc.EscapedPath()
			continue
		case resp.StatusCode == http.StatusUnauthorized:
			return nil, &AuthError{Tried: c.Credentials.String(), URL: req.URL.String(), Detail: parseProblem(body).Detail}
		case resp.StatusCode != http.StatusOK:
			p := parseProblem(body)
			return nil, &HTTPError{Method: http.MethodGet, URL: req.URL.String(), Status: resp.StatusCode, Type: p.Type, Title: p.Title, Detail: p.Detail}
		}
		var s Session
		if err := json.Unmarshal(body, &s); err != nil {
			return nil, fmt.Errorf("check public URL: decode session: %w", err)
		}
		return &PublicURLCheck{Want: publicURL, APIURL: s.APIURL, OK: onURL(s.APIURL, pu)}, nil
	}
	return nil, errors.New("check public URL: too many redirects")
}

func onURL(apiURL string, public *url.URL) bool {
	u, err := url.Parse(apiURL)
	if err != nil {
		return false
	}
	if !strings.EqualFold(u.Scheme, public.Scheme) || !strings.EqualFold(hostPort(u), hostPort(public)) {
		return false
	}
	prefix := strings.TrimSuffix(public.Path, "/") + "/"
	return strings.HasPrefix(u.Path+"/", prefix) // also true of every path below it
}

// hostPort is u's host with the scheme's default port made explicit.
func hostPort(u *url.URL) string {
	if u.Port() != "" {
		return strings.ToLower(u.Host)
	}
	switch u.Scheme {
	case "https":
		return strings.ToLower(u.Hostname()) + ":443"
	case "http":
		return strings.ToLower(u.Hostname()) + ":80"
	}
	return strings.ToLower(u.Host)
}
