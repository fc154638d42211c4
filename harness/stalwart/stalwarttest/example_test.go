package stalwarttest_test

import (
	"context"
	"fmt"

	"github.com/splitcheck/splitcheck/harness/stalwart"
	"github.com/splitcheck/splitcheck/harness/stalwart/stalwarttest"
)

// A test seeds the fake, runs the code under test, then checks what the server
// holds and that nothing malformed was sent.
func ExampleNewServer() {
	srv := stalwarttest.NewServer()
	defer srv.Close()
	domainID, _ := srv.SeedWizard("mx.example.org", "example.org")

	c := &stalwart.Client{URL: srv.URL, Credentials: stalwart.BasicAuth(srv.AdminUser, srv.AdminPassword)}
	_, err := c.Set(context.Background(), "x:Domain", stalwart.SetRequest{
		Update: map[string]any{domainID: map[string]any{"allowRelaying": true}}})
	fmt.Println("error:", err)
	fmt.Println("allowRelaying:", srv.Object("x:Domain", domainID)["allowRelaying"])

	// A duplicate comes back as primaryKeyViolation naming the existing domain.
	_, err = c.Set(context.Background(), "x:Domain", stalwart.SetRequest{
		Create: map[string]any{"d": map[string]any{"name": "example.org"}}})
	fmt.Println(err)
	fmt.Println("violations:", srv.Violations())
	// Output:
	// error: <nil>
	// allowRelaying: true
	// stalwart: x:Domain/set: create d: primaryKeyViolation: A domain with this name already exists (properties: name) (existing: Domain b)
	// violations: []
}
