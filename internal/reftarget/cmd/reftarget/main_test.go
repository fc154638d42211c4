package main

import (
	"bytes"
	"errors"
	"net"
	"strings"
	"testing"

	"go.uber.org/goleak"

	"github.com/splitcheck/splitcheck/internal/reftarget"
	"github.com/splitcheck/splitcheck/internal/reftarget/reftargettest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// A loopback block of its own: package tests run in parallel with
// internal/reftarget's, which uses 127.0.2.x.
var testOptions = reftarget.Options{
	ProxyListen:      "127.0.3.1:25",
	PlainListen:      "127.0.3.2:25",
	SubmissionListen: "127.0.3.1:587",
	IMAPListen:       "127.0.3.1:143",
	SourceRelay:      "127.0.3.4:2525",
	Nameserver:       "127.0.3.53",
}

func TestParseArgs(t *testing.T) {
	for _, tt := range []struct {
		name      string
		args      []string
		wantErr   bool
		wantCmd   string
		wantMut   reftarget.Mutation
		wantAccts int
	}{
		{"no subcommand", nil, true, "", "", 0},
		{"other subcommand", []string{"run", "--", "true"}, true, "", "", 0},
		{"missing command", []string{"exec", "--"}, true, "", "", 0},
		{"unknown mutation", []string{"exec", "--mutation", "typo", "--", "true"}, true, "", "", 0},
		{"defaults", []string{"exec", "--", "true"}, false, "true", reftarget.MutationNone, 2},
		{"mutation and accounts", []string{"exec", "--mutation", "open-relay", "--accounts", "a@x.test", "--", "sh", "-c", "exit 0"}, false, "sh", reftarget.MutationOpenRelay, 1},
	} {
		t.Run(tt.name, func(t *testing.T) {
			o, err := parseArgs(tt.args, &bytes.Buffer{})
			var ue *usageError
			if tt.wantErr {
				if !errors.As(err, &ue) {
					t.Errorf("parseArgs(%q) error = %v; want a usage error", tt.args, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("parseArgs(%q) = %v; want nil", tt.args, err)
			}
			if o.command[0] != tt.wantCmd || o.mutation != tt.wantMut || len(o.accounts) != tt.wantAccts {
				t.Errorf("parseArgs(%q) = cmd %q mutation %q accounts %q; want %q %q %d accounts",
					tt.args, o.command, o.mutation, o.accounts, tt.wantCmd, tt.wantMut, tt.wantAccts)
			}
		})
	}
}

func TestEnvName(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{"alice@example.org", "REFTARGET_PASSWORD_ALICE"},
		{"Dave@example.org", "REFTARGET_PASSWORD_DAVE"},
		{"first.last+tag@example.org", "REFTARGET_PASSWORD_FIRST_LAST_TAG"},
	} {
		if got := envName(tt.in); got != tt.want {
			t.Errorf("envName(%q) = %q; want %q", tt.in, got, tt.want)
		}
	}
}

func TestRunBadUsage(t *testing.T) {
	var stderr bytes.Buffer
	if got := run([]string{"exec", "--accounts", "a@x.test,b@y.test", "--", "true"}, &stderr, testOptions); got != exitUsage {
		t.Errorf("run with accounts in two domains = %d; want %d (stderr %q)", got, exitUsage, stderr.String())
	}
}

func TestRunExec(t *testing.T) {
	reftargettest.Require(t)
	// The child sees both passwords and a live SMTP banner, then exits 7.
	script := `test -n "$REFTARGET_PASSWORD_ALICE" && test -n "$REFTARGET_PASSWORD_DAVE" || exit 1
test "$REFTARGET_PASSWORD_ALICE" != "$REFTARGET_PASSWORD_DAVE" || exit 2
exec 3<>"/dev/tcp/${REFTARGET_PLAIN%:*}/${REFTARGET_PLAIN#*:}" || exit 3
read -r banner <&3
case "$banner" in 220*) exit 7;; *) echo "banner: $banner" >&2; exit 4;; esac`
	var stderr bytes.Buffer
	got := run([]string{"exec", "--accounts", "alice@example.org,dave@example.org", "--", "bash", "-c", script}, &stderr, testOptions)
	if got != 7 {
		t.Fatalf("run exec = %d; want the command's 7 (stderr %q)", got, stderr.String())
	}
	for _, addr := range []string{testOptions.ProxyListen, testOptions.PlainListen, testOptions.SubmissionListen, testOptions.IMAPListen} {
		ln, err := net.Listen("tcp4", addr)
		if err != nil {
			t.Errorf("listen %s after exec: %v; want the target torn down", addr, err)
			continue
		}
		_ = ln.Close()
	}
}

func TestRunStartFailure(t *testing.T) {
	reftargettest.Require(t)
	ln, err := net.Listen("tcp4", testOptions.PlainListen)
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	defer func() { _ = ln.Close() }()
	var stderr bytes.Buffer
	if got := run([]string{"exec", "--", "true"}, &stderr, testOptions); got != exitEnv {
		t.Errorf("run with %s taken = %d; want %d", testOptions.PlainListen, got, exitEnv)
	}
	if !strings.Contains(stderr.String(), testOptions.PlainListen) {
		t.Errorf("stderr = %q; want it to name %s", stderr.String(), testOptions.PlainListen)
	}
}
