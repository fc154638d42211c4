package scenarios_test

import (
	"fmt"
	"strings"
	"time"

	"github.com/splitcheck/splitcheck/scenarios"
)

func ExampleMatrix() {
	plan := scenarios.Plan{
		Domains:       []string{"example.org"},
		Local:         []string{"alice@example.org"},
		Unmigrated:    []string{"bob@example.org"},
		External:      []string{"carol@external.test"},
		PlainListener: true,
	}
	for _, c := range scenarios.Checks(scenarios.Matrix(plan)) {
		fmt.Println(strings.TrimSpace(fmt.Sprintf("%-40s %-10s %s", c.Name, c.Entry, c.Expect)))
	}
	// Output:
	// route/local/alice@example.org            proxy      local
	// received/local/alice@example.org         proxy
	// route/unmigrated/bob@example.org         proxy      source
	// route/external/carol@external.test       submission mx
	// route/open-relay/carol@external.test     proxy      reject
	// mixed/alice@example.org                  submission local
	// mixed/bob@example.org                    submission source
	// mixed/carol@external.test                submission mx
	// route/plus/alice+splitcheck@example.org  proxy      local
	// route/case/ALICE@EXAMPLE.ORG             proxy      local
	// headerless                               headerless reject
	// plain                                    plain      local
	// relay/no-proxy-header                    relay
}

func ExampleJudge() {
	check := scenarios.Check{Name: "route/unmigrated/bob@example.org", Kind: scenarios.KindRoute,
		Recipient: "bob@example.org", Expect: scenarios.RouteSource, Deadline: 30 * time.Second}

	// Relayed to the source, and nowhere else: pass.
	relayed := scenarios.Observation{Place: scenarios.RouteSource, Where: "fake source 127.0.0.4:2525",
		Evidence: "fake source 127.0.0.4:2525 RCPT <bob@example.org>"}
	fmt.Println(scenarios.Judge(check, []scenarios.Observation{relayed}, time.Second).Status)

	// Delivered locally as well: two sightings fail.
	local := scenarios.Observation{Place: scenarios.RouteLocal, Where: "bob@example.org INBOX",
		Evidence: "IMAP 127.0.0.1:143 bob@example.org INBOX uid 4"}
	v := scenarios.Judge(check, []scenarios.Observation{relayed, local}, time.Second)
	fmt.Println(v.Status, v.Detail)

	// Seen nowhere.
	v = scenarios.Judge(check, nil, 30*time.Second)
	fmt.Println(v.Status, v.Detail)
	// Output:
	// pass
	// fail want source exactly once, seen 2 times: source (fake source 127.0.0.4:2525 RCPT <bob@example.org>); local (IMAP 127.0.0.1:143 bob@example.org INBOX uid 4)
	// fail want source, got none: not seen anywhere within 30s
}

func ExampleParseFile() {
	file := []byte(`
probes:
  - name: moved-today
    entry: proxy
    recipients:
      - address: dave@example.org
        expect: local
`)
	probes, err := scenarios.ParseFile("wave.yaml", file)
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, c := range scenarios.Checks(probes) {
		fmt.Println(c.Name, c.Expect)
	}

	_, err = scenarios.ParseFile("bad.yaml", []byte("probes:\n  - name: x\n    entry: smtp\n"))
	fmt.Println(err)
	// Output:
	// route/moved-today local
	// bad.yaml:3: field probes.0.entry: "smtp" is not one of proxy, submission, plain, headerless
}
