// Package reftargettest holds what tests that start the reference target share.
package reftargettest

import (
	"os"
	"testing"

	"github.com/splitcheck/splitcheck/internal/reftarget"
)

// SkipEnv, set to 1 by hand, is the only way to skip the tests that need the
// reference target; CI never sets it.
const SkipEnv = "SPLITCHECK_SKIP_E2E"

// Require fails t when this machine cannot run the reference target (not root,
// packages missing), or skips it when SkipEnv=1 asks to.
func Require(t testing.TB) {
	t.Helper()
	err := reftarget.Available()
	if err == nil {
		return
	}
	if os.Getenv(SkipEnv) == "1" {
		t.Skipf("reference target unavailable, skipped because %s=1: %v", SkipEnv, err)
	}
	t.Fatalf("reference target unavailable: %v\n(run as root with the packages installed: make deps; "+
		"%s=1 skips these tests by hand, CI never sets it)", err, SkipEnv)
}
