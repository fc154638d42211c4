package stalwart

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// seeds adds every testdata capture (management-API replies and files) to f.
func seeds(f *testing.F, names ...string) {
	f.Helper()
	for _, n := range names {
		data, err := os.ReadFile(filepath.Join("testdata", n))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Add([]byte(`{}`))
	f.Add([]byte(`{"methodResponses":[]}`))
	f.Add([]byte(`{"methodResponses":[["x",1,"c"]]}`))
}

func FuzzParseResponse(f *testing.F) {
	seeds(f, "set-created.json", "set-refused.json", "set-expression-error.json", "method-error.json", "query-get.json")
	f.Fuzz(func(t *testing.T, data []byte) {
		resps, err := ParseResponse(data)
		if err != nil {
			return
		}
		for _, r := range resps {
			if len(r.Args) == 0 || strings.TrimSpace(string(r.Args))[0] != '{' {
				t.Errorf("response %q has non-object arguments %q", r.Name, r.Args)
			}
			if e := r.Err("m"); (e != nil) != (r.Name == "error") {
				t.Errorf("Err() = %v for a response named %q", e, r.Name)
			}
		}
	})
}

// FuzzParseSetResponse checks the acknowledgement contract: whatever the reply,
// a nil error means every create, update and destroy was acknowledged.
func FuzzParseSetResponse(f *testing.F) {
	for _, n := range []string{"set-created.json", "set-refused.json", "set-expression-error.json"} {
		data, err := os.ReadFile(filepath.Join("testdata", n))
		if err != nil {
			f.Fatal(err)
		}
		resps, err := ParseResponse(data)
		if err != nil {
			f.Fatal(err)
		}
		f.Add([]byte(resps[0].Args))
	}
	f.Add([]byte(`{"created":{"d1":{}},"updated":{},"destroyed":null}`))
	f.Add([]byte(`{"notCreated":{"d1":null}}`))
	req := SetRequest{Create: map[string]any{"d1": map[string]any{}}, Update: map[string]any{"b": map[string]any{}}, Destroy: []string{"c"}}
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := ParseSetResponse("x:Domain/set", req, data)
		if r == nil {
			if err == nil {
				t.Fatalf("nil response and nil error")
			}
			return
		}
		if err == nil {
			if _, ok := r.CreatedID("d1"); !ok {
				t.Errorf("nil error without d1 created: %s", data)
			}
			if _, ok := r.Updated["b"]; !ok {
				t.Errorf("nil error without b updated: %s", data)
			}
			if !slices.Contains(r.Destroyed, "c") {
				t.Errorf("nil error without c destroyed: %s", data)
			}
			return
		}
		var se *SetError
		if errors.As(err, &se) && (se.Method != "x:Domain/set" || se.Op == "" || se.ID == "") {
			t.Errorf("SetError without its method, op or id: %+v", se)
		}
	})
}

// FuzzExpression: whatever decodes re-encodes to the same expression.
func FuzzExpression(f *testing.F) {
	seeds(f, "route.json")
	f.Add([]byte(`{"else":"'mx'"}`))
	f.Add([]byte(`{"match":[{"if":"a","then":"'b'"}],"else":"'c'"}`))
	f.Add([]byte(`{"match":{"1":{"if":"a","then":"b"},"0":{"if":"c","then":"d"}},"else":"e"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		var e Expression
		if err := json.Unmarshal(data, &e); err != nil {
			return
		}
		b, err := json.Marshal(e)
		if err != nil {
			t.Fatalf("Marshal: %v", err)
		}
		var back Expression
		if err := json.Unmarshal(b, &back); err != nil {
			t.Fatalf("re-decoding %s: %v", b, err)
		}
		if !back.Equal(e) {
			t.Errorf("round trip changed %+v into %+v", e, back)
		}
		if !strings.HasPrefix(string(b), `{"match":{`) {
			t.Errorf("encoding %s does not start with match", b)
		}
	})
}

func FuzzParseSnapshot(f *testing.F) {
	seeds(f, "snapshot.json")
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := ParseSnapshot(data)
		if err != nil {
			return
		}
		if s.Version != SnapshotVersion {
			t.Errorf("accepted version %d", s.Version)
		}
		d := s.desired() // must not panic
		if len(d.Domains) != len(s.Domains) {
			t.Errorf("desired has %d domains for %d in the snapshot", len(d.Domains), len(s.Domains))
		}
	})
}

func FuzzParseQueuedMessages(f *testing.F) {
	seeds(f, "queued-messages.json")
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, data []byte) {
		var list []json.RawMessage
		if json.Unmarshal(data, &list) != nil {
			return
		}
		entries, err := ParseQueuedMessages(list, "")
		if err != nil {
			return
		}
		for _, e := range entries {
			_ = e.String()
			if e.Recipient == "" && len(entries) > 0 && !strings.Contains(string(data), `""`) {
				t.Errorf("entry without a recipient from %s", data)
			}
		}
	})
}

func TestParseCapturedReplies(t *testing.T) {
	data, _ := os.ReadFile(filepath.Join("testdata", "set-refused.json"))
	resps, err := ParseResponse(data)
	if err != nil {
		t.Fatal(err)
	}
	req := SetRequest{Create: map[string]any{"d1": nil}, Update: map[string]any{"b": nil}, Destroy: []string{"c"}}
	_, err = ParseSetResponse("x:Domain/set", req, resps[0].Args)
	msg := err.Error()
	for _, want := range []string{
		"create d1: primaryKeyViolation: A domain with this name already exists (properties: name) (existing: Domain b)",
		"update b: validationFailed (validation: Required defaultHostname; Required defaultDomainId)",
		"destroy c: objectIsLinked (linked: Account d)",
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("error\n%s\nwant it to contain\n%s", msg, want)
		}
	}
	data, _ = os.ReadFile(filepath.Join("testdata", "method-error.json"))
	resps, _ = ParseResponse(data)
	var me *MethodError
	if err := resps[0].Err("x:Domain/get"); !errors.As(err, &me) || me.Type != "forbidden" || !strings.Contains(err.Error(), "bootstrap mode") {
		t.Errorf("method error = %v", err)
	}
}
