package hermetic

import (
	"errors"
	"net"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/network"
	"github.com/testcontainers/testcontainers-go/wait"

	"github.com/splitcheck/splitcheck/harness/config"
	"github.com/splitcheck/splitcheck/harness/stalwart"
)

func TestRelayRequests(t *testing.T) {
	for _, tt := range []struct {
		name    string
		spec    relaySpec
		cmd     []string
		alias   string
		publish string
	}{
		{"proxy relay", proxyRelaySpec(),
			[]string{"-d", "-d", "TCP4-LISTEN:2525,fork,reuseaddr", "TCP4:stalwart:25"}, "proxy-relay", "2525/tcp"},
		{"mx relay", mxRelaySpec(netip.MustParseAddrPort("172.18.0.1:40002")),
			[]string{"-d", "-d", "TCP4-LISTEN:25,fork,reuseaddr", "TCP4:172.18.0.1:40002"}, "mx-relay", ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			req := relayRequest(DefaultRelayImage, "net-1", tt.spec, stalwart.NewLogTail(10))
			if req.Image != DefaultRelayImage || !req.Started {
				t.Errorf("image %q started %v; want %q started", req.Image, req.Started, DefaultRelayImage)
			}
			if !slices.Equal(req.Entrypoint, []string{"socat"}) || !slices.Equal(req.Cmd, tt.cmd) {
				t.Errorf("command = %q %q; want socat %q", req.Entrypoint, req.Cmd, tt.cmd)
			}
			if !slices.Equal(req.Networks, []string{"net-1"}) || !slices.Equal(req.NetworkAliases["net-1"], []string{tt.alias}) {
				t.Errorf("networks %v aliases %v; want net-1 as %s", req.Networks, req.NetworkAliases, tt.alias)
			}
			if req.Labels[roleLabel] != tt.alias {
				t.Errorf("role label = %q; want %q", req.Labels[roleLabel], tt.alias)
			}
			ls, ok := req.WaitingFor.(*wait.LogStrategy)
			if !ok || ls.Log != "listening on" {
				t.Errorf("wait strategy = %#v; want the log line \"listening on\"", req.WaitingFor)
			}
			if req.LogConsumerCfg == nil || len(req.LogConsumerCfg.Consumers) != 1 {
				t.Errorf("log consumers = %+v; want the tail", req.LogConsumerCfg)
			}
			if tt.publish == "" {
				if len(req.ExposedPorts) != 0 || req.HostConfigModifier != nil {
					t.Errorf("the MX relay publishes %v; it must not be reachable from the host", req.ExposedPorts)
				}
				return
			}
			if !slices.Equal(req.ExposedPorts, []string{tt.publish}) || req.HostConfigModifier == nil {
				t.Fatalf("exposed %v; want %s published", req.ExposedPorts, tt.publish)
			}
			var hc container.HostConfig
			req.HostConfigModifier(&hc)
			b := hc.PortBindings[network.MustParsePort(tt.publish)]
			if len(b) != 1 || b[0].HostIP != netip.MustParseAddr("127.0.0.1") {
				t.Errorf("port bindings = %v; want %s on 127.0.0.1 only", hc.PortBindings, tt.publish)
			}
		})
	}
}

func TestReservePorts(t *testing.T) {
	p, err := reservePorts(netip.MustParseAddr("127.0.0.1"))
	if err != nil {
		t.Fatal(err)
	}
	if err := checkPorts(p); err != nil {
		t.Fatalf("reservePorts = %+v: %v", p, err)
	}
	// They are free again: the fakes can bind them (TCP, and UDP for DNS).
	for _, port := range []uint16{p.Source, p.MX, p.DNS} {
		ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(int(port))))
		if err != nil {
			t.Errorf("port %d not released: %v", port, err)
			continue
		}
		ln.Close()
	}
	pc, err := net.ListenPacket("udp", net.JoinHostPort("127.0.0.1", strconv.Itoa(int(p.DNS))))
	if err != nil {
		t.Errorf("DNS port %d not free for UDP: %v", p.DNS, err)
	} else {
		pc.Close()
	}
}

func TestVerifyConfig(t *testing.T) {
	layout, err := PlanLayout(goodTopo, hostAddr, goodPorts)
	if err != nil {
		t.Fatal(err)
	}
	plan := Plan{
		Domains:    []string{"migrated.test", "second.test"},
		Local:      []string{"alice@migrated.test", "dave@second.test"},
		Unmigrated: []string{"bob@migrated.test"},
		External:   []string{"carol@elsewhere.test"},
	}
	s := settings{
		plan: plan, layout: layout, hostname: plan.Hostname(), publicURL: plan.PublicURL(),
		proxySMTP: "127.0.0.1:1", plainSMTP: "127.0.0.1:2", submission: "127.0.0.1:3", imaps: "127.0.0.1:4",
		management: "http://127.0.0.1:5", adminUser: "admin", adminPassword: "admin-Secret-1",
		passwords:    map[string]string{"alice@migrated.test": "alice-Secret-1", "dave@second.test": "dave-Secret-2"},
		proxyVersion: 1, announce: "203.0.113.9:4000",
		timeouts: config.Timeouts{Delivery: 45e9},
	}
	cfg, err := verifyConfig(s)
	if err != nil {
		t.Fatalf("verifyConfig: %v", err)
	}
	for _, tt := range []struct{ field, got, want string }{
		{"mailbox 0 password", cfg.Plan.Local[0].Mailbox.Password.Value(), "alice-Secret-1"},
		{"mailbox 1 password", cfg.Plan.Local[1].Mailbox.Password.Value(), "dave-Secret-2"},
		{"mailbox 1 user", cfg.Plan.Local[1].Mailbox.Username, "dave@second.test"},
		{"submitter", cfg.Submitter.Username + " " + cfg.Submitter.Password.Value(), "alice@migrated.test alice-Secret-1"},
		{"stalwart", cfg.Stalwart.URL + " " + cfg.Stalwart.User + " " + cfg.Stalwart.Password.Value(), "http://127.0.0.1:5 admin admin-Secret-1"},
		{"migration source", cfg.Migration.Source.Address + " " + strconv.Itoa(cfg.Migration.Source.Port), "172.18.0.1 40001"},
		{"rehearsal source", stalwart.RehearsalSource(cfg), "172.18.0.1:40001"},
		{"proxy", strconv.Itoa(cfg.Proxy.Version) + " " + cfg.Proxy.Announce, "1 203.0.113.9:4000"},
		{"delivery timeout", cfg.Timeouts.Delivery.String(), "45s"},
		{"absence default", cfg.Timeouts.Absence.String(), "2s"},
		{"submission tls", cfg.Target.SubmissionTLS, "starttls"},
	} {
		if tt.got != tt.want {
			t.Errorf("%s = %q; want %q", tt.field, tt.got, tt.want)
		}
	}
	printed := strings.Join([]string{cfg.Stalwart.Password.String(), cfg.Submitter.Password.String()}, " ")
	if strings.Contains(printed, "Secret") {
		t.Errorf("secrets print as %q", printed)
	}
	if _, set := os.LookupEnv(secretEnvPrefix + "0"); set {
		t.Errorf("a secret reached the process environment")
	}
	d, err := stalwart.DesiredFromConfig(cfg)
	if err != nil {
		t.Fatalf("DesiredFromConfig: %v", err)
	}
	if d.DefaultHostname != "mx.migrated.test" || d.PublicURL != "https://mail.migrated.test" ||
		!slices.Equal(d.ProxyTrustedNetworks, []string{"172.18.0.2/32"}) || !slices.Equal(d.Domains, []string{"migrated.test", "second.test"}) {
		t.Errorf("desired = %+v; want the run's hostname, public URL, trusted proxy and domains", d)
	}
}

func TestVerifyConfigRefusesBadPlan(t *testing.T) {
	layout, _ := PlanLayout(goodTopo, hostAddr, goodPorts)
	s := settings{plan: Plan{Domains: []string{"migrated.example"}, Unmigrated: []string{"bob@migrated.example"}},
		layout: layout, hostname: "mx.migrated.example", publicURL: "https://mail.migrated.example",
		proxySMTP: "127.0.0.1:1", plainSMTP: "127.0.0.1:2", submission: "127.0.0.1:3", imaps: "127.0.0.1:4",
		management: "http://127.0.0.1:5", adminUser: "admin", adminPassword: "x", proxyVersion: 2, announce: DefaultAnnounce}
	_, err := verifyConfig(s)
	var ce *config.Error
	if err == nil || !strings.Contains(err.Error(), "Stalwart refuses the .example TLD") || !errors.As(err, &ce) {
		t.Errorf("verifyConfig = %v; want a *config.Error about the .example TLD", err)
	}
}

func TestPlanDefaults(t *testing.T) {
	p := DefaultPlan()
	if p.IsZero() || p.Hostname() != "mx.migrated.test" || p.PublicURL() != "https://mail.migrated.test" {
		t.Errorf("DefaultPlan = %+v (%s, %s)", p, p.Hostname(), p.PublicURL())
	}
	if !(Plan{}).IsZero() {
		t.Errorf("Plan{}.IsZero() = false")
	}
	cfg := &config.Config{Plan: config.Plan{Domains: []string{"a.test"}, Local: []config.LocalAccount{{Address: "x@a.test"}},
		Unmigrated: []string{"y@a.test"}, External: []string{"z@b.test"}}}
	got := PlanFromConfig(cfg)
	if !slices.Equal(got.Local, []string{"x@a.test"}) || !slices.Equal(got.External, []string{"z@b.test"}) || got.Domains[0] != "a.test" {
		t.Errorf("PlanFromConfig = %+v", got)
	}
	accts, pw, err := accounts(Plan{Domains: []string{"a.test"}, Local: []string{"X@a.test", "x@a.test", "y@a.test"}})
	if err != nil || len(accts) != 2 || len(pw) != 2 || pw["x@a.test"] == pw["y@a.test"] || len(pw["x@a.test"]) < 24 {
		t.Errorf("accounts = %v, %d passwords, %v; want two accounts with distinct strong passwords", accts, len(pw), err)
	}
}
