package harness

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"net/textproto"
	"os"
	"strings"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"github.com/splitcheck/splitcheck/scenarios"
)

// headerlessNudge is how long the headerless check waits for a banner before it
// speaks first (a PROXY listener waits for the header; EHLO makes it answer at once).
const headerlessNudge = time.Second

// sent is what happened when a probe's message was sent.
type sent struct {
	id    string
	start time.Time // when the probe started (monotonic)
	// rejects holds the refusal of each recipient the server refused (RCPT
	// or DATA), by canonical address: Place reject for a 5xx reply,
	// deferred for a 4xx one.
	rejects map[string]scenarios.Observation
	// accepted is the final DATA reply when the server took the message.
	accepted string
	// err means the message could not be offered at all (connect, TLS, EHLO,
	// AUTH, MAIL).
	err error
}

// send delivers probe p's message with id over SMTP, as its entry says.
func (r *run) send(ctx context.Context, p scenarios.Probe, id string) *sent {
	s := &sent{id: id, start: time.Now(), rejects: map[string]scenarios.Observation{}}
	cfg := r.cfg
	var addr, from, where string
	switch p.Entry {
	case scenarios.EntryProxy:
		addr, where = r.env.proxyAddr(), cfg.Target.SMTP+" through the proxy"
	case scenarios.EntryPlain:
		addr, from, where = cfg.Target.PlainSMTP, cfg.Probe.PlainSource, cfg.Target.PlainSMTP
	case scenarios.EntrySubmission:
		addr, where = cfg.Target.Submission, cfg.Target.Submission
	default:
		s.err = fmt.Errorf("entry %q cannot send mail", p.Entry)
		return s
	}
	if addr == "" {
		s.err = fmt.Errorf("no address for entry %s", p.Entry)
		return s
	}
	c, stop, err := r.dialSMTP(ctx, addr, from, p.Entry == scenarios.EntrySubmission)
	if err != nil {
		s.err = err
		return s
	}
	defer stop()
	defer c.Close()

	refuse := func(cmd string, rcpts []string, err error) bool {
		var se *smtp.SMTPError
		if !errors.As(err, &se) {
			s.err = fmt.Errorf("%s: %w", cmd, err)
			return false
		}
		place := scenarios.RouteReject
		if se.Code < 500 {
			// A temporary failure: the client would retry, so it proves no refusal.
			place = scenarios.RouteDeferred
		}
		o := scenarios.Observation{Place: place, Where: cmd + " at " + where, Evidence: cmd + " " + replyText(se), At: time.Now()}
		for _, rc := range rcpts {
			s.rejects[scenarios.Canonical(rc)] = o
		}
		return true
	}
	all := make([]string, len(p.Recipients))
	for i, rc := range p.Recipients {
		all[i] = rc.Address
	}
	if err := c.Mail(cfg.Probe.Sender, nil); err != nil {
		// A refused sender says nothing about where the recipients go (none
		// was offered): no verdict, rather than a refusal that would pass an
		// expected reject.
		s.err = fmt.Errorf("MAIL FROM:<%s> refused: %s (no recipient was offered)", cfg.Probe.Sender, errText(err))
		return s
	}
	var accepted []string
	for _, rc := range all {
		if err := c.Rcpt(rc, nil); err != nil {
			if !refuse("RCPT", []string{rc}, err) {
				return s
			}
			continue
		}
		accepted = append(accepted, rc)
	}
	if len(accepted) == 0 {
		_ = c.Quit()
		return s
	}
	w, err := c.Data()
	if err != nil {
		refuse("DATA", accepted, err)
		return s
	}
	if _, err := w.Write(r.message(p, id)); err != nil {
		s.err = fmt.Errorf("DATA: %w", err)
		return s
	}
	resp, err := w.CloseWithResponse()
	if err != nil {
		refuse("DATA", accepted, err)
		return s
	}
	s.accepted = "DATA 250 " + resp.StatusText
	_ = c.Quit()
	return s
}

// dialSMTP connects to addr (from a chosen local IP), greets with the probe's HELO
// name, and for submission sets up TLS and logs in. Every command is bounded by the
// connect timeout, and ctx's end closes the connection until stop is called.
func (r *run) dialSMTP(ctx context.Context, addr, from string, submission bool) (c *smtp.Client, stop func() bool, err error) {
	cfg := r.cfg
	timeout := cfg.Timeouts.Connect
	d := net.Dialer{Timeout: timeout}
	if from != "" {
		ip, err := netip.ParseAddr(from)
		if err != nil {
			return nil, nil, fmt.Errorf("local address %q: %w", from, err)
		}
		d.LocalAddr = net.TCPAddrFromAddrPort(netip.AddrPortFrom(ip, 0))
	}
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, nil, fmt.Errorf("dial %s: %w", addr, err)
	}
	stop = context.AfterFunc(ctx, func() { conn.Close() })
	fail := func(err error) (*smtp.Client, func() bool, error) {
		stop()
		conn.Close()
		if ctx.Err() != nil {
			err = fmt.Errorf("%w (%w)", err, context.Cause(ctx))
		}
		return nil, nil, err
	}
	mode := "none"
	if submission {
		mode = cfg.Target.SubmissionTLS
	}
	switch mode {
	case "implicit":
		tc := tls.Client(conn, r.tlsConfig(addr))
		hctx, cancel := context.WithTimeout(ctx, timeout)
		err := tc.HandshakeContext(hctx)
		cancel()
		if err != nil {
			return fail(fmt.Errorf("tls handshake with %s: %w", addr, err))
		}
		c = smtp.NewClient(tc)
	case "starttls":
		tc, err := startTLS(ctx, conn, cfg.Probe.Helo, r.tlsConfig(addr), timeout)
		if err != nil {
			return fail(fmt.Errorf("starttls with %s: %w", addr, err))
		}
		c = smtp.NewClient(tc)
	default:
		c = smtp.NewClient(conn)
	}
	c.CommandTimeout = timeout
	c.SubmissionTimeout = timeout
	if err := c.Hello(cfg.Probe.Helo); err != nil {
		return fail(fmt.Errorf("greeting or EHLO at %s: %s", addr, errText(err)))
	}
	if submission {
		var auth sasl.Client
		user, pass := cfg.Submitter.Username, cfg.Submitter.Password.Value()
		if cfg.Submitter.Mechanism == "login" {
			auth = sasl.NewLoginClient(user, pass)
		} else {
			auth = sasl.NewPlainClient("", user, pass)
		}
		if err := c.Auth(auth); err != nil {
			return fail(fmt.Errorf("AUTH %s as %s at %s: %s", strings.ToUpper(cfg.Submitter.Mechanism), user, addr, errText(err)))
		}
	}
	return c, stop, nil
}

func (r *run) tlsConfig(addr string) *tls.Config {
	// The certificate names the server, not its address, when target.hostname says.
	host, _, _ := net.SplitHostPort(addr)
	if r.cfg.Target.Hostname != "" {
		host = r.cfg.Target.Hostname
	}
	return &tls.Config{
		ServerName:         host,
		InsecureSkipVerify: r.cfg.Target.InsecureSkipVerify, //nolint:gosec // opt-in for self-signed targets
		MinVersion:         tls.VersionTLS12,
	}
}

// startTLS greets, says EHLO with helo, upgrades the connection with STARTTLS, and
// returns a connection that replays a greeting, so that a go-smtp client built on it
// says EHLO helo again inside TLS (go-smtp cannot issue STARTTLS after a custom EHLO).
func startTLS(ctx context.Context, conn net.Conn, helo string, tc *tls.Config, timeout time.Duration) (net.Conn, error) {
	if err := conn.SetDeadline(time.Now().Add(timeout)); err != nil {
		return nil, err
	}
	br := bufio.NewReader(conn)
	tp := textproto.NewReader(br)
	if _, _, err := tp.ReadResponse(220); err != nil {
		return nil, fmt.Errorf("greeting: %s", errText(err))
	}
	if _, err := fmt.Fprintf(conn, "EHLO %s\r\n", helo); err != nil {
		return nil, err
	}
	_, msg, err := tp.ReadResponse(250)
	if err != nil {
		return nil, fmt.Errorf("EHLO: %s", errText(err))
	}
	if !hasExtension(msg, "STARTTLS") {
		return nil, errors.New("the server does not offer STARTTLS")
	}
	if _, err := io.WriteString(conn, "STARTTLS\r\n"); err != nil {
		return nil, err
	}
	if _, _, err := tp.ReadResponse(220); err != nil {
		return nil, fmt.Errorf("STARTTLS: %s", errText(err))
	}
	if br.Buffered() > 0 {
		return nil, errors.New("the server sent data before the TLS handshake")
	}
	t := tls.Client(conn, tc)
	if err := t.HandshakeContext(ctx); err != nil {
		return nil, fmt.Errorf("handshake: %w", err)
	}
	if err := conn.SetDeadline(time.Time{}); err != nil {
		return nil, err
	}
	return &greetedConn{Conn: t, greeting: strings.NewReader("220 " + helo + " TLS established\r\n")}, nil
}

// greetedConn replays a greeting before the real stream.
type greetedConn struct {
	net.Conn
	greeting *strings.Reader
}

func (g *greetedConn) Read(p []byte) (int, error) {
	if g.greeting.Len() > 0 {
		return g.greeting.Read(p)
	}
	return g.Conn.Read(p)
}

func hasExtension(ehlo, ext string) bool {
	for _, line := range strings.Split(ehlo, "\n") {
		if f := strings.Fields(line); len(f) > 0 && strings.EqualFold(f[0], ext) {
			return true
		}
	}
	return false
}

// replyText renders an SMTP error reply: "554 5.7.1 <x@y>: Relay access denied".
func replyText(e *smtp.SMTPError) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d", e.Code)
	if ec := e.EnhancedCode; ec != smtp.NoEnhancedCode && ec != (smtp.EnhancedCode{}) {
		fmt.Fprintf(&b, " %d.%d.%d", ec[0], ec[1], ec[2])
	}
	if msg := strings.Join(strings.Fields(e.Message), " "); msg != "" {
		b.WriteString(" " + msg)
	}
	return b.String()
}

// errText is an SMTP reply when err is one, else err's text.
func errText(err error) string {
	var se *smtp.SMTPError
	if errors.As(err, &se) {
		return replyText(se)
	}
	var te *textproto.Error
	if errors.As(err, &te) {
		return fmt.Sprintf("%d %s", te.Code, strings.Join(strings.Fields(te.Msg), " "))
	}
	return err.Error()
}

// message is the probe's RFC 5322 message.
func (r *run) message(p scenarios.Probe, id string) []byte {
	var to []string
	for _, rc := range p.Recipients {
		to = append(to, rc.Address)
	}
	host, _ := os.Hostname()
	var b bytes.Buffer
	fmt.Fprintf(&b, "Message-ID: %s\r\n", scenarios.MessageID(id))
	fmt.Fprintf(&b, "%s: %s\r\n", scenarios.ProbeHeader, id)
	fmt.Fprintf(&b, "Date: %s\r\n", r.now().Format(time.RFC1123Z))
	fmt.Fprintf(&b, "From: splitcheck <%s>\r\n", r.cfg.Probe.Sender)
	fmt.Fprintf(&b, "To: %s\r\n", strings.Join(to, ", "))
	fmt.Fprintf(&b, "Subject: splitcheck probe %s (%s)\r\n", id, asciiOnly(p.Name))
	b.WriteString("MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n")
	fmt.Fprintf(&b, "This is a splitcheck probe (run %s, probe %q, entry %s, sent from %s).\r\n", r.runID, asciiOnly(p.Name), p.Entry, asciiOnly(host))
	b.WriteString("It checks where a split-delivery mail server routes each recipient; it can be deleted.\r\n")
	return b.Bytes()
}

func asciiOnly(s string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r > 0x7e {
			return '?'
		}
		return r
	}, s)
}

// headerless connects to the PROXY listener from the proxy's own address without a
// PROXY header and reports whether the server refused it (Place reject) or spoke
// SMTP (Place accepted: a banner, then a 250 to EHLO).
func (r *run) headerless(ctx context.Context) (scenarios.Observation, error) {
	cfg := r.cfg
	addr := cfg.Target.SMTP
	timeout := cfg.Timeouts.Connect
	d := net.Dialer{Timeout: timeout}
	from := "the default address"
	if src := cfg.Proxy.SourceAddress; src != "" {
		ip, err := netip.ParseAddr(src)
		if err != nil {
			return scenarios.Observation{}, fmt.Errorf("proxy.source_address %q: %w", src, err)
		}
		d.LocalAddr = net.TCPAddrFromAddrPort(netip.AddrPortFrom(ip, 0))
		from = src
	}
	start := time.Now()
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return scenarios.Observation{}, fmt.Errorf("headerless connection to %s from %s: %w", addr, from, err)
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	obs := func(place scenarios.Route, evidence string) (scenarios.Observation, error) {
		if ctx.Err() != nil {
			return scenarios.Observation{}, fmt.Errorf("headerless connection to %s: %w", addr, context.Cause(ctx))
		}
		return scenarios.Observation{Place: place, Where: addr + " from " + from,
			Evidence: evidence, After: time.Since(start), At: time.Now()}, nil
	}
	tp := textproto.NewReader(bufio.NewReader(conn))
	deadline := start.Add(timeout)
	ehlo := func() error {
		_ = conn.SetWriteDeadline(deadline)
		_, err := fmt.Fprintf(conn, "EHLO %s\r\n", cfg.Probe.Helo)
		return err
	}

	// A server that does not expect a header greets at once; one that does stays
	// silent. Give it a moment, then speak first.
	_ = conn.SetReadDeadline(start.Add(min(headerlessNudge, timeout/2)))
	code, msg, err := tp.ReadResponse(0)
	spokeFirst := false
	if isTimeout(err) {
		spokeFirst = true
		if err := ehlo(); err != nil {
			return obs(scenarios.RouteReject, fmt.Sprintf("no banner, and the connection refused EHLO: %v", err))
		}
		_ = conn.SetReadDeadline(deadline)
		code, msg, err = tp.ReadResponse(0)
	}
	switch {
	case isTimeout(err):
		return obs(scenarios.RouteReject, fmt.Sprintf("no reply within %s: the connection was held open without a banner", timeout))
	case err != nil && code == 0:
		return obs(scenarios.RouteReject, "no SMTP reply: "+closeReason(err))
	case code != 220:
		when := "as its greeting"
		if spokeFirst {
			when = "to an EHLO sent without a header"
		}
		return obs(scenarios.RouteReject, fmt.Sprintf("%d %s, %s", code, oneLine(msg), when))
	}
	banner := fmt.Sprintf("220 %s", oneLine(msg))
	if !spokeFirst {
		if err := ehlo(); err != nil {
			return obs(scenarios.RouteReject, banner+", then the connection refused EHLO: "+err.Error())
		}
	}
	_ = conn.SetReadDeadline(deadline)
	code, msg, err = tp.ReadResponse(0)
	switch {
	case isTimeout(err):
		return obs(scenarios.RouteReject, banner+fmt.Sprintf(", then no reply to EHLO within %s", timeout))
	case err != nil && code == 0:
		return obs(scenarios.RouteReject, banner+", then no SMTP reply to EHLO: "+closeReason(err))
	case code == 250:
		_, _ = io.WriteString(conn, "QUIT\r\n")
		return obs(scenarios.RouteAccepted, fmt.Sprintf("%s, then EHLO %d %s: the PROXY listener spoke SMTP without a header", banner, code, oneLine(msg)))
	default:
		return obs(scenarios.RouteReject, fmt.Sprintf("%s, then EHLO %d %s", banner, code, oneLine(msg)))
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func closeReason(err error) string {
	switch {
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "the connection was closed"
	default:
		return err.Error()
	}
}

func oneLine(msg string) string {
	first, _, _ := strings.Cut(msg, "\n")
	return strings.Join(strings.Fields(first), " ")
}
