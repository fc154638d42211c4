package stalwart_test

import (
	"errors"
	"fmt"
	"io"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/network"
	"github.com/testcontainers/testcontainers-go"
	"github.com/testcontainers/testcontainers-go/wait"

	"github.com/splitcheck/splitcheck/harness/stalwart"
	"github.com/splitcheck/splitcheck/harness/stalwart/stalwarttest"
)

// request builds the container request as Run would, without Docker.
func request(t *testing.T, img string, opts ...testcontainers.ContainerCustomizer) testcontainers.GenericContainerRequest {
	t.Helper()
	req, err := stalwart.Request(img, opts...)
	if err != nil {
		t.Fatalf("Request: %v", err)
	}
	return req
}

func TestRunRequestDefaults(t *testing.T) {
	req := request(t, stalwart.DefaultImage)

	if req.Image != stalwart.DefaultImage {
		t.Errorf("Image = %q; want %q", req.Image, stalwart.DefaultImage)
	}
	if !req.Started {
		t.Errorf("Started = false; want true")
	}
	wantPorts := []string{"25/tcp", "587/tcp", "993/tcp", "8080/tcp"}
	if fmt.Sprint(req.ExposedPorts) != fmt.Sprint(wantPorts) {
		t.Errorf("ExposedPorts = %v; want %v", req.ExposedPorts, wantPorts)
	}

	admin := req.Env["STALWART_RECOVERY_ADMIN"]
	user, pass, ok := strings.Cut(admin, ":")
	if !ok || user != stalwart.DefaultAdminUser {
		t.Errorf("STALWART_RECOVERY_ADMIN user = %q; want %q", user, stalwart.DefaultAdminUser)
	}
	if len(pass) != 32 {
		t.Errorf("generated admin password has %d characters; want 32", len(pass))
	}
	if _, set := req.Env["STALWART_PUBLIC_URL"]; set {
		t.Errorf("STALWART_PUBLIC_URL set without WithPublicURL: %q", req.Env["STALWART_PUBLIC_URL"])
	}

	if len(req.Files) != 1 {
		t.Fatalf("Files = %d; want 1 (config.json)", len(req.Files))
	}
	f := req.Files[0]
	if f.ContainerFilePath != "/etc/stalwart/config.json" {
		t.Errorf("file path = %q; want /etc/stalwart/config.json", f.ContainerFilePath)
	}
	if f.FileMode != 0o644 {
		t.Errorf("file mode = %o; want 644", f.FileMode)
	}
	body, err := io.ReadAll(f.Reader)
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"@type":"RocksDb","path":"/var/lib/stalwart/"}`; string(body) != want {
		t.Errorf("config.json = %s; want %s", body, want)
	}

	hs := findHTTPStrategy(t, req.WaitingFor)
	if hs.Path != "/healthz/ready" {
		t.Errorf("wait path = %q; want /healthz/ready", hs.Path)
	}
	if hs.Port != network.MustParsePort("8080/tcp") {
		t.Errorf("wait port = %v; want 8080/tcp", hs.Port)
	}
	if to := hs.Timeout(); to == nil || *to != stalwart.DefaultStartupTimeout {
		t.Errorf("wait startup timeout = %v; want %v", to, stalwart.DefaultStartupTimeout)
	}
	if req.LogConsumerCfg == nil || len(req.LogConsumerCfg.Consumers) != 1 {
		t.Fatalf("log consumers = %+v; want the log tail", req.LogConsumerCfg)
	}
	if _, ok := req.LogConsumerCfg.Consumers[0].(*stalwart.LogTail); !ok {
		t.Errorf("log consumer is %T; want *stalwart.LogTail", req.LogConsumerCfg.Consumers[0])
	}
	if req.HostConfigModifier != nil {
		t.Errorf("HostConfigModifier set without WithHostIP")
	}
}

// findHTTPStrategy finds the one HTTP wait strategy in s.
func findHTTPStrategy(t *testing.T, s wait.Strategy) *wait.HTTPStrategy {
	t.Helper()
	var found []*wait.HTTPStrategy
	err := wait.Walk(&s, func(s wait.Strategy) error {
		if hs, ok := s.(*wait.HTTPStrategy); ok {
			found = append(found, hs)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(found) != 1 {
		t.Fatalf("wait strategy %v has %d HTTP strategies; want 1", s, len(found))
	}
	return found[0]
}

func TestRunRequestOptions(t *testing.T) {
	extra := &stalwart.LogTail{}
	req := request(t, "stalwartlabs/stalwart:v0.16",
		stalwart.WithAdmin("root", "Sup3r-Secret-Enough-Passw0rd"),
		stalwart.WithPublicURL("https://mail.migrated.test/"),
		stalwart.WithTrustedProxy("172.18.0.3"),
		stalwart.WithStartupTimeout(45*time.Second),
		stalwart.WithHostIP("127.0.0.1"),
		testcontainers.WithEnv(map[string]string{"STALWART_HOSTNAME": "mx.migrated.test"}),
		// A caller's consumers must not drop the module's log tail.
		testcontainers.WithLogConsumers(extra),
	)

	for k, want := range map[string]string{
		"STALWART_RECOVERY_ADMIN": "root:Sup3r-Secret-Enough-Passw0rd",
		"STALWART_PUBLIC_URL":     "https://mail.migrated.test",
		"STALWART_HOSTNAME":       "mx.migrated.test",
	} {
		if got := req.Env[k]; got != want {
			t.Errorf("Env[%s] = %q; want %q", k, got, want)
		}
	}
	if req.Image != "stalwartlabs/stalwart:v0.16" {
		t.Errorf("Image = %q; want the one passed to Run", req.Image)
	}
	hs := findHTTPStrategy(t, req.WaitingFor)
	if to := hs.Timeout(); to == nil || *to != 45*time.Second {
		t.Errorf("wait startup timeout = %v; want 45s", to)
	}
	if n := len(req.LogConsumerCfg.Consumers); n != 2 {
		t.Errorf("log consumers = %d; want 2 (the caller's and the tail)", n)
	}

	if req.HostConfigModifier == nil {
		t.Fatal("HostConfigModifier = nil; want loopback port bindings")
	}
	var hc container.HostConfig
	req.HostConfigModifier(&hc)
	if len(hc.PortBindings) != 4 {
		t.Errorf("PortBindings = %v; want one per exposed port", hc.PortBindings)
	}
	for p, bs := range hc.PortBindings {
		if len(bs) != 1 || bs[0].HostIP != netip.MustParseAddr("127.0.0.1") || bs[0].HostPort != "" {
			t.Errorf("PortBindings[%v] = %+v; want one binding on 127.0.0.1 with a random port", p, bs)
		}
	}
}

func TestRunGeneratesDistinctPasswords(t *testing.T) {
	a := request(t, stalwart.DefaultImage).Env["STALWART_RECOVERY_ADMIN"]
	b := request(t, stalwart.DefaultImage).Env["STALWART_RECOVERY_ADMIN"]
	if a == b {
		t.Errorf("two runs got the same admin credentials %q", a)
	}
}

func TestRunRejectsBadOptions(t *testing.T) {
	for _, tt := range []struct {
		name string
		opt  stalwart.Option
		want string
	}{
		{"empty admin", stalwart.WithAdmin("", "x"), "empty user name"},
		{"colon in user", stalwart.WithAdmin("a:b", "x"), "contains ':'"},
		{"empty password", stalwart.WithAdmin("admin", ""), "empty password"},
		{"relative url", stalwart.WithPublicURL("mail.test"), "not an http or https base URL"},
		{"url with query", stalwart.WithPublicURL("https://mail.test/?a=b"), "not an http or https base URL"},
		{"everything trusted", stalwart.WithTrustedProxy("0.0.0.0/0"), "shorter than /8"},
		{"not a network", stalwart.WithTrustedProxy("proxy"), "not an IP address or CIDR"},
		{"zero timeout", stalwart.WithStartupTimeout(0), "not positive"},
		{"bad host ip", stalwart.WithHostIP("localhost"), "not an IP address"},
		{"no log lines", stalwart.WithLogTail(0), "not positive"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ctr, err := stalwart.Run(t.Context(), stalwart.DefaultImage, tt.opt)
			if ctr != nil {
				t.Errorf("Run returned a container for a bad option")
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.HasPrefix(err.Error(), "run stalwart: ") {
				t.Errorf("Run error = %v; want \"run stalwart: ...%s...\"", err, tt.want)
			}
		})
	}
}

func TestRunWrapsCustomizerErrors(t *testing.T) {
	boom := testcontainers.CustomizeRequestOption(func(*testcontainers.GenericContainerRequest) error {
		return io.ErrUnexpectedEOF
	})
	ctr, err := stalwart.Run(t.Context(), stalwart.DefaultImage, boom)
	if ctr != nil {
		t.Errorf("Run returned a container although none was created")
	}
	if !errors.Is(err, io.ErrUnexpectedEOF) || !strings.HasPrefix(err.Error(), "run stalwart: customize: ") {
		t.Errorf("Run error = %v; want \"run stalwart: customize: ...\" wrapping the customizer's error", err)
	}
}

func TestParseTrustedNetwork(t *testing.T) {
	for _, tt := range []struct {
		in, want, err string
	}{
		{in: "172.18.0.3", want: "172.18.0.3/32"},
		{in: "172.18.0.3/32", want: "172.18.0.3/32"},
		{in: "10.1.2.3/8", want: "10.0.0.0/8"},
		{in: "fd00::7", want: "fd00::7/128"},
		{in: "0.0.0.0/0", err: "shorter than /8"},
		{in: "10.0.0.0/7", err: "shorter than /8"},
		{in: "0.0.0.0", err: "unspecified"},
		{in: "::/64", err: "unspecified"},
		{in: "fe80::1%eth0", err: "zoned"},
		{in: "", err: "not an IP address"},
	} {
		got, err := stalwart.ParseTrustedNetwork(tt.in)
		switch {
		case tt.err != "":
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("ParseTrustedNetwork(%q) = %v, %v; want error containing %q", tt.in, got, err, tt.err)
			}
		case err != nil || got.String() != tt.want:
			t.Errorf("ParseTrustedNetwork(%q) = %v, %v; want %s", tt.in, got, err, tt.want)
		}
	}
}

func TestLogTail(t *testing.T) {
	for _, tt := range []struct {
		name   string
		max    int
		chunks []string
		want   []string
	}{
		{"empty", 3, nil, []string{}},
		{"lines", 3, []string{"a\nb\n"}, []string{"a", "b"}},
		{"keeps the last", 3, []string{"1\n2\n3\n4\n5\n"}, []string{"3", "4", "5"}},
		{"split across chunks", 3, []string{"hel", "lo\r\nwor", "ld"}, []string{"hello", "world"}},
		{"partial counts against max", 2, []string{"1\n2\n3"}, []string{"2", "3"}},
		{"zero max keeps one", 0, []string{"1\n2\n"}, []string{"2"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			lt := stalwart.NewLogTail(tt.max)
			for _, c := range tt.chunks {
				lt.Accept(testcontainers.Log{LogType: testcontainers.StdoutLog, Content: []byte(c)})
			}
			if got := lt.Lines(); fmt.Sprintf("%q", got) != fmt.Sprintf("%q", tt.want) {
				t.Errorf("Lines() = %q; want %q", got, tt.want)
			}
		})
	}
	lt := stalwart.NewLogTail(5)
	lt.Accept(testcontainers.Log{Content: []byte("x\ny\n")})
	if got := lt.String(); got != "x\ny\n" {
		t.Errorf("String() = %q; want %q", got, "x\ny\n")
	}
}

// bootstrapConfig is a typical hermetic bootstrap.
func bootstrapConfig() stalwart.BootstrapConfig {
	return stalwart.BootstrapConfig{
		Domains:        []string{"migrated.test", "Second.test"},
		Hostname:       "mx.migrated.test",
		TrustedProxies: []netip.Prefix{netip.MustParsePrefix("172.18.0.2/32")},
		DNS:            netip.MustParseAddrPort("172.18.0.1:40053"),
		Accounts: []stalwart.BootstrapAccount{
			{Address: "alice@migrated.test", Password: "Zq7-wM3n_Kp9xV2r-Lt6Yb4H"},
		},
	}
}

func fakeClient(srv *stalwarttest.Server) *stalwart.Client {
	return &stalwart.Client{URL: srv.URL, Credentials: stalwart.BasicAuth(srv.AdminUser, srv.AdminPassword)}
}

// resolverCalls lists the arguments of each x:DnsResolver/set the fake received, as sent.
func resolverCalls(srv *stalwarttest.Server) []string {
	var out []string
	for _, c := range srv.Calls() {
		if c.Name == "x:DnsResolver/set" {
			out = append(out, string(c.Args))
		}
	}
	return out
}

func TestBootstrapFreshServer(t *testing.T) {
	srv := stalwarttest.NewServer()
	t.Cleanup(srv.Close)
	if err := stalwart.Bootstrap(t.Context(), fakeClient(srv), bootstrapConfig()); err != nil {
		t.Fatalf("Bootstrap: %v", err)
	}
	if v := srv.Violations(); len(v) > 0 {
		t.Errorf("requests the real server would refuse: %q", v)
	}

	domID, _ := srv.Find("x:Domain", "name", "migrated.test")
	if domID == "" {
		t.Fatal("domain migrated.test was not created")
	}
	if id, _ := srv.Find("x:Domain", "name", "second.test"); id == "" {
		t.Error("domain second.test was not created (lower-cased)")
	}

	sys, stored := srv.Singleton("x:SystemSettings")
	if !stored {
		t.Fatal("SystemSettings never written")
	}
	if sys["defaultHostname"] != "mx.migrated.test" || sys["defaultDomainId"] != domID {
		t.Errorf("SystemSettings host/domain = %v/%v; want mx.migrated.test/%s", sys["defaultHostname"], sys["defaultDomainId"], domID)
	}
	if got := fmt.Sprint(sys["proxyTrustedNetworks"]); got != "map[172.18.0.2:true]" {
		t.Errorf("proxyTrustedNetworks = %s; want exactly the proxy's address", got)
	}

	lid, l := srv.Find("x:NetworkListener", "name", "submission")
	if lid == "" {
		t.Fatal("no submission listener created")
	}
	if got := fmt.Sprint(l["bind"]); got != "map[[::]:587:true]" {
		t.Errorf("submission listener bind = %s; want [::]:587", got)
	}
	if l["protocol"] != "smtp" || l["tlsImplicit"] != false {
		t.Errorf("submission listener = %v; want smtp without implicit TLS", l)
	}

	if id, _ := srv.Find("x:Tracer", "@type", "Stdout"); id == "" {
		t.Error("no Stdout tracer created")
	}

	wantDNS := `{"update":{"singleton":{"@type":"Custom","servers":{"0":{"address":"172.18.0.1","port":40053,"protocol":"udp"}}}}}`
	if got := resolverCalls(srv); len(got) != 1 || got[0] != wantDNS {
		t.Errorf("x:DnsResolver/set calls = %q; want exactly %s", got, wantDNS)
	}
	res, stored := srv.Singleton("x:DnsResolver")
	if got := fmt.Sprint(res["@type"], " ", res["servers"]); !stored || got != "Custom map[0:map[address:172.18.0.1 port:40053 protocol:udp]]" {
		t.Errorf("x:DnsResolver = %v (stored %v); want the Custom variant with the fake DNS", res, stored)
	}

	aid, acc := srv.Find("x:Account", "emailAddress", "alice@migrated.test")
	if aid == "" {
		t.Fatal("account alice@migrated.test not created")
	}
	if acc["domainId"] != domID {
		t.Errorf("account domainId = %v; want %s", acc["domainId"], domID)
	}

	if got, want := fmt.Sprint(srv.Actions()), "[ReloadSettings InvalidateCaches]"; got != want {
		t.Errorf("actions = %s; want %s", got, want)
	}
}

func TestBootstrapIsIdempotent(t *testing.T) {
	srv := stalwarttest.NewServer()
	t.Cleanup(srv.Close)
	cl := fakeClient(srv)
	if err := stalwart.Bootstrap(t.Context(), cl, bootstrapConfig()); err != nil {
		t.Fatalf("first Bootstrap: %v", err)
	}
	before := srv.Dump()
	counts := map[string]int{}
	for _, o := range []string{"x:Domain", "x:NetworkListener", "x:Tracer", "x:Account"} {
		counts[o] = srv.Count(o)
	}
	if err := stalwart.Bootstrap(t.Context(), cl, bootstrapConfig()); err != nil {
		t.Fatalf("second Bootstrap: %v", err)
	}
	for o, n := range counts {
		if got := srv.Count(o); got != n {
			t.Errorf("%s count after a second Bootstrap = %d; want %d", o, got, n)
		}
	}
	if after := srv.Dump(); after != before {
		t.Errorf("second Bootstrap changed the registry:\nbefore %s\nafter  %s", before, after)
	}
	if v := srv.Violations(); len(v) > 0 {
		t.Errorf("requests the real server would refuse: %q", v)
	}
}

func TestBootstrapKeepsExistingListenerAndWizardSettings(t *testing.T) {
	srv := stalwarttest.NewServer()
	t.Cleanup(srv.Close)
	domID, err := srv.SeedWizard("mail.already.test", "migrated.test")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := srv.Seed("x:NetworkListener", map[string]any{
		"name": "submission-plain", "bind": map[string]any{"0.0.0.0:587": true}, "protocol": "smtp",
	}); err != nil {
		t.Fatal(err)
	}
	cfg := bootstrapConfig()
	cfg.Accounts = nil
	if err := stalwart.Bootstrap(t.Context(), fakeClient(srv), cfg); err != nil {
		t.Fatalf("Bootstrap: %v", err)
	}
	if n := srv.Count("x:NetworkListener"); n != 1 {
		t.Errorf("listeners = %d; want 1 (the existing one on 587 is enough)", n)
	}
	sys, _ := srv.Singleton("x:SystemSettings")
	if sys["defaultHostname"] != "mail.already.test" || sys["defaultDomainId"] != domID {
		t.Errorf("SystemSettings = %v; want the wizard's hostname and domain kept", sys)
	}
}

func TestBootstrapDisablesInboundThrottles(t *testing.T) {
	srv := stalwarttest.NewServer()
	t.Cleanup(srv.Close)
	var ids []string
	for _, seed := range []map[string]any{
		{"description": "per client address", "key": map[string]any{"remoteIp": true}, "rate": map[string]any{"count": 5, "period": 1000}},
		{"description": "already off", "enable": false, "rate": map[string]any{"count": 25, "period": 3600000}},
	} {
		id, err := srv.Seed("x:MtaInboundThrottle", seed)
		if err != nil {
			t.Fatalf("seed throttle: %v", err)
		}
		ids = append(ids, id)
	}
	cfg := bootstrapConfig()
	cfg.DNS, cfg.Accounts = netip.AddrPort{}, nil
	cfg.DisableInboundThrottles = true
	if err := stalwart.Bootstrap(t.Context(), fakeClient(srv), cfg); err != nil {
		t.Fatalf("Bootstrap: %v", err)
	}
	for _, id := range ids {
		if got := srv.Object("x:MtaInboundThrottle", id)["enable"]; got != false {
			t.Errorf("throttle %s enable = %v; want false", id, got)
		}
	}
	if v := srv.Violations(); len(v) > 0 {
		t.Errorf("requests the real server would refuse: %q", v)
	}
	var updates int
	for _, c := range srv.Calls() {
		if c.Name == "x:MtaInboundThrottle/set" {
			updates++
			if strings.Contains(string(c.Args), ids[1]) {
				t.Errorf("updated the throttle that was already off: %s", c.Args)
			}
		}
	}
	if updates != 1 {
		t.Errorf("%d x:MtaInboundThrottle/set calls; want 1", updates)
	}
}

func TestBootstrapErrors(t *testing.T) {
	for _, tt := range []struct {
		name   string
		mutate func(*stalwart.BootstrapConfig)
		fault  *stalwarttest.Fault
		want   string
	}{
		{name: "no domains", mutate: func(c *stalwart.BootstrapConfig) { c.Domains = nil }, want: "no domains"},
		{name: "no hostname", mutate: func(c *stalwart.BootstrapConfig) { c.Hostname = "" }, want: "no hostname"},
		{name: "account outside the domains", mutate: func(c *stalwart.BootstrapConfig) {
			c.Accounts = []stalwart.BootstrapAccount{{Address: "eve@other.test", Password: "x"}}
		}, want: "account eve@other.test"},
		{name: "weak password", mutate: func(c *stalwart.BootstrapConfig) {
			c.Accounts = []stalwart.BootstrapAccount{{Address: "bob@migrated.test", Password: "password"}}
		}, want: "create account bob@migrated.test"},
		{name: "resolver refused", fault: &stalwarttest.Fault{Kind: stalwarttest.FaultSetError, Method: "x:DnsResolver/set"},
			want: "set dns resolver 172.18.0.1:40053"},
		{name: "reload fails", fault: &stalwarttest.Fault{Kind: stalwarttest.FaultHTTP500, Method: "x:Action/set"},
			want: "ReloadSettings"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			srv := stalwarttest.NewServer()
			t.Cleanup(srv.Close)
			if tt.fault != nil {
				srv.InjectFault(*tt.fault)
			}
			cfg := bootstrapConfig()
			if tt.mutate != nil {
				tt.mutate(&cfg)
			}
			err := stalwart.Bootstrap(t.Context(), fakeClient(srv), cfg)
			if err == nil || !strings.HasPrefix(err.Error(), "bootstrap: ") || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Bootstrap = %v; want \"bootstrap: ...%s...\"", err, tt.want)
			}
			if strings.Contains(fmt.Sprint(err), "Zq7-wM3n_Kp9xV2r-Lt6Yb4H") || strings.Contains(fmt.Sprint(err), srv.AdminPassword) {
				t.Errorf("Bootstrap error carries a secret: %v", err)
			}
		})
	}
}
