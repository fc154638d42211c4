package stalwartobs_test

import (
	"context"
	"fmt"

	"github.com/splitcheck/splitcheck/harness/stalwart"
	"github.com/splitcheck/splitcheck/harness/stalwartobs"
	"github.com/splitcheck/splitcheck/scenarios"
)

// queueOf is a QueueLister with fixed entries (a *stalwart.Client in a real run).
type queueOf []stalwart.QueueEntry

func (q queueOf) QueueEvidence(context.Context, string) ([]stalwart.QueueEntry, error) { return q, nil }

// A source probe that never arrived gets what Stalwart's queue says about it.
func ExampleAddQueueEvidence() {
	verdicts := []scenarios.Verdict{{
		Check: scenarios.Check{Name: "route/unmigrated/bob@example.org", Kind: scenarios.KindRoute,
			Recipient: "bob@example.org", Expect: scenarios.RouteSource},
		Status: scenarios.StatusFail,
		Detail: "want source, got none: not seen anywhere within 30s",
	}}
	queue := queueOf{{QueueID: "b7", Recipient: "bob@example.org", Status: "TemporaryFailure",
		ResponseHostname: "source.internal.example.org", ErrorType: "connectionError", ErrorMessage: "connection refused", RetryCount: 3}}
	stalwartobs.AddQueueEvidence(context.Background(), queue, verdicts, "", 0)
	fmt.Println(verdicts[0].Detail)
	// Output:
	// want source, got none: not seen anywhere within 30s; Stalwart queue (missing): queue b7: bob@example.org TemporaryFailure at source.internal.example.org (connectionError: connection refused), 3 retries
}
