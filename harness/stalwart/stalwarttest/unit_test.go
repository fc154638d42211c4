package stalwarttest

import (
	"strings"
	"testing"
)

func TestIDs(t *testing.T) {
	for _, tt := range []struct {
		n    uint64
		want string
	}{{0, "a"}, {1, "b"}, {31, "3"}, {32, "ba"}, {20080258862541, "singleton"}} {
		if got := encodeID(tt.n); got != tt.want {
			t.Errorf("encodeID(%d) = %q; want %q", tt.n, got, tt.want)
		}
		if got, ok := decodeID(tt.want); !ok || got != tt.n {
			t.Errorf("decodeID(%q) = %d, %v; want %d", tt.want, got, ok, tt.n)
		}
	}
	for _, bad := range []string{"", "example.org", "B", "8", "aaaaaaaaaaaaaa"} {
		if _, ok := decodeID(bad); ok {
			t.Errorf("decodeID(%q) ok; want refused", bad)
		}
	}
}

func TestCompileExpr(t *testing.T) {
	for _, tt := range []struct {
		src     string
		wantErr string
	}{
		{"'mx'", ""},
		{"is_local_address(rcpt)", ""},
		{"is_local_domain(rcpt_domain)", ""},
		{"retry_num > 0 && last_error == 'tls'", ""},
		{"source == 'dsn'", ""},
		{"source", ""}, // compiles: a variable, which is why it is a trap
		{"mx", "Invalid variable or constant"},
		{"local", "Invalid variable or constant"},
		{"is_local_domain('*', rcpt_domain)", "expects 1 arguments"},
		{"no_such_fn(rcpt)", "Unknown function"},
		{"is_local_domain(rcpt_domain", "Unmatched"},
		{"'unterminated", "Unterminated"},
		{"rcpt ==", "ends with an operator"},
		{"", "empty"},
	} {
		err := compileExpr(tt.src)
		switch {
		case tt.wantErr == "" && err != nil:
			t.Errorf("compileExpr(%q) = %v; want ok", tt.src, err)
		case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
			t.Errorf("compileExpr(%q) = %v; want an error containing %q", tt.src, err, tt.wantErr)
		}
	}
}

func TestSchemaRequired(t *testing.T) {
	s := sharedSchema()
	for _, tt := range []struct {
		fields string
		want   string
	}{
		{"x:Domain", "name"},
		{"x:MtaRouteRelay", "address,name"},
		{"x:SystemSettings", "defaultDomainId,defaultHostname"},
		{"x:UserAccount", "domainId,name"},
		{"x:Expression", "else"},
	} {
		if got := strings.Join(requiredProps(s.Fields[tt.fields]), ","); got != tt.want {
			t.Errorf("requiredProps(%s) = %q; want %q", tt.fields, got, tt.want)
		}
	}
	if !strongPassword("Corr3ct-Horse-Battery-Staple") || strongPassword("Passw0rd!") || strongPassword("aaaaaaaaaaaaaaaaaaaaaaaa") {
		t.Errorf("strongPassword disagrees with the documented examples")
	}
}
