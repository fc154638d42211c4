package bulk

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/textproto"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"github.com/splitcheck/splitcheck/proxy"
)

// go-smtp's client sends one RCPT and waits for its reply before the next: it
// cannot pipeline. The bulk prober needs MAIL and hundreds of RCPTs in flight
// at once, so it speaks SMTP itself, on a bufio reader and writer over the
// connection, and reports refusals as *smtp.SMTPError values like go-smtp does.

// maxReplyLine bounds one reply line (RFC 5321 says 512; servers exceed it).
const maxReplyLine = 2000

// pipelineGroup is the most commands written before their replies are read.
// Groups keep both directions far below the socket buffers, so neither side can
// block writing while the other is not reading (RFC 2920, section 3.2).
const pipelineGroup = 100

// reply is one SMTP reply.
type reply struct {
	Code     int
	Enhanced string // "4.5.3", "" when absent
	Text     string // lines joined by "\n", without codes
}

func (r reply) String() string {
	if r.Code == 0 {
		return "no reply"
	}
	var b strings.Builder
	b.WriteString(strconv.Itoa(r.Code))
	if r.Enhanced != "" {
		b.WriteString(" " + r.Enhanced)
	}
	if r.Text != "" {
		b.WriteString(" " + strings.ReplaceAll(r.Text, "\n", " / "))
	}
	return b.String()
}

func (r reply) ok() bool { return r.Code >= 200 && r.Code < 400 }

// err is the reply as a go-smtp error.
func (r reply) err() *smtp.SMTPError {
	e := &smtp.SMTPError{Code: r.Code, Message: r.Text}
	if p := strings.Split(r.Enhanced, "."); len(p) == 3 {
		for i := range p {
			e.EnhancedCode[i], _ = strconv.Atoi(p[i])
		}
	}
	return e
}

// replyFromErr recovers a reply from an *smtp.SMTPError.
func replyFromErr(err error) (reply, bool) {
	var se *smtp.SMTPError
	if !errors.As(err, &se) {
		return reply{}, false
	}
	r := reply{Code: se.Code, Text: se.Message}
	if se.EnhancedCode != (smtp.EnhancedCode{}) {
		r.Enhanced = fmt.Sprintf("%d.%d.%d", se.EnhancedCode[0], se.EnhancedCode[1], se.EnhancedCode[2])
	}
	return r, true
}

// readReply reads one (possibly multi-line) reply.
func readReply(br *bufio.Reader) (reply, error) {
	var r reply
	var lines []string
	for {
		line, err := readLine(br)
		if err != nil {
			return reply{}, err
		}
		if len(line) < 3 {
			return reply{}, fmt.Errorf("read reply: malformed line %q", line)
		}
		code, err := strconv.Atoi(line[:3])
		if err != nil || code < 200 || code > 599 {
			return reply{}, fmt.Errorf("read reply: malformed line %q", line)
		}
		if r.Code != 0 && code != r.Code {
			return reply{}, fmt.Errorf("read reply: code changed from %d to %d in a multi-line reply", r.Code, code)
		}
		r.Code = code
		more := len(line) > 3 && line[3] == '-'
		if len(line) > 3 && line[3] != '-' && line[3] != ' ' {
			return reply{}, fmt.Errorf("read reply: malformed line %q", line)
		}
		text := ""
		if len(line) > 4 {
			text = line[4:]
		}
		lines = append(lines, text)
		if !more {
			break
		}
	}
	// An enhanced code leads every line; keep the first and strip them all.
	if enh, _, ok := strings.Cut(lines[0], " "); ok && isEnhanced(enh, r.Code) {
		r.Enhanced = enh
	} else if isEnhanced(lines[0], r.Code) {
		r.Enhanced = lines[0]
	}
	if r.Enhanced != "" {
		for i, l := range lines {
			l = strings.TrimPrefix(l, r.Enhanced)
			lines[i] = strings.TrimPrefix(l, " ")
		}
	}
	r.Text = strings.Join(lines, "\n")
	return r, nil
}

// isEnhanced reports whether s is an RFC 3463 code of the same class as code.
func isEnhanced(s string, code int) bool {
	p := strings.Split(s, ".")
	if len(p) != 3 || p[0] != strconv.Itoa(code/100) {
		return false
	}
	for _, x := range p {
		if x == "" || len(x) > 3 {
			return false
		}
		if _, err := strconv.Atoi(x); err != nil {
			return false
		}
	}
	return true
}

func readLine(br *bufio.Reader) (string, error) {
	b, err := br.ReadSlice('\n')
	if errors.Is(err, bufio.ErrBufferFull) || len(b) > maxReplyLine {
		return "", fmt.Errorf("read reply: line longer than %d bytes", maxReplyLine)
	}
	if err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return "", fmt.Errorf("read reply: %w", err)
	}
	return strings.TrimRight(string(b), "\r\n"), nil
}

// endpoint says how to reach one listener of the target.
type endpoint struct {
	Addr      string // host:port
	Header    []byte // PROXY header written first, nil for none
	LocalAddr string // source IP, "" for any
	// TLS is "none", "starttls" or "implicit".
	TLS       string
	TLSConfig *tls.Config
	// Auth returns the SASL client to log in with; nil: no AUTH.
	Auth    func() sasl.Client
	Helo    string
	Timeout time.Duration // bounds the connect and every command
}

// client is one SMTP connection.
type client struct {
	raw     net.Conn // the TCP connection (deadlines are set here)
	conn    net.Conn // raw, or TLS over it
	br      *bufio.Reader
	bw      *bufio.Writer
	ext     map[string]string
	timeout time.Duration
	dead    bool // the server closed (421) or the connection failed
	errors  int  // refused commands in this session (see transaction)

	mu       sync.Mutex
	canceled bool
	stop     func() bool
}

// dial connects, reads the banner, says EHLO and, as ep asks, starts TLS and logs
// in. A refusal by the server is returned as *smtp.SMTPError.
func dial(ctx context.Context, ep endpoint) (*client, error) {
	d := proxy.Dialer{LocalAddr: ep.LocalAddr, Timeout: ep.Timeout}
	raw, err := d.DialContext(ctx, "tcp", ep.Addr, ep.Header)
	if err != nil {
		return nil, err
	}
	c := &client{raw: raw, conn: raw, timeout: ep.Timeout}
	c.stop = context.AfterFunc(ctx, func() {
		c.mu.Lock()
		c.canceled = true
		_ = raw.SetDeadline(time.Unix(1, 0))
		c.mu.Unlock()
	})
	if err := c.open(ctx, ep); err != nil {
		c.close()
		return nil, err
	}
	return c, nil
}

func (c *client) open(ctx context.Context, ep endpoint) error {
	if ep.TLS == "implicit" {
		c.conn = tls.Client(c.raw, ep.TLSConfig)
	}
	c.reset()
	if err := c.deadline(ctx); err != nil {
		return err
	}
	banner, err := readReply(c.br)
	if err != nil {
		return fmt.Errorf("read banner: %w", err)
	}
	if banner.Code != 220 {
		return fmt.Errorf("banner: %w", banner.err())
	}
	if err := c.ehlo(ctx, ep.Helo); err != nil {
		return err
	}
	if ep.TLS == "starttls" {
		r, err := c.cmd(ctx, "STARTTLS")
		if err != nil {
			return err
		}
		if r.Code != 220 {
			return fmt.Errorf("STARTTLS: %w", r.err())
		}
		tc := tls.Client(c.raw, ep.TLSConfig)
		if err := tc.HandshakeContext(ctx); err != nil {
			return fmt.Errorf("STARTTLS handshake: %w", err)
		}
		c.conn = tc
		c.reset()
		if err := c.ehlo(ctx, ep.Helo); err != nil {
			return err
		}
	}
	if ep.Auth != nil {
		if err := c.auth(ctx, ep.Auth()); err != nil {
			return err
		}
	}
	return nil
}

func (c *client) reset() {
	c.br = bufio.NewReaderSize(c.conn, 4096)
	c.bw = bufio.NewWriterSize(c.conn, 8192)
}

// deadline arms the connection's deadline for one exchange, unless ctx is done.
func (c *client) deadline(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.canceled {
		return context.Cause(ctx)
	}
	return c.raw.SetDeadline(time.Now().Add(c.timeout))
}

func (c *client) ehlo(ctx context.Context, helo string) error {
	r, err := c.cmd(ctx, "EHLO "+helo)
	if err != nil {
		return err
	}
	if r.Code != 250 {
		return fmt.Errorf("EHLO: %w", r.err())
	}
	c.ext = map[string]string{}
	for _, l := range strings.Split(r.Text, "\n")[1:] {
		k, v, _ := strings.Cut(l, " ")
		c.ext[strings.ToUpper(k)] = v
	}
	return nil
}

// has reports whether the server offered the EHLO keyword ext.
func (c *client) has(ext string) bool {
	_, ok := c.ext[ext]
	return ok
}

// rcptMax is the LIMITS RCPTMAX the server advertised (RFC 9422), 0 if none.
func (c *client) rcptMax() int {
	for _, f := range strings.Fields(c.ext["LIMITS"]) {
		if v, ok := strings.CutPrefix(strings.ToUpper(f), "RCPTMAX="); ok {
			if n, err := strconv.Atoi(v); err == nil && n > 0 {
				return n
			}
		}
	}
	return 0
}

func (c *client) auth(ctx context.Context, a sasl.Client) error {
	mech, ir, err := a.Start()
	if err != nil {
		return fmt.Errorf("AUTH: %w", err)
	}
	line := "AUTH " + mech
	if ir != nil {
		line += " " + encode64(ir)
	}
	r, err := c.cmd(ctx, line)
	for err == nil && r.Code == 334 {
		var chal []byte
		chal, err = base64.StdEncoding.DecodeString(r.Text)
		if err != nil {
			return fmt.Errorf("AUTH: bad challenge: %w", err)
		}
		var resp []byte
		if resp, err = a.Next(chal); err != nil {
			_, _ = c.cmd(ctx, "*")
			return fmt.Errorf("AUTH: %w", err)
		}
		r, err = c.cmd(ctx, encode64(resp))
	}
	if err != nil {
		return err
	}
	if r.Code != 235 {
		return fmt.Errorf("AUTH %s: %w", mech, r.err())
	}
	return nil
}

func encode64(b []byte) string {
	if len(b) == 0 {
		return "="
	}
	return base64.StdEncoding.EncodeToString(b)
}

// cmd sends one command line and reads its reply. A 421 marks the connection dead.
func (c *client) cmd(ctx context.Context, line string) (reply, error) {
	if err := c.deadline(ctx); err != nil {
		return reply{}, err
	}
	if _, err := c.bw.WriteString(line + "\r\n"); err != nil {
		return reply{}, c.fail(ctx, err)
	}
	if err := c.bw.Flush(); err != nil {
		return reply{}, c.fail(ctx, err)
	}
	r, err := readReply(c.br)
	if err != nil {
		return reply{}, c.fail(ctx, err)
	}
	if r.Code == 421 {
		c.dead = true
	}
	return r, nil
}

// fail marks the connection dead and reports ctx's cause if ctx ended it.
func (c *client) fail(ctx context.Context, err error) error {
	c.dead = true
	if ctx.Err() != nil {
		return fmt.Errorf("%w (%v)", context.Cause(ctx), err)
	}
	return err
}

// txnResult is what the server answered to one transaction.
type txnResult struct {
	Mail reply
	// Rcpt holds one reply per recipient, in order; Code 0 means the recipient
	// was not sent or not answered (after a 421, the recipient limit, or the
	// error budget).
	Rcpt []reply
	// Data is the reply to DATA when it was refused, else the reply after the
	// message; Code 0 when DATA was not sent (no recipient was accepted).
	Data reply
	// Budget reports that RCPTs were held back because the session used up its
	// error budget (see transaction).
	Budget bool
}

// transaction sends one message to rcpts. It writes MAIL and the RCPTs in
// groups of up to group commands (1: no pipelining) and reads their replies
// after each group. Servers slow down or drop a session after a number of refused
// commands (Postfix: 10 and 20, smtpd_soft/hard_error_limit); so once the
// session has had an error, a group never holds more RCPTs than the budget has
// left, and no more are sent once c.errors reaches budget (Budget is set; those
// recipients are left unanswered). Sending also stops after a reply that closes
// the connection (421) or says the recipient limit is reached. DATA follows only
// if a recipient was accepted, else RSET. An error means the connection failed;
// the result then holds what was answered.
func (c *client) transaction(ctx context.Context, from string, rcpts []string, group, budget int, body []byte) (txnResult, error) {
	res := txnResult{Rcpt: make([]reply, len(rcpts))}
	lines := make([]string, 0, len(rcpts)+1)
	lines = append(lines, "MAIL FROM:<"+from+">")
	for _, r := range rcpts {
		lines = append(lines, "RCPT TO:<"+r+">")
	}
	stopped := false // no more RCPTs: MAIL failed, 421, the recipient limit, the budget
	for i := 0; i < len(lines) && !stopped; {
		n := group
		if group > 1 && c.errors > 0 {
			n = min(group, max(budget-c.errors, 1))
		}
		end := min(i+n, len(lines))
		if err := c.deadline(ctx); err != nil {
			return res, err
		}
		for _, l := range lines[i:end] {
			if _, err := c.bw.WriteString(l + "\r\n"); err != nil {
				return res, c.fail(ctx, err)
			}
		}
		if err := c.bw.Flush(); err != nil {
			return res, c.fail(ctx, err)
		}
		for j := i; j < end; j++ {
			// Each reply gets the whole timeout: a server may pace its replies.
			if err := c.deadline(ctx); err != nil {
				return res, err
			}
			r, err := readReply(c.br)
			if err != nil {
				return res, c.fail(ctx, err)
			}
			if !r.ok() && classify(r) != outcomeTooMany {
				c.errors++ // a recipient limit is learned, not repeated: not counted
			}
			if j == 0 {
				res.Mail = r
				if !r.ok() {
					stopped = true
				}
			} else if res.Mail.ok() {
				res.Rcpt[j-1] = r
				if r.Code == 421 || classify(r) == outcomeTooMany {
					stopped = true
				}
			}
			if r.Code == 421 {
				// The server closes after 421: nothing more will be answered.
				c.dead = true
				return res, nil
			}
		}
		i = end
		if !stopped && i < len(lines) && c.errors >= budget {
			stopped, res.Budget = true, true
		}
	}
	accepted := false
	for _, r := range res.Rcpt {
		accepted = accepted || r.ok()
	}
	if !res.Mail.ok() || !accepted {
		if res.Mail.ok() {
			if _, err := c.cmd(ctx, "RSET"); err != nil {
				return res, err
			}
		}
		return res, nil
	}
	r, err := c.cmd(ctx, "DATA")
	if err != nil {
		return res, err
	}
	if r.Code != 354 {
		c.errors++
		res.Data = r
		return res, nil
	}
	if err := c.deadline(ctx); err != nil {
		return res, err
	}
	dw := textproto.NewWriter(c.bw).DotWriter()
	if _, err := dw.Write(body); err != nil {
		return res, c.fail(ctx, err)
	}
	if err := dw.Close(); err != nil { // writes ".\r\n" and flushes
		return res, c.fail(ctx, err)
	}
	if res.Data, err = readReply(c.br); err != nil {
		return res, c.fail(ctx, err)
	}
	if !res.Data.ok() {
		c.errors++
	}
	if res.Data.Code == 421 {
		c.dead = true
	}
	return res, nil
}

// quit says QUIT (best effort) and closes the connection.
func (c *client) quit(ctx context.Context) {
	if !c.dead {
		if err := c.deadline(ctx); err == nil {
			_, _ = c.bw.WriteString("QUIT\r\n")
			if c.bw.Flush() == nil {
				_, _ = readReply(c.br)
			}
		}
	}
	c.close()
}

func (c *client) close() {
	c.dead = true
	c.stop()
	_ = c.conn.Close()
}
