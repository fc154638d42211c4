package reftarget_test

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
	"go.uber.org/goleak"

	"github.com/splitcheck/splitcheck/internal/reftarget"
	"github.com/splitcheck/splitcheck/internal/reftarget/reftargettest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// The tests use their own loopback block, not the defaults, so that they do
// not collide with another package's tests that start a default target.
const (
	tProxy      = "127.0.2.1:25"
	tPlain      = "127.0.2.2:25"
	tSubmission = "127.0.2.1:587"
	tIMAP       = "127.0.2.1:143"
	tSource     = "127.0.2.4:2525"
	tNameserver = "127.0.2.53"
	tMX         = "127.0.2.5:25"
	tMXHost     = "127.0.2.5"

	announced = "198.51.100.7"
	domain    = "example.org"
	alice     = "alice@example.org"
	dave      = "dave@example.org"
	bob       = "bob@example.org" // unmigrated: no account
	carol     = "carol@external.test"
)

// testLogger shows the target's progress with -v.
func testLogger() *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return nil
}

// fakes is the world around the target: source sink, MX sink, fake DNS.
type fakes struct {
	source, mx *sink
	dns        *fakeDNS
}

func startFakes(t *testing.T) *fakes {
	t.Helper()
	return &fakes{source: startSink(t, tSource), mx: startSink(t, tMX), dns: startDNS(t, tNameserver)}
}

type world struct {
	*fakes
	tgt  *reftarget.Target
	pass map[string]string
	ctx  context.Context
}

// startTarget starts a target with alice and dave on the test addresses.
func startTarget(t *testing.T, f *fakes, m reftarget.Mutation) *world {
	t.Helper()
	pass := map[string]string{alice: rand.Text(), dave: rand.Text()}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	tgt, err := reftarget.Start(ctx, reftarget.Options{
		Accounts:         []reftarget.Account{{Address: alice, Password: pass[alice]}, {Address: dave, Password: pass[dave]}},
		ProxyListen:      tProxy,
		PlainListen:      tPlain,
		SubmissionListen: tSubmission,
		IMAPListen:       tIMAP,
		SourceRelay:      tSource,
		Nameserver:       tNameserver,
		Mutation:         m,
		Logger:           testLogger(),
	})
	if err != nil {
		var se *reftarget.StartError
		if errors.As(err, &se) {
			t.Fatalf("Start(%q): %v\n%s", m, err, se.Maillog)
		}
		t.Fatalf("Start(%q): %v", m, err)
	}
	t.Cleanup(func() {
		cctx, ccancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer ccancel()
		if err := tgt.Close(cctx); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return &world{fakes: f, tgt: tgt, pass: pass, ctx: ctx}
}

// fail reports an error with the target's log tail.
func (w *world) fail(t *testing.T, format string, args ...any) {
	t.Helper()
	t.Fatalf("%s\n--- maillog ---\n%s", fmt.Sprintf(format, args...), w.tgt.Maillog())
}

// --- SMTP client helpers ---

func newID() string { return "<" + rand.Text() + "@reftarget.test>" }

func message(id, from, to string) string {
	return "From: <" + from + ">\r\nTo: <" + to + ">\r\nSubject: reftarget test\r\nMessage-ID: " + id +
		"\r\nDate: " + time.Now().Format(time.RFC1123Z) + "\r\n\r\nprobe " + id + "\r\n"
}

// dial connects to addr; with a non-empty proxyFrom it first writes a PROXY v1
// header announcing that client, in a single Write, before reading the banner.
func dial(t *testing.T, addr, proxyFrom string) net.Conn {
	t.Helper()
	conn, err := net.DialTimeout("tcp4", addr, 5*time.Second)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	if err := conn.SetDeadline(time.Now().Add(30 * time.Second)); err != nil {
		t.Fatalf("set deadline: %v", err)
	}
	if proxyFrom != "" {
		host, port, _ := net.SplitHostPort(addr)
		hdr := fmt.Sprintf("PROXY TCP4 %s %s 40000 %s\r\n", proxyFrom, host, port)
		if _, err := conn.Write([]byte(hdr)); err != nil {
			t.Fatalf("write PROXY header: %v", err)
		}
	}
	return conn
}

func smtpClient(t *testing.T, addr, proxyFrom string) *smtp.Client {
	t.Helper()
	c := smtp.NewClient(dial(t, addr, proxyFrom))
	c.CommandTimeout = 20 * time.Second
	c.SubmissionTimeout = 20 * time.Second
	if err := c.Hello("client.sender.test"); err != nil {
		t.Fatalf("EHLO %s: %v", addr, err)
	}
	return c
}

// submissionClient logs in with AUTH PLAIN after STARTTLS.
func submissionClient(t *testing.T, user, pass string) *smtp.Client {
	t.Helper()
	c, err := smtp.NewClientStartTLS(dial(t, tSubmission, ""), &tls.Config{InsecureSkipVerify: true}) // snakeoil
	if err != nil {
		t.Fatalf("STARTTLS on %s: %v", tSubmission, err)
	}
	c.CommandTimeout = 20 * time.Second
	c.SubmissionTimeout = 20 * time.Second
	if _, ok := c.TLSConnectionState(); !ok {
		t.Fatalf("submission connection is not TLS after STARTTLS")
	}
	if err := c.Auth(sasl.NewPlainClient("", user, pass)); err != nil {
		t.Fatalf("AUTH PLAIN as %s: %v", user, err)
	}
	return c
}

// send runs one transaction; the error is the first failing command's.
func send(c *smtp.Client, from, to, body string) error {
	if err := c.Mail(from, nil); err != nil {
		return err
	}
	if err := c.Rcpt(to, nil); err != nil {
		return err
	}
	w, err := c.Data()
	if err != nil {
		return err
	}
	if _, err := io.WriteString(w, body); err != nil {
		return err
	}
	return w.Close()
}

func smtpCode(err error) int {
	var se *smtp.SMTPError
	if errors.As(err, &se) {
		return se.Code
	}
	return 0
}

// --- sink: minimal go-smtp server recording messages ---

type sinkMsg struct {
	From string
	To   []string
	Data string
}

type sink struct {
	addr string
	srv  *smtp.Server
	done chan struct{}
	mu   sync.Mutex
	msgs []sinkMsg
}

func startSink(t *testing.T, addr string) *sink {
	t.Helper()
	ln, err := net.Listen("tcp4", addr)
	if err != nil {
		t.Fatalf("sink listen %s: %v", addr, err)
	}
	s := &sink{addr: addr, done: make(chan struct{})}
	s.srv = smtp.NewServer(smtp.BackendFunc(func(*smtp.Conn) (smtp.Session, error) { return &sinkSession{s: s}, nil }))
	s.srv.Domain = "sink.test"
	s.srv.ReadTimeout = 30 * time.Second
	s.srv.WriteTimeout = 30 * time.Second
	s.srv.ErrorLog = log.New(io.Discard, "", 0)
	go func() {
		defer close(s.done)
		_ = s.srv.Serve(ln)
	}()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := s.srv.Shutdown(ctx); err != nil {
			_ = s.srv.Close()
		}
		ln.Close() // in case Serve had not registered it yet
		<-s.done
	})
	return s
}

// find returns the messages whose data contains id.
func (s *sink) find(id string) []sinkMsg {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []sinkMsg
	for _, m := range s.msgs {
		if strings.Contains(m.Data, id) {
			out = append(out, m)
		}
	}
	return out
}

// wait polls until a message containing id arrived, or ctx ends.
func (s *sink) wait(ctx context.Context, id string) (sinkMsg, error) {
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		if m := s.find(id); len(m) > 0 {
			return m[0], nil
		}
		select {
		case <-ctx.Done():
			return sinkMsg{}, fmt.Errorf("sink %s: %s never arrived: %w", s.addr, id, ctx.Err())
		case <-tick.C:
		}
	}
}

type sinkSession struct {
	s   *sink
	cur sinkMsg
}

func (ss *sinkSession) Reset()        { ss.cur = sinkMsg{} }
func (ss *sinkSession) Logout() error { return nil }
func (ss *sinkSession) Mail(from string, _ *smtp.MailOptions) error {
	ss.cur.From = from
	return nil
}
func (ss *sinkSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	ss.cur.To = append(ss.cur.To, to)
	return nil
}
func (ss *sinkSession) Data(r io.Reader) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	ss.cur.Data = string(b)
	ss.s.mu.Lock()
	ss.s.msgs = append(ss.s.msgs, ss.cur)
	ss.s.mu.Unlock()
	ss.cur = sinkMsg{}
	return nil
}

// --- fake DNS: external.test MX -> mx.external.test A tMXHost ---
//
// A minimal UDP responder on the standard library: miekg/dns needs a
// golang.org/x/net go.sum entry that go.sum does not carry yet.

type fakeDNS struct {
	pc   net.PacketConn
	done chan struct{}

	mu      sync.Mutex
	queries []string
}

func startDNS(t *testing.T, ip string) *fakeDNS {
	t.Helper()
	pc, err := net.ListenPacket("udp4", net.JoinHostPort(ip, "53"))
	if err != nil {
		t.Fatalf("dns listen %s:53: %v", ip, err)
	}
	f := &fakeDNS{pc: pc, done: make(chan struct{})}
	go f.serve()
	t.Cleanup(func() {
		_ = pc.Close()
		<-f.done
	})
	return f
}

func (f *fakeDNS) serve() {
	defer close(f.done)
	buf := make([]byte, 1500)
	for {
		n, from, err := f.pc.ReadFrom(buf)
		if err != nil {
			return // closed
		}
		if resp := f.answer(buf[:n]); resp != nil {
			_ = f.pc.SetWriteDeadline(time.Now().Add(time.Second))
			_, _ = f.pc.WriteTo(resp, from)
		}
	}
}

const (
	dnsTypeA    = 1
	dnsTypeMX   = 15
	dnsTypeAAAA = 28
)

// answer builds the reply to one query, or nil for garbage.
func (f *fakeDNS) answer(q []byte) []byte {
	if len(q) < 12 || q[2]&0x80 != 0 || q[4] != 0 || q[5] != 1 {
		return nil
	}
	var labels []string
	i := 12
	for {
		if i >= len(q) {
			return nil
		}
		l := int(q[i])
		i++
		if l == 0 {
			break
		}
		if l > 63 || i+l > len(q) {
			return nil
		}
		labels = append(labels, strings.ToLower(string(q[i:i+l])))
		i += l
	}
	if i+4 > len(q) {
		return nil
	}
	qtype := int(q[i])<<8 | int(q[i+1])
	qend := i + 4
	name := strings.Join(labels, ".") + "."
	f.mu.Lock()
	f.queries = append(f.queries, fmt.Sprintf("%d %s", qtype, name))
	f.mu.Unlock()

	resp := append([]byte(nil), q[:qend]...)
	resp[2] = 0x84 | q[2]&0x01 // QR, AA, RD copied
	resp[3] = 0
	for j := 6; j < 12; j++ { // ANCOUNT, NSCOUNT, ARCOUNT = 0
		resp[j] = 0
	}
	rr := func(typ int, rdata []byte) {
		resp = append(resp, 0xc0, 12, byte(typ>>8), byte(typ), 0, 1, 0, 0, 0, 60, byte(len(rdata)>>8), byte(len(rdata)))
		resp = append(resp, rdata...)
		resp[7]++
	}
	switch {
	case name == "external.test." && qtype == dnsTypeMX:
		rr(dnsTypeMX, append([]byte{0, 10}, encodeName("mx.external.test.")...))
	case name == "mx.external.test." && qtype == dnsTypeA:
		rr(dnsTypeA, net.ParseIP(tMXHost).To4())
	case name == "external.test." || name == "mx.external.test.":
		// NOERROR, no data
	default:
		resp[3] = 3 // NXDOMAIN
	}
	return resp
}

func encodeName(name string) []byte {
	var b []byte
	for _, l := range strings.Split(strings.TrimSuffix(name, "."), ".") {
		b = append(b, byte(len(l)))
		b = append(b, l...)
	}
	return append(b, 0)
}

func (f *fakeDNS) asked(q string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, got := range f.queries {
		if got == q {
			return true
		}
	}
	return false
}

// --- IMAP ---
//
// A minimal IMAP client: go-imap/v2's imapclient needs github.com/emersion/go-message,
// which go.mod does not carry yet.

type imapConn struct {
	conn net.Conn
	r    *bufio.Reader
	tag  int
}

// cmd sends one command and returns its untagged responses (literals inlined).
func (c *imapConn) cmd(format string, args ...any) ([]string, error) {
	c.tag++
	tag := fmt.Sprintf("t%d", c.tag)
	line := tag + " " + fmt.Sprintf(format, args...) + "\r\n"
	if _, err := io.WriteString(c.conn, line); err != nil {
		return nil, err
	}
	var untagged []string
	for {
		resp, err := c.readResponse()
		if err != nil {
			return untagged, err
		}
		if rest, ok := strings.CutPrefix(resp, tag+" "); ok {
			if !strings.HasPrefix(rest, "OK") {
				return untagged, fmt.Errorf("IMAP %s: %s", strings.Fields(format)[0], rest)
			}
			return untagged, nil
		}
		untagged = append(untagged, resp)
	}
}

// readResponse reads one response line, inlining {N} literals.
func (c *imapConn) readResponse() (string, error) {
	var b strings.Builder
	for {
		line, err := c.r.ReadString('\n')
		if err != nil {
			return b.String(), err
		}
		b.WriteString(line)
		trimmed := strings.TrimRight(line, "\r\n")
		if i := strings.LastIndexByte(trimmed, '{'); i >= 0 && strings.HasSuffix(trimmed, "}") {
			n, err := strconv.Atoi(trimmed[i+1 : len(trimmed)-1])
			if err == nil {
				lit := make([]byte, n)
				if _, err := io.ReadFull(c.r, lit); err != nil {
					return b.String(), err
				}
				b.Write(lit)
				continue
			}
		}
		return strings.TrimRight(b.String(), "\r\n"), nil
	}
}

func imapQuote(s string) string {
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(s) + `"`
}

// imapFind logs in and waits until an INBOX message has Message-ID id; it
// returns that message's header and the number of matches.
func imapFind(ctx context.Context, user, pass, id string) (string, int, error) {
	d := net.Dialer{Timeout: 5 * time.Second}
	conn, err := d.DialContext(ctx, "tcp4", tIMAP)
	if err != nil {
		return "", 0, err
	}
	defer func() { _ = conn.Close() }()
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(30 * time.Second)
	}
	if err := conn.SetDeadline(deadline.Add(time.Second)); err != nil {
		return "", 0, err
	}
	c := &imapConn{conn: conn, r: bufio.NewReader(conn)}
	greeting, err := c.readResponse()
	if err != nil {
		return "", 0, fmt.Errorf("IMAP greeting: %w", err)
	}
	if !strings.HasPrefix(greeting, "* OK") || !strings.Contains(greeting, "STARTTLS") {
		return "", 0, fmt.Errorf("IMAP greeting %q; want * OK offering STARTTLS", greeting)
	}
	if _, err := c.cmd("LOGIN %s %s", imapQuote(user), imapQuote(pass)); err != nil {
		return "", 0, err
	}
	if _, err := c.cmd("SELECT INBOX"); err != nil {
		return "", 0, err
	}
	defer func() { _, _ = c.cmd("LOGOUT") }()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		if _, err := c.cmd("NOOP"); err != nil {
			return "", 0, err
		}
		resp, err := c.cmd("UID SEARCH HEADER Message-ID %s", imapQuote(id))
		if err != nil {
			return "", 0, err
		}
		var uids []string
		for _, r := range resp {
			if rest, ok := strings.CutPrefix(r, "* SEARCH"); ok {
				uids = append(uids, strings.Fields(rest)...)
			}
		}
		if len(uids) > 0 {
			resp, err := c.cmd("UID FETCH %s (BODY.PEEK[HEADER])", uids[0])
			if err != nil {
				return "", 0, err
			}
			for _, r := range resp {
				if strings.Contains(r, " FETCH ") {
					return r, len(uids), nil
				}
			}
			return "", 0, fmt.Errorf("IMAP FETCH %s: no FETCH response in %q", uids[0], resp)
		}
		select {
		case <-ctx.Done():
			return "", 0, fmt.Errorf("%s never reached %s's INBOX: %w", id, user, ctx.Err())
		case <-tick.C:
		}
	}
}

// deliverLocal sends to rcpt through the PROXY listener and waits for it in
// mailbox's INBOX; it returns the delivered header.
func (w *world) deliverLocal(t *testing.T, rcpt, mailbox string) string {
	t.Helper()
	id := newID()
	c := smtpClient(t, tProxy, announced)
	if err := send(c, "sender@sender.test", rcpt, message(id, "sender@sender.test", rcpt)); err != nil {
		w.fail(t, "send to %s via PROXY listener: %v", rcpt, err)
	}
	_ = c.Quit()
	ctx, cancel := context.WithTimeout(w.ctx, 20*time.Second)
	defer cancel()
	hdr, n, err := imapFind(ctx, mailbox, w.pass[mailbox], id)
	if err != nil {
		w.fail(t, "%v", err)
	}
	if n != 1 {
		t.Errorf("%s in %s's INBOX %d times; want 1", id, mailbox, n)
	}
	return hdr
}

// receivedFrom returns the Received header Postfix's smtpd added (unfolded).
func receivedFrom(header string) string {
	unfolded := strings.NewReplacer("\r\n\t", " ", "\r\n ", " ").Replace(header)
	for _, line := range strings.Split(unfolded, "\r\n") {
		if strings.HasPrefix(strings.ToLower(line), "received:") && strings.Contains(line, "(Postfix)") {
			return line
		}
	}
	return ""
}

func waitMaillog(ctx context.Context, tgt *reftarget.Target, parts ...string) error {
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		for _, line := range strings.Split(tgt.Maillog(), "\n") {
			all := true
			for _, p := range parts {
				all = all && strings.Contains(line, p)
			}
			if all {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("maillog never had a line with %q: %w", parts, ctx.Err())
		case <-tick.C:
		}
	}
}

// --- tests ---

func TestTarget(t *testing.T) {
	reftargettest.Require(t)
	f := startFakes(t)
	w := startTarget(t, f, reftarget.MutationNone)

	t.Run("local via PROXY lands in Dovecot with announced address", func(t *testing.T) {
		hdr := w.deliverLocal(t, alice, alice)
		got := receivedFrom(hdr)
		if !strings.Contains(got, "["+announced+"]") {
			t.Errorf("Received = %q; want it to contain [%s]", got, announced)
		}
	})

	t.Run("unmigrated relayed to source", func(t *testing.T) {
		id := newID()
		c := smtpClient(t, tProxy, "198.51.100.8")
		if err := send(c, "sender@sender.test", bob, message(id, "sender@sender.test", bob)); err != nil {
			w.fail(t, "send to %s: %v", bob, err)
		}
		_ = c.Quit()
		ctx, cancel := context.WithTimeout(w.ctx, 20*time.Second)
		defer cancel()
		m, err := f.source.wait(ctx, id)
		if err != nil {
			w.fail(t, "%v", err)
		}
		if len(m.To) != 1 || m.To[0] != bob {
			t.Errorf("source envelope To = %q; want [%s]", m.To, bob)
		}
		if !strings.Contains(m.Data, "[198.51.100.8]") {
			t.Errorf("relayed Received = %q; want [198.51.100.8]", receivedFrom(m.Data))
		}
	})

	t.Run("unauthenticated external refused", func(t *testing.T) {
		for _, tt := range []struct{ name, addr, proxyFrom string }{
			{"PROXY listener", tProxy, announced},
			{"plain listener", tPlain, ""},
		} {
			t.Run(tt.name, func(t *testing.T) {
				c := smtpClient(t, tt.addr, tt.proxyFrom)
				defer func() { _ = c.Close() }()
				if err := c.Mail("sender@sender.test", nil); err != nil {
					t.Fatalf("MAIL: %v", err)
				}
				err := c.Rcpt(carol, nil)
				if got := smtpCode(err); got != 554 || !strings.Contains(err.Error(), "Relay access denied") {
					t.Errorf("RCPT %s = %v (code %d); want 554 Relay access denied", carol, err, got)
				}
			})
		}
	})

	t.Run("headerless EHLO on PROXY listener refused", func(t *testing.T) {
		conn := dial(t, tProxy, "")
		if _, err := conn.Write([]byte("EHLO client.sender.test\r\n")); err != nil {
			t.Fatalf("write EHLO: %v", err)
		}
		b, err := io.ReadAll(conn)
		reply := string(b)
		if strings.HasPrefix(reply, "220") || (reply != "" && !strings.HasPrefix(reply, "421")) {
			t.Errorf("reply to headerless EHLO = %q (err %v); want 421 or a closed connection", reply, err)
		}
	})

	t.Run("submission STARTTLS PLAIN to external delivered by MX", func(t *testing.T) {
		id := newID()
		c := submissionClient(t, alice, w.pass[alice])
		if err := send(c, alice, carol, message(id, alice, carol)); err != nil {
			w.fail(t, "authenticated send to %s: %v", carol, err)
		}
		_ = c.Quit()
		ctx, cancel := context.WithTimeout(w.ctx, 20*time.Second)
		defer cancel()
		m, err := f.mx.wait(ctx, id)
		if err != nil {
			w.fail(t, "%v", err)
		}
		if len(m.To) != 1 || m.To[0] != carol {
			t.Errorf("MX envelope To = %q; want [%s]", m.To, carol)
		}
		if !f.dns.asked(fmt.Sprintf("%d external.test.", dnsTypeMX)) {
			t.Errorf("fake DNS never got MX external.test.: the chroot resolv.conf is not used")
		}
	})

	t.Run("submission refuses bad or missing auth", func(t *testing.T) {
		c, err := smtp.NewClientStartTLS(dial(t, tSubmission, ""), &tls.Config{InsecureSkipVerify: true})
		if err != nil {
			t.Fatalf("STARTTLS: %v", err)
		}
		defer func() { _ = c.Close() }()
		if err := c.Auth(sasl.NewPlainClient("", alice, "wrong")); smtpCode(err) != 535 {
			t.Errorf("AUTH with wrong password = %v; want 535", err)
		}
		c2 := smtpClient(t, tSubmission, "")
		defer func() { _ = c2.Close() }()
		c = c2
		if err := c.Mail(alice, nil); err != nil {
			t.Fatalf("MAIL: %v", err)
		}
		if err := c.Rcpt(carol, nil); smtpCode(err) != 554 {
			t.Errorf("unauthenticated RCPT on submission = %v; want 554", err)
		}
	})

	t.Run("close leaves nothing behind", func(t *testing.T) {
		dir := w.tgt.Options().Dir
		pids, err := reftarget.InstanceProcesses(dir)
		if err != nil || len(pids) < 5 {
			t.Fatalf("InstanceProcesses(%s) before Close = %v, %v; want the running daemons", dir, pids, err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := w.tgt.Close(ctx); err != nil {
			t.Fatalf("Close: %v", err)
		}
		if err := w.tgt.Close(ctx); err != nil {
			t.Errorf("second Close = %v; want nil", err)
		}
		if pids, err := reftarget.InstanceProcesses(dir); err != nil || len(pids) != 0 {
			t.Errorf("InstanceProcesses(%s) after Close = %v, %v; want none", dir, pids, err)
		}
		if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("Stat(%s) after Close = %v; want not exist", dir, err)
		}
		for _, addr := range []string{tProxy, tPlain, tSubmission, tIMAP} {
			ln, err := net.Listen("tcp4", addr)
			if err != nil {
				t.Errorf("listen %s after Close: %v; want free", addr, err)
				continue
			}
			_ = ln.Close()
		}
		if !strings.Contains(w.tgt.Maillog(), "postfix/submission") {
			t.Errorf("Maillog after Close lacks the final log tail:\n%s", w.tgt.Maillog())
		}
	})
}

func TestMutations(t *testing.T) {
	reftargettest.Require(t)
	f := startFakes(t)
	for _, tt := range []struct {
		m     reftarget.Mutation
		check func(t *testing.T, w *world)
	}{
		{reftarget.MutationUnmigratedLocal, func(t *testing.T, w *world) {
			w.deliverLocal(t, bob, alice)
		}},
		{reftarget.MutationUnmigratedRejected, func(t *testing.T, w *world) {
			c := smtpClient(t, tProxy, announced)
			defer func() { _ = c.Close() }()
			if err := c.Mail("sender@sender.test", nil); err != nil {
				t.Fatalf("MAIL: %v", err)
			}
			if err := c.Rcpt(bob, nil); smtpCode(err) != 550 {
				t.Errorf("RCPT %s = %v; want 550", bob, err)
			}
			if err := c.Rcpt(alice, nil); err != nil {
				t.Errorf("RCPT %s = %v; want accepted", alice, err)
			}
		}},
		{reftarget.MutationLocalRelayed, func(t *testing.T, w *world) {
			id := newID()
			c := smtpClient(t, tProxy, announced)
			if err := send(c, "sender@sender.test", alice, message(id, "sender@sender.test", alice)); err != nil {
				w.fail(t, "send: %v", err)
			}
			_ = c.Quit()
			ctx, cancel := context.WithTimeout(w.ctx, 20*time.Second)
			defer cancel()
			m, err := w.source.wait(ctx, id)
			if err != nil {
				w.fail(t, "%v", err)
			}
			if len(m.To) != 1 || m.To[0] != alice {
				t.Errorf("source envelope To = %q; want [%s]", m.To, alice)
			}
			w.deliverLocal(t, dave, dave) // the other account still local
		}},
		{reftarget.MutationOpenRelay, func(t *testing.T, w *world) {
			id := newID()
			c := smtpClient(t, tPlain, "")
			if err := send(c, "sender@sender.test", carol, message(id, "sender@sender.test", carol)); err != nil {
				w.fail(t, "unauthenticated send to %s = %v; want accepted", carol, err)
			}
			_ = c.Quit()
			ctx, cancel := context.WithTimeout(w.ctx, 20*time.Second)
			defer cancel()
			if _, err := w.mx.wait(ctx, id); err != nil {
				w.fail(t, "%v", err)
			}
		}},
		{reftarget.MutationProxyIgnored, func(t *testing.T, w *world) {
			got := receivedFrom(w.deliverLocal(t, alice, alice))
			if strings.Contains(got, announced) || !strings.Contains(got, "[127.0.") {
				t.Errorf("Received = %q; want the proxy's 127.0.x address, not %s", got, announced)
			}
		}},
		{reftarget.MutationExternalUndelivered, func(t *testing.T, w *world) {
			id := newID()
			c := submissionClient(t, alice, w.pass[alice])
			if err := send(c, alice, carol, message(id, alice, carol)); err != nil {
				w.fail(t, "authenticated send to %s = %v; want accepted", carol, err)
			}
			_ = c.Quit()
			ctx, cancel := context.WithTimeout(w.ctx, 20*time.Second)
			defer cancel()
			if err := waitMaillog(ctx, w.tgt, "to=<"+carol+">", "status=bounced", "external delivery disabled"); err != nil {
				w.fail(t, "%v", err)
			}
			if got := w.mx.find(id); len(got) != 0 {
				t.Errorf("MX sink got %d copies of %s; want 0", len(got), id)
			}
		}},
	} {
		t.Run(string(tt.m), func(t *testing.T) {
			w := startTarget(t, f, tt.m)
			tt.check(t, w)
		})
	}
}

func TestStartAddressInUse(t *testing.T) {
	reftargettest.Require(t)
	ln, err := net.Listen("tcp4", tPlain)
	if err != nil {
		t.Fatalf("listen %s: %v", tPlain, err)
	}
	defer func() { _ = ln.Close() }()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	tgt, err := reftarget.Start(ctx, reftarget.Options{
		ProxyListen: tProxy, PlainListen: tPlain, SubmissionListen: tSubmission, IMAPListen: tIMAP,
		SourceRelay: tSource, Nameserver: tNameserver,
	})
	if err == nil {
		_ = tgt.Close(ctx)
		t.Fatalf("Start with %s taken = nil error; want ErrAddressInUse", tPlain)
	}
	if !errors.Is(err, reftarget.ErrAddressInUse) || !strings.Contains(err.Error(), tPlain) {
		t.Errorf("Start with %s taken = %v; want ErrAddressInUse naming %s", tPlain, err, tPlain)
	}
}

func TestStartInvalidOptions(t *testing.T) {
	for _, tt := range []struct {
		name string
		o    reftarget.Options
	}{
		{"account outside domain", reftarget.Options{Accounts: []reftarget.Account{{Address: "x@other.test", Password: "p"}}}},
		{"password with colon", reftarget.Options{Accounts: []reftarget.Account{{Address: alice, Password: "a:b"}}}},
		{"empty password", reftarget.Options{Accounts: []reftarget.Account{{Address: alice}}}},
		{"duplicate account", reftarget.Options{Accounts: []reftarget.Account{{Address: alice, Password: "p"}, {Address: "ALICE@example.org", Password: "q"}}}},
		{"unknown mutation", reftarget.Options{Mutation: "typo"}},
		{"mutation needs an account", reftarget.Options{Mutation: reftarget.MutationLocalRelayed}},
		{"non-loopback listener", reftarget.Options{PlainListen: "198.51.100.1:25"}},
		{"listener without port", reftarget.Options{IMAPListen: "127.0.0.1"}},
		{"same address twice", reftarget.Options{PlainListen: reftarget.DefaultProxyListen}},
		{"non-loopback nameserver", reftarget.Options{Nameserver: "198.51.100.53"}},
		{"dir with space", reftarget.Options{Dir: "/tmp/a b"}},
		{"bad domain", reftarget.Options{Domain: "not a domain"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			tgt, err := reftarget.Start(ctx, tt.o)
			if err == nil {
				_ = tgt.Close(ctx)
			}
			if !errors.Is(err, reftarget.ErrInvalidOptions) {
				t.Errorf("Start(%+v) = %v; want ErrInvalidOptions", tt.o, err)
			}
		})
	}
}
