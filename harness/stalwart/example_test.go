package stalwart_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/splitcheck/splitcheck/harness/stalwart"
	"github.com/splitcheck/splitcheck/harness/stalwart/stalwarttest"
)

// The migration guide's configuration, planned, applied and rolled back against
// the schema-checked fake.
func Example() {
	srv := stalwarttest.NewServer()
	defer srv.Close()
	if _, err := srv.SeedWizard("mx.example.org", "example.org"); err != nil {
		fmt.Println(err)
		return
	}
	c := &stalwart.Client{URL: srv.URL, Credentials: stalwart.BasicAuth(srv.AdminUser, srv.AdminPassword)}
	d := stalwart.Desired{
		Domains: []string{"example.org"},
		Relay: stalwart.Relay{Name: stalwart.RelayRouteName, Address: "source.internal.example.org", Port: 25,
			Protocol: "smtp", AllowInvalidCerts: true},
		Route: stalwart.SplitDeliveryRoute(stalwart.RelayRouteName),
	}
	ctx := context.Background()
	plan, err := c.Plan(ctx, d)
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, ch := range plan.Changes {
		fmt.Println(ch.CLI)
	}

	dir, _ := os.MkdirTemp("", "example")
	defer os.RemoveAll(dir)
	res, err := c.Apply(ctx, d, stalwart.ApplyOptions{SnapshotPath: filepath.Join(dir, "snapshot.json"), Hermetic: true})
	if err != nil {
		fmt.Println(err)
		return
	}
	again, _ := c.Plan(ctx, d)
	fmt.Printf("applied %d changes; a second plan has %d\n", len(res.Applied), len(again.Changes))

	rb, err := c.Rollback(ctx, res.Snapshot, stalwart.RollbackOptions{Hermetic: true})
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, ch := range rb.Changes {
		fmt.Println("rollback:", strings.TrimSpace(ch.Op+" "+ch.Object+" "+ch.Name+" "+ch.Field))
	}
	// Output:
	// stalwart-cli update Domain b --field allowRelaying=true
	// stalwart-cli create MtaRoute/Relay --field name=source --field address=source.internal.example.org --field port=25 --field protocol=smtp --field implicitTls=false --field allowInvalidCerts=true
	// stalwart-cli update MtaOutboundStrategy singleton --field 'route={"match":{"0":{"if":"is_local_address(rcpt)","then":"'\''local'\''"},"1":{"if":"is_local_domain(rcpt_domain)","then":"'\''source'\''"}},"else":"'\''mx'\''"}'
	// stalwart-cli create Action/ReloadSettings
	// applied 4 changes; a second plan has 0
	// rollback: update x:MtaOutboundStrategy singleton route
	// rollback: destroy x:MtaRoute source
	// rollback: update x:Domain example.org allowRelaying
	// rollback: run x:Action ReloadSettings
}
