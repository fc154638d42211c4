package stalwart_test

import (
	"context"
	"fmt"
	"log"
	"net/netip"

	"github.com/testcontainers/testcontainers-go"

	"github.com/splitcheck/splitcheck/harness/stalwart"
	"github.com/splitcheck/splitcheck/harness/stalwart/stalwarttest"
)

// Run starts the pinned image headless; Bootstrap adds what a fresh server lacks
// and restarts it. This example needs a Docker engine, so it has no output check.
func ExampleRun() {
	ctx := context.Background()
	ctr, err := stalwart.Run(ctx, stalwart.DefaultImage,
		stalwart.WithPublicURL("https://mail.migrated.test"),
		stalwart.WithTrustedProxy("172.18.0.2"), // the proxy's own address, never a whole network
		stalwart.WithHostIP("127.0.0.1"),
	)
	defer func() {
		if err := testcontainers.TerminateContainer(ctr); err != nil {
			log.Printf("terminate: %v", err)
		}
	}()
	if err != nil {
		log.Printf("%v", err) // "run stalwart: ..."
		return
	}
	if err := ctr.Bootstrap(ctx, stalwart.BootstrapConfig{Domains: []string{"migrated.test"}, Hostname: "mx.migrated.test"}); err != nil {
		log.Printf("%v\n%s", err, ctr.LogTail())
		return
	}
	smtp, _ := ctr.SMTPEndpoint(ctx)
	submission, _ := ctr.SubmissionEndpoint(ctx)
	mgmt, _ := ctr.ManagementURL(ctx)
	fmt.Println(smtp, submission, mgmt)
}

// Request shows what Run would ask Docker for, without a Docker engine.
func ExampleRequest() {
	req, err := stalwart.Request(stalwart.DefaultImage,
		stalwart.WithAdmin("admin", "an-example-Passw0rd-that-is-long"),
		stalwart.WithPublicURL("https://mail.migrated.test"),
	)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(req.Image)
	fmt.Println(req.ExposedPorts)
	fmt.Println(req.Env["STALWART_PUBLIC_URL"])
	fmt.Println(req.Files[0].ContainerFilePath)
	fmt.Println(req.WaitingFor)
	// Output:
	// stalwartlabs/stalwart:v0.16.18
	// [25/tcp 587/tcp 993/tcp 8080/tcp]
	// https://mail.migrated.test
	// /etc/stalwart/config.json
	// all of: [HTTP GET request on port 8080 path "/healthz/ready"]
}

// Bootstrap configures a fresh server through the management API; here the
// server is the stalwarttest fake.
func ExampleBootstrap() {
	srv := stalwarttest.NewServer()
	defer srv.Close()
	cl := &stalwart.Client{URL: srv.URL, Credentials: stalwart.BasicAuth(srv.AdminUser, srv.AdminPassword)}

	err := stalwart.Bootstrap(context.Background(), cl, stalwart.BootstrapConfig{
		Domains:        []string{"migrated.test"},
		Hostname:       "mx.migrated.test",
		TrustedProxies: []netip.Prefix{netip.MustParsePrefix("172.18.0.2/32")},
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	_, listener := srv.Find("x:NetworkListener", "name", stalwart.SubmissionListenerName)
	sys, _ := srv.Singleton("x:SystemSettings")
	fmt.Println("submission listener:", listener["bind"])
	fmt.Println("hostname:", sys["defaultHostname"])
	fmt.Println("trusted:", sys["proxyTrustedNetworks"])
	fmt.Println("actions:", srv.Actions())
	// Output:
	// submission listener: map[[::]:587:true]
	// hostname: mx.migrated.test
	// trusted: map[172.18.0.2:true]
	// actions: [ReloadSettings InvalidateCaches]
}
