package stalwart

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/splitcheck/splitcheck/harness/stalwart/stalwarttest"
)

// TestSecretsNeverInOutput runs plan, apply (verified), a failing apply and
// rollback, and greps everything they return or log for every secret involved.
func TestSecretsNeverInOutput(t *testing.T) {
	f := newFixture(t, "")
	ctx := context.Background()
	var out []string
	add := func(vs ...any) {
		for _, v := range vs {
			out = append(out, fmt.Sprintf("%v | %+v | %#v", v, v, v))
			if b, err := json.Marshal(v); err == nil {
				out = append(out, string(b))
			}
		}
	}

	p, err := f.c.Plan(ctx, f.d)
	if err != nil {
		t.Fatal(err)
	}
	add(p, p.Changes, f.d, f.c.Credentials)

	res, err := f.c.Apply(ctx, f.d, ApplyOptions{SnapshotPath: f.snapPath("s1.json"), Hermetic: true, Verify: true})
	if err != nil {
		t.Fatal(err)
	}
	add(res.Plan, res.Applied, res.Restart, res.Verified, res.Pending)
	secrets := []string{testAdminPassword, testRelaySecret}
	for _, a := range res.Snapshot.Accounts {
		secrets = append(secrets, a.Password)
	}

	// A failing apply (another account, a refused write) and its restore report.
	f2 := f.d
	f2.TestAccounts = []string{"second@migrated.test"}
	f.srv.InjectFault(stalwarttest.Fault{Kind: stalwarttest.FaultSetError, Method: "x:Action/set"})
	res2, err := f.c.Apply(ctx, f2, ApplyOptions{SnapshotPath: f.snapPath("s2.json"), Hermetic: true})
	var ae *ApplyError
	if !errors.As(err, &ae) || len(ae.Restored) == 0 {
		t.Fatalf("Apply with a refused action = %v; want an ApplyError with a restore", err)
	}
	add(err.Error(), ae.Restored, ae.Kept, res2.Plan)
	for _, a := range res2.Snapshot.Accounts {
		secrets = append(secrets, a.Password)
	}

	rb, err := f.c.Rollback(ctx, res.Snapshot, RollbackOptions{Hermetic: true})
	if err != nil {
		t.Fatal(err)
	}
	add(rb, rb.Changes)
	// A refused login.
	bad := &Client{URL: f.srv.URL, Credentials: BasicAuth("admin", "Wrong-But-Secret-4471")}
	_, err = bad.Plan(ctx, f.d)
	add(err.Error())
	secrets = append(secrets, "Wrong-But-Secret-4471")
	out = append(out, f.logs.String())

	all := strings.Join(out, "\n")
	for _, s := range secrets {
		if len(s) < 8 {
			t.Fatalf("secret %q too short to grep for", s)
		}
		if strings.Contains(all, s) {
			i := strings.Index(all, s)
			t.Errorf("secret %q appears in the output: ...%s...", s[:3]+"***", all[max(0, i-80):i])
		}
	}
	if !strings.Contains(f.logs.String(), "stalwart: request") {
		t.Errorf("the debug log is empty; the grep would prove nothing")
	}
}

func TestRedactErr(t *testing.T) {
	base := errors.New(`stalwart: x:Account/set: create a0: invalidProperties: value "Hunter2-Hunter2" is weak`)
	err := redactErr(fmt.Errorf("apply: %w", base), []string{"Hunter2-Hunter2", ""})
	if strings.Contains(err.Error(), "Hunter2") || !strings.Contains(err.Error(), "(redacted)") {
		t.Errorf("redacted = %q", err)
	}
	if !errors.Is(err, base) {
		t.Errorf("redaction lost the error chain")
	}
	if redactErr(nil, []string{"x"}) != nil {
		t.Errorf("redactErr(nil) != nil")
	}
}

func TestGeneratePassword(t *testing.T) {
	seen := map[string]bool{}
	for range 50 {
		pw, err := GeneratePassword(0)
		if err != nil {
			t.Fatal(err)
		}
		if len(pw) < 24 || seen[pw] {
			t.Fatalf("password %d characters, repeated %v; want 24+ and unique", len(pw), seen[pw])
		}
		seen[pw] = true
		if !strings.ContainsAny(pw, "0123456789") || strings.ToLower(pw) == pw || strings.ToUpper(pw) == pw {
			t.Errorf("password lacks a character class")
		}
	}
	if pw, _ := GeneratePassword(40); len(pw) != 40 {
		t.Errorf("GeneratePassword(40) has %d characters", len(pw))
	}
}
