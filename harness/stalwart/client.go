package stalwart

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"
)

// JMAP capabilities used by the client.
const (
	CapCore     = "urn:ietf:params:jmap:core"
	CapMail     = "urn:ietf:params:jmap:mail"
	CapStalwart = "urn:stalwart:jmap"
)

// Defaults of a Client.
const (
	DefaultTimeout     = 30 * time.Second
	DefaultMaxAttempts = 3
	maxResponseBytes   = 32 << 20
)

// Credentials authenticate to Stalwart: HTTP Basic (user and password) or a
// Bearer token. They never print their secret.
type Credentials struct {
	user, password, token string
}

// BasicAuth returns user + password credentials (HTTP Basic).
func BasicAuth(user, password string) Credentials { return Credentials{user: user, password: password} }

// BearerToken returns token credentials (Authorization: Bearer).
func BearerToken(token string) Credentials { return Credentials{token: token} }

// String says which credentials these are, without the secret: `user "admin"` or "bearer token".
func (c Credentials) String() string {
	switch {
	case c.token != "":
		return "bearer token"
	case c.user != "":
		return fmt.Sprintf("user %q", c.user)
	default:
		return "no credentials"
	}
}

// GoString hides the secret from %#v.
func (c Credentials) GoString() string { return "stalwart.Credentials{" + c.String() + "}" }

// User is the Basic user name ("" for a token).
func (c Credentials) User() string { return c.user }

func (c Credentials) secrets() []string { return []string{c.password, c.token} }

func (c Credentials) apply(req *http.Request) {
	switch {
	case c.token != "":
		req.Header.Set("Authorization", "Bearer "+c.token)
	case c.user != "":
		req.SetBasicAuth(c.user, c.password)
	}
}

// Client talks to Stalwart's JMAP management API (Stalwart >= 0.16, x: objects).
//
// It discovers the API with GET /jmap/session and POSTs to the path of the
// session's apiUrl on URL's host (apiUrl is built from STALWART_PUBLIC_URL and
// may name the proxy). Each HTTP request is bounded by Timeout and by the
// context. Requests that only read (/get, /query, the session) are retried on
// network errors and 5xx replies; requests that write (/set) never are.
//
// The zero value is not usable: set URL and Credentials. A Client is safe for
// concurrent use.
type Client struct {
	// URL is the server's base URL, e.g. http://127.0.0.1:8080.
	URL string
	// Credentials are sent with every request.
	Credentials Credentials
	// HTTPClient is used when set; by default a client with Timeout.
	HTTPClient *http.Client
	// Timeout bounds each HTTP request; 0 means DefaultTimeout.
	Timeout time.Duration
	// MaxAttempts bounds tries of a safe request; 0 means DefaultMaxAttempts, 1 disables retries.
	MaxAttempts int
	// Logger receives debug logs of each request (never secrets); nil is silent.
	Logger *slog.Logger

	mu      sync.Mutex
	apiPath string
	hc      *http.Client
}

// Session is the JMAP session resource (RFC 8620 section 2).
type Session struct {
	Capabilities    map[string]json.RawMessage `json:"capabilities"`
	Accounts        map[string]SessionAccount  `json:"accounts"`
	PrimaryAccounts map[string]string          `json:"primaryAccounts"`
	Username        string                     `json:"username"`
	APIURL          string                     `json:"apiUrl"`
	State           string                     `json:"state"`
}

// SessionAccount is one entry of Session.Accounts.
type SessionAccount struct {
	Name       string `json:"name"`
	IsPersonal bool   `json:"isPersonal"`
	IsReadOnly bool   `json:"isReadOnly"`
}

// Invocation is one JMAP method call. Args is marshalled with HTML escaping off,
// so expressions such as "a && b" go on the wire as written.
type Invocation struct {
	Name   string
	Args   any
	CallID string
}

// Response is one method response; Name is "error" for a method-level error.
type Response struct {
	Name   string
	Args   json.RawMessage
	CallID string
}

// Err returns the *MethodError of an "error" response, else nil. method names the call it answers.
func (r Response) Err(method string) error {
	if r.Name != "error" {
		return nil
	}
	var e struct {
		Type        string   `json:"type"`
		Description string   `json:"description"`
		Properties  []string `json:"properties"`
	}
	_ = json.Unmarshal(r.Args, &e)
	return &MethodError{Method: method, CallID: r.CallID, Type: e.Type, Description: e.Description, Properties: e.Properties}
}

func (c *Client) logger() *slog.Logger {
	if c.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return c.Logger
}

func (c *Client) httpClient() *http.Client {
	if c.HTTPClient != nil {
		return c.HTTPClient
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.hc == nil {
		t := c.Timeout
		if t <= 0 {
			t = DefaultTimeout
		}
		c.hc = &http.Client{Timeout: t}
	}
	return c.hc
}

func (c *Client) attempts() int {
	if c.MaxAttempts <= 0 {
		return DefaultMaxAttempts
	}
	return c.MaxAttempts
}

func (c *Client) base() (*url.URL, error) {
	u, err := url.Parse(strings.TrimSuffix(c.URL, "/"))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("stalwart: bad server URL %q", c.URL)
	}
	return u, nil
}

// Session fetches GET /jmap/session and remembers the path of its apiUrl.
func (c *Client) Session(ctx context.Context) (*Session, error) {
	u, err := c.base()
	if err != nil {
		return nil, err
	}
	endpoint := u.JoinPath("/jmap/session").String()
	body, err := c.roundTrip(ctx, http.MethodGet, endpoint, nil, true)
	if err != nil {
		return nil, fmt.Errorf("get session: %w", err)
	}
	var s Session
	if err := json.Unmarshal(body, &s); err != nil {
		return nil, fmt.Errorf("get session: decode: %w", err)
	}
	path, err := apiPath(s.APIURL)
	if err != nil {
		return nil, fmt.Errorf("get session: %w", err)
	}
	c.mu.Lock()
	c.apiPath = path
	c.mu.Unlock()
	return &s, nil
}

// apiPath keeps only the path of apiUrl, as stalwart-cli does (absolute_to_path).
func apiPath(apiURL string) (string, error) {
	if apiURL == "" {
		return "", errors.New("session has no apiUrl")
	}
	u, err := url.Parse(apiURL)
	if err != nil {
		return "", fmt.Errorf("session apiUrl %q: %w", apiURL, err)
	}
	if u.Path == "" {
		return "/", nil
	}
	return u.EscapedPath(), nil
}

func (c *Client) endpoint(ctx context.Context) (string, error) {
	c.mu.Lock()
	path := c.apiPath
	c.mu.Unlock()
	if path == "" {
		if _, err := c.Session(ctx); err != nil {
			return "", err
		}
		c.mu.Lock()
		path = c.apiPath
		c.mu.Unlock()
	}
	u, err := c.base()
	if err != nil {
		return "", err
	}
	return u.Scheme + "://" + u.Host + path, nil
}

// safeMethod reports whether a method call only reads and may be repeated.
func safeMethod(name string) bool {
	return strings.HasSuffix(name, "/get") || strings.HasSuffix(name, "/query") || name == "Core/echo"
}

// Do sends one JMAP request with the given capabilities and calls. It retries
// only when every call is safe to repeat. Method-level errors come back as
// responses named "error" (see Response.Err); HTTP errors as *AuthError or *HTTPError.
func (c *Client) Do(ctx context.Context, using []string, calls ...Invocation) ([]Response, error) {
	endpoint, err := c.endpoint(ctx)
	if err != nil {
		return nil, err
	}
	wire := make([][3]any, len(calls))
	safe := true
	for i, call := range calls {
		wire[i] = [3]any{call.Name, call.Args, call.CallID}
		safe = safe && safeMethod(call.Name)
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(map[string]any{"using": using, "methodCalls": wire}); err != nil {
		return nil, fmt.Errorf("stalwart: encode request: %w", err)
	}
	body, err := c.roundTrip(ctx, http.MethodPost, endpoint, bytes.TrimRight(buf.Bytes(), "\n"), safe)
	if err != nil {
		return nil, err
	}
	resps, err := ParseResponse(body)
	if err != nil {
		return nil, err
	}
	if len(resps) != len(calls) {
		return nil, fmt.Errorf("stalwart: %d method responses for %d calls", len(resps), len(calls))
	}
	for i, r := range resps {
		if r.CallID != calls[i].CallID {
			return nil, fmt.Errorf("stalwart: response %d has call id %q, want %q", i, r.CallID, calls[i].CallID)
		}
		if r.Name != calls[i].Name && r.Name != "error" {
			return nil, fmt.Errorf("stalwart: response %d is %q, want %q", i, r.Name, calls[i].Name)
		}
	}
	return resps, nil
}

// ParseResponse decodes a JMAP response body into its method responses.
func ParseResponse(body []byte) ([]Response, error) {
	var env struct {
		MethodResponses []json.RawMessage `json:"methodResponses"`
	}
	if err := json.Unmarshal(body, &env); err != nil {
		return nil, fmt.Errorf("stalwart: decode response: %w", err)
	}
	if env.MethodResponses == nil {
		return nil, errors.New("stalwart: decode response: no methodResponses")
	}
	out := make([]Response, 0, len(env.MethodResponses))
	for i, raw := range env.MethodResponses {
		var parts []json.RawMessage
		if err := json.Unmarshal(raw, &parts); err != nil || len(parts) != 3 {
			return nil, fmt.Errorf("stalwart: decode response: method response %d is not [name, arguments, callId]", i)
		}
		var r Response
		if err := json.Unmarshal(parts[0], &r.Name); err != nil {
			return nil, fmt.Errorf("stalwart: decode response %d name: %w", i, err)
		}
		if err := json.Unmarshal(parts[2], &r.CallID); err != nil {
			return nil, fmt.Errorf("stalwart: decode response %d call id: %w", i, err)
		}
		if t := bytes.TrimSpace(parts[1]); len(t) == 0 || t[0] != '{' {
			return nil, fmt.Errorf("stalwart: decode response: arguments of %q are not an object", r.Name)
		}
		r.Args = parts[1]
		out = append(out, r)
	}
	return out, nil
}

// roundTrip sends one HTTP request, retrying when safe.
func (c *Client) roundTrip(ctx context.Context, method, endpoint string, body []byte, safe bool) ([]byte, error) {
	attempts := 1
	if safe {
		attempts = c.attempts()
	}
	log := c.logger()
	var lastErr error
	for try := 1; try <= attempts; try++ {
		if try > 1 {
			delay := time.Duration(100<<(try-2)) * time.Millisecond
			t := time.NewTimer(delay)
			select {
			case <-ctx.Done():
				t.Stop()
				return nil, fmt.Errorf("stalwart: %s %s: %w (after: %v)", method, endpoint, ctx.Err(), lastErr)
			case <-t.C:
			}
			log.Debug("stalwart: retrying", "method", method, "url", endpoint, "attempt", try, "err", lastErr)
		}
		out, err := c.once(ctx, method, endpoint, body)
		if err == nil {
			return out, nil
		}
		lastErr = err
		if !retryable(ctx, err) {
			break
		}
	}
	return nil, lastErr
}

func retryable(ctx context.Context, err error) bool {
	if ctx.Err() != nil {
		return false
	}
	var he *HTTPError
	if errors.As(err, &he) {
		return he.Temporary()
	}
	var ae *AuthError
	return !errors.As(err, &ae)
}

func (c *Client) once(ctx context.Context, method, endpoint string, body []byte) ([]byte, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, endpoint, rd)
	if err != nil {
		return nil, fmt.Errorf("stalwart: %s %s: %w", method, endpoint, err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	c.Credentials.apply(req)
	start := time.Now()
	resp, err := c.httpClient().Do(req)
	if err != nil {
		// *url.Error names the method and URL; credentials are in headers, never in it.
		return nil, fmt.Errorf("stalwart: %w", err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes))
	c.logger().Debug("stalwart: request", "method", method, "url", endpoint, "status", resp.StatusCode,
		"bytes", len(data), "elapsed", time.Since(start))
	if err != nil {
		return nil, fmt.Errorf("stalwart: %s %s: read reply: %w", method, endpoint, err)
	}
	if resp.StatusCode == http.StatusUnauthorized {
		p := parseProblem(data)
		return nil, &AuthError{Tried: c.Credentials.String(), URL: endpoint, Detail: p.Detail}
	}
	if resp.StatusCode != http.StatusOK {
		p := parseProblem(data)
		return nil, &HTTPError{Method: method, URL: endpoint, Status: resp.StatusCode, Type: p.Type, Title: p.Title, Detail: p.Detail}
	}
	return data, nil
}

type problemDetails struct {
	Type   string `json:"type"`
	Title  string `json:"title"`
	Detail string `json:"detail"`
}

func parseProblem(data []byte) problemDetails {
	var p problemDetails
	if json.Unmarshal(data, &p) != nil {
		s := strings.TrimSpace(string(data))
		if len(s) > 200 {
			s = s[:200]
		}
		p.Detail = s
	}
	return p
}

func readAllLimit(resp *http.Response) ([]byte, error) {
	defer resp.Body.Close()
	return io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes))
}
