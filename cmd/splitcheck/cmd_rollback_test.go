package main

import (
	"strings"
	"testing"
)

// On a server whose settings were never saved, apply's first SystemSettings write
// sets defaultHostname and defaultDomainId, which Stalwart cannot unset: rollback
// says so instead of pretending.
func TestRollbackReportsWhatItKeeps(t *testing.T) {
	e := newSwEnv(t, true, true)
	snap := e.path("s.json")
	if code, _, errOut := runSw(t, "apply", "--config", e.config, "--snapshot", snap); code != 0 {
		t.Fatalf("apply: %s", errOut)
	}
	code, out, errOut := runSw(t, "rollback", "--config", e.config, "--snapshot", snap)
	if code != 0 {
		t.Fatalf("rollback exit %d: %s", code, errOut)
	}
	for _, want := range []string{
		`Kept: kept SystemSettings.defaultHostname "mx.example.org"`,
		"Kept: kept SystemSettings.defaultDomainId",
		"Kept: kept domain example.org",
		"destroy x:Domain migrated.test",
		"Restart Stalwart for x:SystemSettings proxyTrustedNetworks to take effect.",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("rollback output lacks %q:\n%s", want, out)
		}
	}
	// Idempotent, and it keeps saying what it kept.
	code, out, errOut = runSw(t, "rollback", "--config", e.config, "--snapshot", snap)
	if code != 0 || !strings.Contains(out, "nothing to restore") || !strings.Contains(out, "Kept: kept domain example.org") {
		t.Errorf("second rollback exit %d:\n%s%s", code, out, errOut)
	}
}
