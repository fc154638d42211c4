package harness_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/splitcheck/splitcheck/harness"
	"github.com/splitcheck/splitcheck/harness/config"
	"github.com/splitcheck/splitcheck/scenarios"
)

// Verify needs a target to probe, so this example only shows the shape of a run:
// load the run description, verify, read the verdicts, tell a mismatch (exit 1) from
// an environment that could not be tested (exit 3).
func ExampleVerify() {
	cfg, err := config.Load("examples/reftarget.yaml")
	if err != nil {
		fmt.Fprintln(os.Stderr, err) // usage or configuration: exit 2
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), cfg.Timeouts.Run)
	defer cancel()
	res, err := harness.Verify(ctx, cfg, harness.VerifyOptions{
		Progress: func(ev harness.ProgressEvent) {
			fmt.Fprintf(os.Stderr, "\r%d/%d %s %s", ev.Done, ev.Total, ev.Stage, ev.Check)
		},
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, err) // the run could not happen: exit 3
		return
	}
	for _, v := range res.Verdicts {
		fmt.Printf("%-40s %-5s %s\n", v.Check.Name, v.Status, v.Detail)
	}
	var mm *scenarios.MismatchError
	if errors.As(res.Mismatch(), &mm) {
		fmt.Fprintf(os.Stderr, "%d check(s) failed\n", len(mm.Failed)) // exit 1
	}
}

func ExampleResult_Mismatch() {
	res := &harness.Result{Verdicts: []scenarios.Verdict{
		{Check: scenarios.Check{Name: "route/local/alice@example.org"}, Status: scenarios.StatusPass},
		{Check: scenarios.Check{Name: "route/unmigrated/bob@example.org"}, Status: scenarios.StatusFail,
			Detail: "want source, got local: IMAP 127.0.0.1:143: alice@example.org INBOX uid 4"},
		{Check: scenarios.Check{Name: "plain"}, Status: scenarios.StatusSkip, Detail: "no plain listener configured (target.plain_smtp)"},
	}, Elapsed: 1500 * time.Millisecond}
	pass, fail, skip, errored := res.Counts()
	fmt.Println(pass, fail, skip, errored)
	fmt.Println(res.Mismatch())
	// Output:
	// 1 1 1 0
	// 1 check(s) failed: route/unmigrated/bob@example.org: want source, got local: IMAP 127.0.0.1:143: alice@example.org INBOX uid 4
}
