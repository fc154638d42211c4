// Package stalwarttest is a fake of Stalwart's (>= 0.16) JMAP management API and
// of enough JMAP mail to read a test account's mailbox, on a loopback httptest
// server, for tests of code that configures or observes Stalwart.
//
// Every request is validated against Stalwart's own schema.json (embedded): object
// names with the x: prefix, methods, arguments, property names and types, enum
// values, @type variants, required fields, filters. A request the real server would
// refuse is refused here too, and recorded in Violations so a test can fail on it
// even when the code under test swallowed the error.
//
// The fake reproduces the documented behaviour of the real server: empty
// created/updated/... maps are omitted, nested objects are patched property by
// property, JSON-pointer update keys patch single elements, List values are objects
// keyed "0", "1", ... and Sets are {"value": true}, duplicate keys answer
// primaryKeyViolation naming the existing object, singletons are only updated (id
// "singleton"), the first SystemSettings write must carry defaultHostname and
// defaultDomainId, ids use Stalwart's base32 alphabet, unparseable ids are silently
// dropped, networks read back normalised (203.0.113.10/32 as 203.0.113.10), route
// expressions are compiled (unquoted unknown words fail), weak passwords are
// refused, every secret reads back as "****" (MaskedSecret) while the real one is
// kept, and a bad login is a 401 with a problem+json body.
//
// Faults (an error reply, HTTP 500, a reply held past the client's timeout, a
// dropped connection) can be injected per request or per method.
//
// It does not model permissions, tenants, push, blob upload, or the effect of
// configuration on mail flow.
package stalwarttest

import (
	"context"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"time"
)

// Defaults of a new Server.
const (
	DefaultAdminUser     = "admin"
	DefaultAdminPassword = "fake-admin-Secret-9d3f71c2"
	DefaultAPIPath       = "/jmap/"
)

// The JMAP capabilities the fake knows.
const (
	CapCore     = "urn:ietf:params:jmap:core"
	CapMail     = "urn:ietf:params:jmap:mail"
	CapStalwart = "urn:stalwart:jmap"
)

// adminAccountID is the recovery admin's account id (it has no x:Account object).
const adminAccountID = "a"

// Server is a fake Stalwart. Configure the exported fields between
// NewUnstartedServer and Start; NewServer starts at once with the defaults.
// Close stops it and waits for every request to finish.
type Server struct {
	// URL is the base URL, http://127.0.0.1:port, set by Start.
	URL string
	// AdminUser and AdminPassword are the administrator's HTTP Basic login.
	AdminUser, AdminPassword string
	// Token, when set, is accepted as "Authorization: Bearer <Token>" for the administrator.
	Token string
	// PublicURL is the base the session's apiUrl is built from (what
	// STALWART_PUBLIC_URL sets); default URL. The client must POST to the path of
	// apiUrl on its configured host, not to this host.
	PublicURL string
	// APIPath is the path of apiUrl; default "/jmap/".
	APIPath string
	// Schema is what requests are validated against; default DefaultSchema().
	Schema *Schema

	ts      *httptest.Server
	closing chan struct{}

	mu          sync.Mutex
	st          *store
	faults      []*Fault
	requests    []Request
	violations  []string
	actions     []string
	nRequests   int
	sessionHits int
}

// Request is one HTTP request the fake received (the API and session endpoints).
type Request struct {
	N      int // 1-based index among API POSTs (0 for other requests)
	Method string
	Path   string
	// Auth is "basic <user>", "bearer" or "" (never the secret).
	Auth string
	Body []byte
	// Calls are the method calls of an API request, with their raw arguments.
	Calls []Call
}

// Call is one JMAP method call as it was sent.
type Call struct {
	Name   string
	Args   json.RawMessage
	CallID string
}

// NewServer starts a fake with the defaults: admin login DefaultAdminUser /
// DefaultAdminPassword, the seeded "mx" and "local" routes, and SystemSettings
// never saved (a fresh deployment).
func NewServer() *Server {
	s := NewUnstartedServer()
	s.Start()
	return s
}

// NewUnstartedServer returns a fake that is not listening yet.
func NewUnstartedServer() *Server {
	s := &Server{
		AdminUser:     DefaultAdminUser,
		AdminPassword: DefaultAdminPassword,
		APIPath:       DefaultAPIPath,
		closing:       make(chan struct{}),
	}
	s.ts = httptest.NewUnstartedServer(http.HandlerFunc(s.serveHTTP))
	return s
}

// Start binds 127.0.0.1:0 and serves in the background.
func (s *Server) Start() {
	if s.Schema == nil {
		s.Schema = DefaultSchema()
	}
	if s.APIPath == "" {
		s.APIPath = DefaultAPIPath
	}
	s.mu.Lock()
	s.st = newStore(s.Schema)
	s.st.seedRoutes()
	s.mu.Unlock()
	s.ts.Start()
	s.URL = s.ts.URL
	if s.PublicURL == "" {
		s.PublicURL = s.URL
	}
}

// Close releases held replies and stops the server, waiting for requests to finish.
func (s *Server) Close() {
	select {
	case <-s.closing:
	default:
		close(s.closing)
	}
	s.ts.CloseClientConnections()
	s.ts.Close()
}

// Client returns an HTTP client for the server (plain http.Client; no TLS).
func (s *Server) Client() *http.Client { return s.ts.Client() }

// FaultKind is what an injected fault does.
type FaultKind int

// The kinds of fault.
const (
	// FaultMethodError answers the matching method call with ["error",{"type":"serverFail"}].
	FaultMethodError FaultKind = iota + 1
	// FaultSetError answers every create, update and destroy of a matching /set
	// call in notCreated/notUpdated/notDestroyed (type "forbidden"), changing nothing.
	FaultSetError
	// FaultHTTP500 answers the request with HTTP 500 and a problem+json body.
	FaultHTTP500
	// FaultTimeout holds the reply until the client gives up (or the server closes).
	FaultTimeout
	// FaultDrop closes the connection without a reply.
	FaultDrop
)

func (k FaultKind) String() string {
	switch k {
	case FaultMethodError:
		return "method error"
	case FaultSetError:
		return "set error"
	case FaultHTTP500:
		return "HTTP 500"
	case FaultTimeout:
		return "timeout"
	case FaultDrop:
		return "dropped connection"
	}
	return fmt.Sprintf("FaultKind(%d)", int(k))
}

// Fault selects requests to fail. Zero Request and empty Method match everything.
type Fault struct {
	Kind FaultKind
	// Request is the 1-based index among API POSTs (see RequestCount); 0 matches any.
	Request int
	// Method matches a request that carries this method call, e.g. "x:Domain/set".
	Method string
	// Commit, for FaultHTTP500, FaultTimeout and FaultDrop, carries out the
	// request before failing it: the server did the work but the reply was lost.
	Commit bool
	// Count is how many matching requests fail; 0 means 1.
	Count int
	// After is how many matching requests succeed before the fault fires (the
	// first write of a kind goes through, a later one fails).
	After int

	fired, passed int
}

// InjectFault adds a fault; faults are tried in the order they were added.
func (s *Server) InjectFault(f Fault) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if f.Count == 0 {
		f.Count = 1
	}
	s.faults = append(s.faults, &f)
}

// FaultsFired reports how many times injected faults have fired.
func (s *Server) FaultsFired() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, f := range s.faults {
		n += f.fired
	}
	return n
}

// RequestCount is the number of API POSTs received so far.
func (s *Server) RequestCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.nRequests
}

// Requests returns a copy of every request received.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.requests)
}

// Calls returns every method call received, in order.
func (s *Server) Calls() []Call {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Call
	for _, r := range s.requests {
		out = append(out, r.Calls...)
	}
	return out
}

// Violations lists requests the real server would refuse as malformed (schema,
// method, argument or filter errors), whether or not the client noticed.
func (s *Server) Violations() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.violations)
}

// Actions lists the x:Action variants created (ReloadSettings, InvalidateCaches, ...).
func (s *Server) Actions() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.actions)
}

func (s *Server) violate(format string, args ...any) {
	s.violations = append(s.violations, fmt.Sprintf(format, args...))
}

func (s *Server) serveHTTP(w http.ResponseWriter, r *http.Request) {
	switch {
	case r.URL.Path == "/.well-known/jmap":
		http.Redirect(w, r, "/jmap/session", http.StatusTemporaryRedirect)
	case r.URL.Path == "/jmap/session" && r.Method == http.MethodGet:
		s.serveSession(w, r)
	case (r.URL.Path == s.APIPath || r.URL.Path == strings.TrimSuffix(s.APIPath, "/")) && r.Method == http.MethodPost:
		s.serveAPI(w, r)
	case r.URL.Path == "/healthz/live":
		w.WriteHeader(http.StatusOK)
	case r.URL.Path == "/api" || r.URL.Path == "/api/":
		s.mu.Lock()
		s.violate("%s %s: /api is not the JMAP endpoint (use the session's apiUrl)", r.Method, r.URL.Path)
		s.mu.Unlock()
		writeProblem(w, http.StatusNotFound, "about:blank", "Not Found", "The requested resource does not exist.")
	default:
		writeProblem(w, http.StatusNotFound, "about:blank", "Not Found", "The requested resource does not exist.")
	}
}

// principal is who a request authenticated as.
type principal struct {
	admin     bool
	name      string // login name
	accountID string
}

func (s *Server) authenticate(r *http.Request) (principal, string, bool) {
	h := r.Header.Get("Authorization")
	switch {
	case strings.HasPrefix(h, "Bearer "):
		tok := strings.TrimPrefix(h, "Bearer ")
		if s.Token != "" && subtle.ConstantTimeCompare([]byte(tok), []byte(s.Token)) == 1 {
			return principal{admin: true, name: s.AdminUser, accountID: adminAccountID}, "bearer", true
		}
		return principal{}, "bearer", false
	case strings.HasPrefix(h, "Basic "):
		raw, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(h, "Basic "))
		if err != nil {
			return principal{}, "basic", false
		}
		user, pass, ok := strings.Cut(string(raw), ":")
		if !ok {
			return principal{}, "basic", false
		}
		desc := "basic " + user
		if user == s.AdminUser && subtle.ConstantTimeCompare([]byte(pass), []byte(s.AdminPassword)) == 1 {
			return principal{admin: true, name: user, accountID: adminAccountID}, desc, true
		}
		s.mu.Lock()
		id, ok := s.st.login(user, pass)
		s.mu.Unlock()
		if ok {
			return principal{name: user, accountID: id}, desc, true
		}
		return principal{}, desc, false
	}
	return principal{}, "", false
}

func writeProblem(w http.ResponseWriter, status int, typ, title, detail string) {
	w.Header().Set("Content-Type", "application/problem+json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{"type": typ, "title": title, "status": status, "detail": detail})
}

func unauthorized(w http.ResponseWriter) {
	w.Header().Set("WWW-Authenticate", `Bearer realm="Stalwart Server"`)
	writeProblem(w, http.StatusUnauthorized, "about:blank", "Unauthorized", "You have to authenticate first.")
}

func (s *Server) serveSession(w http.ResponseWriter, r *http.Request) {
	p, auth, ok := s.authenticate(r)
	s.mu.Lock()
	s.sessionHits++
	s.requests = append(s.requests, Request{Method: r.Method, Path: r.URL.Path, Auth: auth})
	s.mu.Unlock()
	if !ok {
		unauthorized(w)
		return
	}
	caps := map[string]any{
		CapCore: map[string]any{"maxSizeUpload": 50000000, "maxConcurrentUpload": 4, "maxSizeRequest": 10000000,
			"maxConcurrentRequests": 4, "maxCallsInRequest": 16, "maxObjectsInGet": 500, "maxObjectsInSet": 500,
			"collationAlgorithms": []string{"i;ascii-numeric", "i;ascii-casemap"}},
		CapMail:     map[string]any{},
		CapStalwart: map[string]any{},
	}
	base := strings.TrimSuffix(s.PublicURL, "/")
	sess := map[string]any{
		"capabilities": caps,
		"accounts": map[string]any{p.accountID: map[string]any{"name": p.name, "isPersonal": true, "isReadOnly": false,
			"accountCapabilities": map[string]any{CapMail: map[string]any{}, CapCore: map[string]any{}}}},
		"primaryAccounts": map[string]any{CapCore: p.accountID, CapMail: p.accountID, CapStalwart: p.accountID},
		"username":        p.name,
		"apiUrl":          base + s.APIPath,
		"downloadUrl":     base + "/jmap/download/{accountId}/{blobId}/{name}?accept={type}",
		"uploadUrl":       base + "/jmap/upload/{accountId}/",
		"eventSourceUrl":  base + "/jmap/eventsource/?types={types}&closeafter={closeafter}&ping={ping}",
		"state":           "s0",
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(sess)
}

// matchFault finds the fault for request n with these method names, and counts it.
func (s *Server) matchFault(n int, names []string) *Fault {
	for _, f := range s.faults {
		if f.fired >= f.Count {
			continue
		}
		if f.Request != 0 && f.Request != n {
			continue
		}
		if f.Method != "" && !slices.Contains(names, f.Method) {
			continue
		}
		if f.passed < f.After {
			f.passed++
			continue
		}
		f.fired++
		return f
	}
	return nil
}

func (s *Server) serveAPI(w http.ResponseWriter, r *http.Request) {
	p, auth, ok := s.authenticate(r)
	body, err := io.ReadAll(io.LimitReader(r.Body, 10<<20))
	s.mu.Lock()
	s.nRequests++
	n := s.nRequests
	rec := Request{N: n, Method: r.Method, Path: r.URL.Path, Auth: auth, Body: body}
	s.mu.Unlock()
	if err != nil {
		writeProblem(w, http.StatusBadRequest, "urn:ietf:params:jmap:error:notRequest", "Bad request", err.Error())
		return
	}
	if !ok {
		s.record(rec)
		unauthorized(w)
		return
	}
	if ct := r.Header.Get("Content-Type"); ct != "" && !strings.HasPrefix(ct, "application/json") {
		s.record(rec)
		s.mu.Lock()
		s.violate("request %d: Content-Type %q is not application/json", n, ct)
		s.mu.Unlock()
		writeProblem(w, http.StatusBadRequest, "urn:ietf:params:jmap:error:notJSON", "Not JSON", "Content-Type must be application/json")
		return
	}
	var req struct {
		Using       []string          `json:"using"`
		MethodCalls []json.RawMessage `json:"methodCalls"`
		CreatedIDs  map[string]string `json:"createdIds"`
	}
	if err := json.Unmarshal(body, &req); err != nil {
		s.record(rec)
		s.mu.Lock()
		s.violate("request %d: not JSON: %v", n, err)
		s.mu.Unlock()
		writeProblem(w, http.StatusBadRequest, "urn:ietf:params:jmap:error:notJSON", "Not JSON", err.Error())
		return
	}
	var calls []Call
	for _, raw := range req.MethodCalls {
		var parts []json.RawMessage
		var c Call
		if err := json.Unmarshal(raw, &parts); err != nil || len(parts) != 3 ||
			json.Unmarshal(parts[0], &c.Name) != nil || json.Unmarshal(parts[2], &c.CallID) != nil || len(parts[1]) == 0 || parts[1][0] != '{' {
			s.record(rec)
			s.mu.Lock()
			s.violate("request %d: a method call is not [name, {arguments}, callId]: %s", n, raw)
			s.mu.Unlock()
			writeProblem(w, http.StatusBadRequest, "urn:ietf:params:jmap:error:notRequest", "Invalid request", "method calls are [name, arguments, callId]")
			return
		}
		c.Args = parts[1]
		calls = append(calls, c)
	}
	rec.Calls = calls
	s.record(rec)
	if req.Using == nil || req.MethodCalls == nil {
		s.mu.Lock()
		s.violate("request %d: missing using or methodCalls", n)
		s.mu.Unlock()
		writeProblem(w, http.StatusBadRequest, "urn:ietf:params:jmap:error:notRequest", "Invalid request", "using and methodCalls are required")
		return
	}
	for _, u := range req.Using {
		if u != CapCore && u != CapMail && u != CapStalwart {
			s.mu.Lock()
			s.violate("request %d: unknown capability %q", n, u)
			s.mu.Unlock()
			writeProblem(w, http.StatusBadRequest, "urn:ietf:params:jmap:error:notRequest", "Invalid request", "Unknown capability "+u)
			return
		}
	}
	if len(calls) > 16 {
		s.mu.Lock()
		s.violate("request %d: %d calls exceed maxCallsInRequest", n, len(calls))
		s.mu.Unlock()
		writeProblem(w, http.StatusBadRequest, "urn:ietf:params:jmap:error:limit", "Limit", "maxCallsInRequest")
		return
	}

	names := make([]string, len(calls))
	for i, c := range calls {
		names[i] = c.Name
	}
	s.mu.Lock()
	fault := s.matchFault(n, names)
	s.mu.Unlock()

	process := func() []any {
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.process(n, p, req.Using, calls, fault)
	}
	if fault != nil {
		switch fault.Kind {
		case FaultHTTP500:
			if fault.Commit {
				process()
			}
			writeProblem(w, http.StatusInternalServerError, "about:blank", "Internal Server Error", "injected fault")
			return
		case FaultTimeout:
			if fault.Commit {
				process()
			}
			s.hold(r.Context())
			return
		case FaultDrop:
			if fault.Commit {
				process()
			}
			if hj, ok := w.(http.Hijacker); ok {
				if conn, _, err := hj.Hijack(); err == nil {
					_ = conn.Close()
					return
				}
			}
			panic(http.ErrAbortHandler)
		}
	}
	responses := process()
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(map[string]any{"methodResponses": responses, "sessionState": "s0"})
}

// hold blocks until the client goes away or the server closes; it stands for a
// reply that takes longer than any client timeout.
func (s *Server) hold(ctx context.Context) {
	t := time.NewTimer(10 * time.Minute)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-s.closing:
	case <-t.C:
	}
}

func (s *Server) record(r Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.requests = append(s.requests, r)
}
