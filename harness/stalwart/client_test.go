package stalwart

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/splitcheck/splitcheck/harness/stalwart/stalwarttest"
)

func TestClientPostsToTheSessionsAPIPath(t *testing.T) {
	f := newFixture(t, "", func(s *stalwarttest.Server) {
		// apiUrl names the proxy; the client must keep only its path.
		s.PublicURL = "https://mail.proxy.test:8443"
		s.APIPath = "/custom/jmap/"
	})
	sess, err := f.c.Session(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if sess.APIURL != "https://mail.proxy.test:8443/custom/jmap/" {
		t.Errorf("apiUrl = %q", sess.APIURL)
	}
	if _, err := f.c.Query(context.Background(), ObjDomain, map[string]any{"name": "example.org"}); err != nil {
		t.Fatalf("Query: %v", err)
	}
	for _, r := range f.srv.Requests() {
		if r.N > 0 && r.Path != "/custom/jmap/" {
			t.Errorf("API request went to %q; want /custom/jmap/", r.Path)
		}
	}
}

func TestAuthErrorNamesCredentialsNotSecrets(t *testing.T) {
	f := newFixture(t, "", func(s *stalwarttest.Server) { s.Token = "good-token-123456" })
	for _, tt := range []struct {
		name  string
		creds Credentials
		want  string
		leak  string
	}{
		{"basic", BasicAuth("admin", "Wrong-Password-9911"), `user "admin"`, "Wrong-Password-9911"},
		{"bearer", BearerToken("bad-token-77881234"), "bearer token", "bad-token-77881234"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := &Client{URL: f.srv.URL, Credentials: tt.creds}
			_, err := c.Plan(context.Background(), f.d)
			var ae *AuthError
			if !errors.As(err, &ae) || !errors.Is(err, ErrUnauthorized) {
				t.Fatalf("Plan with bad credentials = %v; want an AuthError", err)
			}
			if !strings.Contains(err.Error(), tt.want) || strings.Contains(err.Error(), tt.leak) {
				t.Errorf("error %q; want it to name %s and not show the secret", err, tt.want)
			}
			for _, s := range []string{fmt.Sprintf("%v %+v %#v %s", tt.creds, tt.creds, tt.creds, tt.creds)} {
				if strings.Contains(s, tt.leak) {
					t.Errorf("credentials print their secret: %s", s)
				}
			}
		})
	}
	c := &Client{URL: f.srv.URL, Credentials: BearerToken("good-token-123456")}
	if _, err := c.Plan(context.Background(), f.d); err != nil {
		t.Errorf("Plan with the right token: %v", err)
	}
}

func TestRetriesOnlySafeRequests(t *testing.T) {
	for _, tt := range []struct {
		name      string
		kind      stalwarttest.FaultKind
		method    string
		run       func(*fixture) error
		wantErr   bool
		wantPosts int
	}{
		{"get retried after 500", stalwarttest.FaultHTTP500, "x:Domain/get", func(f *fixture) error {
			_, err := f.c.Get(context.Background(), ObjDomain, nil, "name")
			return err
		}, false, 2},
		{"query retried after a dropped connection", stalwarttest.FaultDrop, "x:Domain/query", func(f *fixture) error {
			_, err := f.c.Query(context.Background(), ObjDomain, nil)
			return err
		}, false, 2},
		{"set not retried after 500", stalwarttest.FaultHTTP500, "x:Domain/set", func(f *fixture) error {
			_, err := f.c.Set(context.Background(), ObjDomain, SetRequest{Create: map[string]any{"d": map[string]any{"name": "new.test"}}})
			return err
		}, true, 1},
		{"set not retried after a dropped connection", stalwarttest.FaultDrop, "x:Domain/set", func(f *fixture) error {
			_, err := f.c.Set(context.Background(), ObjDomain, SetRequest{Create: map[string]any{"d": map[string]any{"name": "new.test"}}})
			return err
		}, true, 1},
		{"method errors are not retried", stalwarttest.FaultMethodError, "x:Domain/get", func(f *fixture) error {
			_, err := f.c.Get(context.Background(), ObjDomain, nil)
			return err
		}, true, 1},
	} {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, "")
			f.srv.InjectFault(stalwarttest.Fault{Kind: tt.kind, Method: tt.method})
			err := tt.run(f)
			if (err != nil) != tt.wantErr {
				t.Errorf("err = %v; want error %v", err, tt.wantErr)
			}
			if got := f.srv.RequestCount(); got != tt.wantPosts {
				t.Errorf("%d requests; want %d", got, tt.wantPosts)
			}
		})
	}
}

func TestTimeoutIsBounded(t *testing.T) {
	f := newFixture(t, "")
	f.c.Timeout = 200 * time.Millisecond
	f.c.MaxAttempts = 1
	f.srv.InjectFault(stalwarttest.Fault{Kind: stalwarttest.FaultTimeout, Method: "x:Domain/set"})
	_, err := f.c.Set(context.Background(), ObjDomain, SetRequest{Create: map[string]any{"d": map[string]any{"name": "new.test"}}})
	if err == nil || !strings.Contains(err.Error(), "Timeout") {
		t.Errorf("Set against a server that never answers = %v; want a client timeout", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := f.c.Get(ctx, ObjDomain, nil); !errors.Is(err, context.Canceled) {
		t.Errorf("Get with a cancelled context = %v; want context.Canceled", err)
	}
}

func TestTypedErrors(t *testing.T) {
	f := newFixture(t, "")
	ctx := context.Background()

	_, err := f.c.Set(ctx, ObjDomain, SetRequest{Create: map[string]any{"d": map[string]any{"name": "example.org"}}})
	var se *SetError
	if !errors.As(err, &se) || se.Type != "primaryKeyViolation" || se.ObjectID == nil || se.ObjectID.ID != "b" ||
		se.Op != "create" || se.ID != "d" || se.Method != "x:Domain/set" || len(se.Properties) != 1 {
		t.Errorf("duplicate domain = %v (%+v); want a create SetError naming Domain b", err, se)
	}

	_, err = f.c.Set(ctx, ObjSystemSettings, SetRequest{Update: map[string]any{SingletonID: map[string]any{"maxConnections": 0}}})
	if !errors.As(err, &se) || se.Type != "validationFailed" || len(se.ValidationErrors) != 1 || se.ValidationErrors[0].Type != "MinValue" {
		t.Errorf("maxConnections 0 = %v; want validationFailed MinValue", err)
	}

	_, err = f.c.Set(ctx, ObjDomain, SetRequest{Update: map[string]any{"example.org": map[string]any{"allowRelaying": true}}})
	if !errors.Is(err, ErrNotAcknowledged) {
		t.Errorf("update by name = %v; want ErrNotAcknowledged", err)
	}

	_, err = f.c.Query(ctx, ObjDomain, map[string]any{"domain": "x"})
	var me *MethodError
	if !errors.As(err, &me) || me.Type != "unsupportedFilter" || me.Method != "x:Domain/query" {
		t.Errorf("bad filter = %v; want a MethodError unsupportedFilter", err)
	}

	// Several refusals in one call: every one is reported.
	_, err = f.c.Set(ctx, ObjDomain, SetRequest{Destroy: []string{"zz", "b"}})
	if err == nil || !strings.Contains(err.Error(), "destroy zz: notFound") || !strings.Contains(err.Error(), "destroy b: objectIsLinked") {
		t.Errorf("two failed destroys = %v; want both reported", err)
	}
	// The two "violations" above (name as id, bad filter) were on purpose.
	if v := f.srv.Violations(); len(v) != 2 {
		t.Errorf("violations = %q; want exactly the two deliberate ones", v)
	}
}

func TestHTTPErrors(t *testing.T) {
	f := newFixture(t, "")
	f.srv.InjectFault(stalwarttest.Fault{Kind: stalwarttest.FaultHTTP500, Count: 3})
	_, err := f.c.Get(context.Background(), ObjDomain, nil)
	var he *HTTPError
	if !errors.As(err, &he) || he.Status != 500 || !he.Temporary() {
		t.Errorf("three 500s = %v; want an HTTPError 500 after the retries", err)
	}
	if n := f.srv.RequestCount(); n != DefaultMaxAttempts {
		t.Errorf("%d attempts; want %d", n, DefaultMaxAttempts)
	}
}
