package reftarget_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/splitcheck/splitcheck/internal/reftarget"
)

// Start a correctly configured target with one local account, then tear it
// down. The caller runs the fake source on SourceRelay, and for mail to other
// domains a fake DNS on Nameserver:53 and the fake MX it names.
func ExampleStart() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	tgt, err := reftarget.Start(ctx, reftarget.Options{
		Accounts: []reftarget.Account{{Address: "alice@example.org", Password: "s3cret"}},
	})
	if err != nil {
		var se *reftarget.StartError
		if errors.As(err, &se) {
			fmt.Println(err, se.Maillog)
		}
		return
	}
	defer func() { _ = tgt.Close(context.Background()) }()
	o := tgt.Options()
	fmt.Println("PROXY listener:", o.ProxyListen, "submission:", o.SubmissionListen, "IMAP:", o.IMAPListen)
}

// A mutation breaks the setup on purpose: here Postfix accepts and relays
// unauthenticated mail to any domain.
func ExampleStart_mutation() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	tgt, err := reftarget.Start(ctx, reftarget.Options{Mutation: reftarget.MutationOpenRelay})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer func() { _ = tgt.Close(ctx) }()
}
