package stalwarttest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// sharedSchema is parsed once per test binary (it is read-only).
var sharedSchema = sync.OnceValue(DefaultSchema)

func newTestServer(t *testing.T) *Server {
	t.Helper()
	s := NewUnstartedServer()
	s.Schema = sharedSchema()
	s.Start()
	t.Cleanup(s.Close)
	return s
}

const using = `"using":["urn:ietf:params:jmap:core","urn:stalwart:jmap"]`

// post sends a raw JMAP request body as the admin and returns the status and decoded body.
func post(t *testing.T, s *Server, body string) (int, map[string]any) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, s.URL+"/jmap/", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.SetBasicAuth(s.AdminUser, s.AdminPassword)
	req.Header.Set("Content-Type", "application/json")
	resp, err := s.Client().Do(req)
	if err != nil {
		t.Fatalf("POST: %v", err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	var out map[string]any
	_ = json.Unmarshal(data, &out)
	return resp.StatusCode, out
}

// call sends one method call and returns its response name and arguments.
func call(t *testing.T, s *Server, name, args string) (string, map[string]any) {
	t.Helper()
	status, out := post(t, s, `{`+using+`,"methodCalls":[["`+name+`",`+args+`,"c0"]]}`)
	if status != http.StatusOK {
		t.Fatalf("%s: HTTP %d %v", name, status, out)
	}
	mr := out["methodResponses"].([]any)[0].([]any)
	return mr[0].(string), mr[1].(map[string]any)
}

func TestSessionAndAuth(t *testing.T) {
	s := NewUnstartedServer()
	s.Schema = sharedSchema()
	s.PublicURL = "https://mail.example.org"
	s.APIPath = "/custom/jmap/"
	s.Token = "tok-123"
	s.Start()
	defer s.Close()

	for _, tt := range []struct {
		name       string
		auth       func(*http.Request)
		wantStatus int
	}{
		{"no credentials", func(*http.Request) {}, 401},
		{"wrong password", func(r *http.Request) { r.SetBasicAuth(s.AdminUser, "nope") }, 401},
		{"wrong token", func(r *http.Request) { r.Header.Set("Authorization", "Bearer nope") }, 401},
		{"admin basic", func(r *http.Request) { r.SetBasicAuth(s.AdminUser, s.AdminPassword) }, 200},
		{"admin bearer", func(r *http.Request) { r.Header.Set("Authorization", "Bearer tok-123") }, 200},
	} {
		t.Run(tt.name, func(t *testing.T) {
			req, _ := http.NewRequest(http.MethodGet, s.URL+"/jmap/session", nil)
			tt.auth(req)
			resp, err := s.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var body map[string]any
			_ = json.NewDecoder(resp.Body).Decode(&body)
			if resp.StatusCode != tt.wantStatus {
				t.Fatalf("status = %d; want %d", resp.StatusCode, tt.wantStatus)
			}
			if tt.wantStatus == 401 {
				if ct := resp.Header.Get("Content-Type"); ct != "application/problem+json" {
					t.Errorf("Content-Type = %q; want application/problem+json", ct)
				}
				if wa := resp.Header.Get("WWW-Authenticate"); !strings.Contains(wa, `realm="Stalwart Server"`) {
					t.Errorf("WWW-Authenticate = %q; want the Stalwart realm", wa)
				}
				return
			}
			if got := body["apiUrl"]; got != "https://mail.example.org/custom/jmap/" {
				t.Errorf("apiUrl = %v; want the public URL plus the API path", got)
			}
		})
	}
	// The well-known URL redirects to the session.
	req, _ := http.NewRequest(http.MethodGet, s.URL+"/.well-known/jmap", nil)
	cl := *s.Client()
	cl.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	resp, err := cl.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusTemporaryRedirect || resp.Header.Get("Location") != "/jmap/session" {
		t.Errorf("/.well-known/jmap = %d %q; want 307 to /jmap/session", resp.StatusCode, resp.Header.Get("Location"))
	}
}

// TestRejectsMalformed: every request the real server refuses is refused here,
// and recorded as a violation.
func TestRejectsMalformed(t *testing.T) {
	relay := `"@type":"Relay","name":"r1","address":"10.0.0.1"`
	for _, tt := range []struct {
		name, method, args string
		wantErr            string // method error type or SetError type
	}{
		{"unknown object", "x:Nope/get", `{"ids":null}`, "unknownMethod"},
		{"object without x: prefix", "Domain/get", `{"ids":null}`, "unknownMethod"},
		{"view used as object", "x:Account/User/get", `{"ids":null}`, "unknownMethod"},
		{"unknown method", "x:Domain/changes", `{}`, "unknownMethod"},
		{"unknown argument", "x:Domain/get", `{"ids":null,"fields":["name"]}`, "invalidArguments"},
		{"unknown property in get", "x:Domain/get", `{"ids":null,"properties":["nom"]}`, "invalidArguments"},
		{"unknown filter", "x:Domain/query", `{"filter":{"domain":"example.org"}}`, "unsupportedFilter"},
		{"query on a singleton", "x:SystemSettings/query", `{}`, "unknownMethod"},
		{"bad back-reference", "x:Domain/get", `{"#ids":{"resultOf":"zz","name":"x:Domain/query","path":"/ids"}}`, "invalidResultReference"},
		{"unknown property in create", "x:Domain/set", `{"create":{"d":{"name":"a.test","nom":1}}}`, "invalidProperties"},
		{"server-set property", "x:Domain/set", `{"create":{"d":{"name":"a.test","createdAt":"2026-01-01T00:00:00Z"}}}`, "invalidProperties"},
		{"wrong type", "x:MtaRoute/set", `{"create":{"r":{` + relay + `,"port":"25"}}}`, "invalidPatch"},
		{"port out of range", "x:MtaRoute/set", `{"create":{"r":{` + relay + `,"port":70000}}}`, "validationFailed"},
		{"bad enum", "x:MtaRoute/set", `{"create":{"r":{` + relay + `,"protocol":"http"}}}`, "invalidPatch"},
		{"missing required", "x:MtaRoute/set", `{"create":{"r":{"@type":"Relay","name":"r1"}}}`, "validationFailed"},
		{"missing @type", "x:MtaRoute/set", `{"create":{"r":{"name":"r1","address":"10.0.0.1"}}}`, "invalidPatch"},
		{"unknown @type", "x:MtaRoute/set", `{"create":{"r":{"@type":"Smtp","name":"r1"}}}`, "invalidPatch"},
		{"property of another variant", "x:MtaRoute/set", `{"create":{"r":{"@type":"Local","name":"r1","address":"x"}}}`, "invalidProperties"},
		{"List sent as array", "x:MtaOutboundStrategy/set", `{"update":{"singleton":{"route":{"match":[{"if":"true","then":"'local'"}],"else":"'mx'"}}}}`, "invalidPatch"},
		{"Set sent as array", "x:Domain/set", `{"create":{"d":{"name":"a.test","aliases":["b.test"]}}}`, "invalidPatch"},
		{"Set member not true", "x:Domain/set", `{"create":{"d":{"name":"a.test","aliases":{"b.test":false}}}}`, "invalidPatch"},
		{"expression without else", "x:MtaOutboundStrategy/set", `{"update":{"singleton":{"route":{"@type":"x","else":null}}}}`, "invalidProperties"},
		{"create on a singleton", "x:SystemSettings/set", `{"create":{"s":{"defaultHostname":"mx.a.test"}}}`, "singleton"},
		{"bad network", "x:SystemSettings/set", `{"update":{"singleton":{"proxyTrustedNetworks":{"0.0.0.0/0":true}}}}`, "invalidPatch"},
		{"immutable name", "x:MtaRoute/set", `{"update":{"ROUTE":{"name":"other"}}}`, "invalidProperties"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s := newTestServer(t)
			args := tt.args
			if strings.Contains(args, "ROUTE") {
				id, _ := s.Find("x:MtaRoute", "name", "mx")
				args = strings.ReplaceAll(args, "ROUTE", id)
			}
			name, res := call(t, s, tt.method, args)
			got := ""
			if name == "error" {
				got, _ = res["type"].(string)
			} else {
				for _, k := range []string{"notCreated", "notUpdated", "notDestroyed"} {
					for _, e := range mapOf(res[k]) {
						got, _ = e.(map[string]any)["type"].(string)
					}
				}
			}
			if got != tt.wantErr {
				t.Errorf("%s %s = %s %v; want error %s", tt.method, args, name, res, tt.wantErr)
			}
			if v := s.Violations(); len(v) == 0 {
				t.Errorf("no violation recorded for a malformed request")
			}
		})
	}
}

func mapOf(v any) map[string]any {
	m, _ := v.(map[string]any)
	return m
}

func TestRequestLevelErrors(t *testing.T) {
	s := newTestServer(t)
	for _, tt := range []struct {
		name, body, ctype string
		wantType          string
	}{
		{"not JSON", `{`, "application/json", "urn:ietf:params:jmap:error:notJSON"},
		{"wrong content type", `{` + using + `,"methodCalls":[]}`, "text/plain", "urn:ietf:params:jmap:error:notJSON"},
		{"unknown capability", `{"using":["urn:example:nope"],"methodCalls":[]}`, "application/json", "urn:ietf:params:jmap:error:notRequest"},
		{"no using", `{"methodCalls":[]}`, "application/json", "urn:ietf:params:jmap:error:notRequest"},
		{"bad call shape", `{` + using + `,"methodCalls":[["x:Domain/get",{}]]}`, "application/json", "urn:ietf:params:jmap:error:notRequest"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			req, _ := http.NewRequest(http.MethodPost, s.URL+"/jmap/", strings.NewReader(tt.body))
			req.SetBasicAuth(s.AdminUser, s.AdminPassword)
			req.Header.Set("Content-Type", tt.ctype)
			resp, err := s.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var p map[string]any
			_ = json.NewDecoder(resp.Body).Decode(&p)
			if resp.StatusCode != 400 || p["type"] != tt.wantType {
				t.Errorf("status %d type %v; want 400 %s", resp.StatusCode, p["type"], tt.wantType)
			}
		})
	}
	// POST /api is not the JMAP endpoint.
	req, _ := http.NewRequest(http.MethodPost, s.URL+"/api", strings.NewReader(`{}`))
	req.SetBasicAuth(s.AdminUser, s.AdminPassword)
	resp, err := s.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 404 {
		t.Errorf("POST /api = %d; want 404", resp.StatusCode)
	}
}

func TestSetSemantics(t *testing.T) {
	s := newTestServer(t)

	// Ids in Stalwart's alphabet; created ids, omitted empty maps.
	_, res := call(t, s, "x:Domain/set", `{"create":{"d1":{"name":"Example.ORG"},"d2":{"name":"other.test"}}}`)
	created := mapOf(res["created"])
	if id := mapOf(created["d1"])["id"]; id != "b" {
		t.Errorf("first domain id = %v; want b", id)
	}
	for _, k := range []string{"notCreated", "updated", "destroyed", "notUpdated", "notDestroyed"} {
		if _, ok := res[k]; ok {
			t.Errorf("reply has %q; empty maps must be omitted", k)
		}
	}

	// Duplicate: primaryKeyViolation naming the existing object.
	_, res = call(t, s, "x:Domain/set", `{"create":{"d3":{"name":"example.org"}}}`)
	e := mapOf(mapOf(res["notCreated"])["d3"])
	if e["type"] != "primaryKeyViolation" || mapOf(e["objectId"])["id"] != "b" || mapOf(e["objectId"])["object"] != "Domain" {
		t.Errorf("duplicate create = %v; want primaryKeyViolation naming Domain b", e)
	}

	// Reserved TLD refused.
	_, res = call(t, s, "x:Domain/set", `{"create":{"d4":{"name":"corp.example"}}}`)
	if e := mapOf(mapOf(res["notCreated"])["d4"]); e["type"] != "invalidPatch" {
		t.Errorf(".example domain = %v; want invalidPatch", e)
	}

	// An id Stalwart cannot parse is dropped silently.
	_, res = call(t, s, "x:Domain/set", `{"update":{"example.org":{"allowRelaying":true}}}`)
	if len(mapOf(res["updated"]))+len(mapOf(res["notUpdated"])) != 0 {
		t.Errorf("update of an unparseable id = %v; want it in neither map", res)
	}

	// JSON-pointer keys patch one Set member.
	_, res = call(t, s, "x:Domain/set", `{"update":{"b":{"aliases/alias.test":true,"allowRelaying":true}}}`)
	if _, ok := mapOf(res["updated"])["b"]; !ok {
		t.Fatalf("pointer update = %v; want b updated", res)
	}
	if d := s.Object("x:Domain", "b"); mapOf(d["aliases"])["alias.test"] != true || d["allowRelaying"] != true || d["name"] != "example.org" {
		t.Errorf("domain b = %v; want alias added, allowRelaying true, lower-case name", d)
	}
	call(t, s, "x:Domain/set", `{"update":{"b":{"aliases/alias.test":null}}}`)
	if d := s.Object("x:Domain", "b"); len(mapOf(d["aliases"])) != 0 {
		t.Errorf("aliases after removing = %v; want empty", d["aliases"])
	}

	// Nested objects are patched property-wise: else alone keeps match.
	call(t, s, "x:MtaOutboundStrategy/set", `{"update":{"singleton":{"route":{"else":"'source'"}}}}`)
	v, _ := s.Singleton("x:MtaOutboundStrategy")
	route := mapOf(v["route"])
	if route["else"] != "'source'" || len(mapOf(route["match"])) != 1 {
		t.Errorf("route after else-only patch = %v; want the default match kept", route)
	}

	// Expressions are compiled: unquoted unknown names fail, unquoted source compiles.
	_, res = call(t, s, "x:MtaOutboundStrategy/set", `{"update":{"singleton":{"route":{"match":{},"else":"mx"}}}}`)
	e = mapOf(mapOf(res["notUpdated"])["singleton"])
	if e["type"] != "validationFailed" || !strings.Contains(marshalCanonical(e), "Invalid variable or constant") {
		t.Errorf("unquoted mx = %v; want validationFailed naming the bad word", e)
	}
	_, res = call(t, s, "x:MtaOutboundStrategy/set", `{"update":{"singleton":{"route":{"match":{"0":{"if":"is_local_domain(rcpt_domain)","then":"source"}},"else":"'mx'"}}}}`)
	if _, ok := mapOf(res["updated"])["singleton"]; !ok {
		t.Errorf("unquoted source = %v; want it to compile (it is a variable)", res)
	}

	// The first SystemSettings write needs defaultHostname and defaultDomainId.
	_, res = call(t, s, "x:SystemSettings/set", `{"update":{"singleton":{"proxyTrustedNetworks":{"203.0.113.10/32":true}}}}`)
	e = mapOf(mapOf(res["notUpdated"])["singleton"])
	if e["type"] != "validationFailed" || !strings.Contains(marshalCanonical(e), "defaultHostname") || !strings.Contains(marshalCanonical(e), "defaultDomainId") {
		t.Errorf("first SystemSettings write = %v; want validationFailed Required defaultHostname, defaultDomainId", e)
	}
	_, res = call(t, s, "x:SystemSettings/set", `{"update":{"singleton":{"defaultHostname":"mx.example.org","defaultDomainId":"b","proxyTrustedNetworks":{"203.0.113.10/32":true,"10.1.2.3/8":true}}}}`)
	if _, ok := mapOf(res["updated"])["singleton"]; !ok {
		t.Fatalf("first write with defaults = %v; want updated", res)
	}
	// Networks read back normalised.
	_, res = call(t, s, "x:SystemSettings/get", `{"ids":["singleton"],"properties":["proxyTrustedNetworks"]}`)
	nets := mapOf(res["list"].([]any)[0].(map[string]any)["proxyTrustedNetworks"])
	if _, ok := nets["203.0.113.10"]; !ok || len(nets) != 2 || nets["10.0.0.0/8"] != true {
		t.Errorf("networks read back = %v; want 203.0.113.10 and 10.0.0.0/8", nets)
	}

	// Singleton rules.
	_, res = call(t, s, "x:SystemSettings/set", `{"destroy":["singleton"],"update":{"b":{"maxConnections":5}}}`)
	if e := mapOf(mapOf(res["notDestroyed"])["singleton"]); e["type"] != "singleton" {
		t.Errorf("destroy singleton = %v; want type singleton", e)
	}
	if e := mapOf(mapOf(res["notUpdated"])["b"]); e["type"] != "notFound" {
		t.Errorf("update singleton under another id = %v; want notFound", e)
	}

	// Linked objects cannot be destroyed.
	_, res = call(t, s, "x:Domain/set", `{"destroy":["b"]}`)
	if e := mapOf(mapOf(res["notDestroyed"])["b"]); e["type"] != "objectIsLinked" {
		t.Errorf("destroy default domain = %v; want objectIsLinked", e)
	}

	// Weak passwords are refused; strong ones work and log in.
	weak := `{"create":{"a":{"@type":"User","name":"alice","domainId":"c","credentials":{"0":{"@type":"Password","secret":"password1"}}}}}`
	_, res = call(t, s, "x:Account/set", weak)
	if e := mapOf(mapOf(res["notCreated"])["a"]); e["type"] != "invalidProperties" || !strings.Contains(e["description"].(string), "weak") {
		t.Errorf("weak password = %v; want invalidProperties too weak", e)
	}
	strong := strings.Replace(weak, "password1", "Corr3ct-Horse-Battery-Staple", 1)
	_, res = call(t, s, "x:Account/set", strong)
	if _, ok := mapOf(res["created"])["a"]; !ok {
		t.Fatalf("strong password = %v; want created", res)
	}
	if _, acct := s.Find("x:Account", "name", "alice"); acct["emailAddress"] != "alice@other.test" {
		t.Errorf("account = %v; want emailAddress alice@other.test", acct)
	}
	// Foreign keys must exist.
	_, res = call(t, s, "x:Account/set", strings.Replace(strings.Replace(strong, `"c"`, `"zz"`, 1), "alice", "bob", 1))
	if e := mapOf(mapOf(res["notCreated"])["a"]); e["type"] != "invalidForeignKey" {
		t.Errorf("account in missing domain = %v; want invalidForeignKey", e)
	}
	if v := s.Violations(); len(v) != 1 || !strings.Contains(v[0], "not an id") {
		t.Errorf("violations = %q; want only the unparseable id", v)
	}
}

func TestBackReferenceQueryGet(t *testing.T) {
	s := newTestServer(t)
	_, out := post(t, s, `{`+using+`,"methodCalls":[
		["x:MtaRoute/query",{"filter":{"name":"mx"}},"q"],
		["x:MtaRoute/get",{"#ids":{"resultOf":"q","name":"x:MtaRoute/query","path":"/ids"},"properties":["name","@type"]},"g"]]}`)
	resps := out["methodResponses"].([]any)
	get := resps[1].([]any)[1].(map[string]any)
	list := get["list"].([]any)
	if len(list) != 1 || list[0].(map[string]any)["name"] != "mx" || list[0].(map[string]any)["@type"] != "Mx" {
		t.Errorf("query+get = %v; want the seeded mx route", get)
	}
}

func TestFaults(t *testing.T) {
	for _, tt := range []struct {
		kind       FaultKind
		wantStatus int // 0: transport error
		wantError  string
	}{
		{FaultMethodError, 200, "serverFail"},
		{FaultSetError, 200, "forbidden"},
		{FaultHTTP500, 500, ""},
		{FaultTimeout, 0, ""},
		{FaultDrop, 0, ""},
	} {
		t.Run(tt.kind.String(), func(t *testing.T) {
			s := newTestServer(t)
			s.InjectFault(Fault{Kind: tt.kind, Method: "x:Domain/set"})
			body := `{` + using + `,"methodCalls":[["x:Domain/set",{"create":{"d":{"name":"a.test"}}},"c0"]]}`
			req, _ := http.NewRequest(http.MethodPost, s.URL+"/jmap/", strings.NewReader(body))
			req.SetBasicAuth(s.AdminUser, s.AdminPassword)
			cl := *s.Client()
			cl.Timeout = 300e6 // the held reply outlasts this
			resp, err := cl.Do(req)
			if tt.wantStatus == 0 {
				if err == nil {
					resp.Body.Close()
					t.Fatalf("got HTTP %d; want a transport error", resp.StatusCode)
				}
			} else {
				if err != nil {
					t.Fatal(err)
				}
				data, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != tt.wantStatus || !bytes.Contains(data, []byte(tt.wantError)) {
					t.Errorf("got %d %s; want %d with %q", resp.StatusCode, data, tt.wantStatus, tt.wantError)
				}
			}
			if n := s.Count("x:Domain"); n != 0 {
				t.Errorf("%d domains after a failed request without Commit; want 0", n)
			}
			if s.FaultsFired() != 1 {
				t.Errorf("FaultsFired = %d; want 1", s.FaultsFired())
			}
			// The fault fires once: the retry succeeds.
			resp2, status := post(t, s, body)
			if resp2 != 200 || s.Count("x:Domain") != 1 {
				t.Errorf("after the fault: %d %v; want the domain created", resp2, status)
			}
		})
	}
	t.Run("commit then drop", func(t *testing.T) {
		s := newTestServer(t)
		s.InjectFault(Fault{Kind: FaultDrop, Request: 1, Commit: true})
		body := `{` + using + `,"methodCalls":[["x:Domain/set",{"create":{"d":{"name":"a.test"}}},"c0"]]}`
		req, _ := http.NewRequest(http.MethodPost, s.URL+"/jmap/", strings.NewReader(body))
		req.SetBasicAuth(s.AdminUser, s.AdminPassword)
		if resp, err := s.Client().Do(req); err == nil {
			resp.Body.Close()
			t.Fatalf("got a reply; want the connection dropped")
		}
		if n := s.Count("x:Domain"); n != 1 {
			t.Errorf("%d domains; want 1 (the server did the work, the reply was lost)", n)
		}
	})
}

func TestMailMethods(t *testing.T) {
	s := newTestServer(t)
	did, err := s.SeedWizard("mx.example.org", "example.org")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Seed("x:Account", map[string]any{"@type": "User", "name": "probe", "domainId": did,
		"credentials": map[string]any{"0": map[string]any{"@type": "Password", "secret": "Corr3ct-Horse-Battery-Staple"}}}); err != nil {
		t.Fatal(err)
	}
	raw := "Received: from a ([198.51.100.7])\r\n\tby mx\r\nMessage-ID: <p1@splitcheck.test>\r\nX-Probe: p1\r\nSubject: probe\r\n\r\nbody\r\n"
	if _, err := s.Deliver("probe@example.org", "junk", []byte(raw)); err != nil {
		t.Fatal(err)
	}
	// As the account.
	do := func(user, pass, body string) (int, map[string]any) {
		req, _ := http.NewRequest(http.MethodPost, s.URL+"/jmap/", strings.NewReader(body))
		req.SetBasicAuth(user, pass)
		resp, err := s.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&out)
		return resp.StatusCode, out
	}
	acct := "b"
	status, out := do("probe@example.org", "Corr3ct-Horse-Battery-Staple", `{"using":["urn:ietf:params:jmap:core","urn:ietf:params:jmap:mail"],"methodCalls":[
		["Email/query",{"accountId":"`+acct+`","filter":{"inMailbox":"c"},"sort":[{"property":"receivedAt","isAscending":false}],"limit":10},"q"],
		["Email/get",{"accountId":"`+acct+`","#ids":{"resultOf":"q","name":"Email/query","path":"/ids"},"properties":["messageId","mailboxIds","header:Received:asText:all","header:X-Probe:asText"]},"g"]]}`)
	if status != 200 {
		t.Fatalf("status %d %v", status, out)
	}
	get := out["methodResponses"].([]any)[1].([]any)[1].(map[string]any)
	list := get["list"].([]any)
	if len(list) != 1 {
		t.Fatalf("Email/get = %v; want one message", get)
	}
	e := list[0].(map[string]any)
	if ids := e["messageId"].([]any); ids[0] != "p1@splitcheck.test" || e["header:X-Probe:asText"] != "p1" {
		t.Errorf("email = %v; want Message-ID p1@splitcheck.test and X-Probe p1", e)
	}
	if rcv := e["header:Received:asText:all"].([]any); len(rcv) != 1 || !strings.Contains(rcv[0].(string), "198.51.100.7") {
		t.Errorf("Received = %v; want the unfolded header", rcv)
	}
	// The admin cannot read the account's mail; mail methods need the mail capability.
	_, out = do(s.AdminUser, s.AdminPassword, `{"using":["urn:ietf:params:jmap:core","urn:ietf:params:jmap:mail"],"methodCalls":[["Email/query",{"accountId":"b"},"q"]]}`)
	if r := out["methodResponses"].([]any)[0].([]any); r[0] != "error" {
		t.Errorf("admin Email/query = %v; want an error", r)
	}
	// The account cannot use the management API.
	_, out = do("probe@example.org", "Corr3ct-Horse-Battery-Staple", `{`+using+`,"methodCalls":[["x:Domain/get",{"ids":null},"g"]]}`)
	if r := out["methodResponses"].([]any)[0].([]any); r[0] != "error" || r[1].(map[string]any)["type"] != "forbidden" {
		t.Errorf("account x:Domain/get = %v; want forbidden", r)
	}
}

func TestDumpIgnoresEmptyAndDefaults(t *testing.T) {
	s := newTestServer(t)
	before := s.Dump()
	call(t, s, "x:MtaOutboundStrategy/set", `{"update":{"singleton":{"route":{"match":{"0":{"if":"is_local_domain(rcpt_domain)","then":"'local'"}},"else":"'mx'"}}}}`)
	if after := s.Dump(); after != before {
		t.Errorf("writing the default route changed Dump:\n%s\n%s", before, after)
	}
	call(t, s, "x:MtaOutboundStrategy/set", `{"update":{"singleton":{"route":{"match":{},"else":"'mx'"}}}}`)
	if after := s.Dump(); after == before {
		t.Errorf("Dump did not change after a real change")
	}
}

func TestPointerPatchEscapesAndLists(t *testing.T) {
	s := newTestServer(t)
	if _, err := s.SeedWizard("mx.example.org", "example.org"); err != nil {
		t.Fatal(err)
	}
	// "/" in a CIDR is escaped as ~1 in a JSON-pointer key.
	_, res := call(t, s, "x:SystemSettings/set", `{"update":{"singleton":{"proxyTrustedNetworks/10.0.0.0~18":true,"proxyTrustedNetworks/127.0.0.9":true}}}`)
	if _, ok := mapOf(res["updated"])["singleton"]; !ok {
		t.Fatalf("pointer update = %v", res)
	}
	v, _ := s.Singleton("x:SystemSettings")
	nets := mapOf(v["proxyTrustedNetworks"])
	if len(nets) != 2 || nets["10.0.0.0/8"] != true || nets["127.0.0.9"] != true {
		t.Errorf("networks = %v; want 10.0.0.0/8 and 127.0.0.9", nets)
	}
	// A List item patched in place, and one removed (the rest renumbered).
	call(t, s, "x:MtaOutboundStrategy/set", `{"update":{"singleton":{"route":{"match":{"0":{"if":"is_local_address(rcpt)","then":"'local'"},"1":{"if":"is_local_domain(rcpt_domain)","then":"'source'"}},"else":"'mx'"}}}}`)
	call(t, s, "x:MtaOutboundStrategy/set", `{"update":{"singleton":{"route/match/1/then":"'mx'"}}}`)
	call(t, s, "x:MtaOutboundStrategy/set", `{"update":{"singleton":{"route/match/0":null}}}`)
	v, _ = s.Singleton("x:MtaOutboundStrategy")
	match := mapOf(mapOf(v["route"])["match"])
	if len(match) != 1 || mapOf(match["0"])["then"] != "'mx'" {
		t.Errorf("match after pointer patches = %v; want one rule, then 'mx'", match)
	}
	if v := s.Violations(); len(v) != 0 {
		t.Errorf("violations: %v", v)
	}
}

// TestSingletonVariants: a multi-variant singleton reads as its default variant
// (System for x:DnsResolver) and an update carrying another "@type" switches it,
// exactly as api-notes §2.6 shows; an unknown variant is refused.
func TestSingletonVariants(t *testing.T) {
	for _, tt := range []struct {
		name, patch   string
		wantType      string
		wantUpdated   bool
		wantViolation bool
		check         func(t *testing.T, v map[string]any)
	}{
		{name: "default is System", wantType: "System"},
		{name: "switch to Custom (api-notes 2.6)",
			patch:    `{"@type":"Custom","servers":{"0":{"address":"172.28.0.53","port":5353,"protocol":"udp"}}}`,
			wantType: "Custom", wantUpdated: true,
			check: func(t *testing.T, v map[string]any) {
				srv := mapOf(mapOf(v["servers"])["0"])
				if srv["address"] != "172.28.0.53" || srv["port"] != float64(5353) || srv["protocol"] != "udp" {
					t.Errorf("servers.0 = %v; want 172.28.0.53:5353 udp", srv)
				}
				if v["attempts"] != float64(2) || v["timeout"] != float64(5000) {
					t.Errorf("attempts, timeout = %v, %v; want the Custom defaults 2 and 5000", v["attempts"], v["timeout"])
				}
			}},
		{name: "Custom without servers", patch: `{"@type":"Custom"}`, wantType: "System"},
		{name: "unknown variant", patch: `{"@type":"Bogus"}`, wantType: "System", wantViolation: true},
		{name: "property of another variant", patch: `{"servers":{"0":{"address":"10.0.0.53"}}}`, wantType: "System", wantViolation: true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s := newTestServer(t)
			before := s.Dump()
			if tt.patch != "" {
				_, res := call(t, s, "x:DnsResolver/set", `{"update":{"singleton":`+tt.patch+`}}`)
				if _, got := mapOf(res["updated"])["singleton"]; got != tt.wantUpdated {
					t.Errorf("updated = %v (reply %v); want %v", got, res, tt.wantUpdated)
				}
			}
			_, res := call(t, s, "x:DnsResolver/get", `{"ids":["singleton"]}`)
			list, _ := res["list"].([]any)
			if len(list) != 1 {
				t.Fatalf("get = %v; want one object", res)
			}
			v := mapOf(list[0])
			if v["@type"] != tt.wantType {
				t.Errorf("@type = %v; want %s", v["@type"], tt.wantType)
			}
			if tt.check != nil {
				tt.check(t, v)
			}
			if changed := s.Dump() != before; changed != tt.wantUpdated {
				t.Errorf("Dump changed = %v; want %v", changed, tt.wantUpdated)
			}
			if got := len(s.Violations()) > 0; got != tt.wantViolation {
				t.Errorf("violations = %q; want some: %v", s.Violations(), tt.wantViolation)
			}
		})
	}
}

// TestSingletonVariantSwitchBack: switching back to System drops the Custom
// servers, and patching within a variant keeps what the patch does not name.
func TestSingletonVariantSwitchBack(t *testing.T) {
	s := newTestServer(t)
	call(t, s, "x:DnsResolver/set", `{"update":{"singleton":{"@type":"Custom","servers":{"0":{"address":"172.28.0.53","port":5353}}}}}`)
	call(t, s, "x:DnsResolver/set", `{"update":{"singleton":{"@type":"Custom","attempts":3}}}`)
	v, stored := s.Singleton("x:DnsResolver")
	if !stored || fmt.Sprint(v["attempts"]) != "3" || len(mapOf(v["servers"])) != 1 {
		t.Errorf("after a same-variant patch = %v; want attempts 3 and the server kept", v)
	}
	call(t, s, "x:DnsResolver/set", `{"update":{"singleton":{"@type":"System"}}}`)
	v, _ = s.Singleton("x:DnsResolver")
	if v["@type"] != "System" || v["servers"] != nil {
		t.Errorf("after switching back = %v; want System without servers", v)
	}
	if got := s.Violations(); len(got) != 0 {
		t.Errorf("violations: %q", got)
	}
}

// TestGetMasksSecrets: as Stalwart does, get returns "****" for every secret (a
// relay's authSecret, a password credential) while the server keeps the real
// one: the account still logs in with its password.
func TestGetMasksSecrets(t *testing.T) {
	s := newTestServer(t)
	_, res := call(t, s, "x:Domain/set", `{"create":{"d":{"name":"masked.test"}}}`)
	did, _ := mapOf(mapOf(res["created"])["d"])["id"].(string)
	_, res = call(t, s, "x:MtaRoute/set", `{"create":{"r":{"@type":"Relay","name":"src","address":"old.masked.test",`+
		`"authUsername":"u","authSecret":{"@type":"Value","secret":"Relay-Secret-Value-77"}}}}`)
	rid, _ := mapOf(mapOf(res["created"])["r"])["id"].(string)
	const pw = "Corr3ct-Horse-Battery-Staple-Masked"
	_, res = call(t, s, "x:Account/set", `{"create":{"a":{"@type":"User","name":"carol","domainId":"`+did+`",`+
		`"credentials":{"0":{"@type":"Password","secret":"`+pw+`"}}}}}`)
	aid, _ := mapOf(mapOf(res["created"])["a"])["id"].(string)
	if rid == "" || aid == "" {
		t.Fatalf("setup failed: route %q account %q", rid, aid)
	}

	_, got := call(t, s, "x:MtaRoute/get", `{"ids":["`+rid+`"]}`)
	route := mapOf(got["list"].([]any)[0])
	if sec := mapOf(route["authSecret"]); sec["@type"] != "Value" || sec["secret"] != MaskedSecret {
		t.Errorf("route authSecret on get = %v; want the Value masked as %q", route["authSecret"], MaskedSecret)
	}
	if route["authUsername"] != "u" || route["address"] != "old.masked.test" {
		t.Errorf("route on get = %v; want the other fields as stored", route)
	}
	_, got = call(t, s, "x:Account/get", `{"ids":["`+aid+`"]}`)
	cred := mapOf(mapOf(mapOf(got["list"].([]any)[0])["credentials"])["0"])
	if cred["secret"] != MaskedSecret {
		t.Errorf("credential on get = %v; want its secret masked", cred)
	}
	// The store keeps the real values.
	if _, r := s.Find("x:MtaRoute", "name", "src"); mapOf(r["authSecret"])["secret"] != "Relay-Secret-Value-77" {
		t.Errorf("stored authSecret = %v; want the real secret", r["authSecret"])
	}
	for _, tt := range []struct {
		pass string
		want int
	}{{pw, http.StatusOK}, {MaskedSecret, http.StatusUnauthorized}} {
		req, _ := http.NewRequest(http.MethodGet, s.URL+"/jmap/session", nil)
		req.SetBasicAuth("carol@masked.test", tt.pass)
		resp, err := s.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tt.want {
			t.Errorf("login with %q after a masked get: HTTP %d; want %d", tt.pass, resp.StatusCode, tt.want)
		}
	}
	if v := s.Violations(); len(v) != 0 {
		t.Errorf("violations = %q", v)
	}
}
