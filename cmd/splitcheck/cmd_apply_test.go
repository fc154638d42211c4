package main

import (
	"encoding/json"
	"os"
	"strings"
	"testing"

	"github.com/splitcheck/splitcheck/harness/stalwart"
	"github.com/splitcheck/splitcheck/harness/stalwart/stalwarttest"
)

func TestApplyAndRollbackCommands(t *testing.T) {
	e := newSwEnv(t, true, false)
	before := e.srv.Dump()
	snap := e.path("snap.json")

	code, out, errOut := runSw(t, "apply", "--config", e.config, "--snapshot", snap, "--verify")
	if code != 0 {
		t.Fatalf("apply exit %d; stderr:\n%s", code, errOut)
	}
	for _, want := range []string{"Applied 9 change(s)", "Snapshot (needed for rollback", snap,
		"Test account probe@migrated.test created (password in the snapshot)",
		"Restart Stalwart for these to take effect: x:SystemSettings proxyTrustedNetworks",
		"Verified: the server holds every value apply wrote", "Not in effect yet: proxyTrustedNetworks"} {
		if !strings.Contains(out, want) {
			t.Errorf("apply output lacks %q:\n%s", want, out)
		}
	}
	fi, err := os.Stat(snap)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("snapshot %v mode %v; want 0600", err, fi)
	}
	s, err := stalwart.ReadSnapshotFile(snap)
	if err != nil {
		t.Fatal(err)
	}
	pw := s.Accounts[0].Password

	// The second apply changes nothing the server reveals; the relay's secret,
	// which it masks, is written again and said so.
	code, out2, errOut2 := runSw(t, "apply", "--config", e.config, "--snapshot", e.path("again.json"))
	if code != 0 || !strings.Contains(out2, "Applied 2 change(s)") ||
		!strings.Contains(out2, "authSecret  [destructive, secret not readable: written every time]") ||
		!strings.Contains(out2, "has an authSecret the server does not reveal") {
		t.Errorf("second apply exit %d:\n%s%s; want only the masked relay secret written again", code, out2, errOut2)
	}

	code, out3, errOut3 := runSw(t, "rollback", "--config", e.config, "--snapshot", snap, "--dry-run")
	if code != 0 || !strings.Contains(out3, "rollback would make 8 change(s)") || !strings.Contains(out3, "Dry run") {
		t.Errorf("rollback --dry-run exit %d:\n%s%s", code, out3, errOut3)
	}
	code, out4, errOut4 := runSw(t, "rollback", "--config", e.config, "--snapshot", snap)
	if code != 0 || !strings.Contains(out4, "Restored 8 change(s)") || !strings.Contains(out4, "stalwart-cli delete MtaRoute") {
		t.Errorf("rollback exit %d:\n%s%s", code, out4, errOut4)
	}
	if after := e.srv.Dump(); after != before {
		t.Errorf("after rollback the server differs from before apply")
	}
	code, out5, errOut5 := runSw(t, "rollback", "--config", e.config, "--snapshot", snap, "--json")
	var rep rollbackReport
	if code != 0 || json.Unmarshal([]byte(out5), &rep) != nil || len(rep.Changes) != 0 {
		t.Errorf("second rollback exit %d, %+v; want no changes:\n%s%s", code, rep, out5, errOut5)
	}
	noSecrets(t, []string{out, errOut, out2, errOut2, out3, errOut3, out4, errOut4, out5, errOut5}, pw)
	if v := e.srv.Violations(); len(v) > 0 {
		t.Errorf("violations: %v", v)
	}
}

func TestApplyDryRunAndJSON(t *testing.T) {
	e := newSwEnv(t, true, false)
	code, out, errOut := runSw(t, "apply", "--config", e.config, "--dry-run", "--json")
	var rep applyReport
	if code != 0 || json.Unmarshal([]byte(out), &rep) != nil || !rep.DryRun || len(rep.Plan.Changes) != 9 || len(rep.Applied) != 0 {
		t.Fatalf("apply --dry-run --json exit %d %+v:\n%s%s", code, rep, out, errOut)
	}
	if n := len(e.srv.Actions()); n != 0 || e.srv.Count("x:Domain") != 1 {
		t.Errorf("dry run wrote to the server")
	}
	entries, _ := os.ReadDir(e.dir)
	if len(entries) != 1 {
		t.Errorf("dry run left files: %v", entries)
	}
	code, out, errOut = runSw(t, "apply", "--config", e.config, "--snapshot", e.path("s.json"), "--json")
	if code != 0 || json.Unmarshal([]byte(out), &rep) != nil || len(rep.Applied) != 9 || rep.Snapshot != e.path("s.json") {
		t.Errorf("apply --json exit %d %+v:\n%s%s", code, rep, out, errOut)
	}
	noSecrets(t, []string{out, errOut})
}

func TestApplyNeedsYesOnAServerNotHermetic(t *testing.T) {
	e := newSwEnv(t, false, false)
	if _, err := e.srv.Seed("x:MtaRoute", map[string]any{"@type": "Relay", "name": "source", "address": "old.example.org"}); err != nil {
		t.Fatal(err)
	}
	before := e.srv.Dump()
	code, out, errOut := runSw(t, "apply", "--config", e.config, "--snapshot", e.path("s.json"))
	if code != 2 || !strings.Contains(errOut, "pass --yes") || !strings.Contains(errOut, "update x:MtaRoute source") {
		t.Errorf("apply without --yes exit %d:\n%s%s; want exit 2 naming the destructive change", code, out, errOut)
	}
	if e.srv.Dump() != before {
		t.Errorf("refused apply changed the server")
	}
	code, _, errOut = runSw(t, "apply", "--config", e.config, "--snapshot", e.path("s.json"), "--yes")
	if code != 0 {
		t.Fatalf("apply --yes exit %d: %s", code, errOut)
	}
	code, _, errOut = runSw(t, "rollback", "--config", e.config, "--snapshot", e.path("s.json"))
	if code != 2 || !strings.Contains(errOut, "pass --yes") {
		t.Errorf("rollback without --yes exit %d: %s; want 2", code, errOut)
	}
	code, _, errOut = runSw(t, "rollback", "--config", e.config, "--snapshot", e.path("s.json"), "--yes")
	if code != 0 || e.srv.Dump() != before {
		t.Errorf("rollback --yes exit %d: %s; want the server as before", code, errOut)
	}
}

func TestApplyFailureRestoresAndExits3(t *testing.T) {
	e := newSwEnv(t, true, false)
	before := e.srv.Dump()
	e.srv.InjectFault(stalwarttest.Fault{Kind: stalwarttest.FaultHTTP500, Method: "x:SystemSettings/set", Commit: true})
	code, out, errOut := runSw(t, "apply", "--config", e.config, "--snapshot", e.path("s.json"))
	if code != 3 {
		t.Fatalf("failed apply exit %d; want 3:\n%s%s", code, out, errOut)
	}
	for _, want := range []string{"apply failed at step systemSettings", "Restored from the snapshot", "destroy x:MtaRoute source",
		"update x:SystemSettings singleton proxyTrustedNetworks"} {
		if !strings.Contains(errOut, want) {
			t.Errorf("stderr lacks %q:\n%s", want, errOut)
		}
	}
	if e.srv.Dump() != before {
		t.Errorf("the server was left changed after a failed apply")
	}
	noSecrets(t, []string{out, errOut})
}

func TestApplyConfigAndEnvironmentErrors(t *testing.T) {
	t.Run("fresh server without a default hostname", func(t *testing.T) {
		e := newSwEnv(t, true, true)
		data, _ := os.ReadFile(e.config)
		_ = os.WriteFile(e.config, []byte(strings.Replace(string(data), "  default_hostname: mx.example.org\n", "", 1)), 0o600)
		code, _, errOut := runSw(t, "apply", "--config", e.config, "--snapshot", e.path("s.json"))
		if code != 2 || !strings.Contains(errOut, "field migration.default_hostname") {
			t.Errorf("exit %d, %s; want 2 naming migration.default_hostname", code, errOut)
		}
	})
	t.Run("existing snapshot file", func(t *testing.T) {
		e := newSwEnv(t, true, false)
		_ = os.WriteFile(e.path("s.json"), []byte("{}"), 0o600)
		code, _, errOut := runSw(t, "apply", "--config", e.config, "--snapshot", e.path("s.json"))
		if code != 2 || !strings.Contains(errOut, "snapshot file exists") {
			t.Errorf("exit %d, %s; want 2 refusing to overwrite", code, errOut)
		}
		if b, _ := os.ReadFile(e.path("s.json")); string(b) != "{}" {
			t.Errorf("the existing snapshot was overwritten")
		}
	})
	t.Run("server down", func(t *testing.T) {
		e := newSwEnv(t, true, false)
		e.srv.Close()
		code, _, errOut := runSw(t, "apply", "--config", e.config, "--snapshot", e.path("s.json"))
		if code != 3 || !strings.Contains(errOut, "apply: read state") {
			t.Errorf("exit %d, %s; want 3", code, errOut)
		}
	})
	t.Run("snapshot from another server", func(t *testing.T) {
		e := newSwEnv(t, true, false)
		if code, _, errOut := runSw(t, "apply", "--config", e.config, "--snapshot", e.path("s.json")); code != 0 {
			t.Fatal(errOut)
		}
		s, _ := stalwart.ReadSnapshotFile(e.path("s.json"))
		s.Server = "http://127.0.0.1:1"
		data, _ := json.Marshal(s)
		_ = os.WriteFile(e.path("other.json"), data, 0o600)
		code, _, errOut := runSw(t, "rollback", "--config", e.config, "--snapshot", e.path("other.json"))
		if code != 2 || !strings.Contains(errOut, "pass --yes if it is the same server") {
			t.Errorf("exit %d, %s; want 2", code, errOut)
		}
	})
}

// TestApplyFailureMessages: what a failed apply tells the operator matches what is
// on the server. A --verify that fails after every change was made leaves them in
// place (say so, and how to undo them); a step that fails and whose restore fails
// too leaves the server half-changed (say so; never "nothing needed restoring").
func TestApplyFailureMessages(t *testing.T) {
	// The number of requests a plain apply makes: the verify's first read follows.
	probe := newSwEnv(t, true, false)
	base := probe.srv.RequestCount()
	if code, _, errOut := runSw(t, "apply", "--config", probe.config, "--snapshot", probe.path("s.json")); code != 0 {
		t.Fatalf("apply exit %d: %s", code, errOut)
	}
	applyRequests := probe.srv.RequestCount() - base

	t.Run("verify fails after a complete apply", func(t *testing.T) {
		e := newSwEnv(t, true, false)
		e.srv.InjectFault(stalwarttest.Fault{Kind: stalwarttest.FaultMethodError, Request: e.srv.RequestCount() + applyRequests + 1})
		snap := e.path("s.json")
		code, _, errOut := runSw(t, "apply", "--config", e.config, "--snapshot", snap, "--verify")
		if e.srv.FaultsFired() != 1 {
			t.Fatalf("the fault did not fire: exit %d\n%s", code, errOut)
		}
		for _, want := range []string{"Applied 9 change(s); they are in place", "To undo them: splitcheck rollback --config " + e.config + " --snapshot " + snap} {
			if code != exitEnv || !strings.Contains(errOut, want) {
				t.Errorf("exit %d, stderr:\n%s\nwant exit 3 and %q", code, errOut, want)
			}
		}
		if strings.Contains(errOut, "Nothing needed restoring") {
			t.Errorf("stderr says nothing needed restoring, but 9 changes are in place:\n%s", errOut)
		}
	})
	t.Run("a step fails and so does its restore", func(t *testing.T) {
		e := newSwEnv(t, true, false)
		// The domains are created and allowRelaying set (two x:Domain/set), the relay
		// route's create fails, and so do the restore's x:Domain/set.
		e.srv.InjectFault(stalwarttest.Fault{Kind: stalwarttest.FaultMethodError, Method: "x:MtaRoute/set", Count: 10})
		e.srv.InjectFault(stalwarttest.Fault{Kind: stalwarttest.FaultMethodError, Method: "x:Domain/set", After: 2, Count: 10})
		snap := e.path("s.json")
		code, _, errOut := runSw(t, "apply", "--config", e.config, "--snapshot", snap)
		for _, want := range []string{"restoring the snapshot FAILED", "The server may be half-changed", "splitcheck rollback --config " + e.config + " --snapshot " + snap} {
			if code != exitEnv || !strings.Contains(errOut, want) {
				t.Errorf("exit %d, stderr:\n%s\nwant exit 3 and %q", code, errOut, want)
			}
		}
		if strings.Contains(errOut, "Nothing needed restoring") {
			t.Errorf("stderr says nothing needed restoring after a failed restore:\n%s", errOut)
		}
	})
}
