package harness_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/textproto"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapserver"
	"github.com/emersion/go-imap/v2/imapserver/imapmemserver"
	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
	"github.com/miekg/dns"
	"github.com/pires/go-proxyproto"

	"github.com/splitcheck/splitcheck/harness/config"
	"github.com/splitcheck/splitcheck/internal/freeport"
	"github.com/splitcheck/splitcheck/scenarios"
)

// miniTarget is a tiny split-delivery MTA for the engine's tests, built from go-smtp,
// go-proxyproto and an in-memory IMAP server: local accounts are delivered into
// mailboxes, the rest of the domain is relayed to the source, other domains go to
// their MX (looked up in the fake DNS) when the sender is authenticated and are
// refused otherwise. A mutation breaks one rule.
type miniTarget struct {
	domain   string
	accounts []string // addresses; the password of each is "pw-" + address
	mutation string   // "", "local-relayed", "open-relay", "proxy-ignored", "drop-external", "duplicate-local", "proxy-to-source", "relay-deferred", "sender-refused", "late-duplicate"

	// late-duplicate: every source delivery, and every local delivery of a
	// message to alice@example.org alone, is made a second time once lateGate is
	// closed (by the test, when the first copies' checks passed); dave's local
	// delivery waits until lateWant second copies are in (lateDone), so the run
	// is still going when they arrive.
	lateGate, lateDone chan struct{}
	lateWant           int32
	lateSent           atomic.Int32

	// Where the target delivers, chosen before the harness binds them.
	source, dns string
	mxPort      string

	// Where the target listens.
	proxyAddr, plainAddr, submissionAddr, imapAddr string

	mem     *imapmemserver.Server
	users   map[string]*imapmemserver.User
	imapSrv *imapserver.Server
	smtps   []*smtp.Server
	lns     []net.Listener // closed by close too: a server's Close misses a listener its Serve has not registered yet
	wg      sync.WaitGroup // serve loops and deliveries
}

func startMini(t *testing.T, mutation string) *miniTarget {
	t.Helper()
	m := &miniTarget{
		domain:   "example.org",
		accounts: []string{"alice@example.org", "dave@example.org"},
		mutation: mutation,
		source:   freeTCP(t), dns: freeUDP(t),
		lateGate: make(chan struct{}), lateDone: make(chan struct{}),
		users: map[string]*imapmemserver.User{},
	}
	_, m.mxPort, _ = net.SplitHostPort(freeTCP(t))

	m.mem = imapmemserver.New()
	for _, a := range m.accounts {
		u := imapmemserver.NewUser(a, "pw-"+a)
		if err := u.Create("INBOX", nil); err != nil {
			t.Fatal(err)
		}
		m.mem.AddUser(u)
		m.users[a] = u
	}
	m.imapSrv = imapserver.New(&imapserver.Options{
		NewSession: func(*imapserver.Conn) (imapserver.Session, *imapserver.GreetingData, error) {
			return m.mem.NewSession(), nil, nil
		},
		Caps:         imap.CapSet{imap.CapIMAP4rev1: {}, imap.CapIMAP4rev2: {}},
		InsecureAuth: true,
		Logger:       nopLogger{},
	})
	imapLn := listen(t)
	m.lns = append(m.lns, imapLn)
	m.imapAddr = imapLn.Addr().String()
	m.serve(func() { _ = m.imapSrv.Serve(imapLn) })

	policy := proxyproto.ConnPolicyFunc(func(proxyproto.ConnPolicyOptions) (proxyproto.Policy, error) {
		if mutation == "proxy-ignored" {
			return proxyproto.USE, nil // a header is optional, and its address unused
		}
		return proxyproto.REQUIRE, nil
	})
	proxyLn := &proxyproto.Listener{Listener: listen(t), ConnPolicy: policy, ReadHeaderTimeout: 2 * time.Second}
	m.proxyAddr = proxyLn.Addr().String()
	plainLn, subLn := listen(t), listen(t)
	m.lns = append(m.lns, proxyLn, plainLn, subLn)
	m.plainAddr, m.submissionAddr = plainLn.Addr().String(), subLn.Addr().String()
	for _, l := range []struct {
		ln         net.Listener
		submission bool
	}{{proxyLn, false}, {plainLn, false}, {subLn, true}} {
		srv := smtp.NewServer(smtp.BackendFunc(func(c *smtp.Conn) (smtp.Session, error) {
			return &miniSession{m: m, c: c, submission: l.submission}, nil
		}))
		srv.Domain = "mini.test"
		srv.AllowInsecureAuth = true
		srv.ReadTimeout, srv.WriteTimeout = 5*time.Second, 5*time.Second
		srv.ErrorLog = nopLogger{}
		m.smtps = append(m.smtps, srv)
		m.serve(func() { _ = srv.Serve(l.ln) })
	}
	t.Cleanup(m.close)
	return m
}

func (m *miniTarget) serve(f func()) {
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		f()
	}()
}

func (m *miniTarget) close() {
	for _, s := range m.smtps {
		s.Close()
	}
	m.imapSrv.Close()
	for _, ln := range m.lns {
		ln.Close()
	}
	m.wg.Wait()
}

// config is a run description for this target; absence and delivery are short.
func (m *miniTarget) config(t *testing.T) *config.Config {
	t.Helper()
	y := fmt.Sprintf(`
target:
  smtp: %s
  plain_smtp: %s
  submission: %s
  submission_tls: none
plan:
  domains: [example.org]
  local:
    - address: alice@example.org
      mailbox: {address: %s, password: pw-alice@example.org}
    - address: dave@example.org
      mailbox: {address: %s, password: pw-dave@example.org}
  unmigrated: [bob@example.org]
  external: [erin@external.test]
submitter: {username: alice@example.org, password: pw-alice@example.org, mechanism: login}
fakes:
  source: %s
  mx: 127.0.0.1:%s
  dns: %s
proxy:
  version: 1
  announce: 198.51.100.7
timeouts:
  connect: 2s
  delivery: 2s
  absence: 150ms
  run: 30s
`, m.proxyAddr, m.plainAddr, m.submissionAddr, m.imapAddr, m.imapAddr, m.source, m.mxPort, m.dns)
	cfg, err := config.Parse("mini.yaml", []byte(y), func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	return cfg
}

// miniSession is one SMTP session of the mini target.
type miniSession struct {
	m          *miniTarget
	c          *smtp.Conn
	submission bool
	authed     bool
	from       string
	rcpts      []string
}

func (s *miniSession) AuthMechanisms() []string {
	if !s.submission {
		return nil
	}
	return []string{sasl.Plain, sasl.Login}
}

func (s *miniSession) Auth(mech string) (sasl.Server, error) {
	check := func(user, pass string) error {
		if pass != "pw-"+user {
			return &smtp.SMTPError{Code: 535, EnhancedCode: smtp.EnhancedCode{5, 7, 8}, Message: "authentication failed"}
		}
		s.authed = true
		return nil
	}
	if mech == sasl.Login {
		return &loginServer{check: check}, nil
	}
	return sasl.NewPlainServer(func(_, user, pass string) error { return check(user, pass) }), nil
}

// loginServer is the server side of AUTH LOGIN.
type loginServer struct {
	check func(user, pass string) error
	user  string
	step  int
}

func (l *loginServer) Next(resp []byte) ([]byte, bool, error) {
	switch l.step {
	case 0:
		l.step++
		if len(resp) > 0 {
			l.user = string(resp)
			l.step++
			return []byte("Password:"), false, nil
		}
		return []byte("Username:"), false, nil
	case 1:
		l.user = string(resp)
		l.step++
		return []byte("Password:"), false, nil
	default:
		return nil, true, l.check(l.user, string(resp))
	}
}

func (s *miniSession) Mail(from string, _ *smtp.MailOptions) error {
	if s.submission && !s.authed {
		return &smtp.SMTPError{Code: 530, EnhancedCode: smtp.EnhancedCode{5, 7, 0}, Message: "authentication required"}
	}
	if s.m.mutation == "sender-refused" && !s.submission {
		return &smtp.SMTPError{Code: 553, EnhancedCode: smtp.EnhancedCode{5, 7, 1}, Message: "<" + from + ">: Sender address rejected"}
	}
	s.from = from
	return nil
}

func (s *miniSession) route(rcpt string) scenarios.Route {
	c := scenarios.Canonical(rcpt)
	for i, a := range s.m.accounts {
		if a == c {
			if i == 0 && s.m.mutation == "local-relayed" {
				return scenarios.RouteSource
			}
			return scenarios.RouteLocal
		}
	}
	if strings.HasSuffix(c, "@"+s.m.domain) {
		return scenarios.RouteSource
	}
	if s.authed || s.m.mutation == "open-relay" {
		return scenarios.RouteMX
	}
	return scenarios.RouteReject
}

func (s *miniSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	if s.route(to) == scenarios.RouteReject {
		if s.m.mutation == "relay-deferred" {
			// Postfix's defer_unauth_destination, or soft_bounce = yes: a
			// temporary refusal, which the client retries: not a refusal.
			return &smtp.SMTPError{Code: 450, EnhancedCode: smtp.EnhancedCode{4, 7, 1}, Message: "<" + to + ">: Relay access denied"}
		}
		return &smtp.SMTPError{Code: 554, EnhancedCode: smtp.EnhancedCode{5, 7, 1}, Message: "<" + to + ">: Relay access denied"}
	}
	s.rcpts = append(s.rcpts, to)
	return nil
}

func (s *miniSession) Data(r io.Reader) error {
	body, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	client := s.c.Conn().RemoteAddr()
	if s.m.mutation == "proxy-ignored" {
		if pc, ok := s.c.Conn().(*proxyproto.Conn); ok {
			client = pc.Raw().RemoteAddr()
		}
	}
	host, _, _ := net.SplitHostPort(client.String())
	msg := append([]byte(fmt.Sprintf("Received: from %s (unknown [%s])\r\n\tby mini.test with ESMTP\r\n", s.c.Hostname(), host)), body...)
	m, from := s.m, s.from // the session is reset once Data returns
	for _, rc := range s.rcpts {
		switch s.route(rc) {
		case scenarios.RouteLocal:
			u := m.users[scenarios.Canonical(rc)]
			if m.mutation == "late-duplicate" && scenarios.Canonical(rc) == "dave@example.org" {
				m.serve(func() {
					select {
					case <-m.lateDone:
					case <-time.After(10 * time.Second):
					}
					_, _ = u.Append("INBOX", bytes.NewReader(msg), &imap.AppendOptions{})
				})
				continue
			}
			if m.mutation == "late-duplicate" && len(s.rcpts) == 1 && rc == "alice@example.org" {
				m.serve(func() {
					select {
					case <-m.lateGate:
					case <-time.After(10 * time.Second):
					}
					_, _ = u.Append("INBOX", bytes.NewReader(msg), &imap.AppendOptions{})
					m.lateCopyIn()
				})
			}
			copies := 1
			if m.mutation == "duplicate-local" {
				copies = 2
			}
			for range copies {
				if _, err := u.Append("INBOX", bytes.NewReader(msg), &imap.AppendOptions{}); err != nil {
					return err
				}
			}
		case scenarios.RouteSource:
			m.deliver(m.source, from, rc, msg)
		case scenarios.RouteMX:
			if m.mutation == "drop-external" {
				continue
			}
			m.serve(func() {
				ip, err := m.lookupMX(rc)
				if err == nil {
					err = relay(net.JoinHostPort(ip, m.mxPort), from, rc, msg)
				}
				_ = err // a lost message is what the harness must notice
			})
		}
	}
	return nil
}

func (s *miniSession) Reset()        { s.from, s.rcpts = "", nil }
func (s *miniSession) Logout() error { return nil }

// deliver relays msg in the background, like a queue.
func (m *miniTarget) deliver(addr, from, rcpt string, msg []byte) {
	if m.mutation == "proxy-to-source" {
		m.serve(func() { _ = relayWithProxyHeader(addr, from, rcpt, msg) })
		return
	}
	if m.mutation == "late-duplicate" {
		m.serve(func() {
			_ = relay(addr, from, rcpt, msg)
			select {
			case <-m.lateGate:
			case <-time.After(10 * time.Second):
			}
			_ = relay(addr, from, rcpt, msg)
			m.lateCopyIn()
		})
		return
	}
	m.serve(func() { _ = relay(addr, from, rcpt, msg) })
}

// lateCopyIn counts a second copy delivered; the last one lets dave's through.
func (m *miniTarget) lateCopyIn() {
	if m.lateSent.Add(1) == m.lateWant {
		close(m.lateDone)
	}
}

// relayWithProxyHeader relays msg as a server with a misconfigured outbound side
// would: a PROXY v1 header first (which the receiving MTA answers as an unknown
// command), then the SMTP dialogue.
func relayWithProxyHeader(addr, from, rcpt string, msg []byte) error {
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return err
	}
	defer nc.Close()
	if err := nc.SetDeadline(time.Now().Add(10 * time.Second)); err != nil {
		return err
	}
	if _, err := proxyproto.HeaderProxyFromAddrs(1, nc.LocalAddr(), nc.RemoteAddr()).WriteTo(nc); err != nil {
		return err
	}
	tc := textproto.NewConn(nc)
	if _, _, err := tc.ReadResponse(220); err != nil {
		return err
	}
	if _, _, err := tc.ReadResponse(0); err != nil { // the reply to the PROXY line
		return err
	}
	for _, step := range []struct {
		cmd  string
		code int
	}{{"EHLO mini.test", 250}, {"MAIL FROM:<" + from + ">", 250}, {"RCPT TO:<" + rcpt + ">", 250}, {"DATA", 354}} {
		if err := tc.PrintfLine("%s", step.cmd); err != nil {
			return err
		}
		if _, _, err := tc.ReadResponse(step.code); err != nil {
			return err
		}
	}
	w := tc.DotWriter()
	if _, err := w.Write(bytes.ReplaceAll(msg, []byte("\r\n"), []byte("\n"))); err != nil {
		return err
	}
	if err := w.Close(); err != nil {
		return err
	}
	if _, _, err := tc.ReadResponse(250); err != nil {
		return err
	}
	return tc.PrintfLine("QUIT")
}

func relay(addr, from, rcpt string, msg []byte) error {
	c, err := smtp.Dial(addr)
	if err != nil {
		return err
	}
	defer c.Close()
	c.CommandTimeout, c.SubmissionTimeout = 5*time.Second, 5*time.Second
	if err := c.Hello("mini.test"); err != nil {
		return err
	}
	if err := c.SendMail(from, []string{rcpt}, bytes.NewReader(msg)); err != nil {
		return err
	}
	return c.Quit()
}

// lookupMX asks the fake DNS for rcpt's domain's MX, then its A record.
func (m *miniTarget) lookupMX(rcpt string) (string, error) {
	_, domain, _ := strings.Cut(rcpt, "@")
	c := &dns.Client{Timeout: 2 * time.Second}
	q := new(dns.Msg)
	q.SetQuestion(dns.Fqdn(domain), dns.TypeMX)
	r, _, err := c.Exchange(q, m.dns)
	if err != nil {
		return "", err
	}
	for _, rr := range r.Answer {
		if mx, ok := rr.(*dns.MX); ok {
			q.SetQuestion(mx.Mx, dns.TypeA)
			r, _, err := c.Exchange(q, m.dns)
			if err != nil {
				return "", err
			}
			for _, rr := range r.Answer {
				if a, ok := rr.(*dns.A); ok {
					return a.A.String(), nil
				}
			}
		}
	}
	return "", errors.New("no MX")
}

type nopLogger struct{}

func (nopLogger) Printf(string, ...any) {}
func (nopLogger) Println(...any)        {}

func listen(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

// freeTCP and freeUDP return a loopback address that was just free, below the
// ephemeral range: an outgoing connection cannot take it before the harness binds it.
func freeTCP(t *testing.T) string {
	t.Helper()
	addr, err := freeport.TCP("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	return addr
}

// freeUDP is free for both TCP and UDP: the fake DNS binds both.
func freeUDP(t *testing.T) string {
	t.Helper()
	addr, err := freeport.TCPAndUDP("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	return addr
}
