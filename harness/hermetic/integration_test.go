//go:build integration

package hermetic_test

import (
	"os"
	"testing"

	"github.com/splitcheck/splitcheck/harness/hermetic"
	"github.com/splitcheck/splitcheck/scenarios"
)

// TestHermeticIntegration is the whole hermetic suite against the real image: it
// skips without Docker (fails with SPLITCHECK_REQUIRE_DOCKER=1) and fails with the
// report when a check fails. Run with:
//
//	SPLITCHECK_REQUIRE_DOCKER=1 go test -tags integration -run Hermetic -v ./harness/hermetic/
func TestHermeticIntegration(t *testing.T) {
	res := hermetic.RunT(t, hermetic.Options{Image: os.Getenv("SPLITCHECK_STALWART_IMAGE")})
	if res == nil || res.Verify == nil {
		return // skipped
	}
	kinds := map[scenarios.Kind]int{}
	for _, v := range res.Verify.Verdicts {
		if v.Status == scenarios.StatusPass {
			kinds[v.Check.Kind]++
		}
	}
	// Every kind of check must have run and passed somewhere, not been skipped.
	for _, k := range []scenarios.Kind{scenarios.KindRoute, scenarios.KindReceived, scenarios.KindHeaderless, scenarios.KindPlain} {
		if kinds[k] == 0 {
			t.Errorf("no %s check passed (skipped checks are not passes)\n%s", k, hermetic.Report(res))
		}
	}
	if len(res.Removed) < 4 {
		t.Errorf("clean-up removed %q; want the network, two relays and Stalwart", res.Removed)
	}
}
