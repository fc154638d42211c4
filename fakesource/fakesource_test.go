package fakesource_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/textproto"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
	"github.com/pires/go-proxyproto"
	"go.uber.org/goleak"

	"github.com/splitcheck/splitcheck/fakesource"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// start returns a started server, configured by fn, closed at cleanup.
func start(t testing.TB, fn func(*fakesource.Server)) *fakesource.Server {
	t.Helper()
	s := fakesource.NewUnstartedServer()
	if fn != nil {
		fn(s)
	}
	s.Start()
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close() = %v; want nil", err)
		}
	})
	return s
}

// dial returns a client of s, closed at cleanup.
func dial(t testing.TB, s *fakesource.Server) *smtp.Client {
	t.Helper()
	c, err := s.Dial(context.Background())
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// send runs one mail transaction on c.
func send(c *smtp.Client, from string, to []string, msg string) error {
	if err := c.Mail(from, nil); err != nil {
		return err
	}
	for _, r := range to {
		if err := c.Rcpt(r, nil); err != nil {
			return err
		}
	}
	w, err := c.Data()
	if err != nil {
		return err
	}
	if _, err := io.WriteString(w, msg); err != nil {
		return err
	}
	return w.Close()
}

func message(id string) string {
	return "From: a@source.example\r\nTo: b@corp.example\r\nMessage-ID: <" + id + "@test>\r\n" +
		"X-Splitcheck-Probe: " + id + "\r\nSubject: probe\r\n\r\nbody of " + id + "\r\n"
}

// verbs lists Command/Code of replies, for compact comparisons.
func verbs(rs []fakesource.Reply) []string {
	out := make([]string, len(rs))
	for i, r := range rs {
		out[i] = fmt.Sprintf("%s %d", r.Command, r.Code)
	}
	return out
}

func TestRecordedFields(t *testing.T) {
	s := start(t, func(s *fakesource.Server) { s.IndexHeader = "X-Splitcheck-Probe" })
	c := dial(t, s)
	if err := c.Hello("client.example"); err != nil {
		t.Fatalf("Hello: %v", err)
	}
	if err := c.Mail("alice@source.example", &smtp.MailOptions{
		Size: 321, UTF8: true, Return: smtp.DSNReturnHeaders, EnvelopeID: "env-1",
	}); err != nil {
		t.Fatalf("Mail: %v", err)
	}
	if err := c.Rcpt("Bob@corp.example", &smtp.RcptOptions{
		Notify:                []smtp.DSNNotify{smtp.DSNNotifyFailure, smtp.DSNNotifyDelayed},
		OriginalRecipientType: smtp.DSNAddressTypeRFC822,
		OriginalRecipient:     "bob@corp.example",
	}); err != nil {
		t.Fatalf("Rcpt: %v", err)
	}
	if err := c.Rcpt("carol@corp.example", nil); err != nil {
		t.Fatalf("Rcpt: %v", err)
	}
	header := "Received: from mx.source.example\r\n\tby relay.example; Tue, 1 Jul 2025 10:00:00 +0000\r\n" +
		"Received: from client.example by mx.source.example\r\n" +
		"Message-ID: <probe-1@test>\r\nX-Splitcheck-Probe: probe-1\r\nSubject: hi\r\n"
	msg := header + "\r\nline one\r\n.leading dot\r\n"
	w, err := c.Data()
	if err != nil {
		t.Fatalf("Data: %v", err)
	}
	io.WriteString(w, msg)
	if err := w.Close(); err != nil {
		t.Fatalf("Data close: %v", err)
	}

	msgs := s.Messages()
	if len(msgs) != 1 {
		t.Fatalf("len(Messages()) = %d; want 1", len(msgs))
	}
	m := msgs[0]
	conns := s.Connections()
	if len(conns) != 1 {
		t.Fatalf("len(Connections()) = %d; want 1", len(conns))
	}
	sum := sha256.Sum256([]byte(msg))
	firstBytes := ("EHLO client.example\r\nMAIL FROM:<alice@source.example> BODY=8BITMIME SIZE=321 SMTPUTF8 RET=HDRS ENVID=env-1\r\n" +
		"RCPT TO:<Bob@corp.example>")[:128]
	checks := []struct {
		name      string
		got, want any
	}{
		{"Seq", m.Seq, uint64(1)},
		{"ConnID", m.ConnID, conns[0].ID},
		{"From", m.From, "alice@source.example"},
		{"MailParams", m.MailParams, map[string]string{"SIZE": "321", "BODY": "8BITMIME", "SMTPUTF8": "", "RET": "HDRS", "ENVID": "env-1"}},
		{"Rcpts", m.Rcpts, []fakesource.Rcpt{
			{Addr: "Bob@corp.example", Params: map[string]string{"NOTIFY": "FAILURE,DELAY", "ORCPT": "RFC822;bob@corp.example"}},
			{Addr: "carol@corp.example", Params: map[string]string{}},
		}},
		{"RemoteAddr", m.RemoteAddr, conns[0].RemoteAddr},
		{"LocalAddr", m.LocalAddr, s.Addr},
		{"Helo", m.Helo, "client.example"},
		{"TLS", m.TLS, false},
		{"AuthUser", m.AuthUser, ""},
		{"FirstBytes", string(m.FirstBytes), firstBytes},
		{"ProxyHeader", m.ProxyHeader, false},
		{"Header", string(m.Header), header},
		{"Received", m.Received, []string{
			"from mx.source.example\tby relay.example; Tue, 1 Jul 2025 10:00:00 +0000",
			"from client.example by mx.source.example",
		}},
		{"MessageID", m.MessageID, "<probe-1@test>"},
		{"BodySize", m.BodySize, int64(len(msg))},
		{"SHA256", m.SHA256, hex.EncodeToString(sum[:])},
		{"Body", string(m.Body), msg},
		{"Replies", verbs(m.Replies), []string{"CONNECT 220", "EHLO 250", "MAIL 250", "RCPT 250", "RCPT 250", "DATA 354", "DATA 250"}},
		{"banner", m.Replies[0].Text, "fakesource.test ESMTP Service Ready"},
		{"DATA reply", m.Replies[6], fakesource.Reply{Command: "DATA", Code: 250, Enhanced: "2.0.0", Text: "OK: queued"}},
		{"conn FirstBytes", string(conns[0].FirstBytes), firstBytes},
		{"HeaderValues(subject)", m.HeaderValues("SUBJECT"), []string{"hi"}},
		{"ByIndex", len(s.ByIndex("probe-1")), 1},
		{"ByIndex(other)", len(s.ByIndex("probe-2")), 0},
	}
	for _, c := range checks {
		if !reflect.DeepEqual(c.got, c.want) {
			t.Errorf("%s = %#v; want %#v", c.name, c.got, c.want)
		}
	}
	if m.ReceivedAt.IsZero() || conns[0].At.IsZero() {
		t.Errorf("ReceivedAt = %v, At = %v; want both set", m.ReceivedAt, conns[0].At)
	}
	if !strings.Contains(m.Replies[1].Text, "SIZE 10485760") {
		t.Errorf("EHLO reply %q; want it to advertise SIZE 10485760", m.Replies[1].Text)
	}
	// A second message on the same connection carries the whole session's replies.
	if err := send(c, "", []string{"dave@corp.example"}, message("probe-2")); err != nil {
		t.Fatalf("second send: %v", err)
	}
	msgs = s.Messages()
	if len(msgs) != 2 {
		t.Fatalf("len(Messages()) = %d; want 2", len(msgs))
	}
	if got, want := verbs(msgs[1].Replies)[7:], []string{"MAIL 250", "RCPT 250", "DATA 354", "DATA 250"}; !reflect.DeepEqual(got, want) {
		t.Errorf("second message replies[7:] = %v; want %v", got, want)
	}
	if msgs[1].From != "" || msgs[1].Seq != 2 || msgs[1].ConnID != m.ConnID {
		t.Errorf("second message From=%q Seq=%d ConnID=%d; want \"\", 2, %d", msgs[1].From, msgs[1].Seq, msgs[1].ConnID, m.ConnID)
	}
}

func TestFaults(t *testing.T) {
	rcptErr := func(code int, ec smtp.EnhancedCode) func(string) error {
		return func(rcpt string) error {
			if rcpt == "bad@corp.example" {
				return &smtp.SMTPError{Code: code, EnhancedCode: ec, Message: "chosen failure"}
			}
			return nil
		}
	}
	tests := []struct {
		name      string
		configure func(*fakesource.Server)
		wantCode  int    // expected *smtp.SMTPError code; 0: a non-SMTP error
		wantEnh   string // expected enhanced code in the recorded reply
		accepted  int    // messages recorded
		rejected  int
	}{
		{
			name:      "rcpt 550 for a chosen recipient",
			configure: func(s *fakesource.Server) { s.RcptErr = rcptErr(550, smtp.EnhancedCode{5, 1, 1}) },
			wantCode:  550, wantEnh: "5.1.1", accepted: 1,
		},
		{
			name:      "rcpt 450 for a chosen recipient",
			configure: func(s *fakesource.Server) { s.RcptErr = rcptErr(450, smtp.EnhancedCode{4, 2, 1}) },
			wantCode:  450, wantEnh: "4.2.1", accepted: 1,
		},
		{
			name: "rcpt plain error becomes 451",
			configure: func(s *fakesource.Server) {
				s.RcptErr = func(r string) error {
					if r == "bad@corp.example" {
						return errors.New("plain failure")
					}
					return nil
				}
			},
			wantCode: 451, wantEnh: "4.0.0", accepted: 1,
		},
		{
			name: "mail 553",
			configure: func(s *fakesource.Server) {
				s.MailErr = func(string) error {
					return &smtp.SMTPError{Code: 553, EnhancedCode: smtp.EnhancedCode{5, 7, 1}, Message: "sender refused"}
				}
			},
			wantCode: 553, wantEnh: "5.7.1",
		},
		{
			name: "mail 421",
			configure: func(s *fakesource.Server) {
				s.MailErr = func(string) error {
					return &smtp.SMTPError{Code: 421, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "try later"}
				}
			},
			wantCode: 421, wantEnh: "4.3.0",
		},
		{
			name: "data 554",
			configure: func(s *fakesource.Server) {
				s.DataErr = func(*fakesource.Message) error {
					return &smtp.SMTPError{Code: 554, EnhancedCode: smtp.EnhancedCode{5, 6, 0}, Message: "content refused"}
				}
			},
			wantCode: 554, wantEnh: "5.6.0", rejected: 1,
		},
		{
			name: "data 451 for a chosen probe",
			configure: func(s *fakesource.Server) {
				s.DataErr = func(m *fakesource.Message) error {
					if m.MessageID == "<p1@test>" {
						return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCodeNotSet, Message: "later"}
					}
					return nil
				}
			},
			wantCode: 451, wantEnh: "4.0.0", rejected: 1,
		},
		{
			name:      "drop after data",
			configure: func(s *fakesource.Server) { s.DropAfterData = func(*fakesource.Message) bool { return true } },
			rejected:  1,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := start(t, tt.configure)
			c := dial(t, s)
			err := send(c, "a@source.example", []string{"good@corp.example", "bad@corp.example"}, message("p1"))
			if tt.wantCode == 0 {
				var se *smtp.SMTPError
				if err == nil || errors.As(err, &se) {
					t.Fatalf("send error = %v; want a connection error, not an SMTP reply", err)
				}
			} else {
				var se *smtp.SMTPError
				if !errors.As(err, &se) {
					t.Fatalf("send error = %v (%T); want *smtp.SMTPError", err, err)
				}
				if se.Code != tt.wantCode || se.Temporary() != (tt.wantCode/100 == 4) {
					t.Errorf("SMTPError code = %d, Temporary = %v; want %d", se.Code, se.Temporary(), tt.wantCode)
				}
				if strings.HasPrefix(tt.name, "rcpt") {
					// The other recipient still goes through.
					w, err := c.Data()
					if err != nil {
						t.Fatalf("Data after a refused rcpt: %v", err)
					}
					io.WriteString(w, message("p1"))
					if err := w.Close(); err != nil {
						t.Fatalf("Data close: %v", err)
					}
				}
			}
			msgs, rej := s.Messages(), s.Rejected()
			if len(msgs) != tt.accepted || len(rej) != tt.rejected {
				t.Fatalf("accepted %d, rejected %d; want %d, %d", len(msgs), len(rej), tt.accepted, tt.rejected)
			}
			if tt.accepted == 1 {
				m := msgs[0]
				if len(m.Rcpts) != 1 || m.Rcpts[0].Addr != "good@corp.example" {
					t.Errorf("Rcpts = %v; want only good@corp.example", m.Rcpts)
				}
				if r := m.Replies[4]; r.Command != "RCPT" || r.Code != tt.wantCode || r.Enhanced != tt.wantEnh {
					t.Errorf("refused RCPT reply = %+v; want RCPT %d %s", r, tt.wantCode, tt.wantEnh)
				}
			}
			if tt.rejected == 1 {
				m := rej[0]
				last := m.Replies[len(m.Replies)-1]
				if tt.wantCode == 0 {
					if last.Command != "DATA" || last.Code != 354 {
						t.Errorf("dropped message's last reply = %+v; want the 354", last)
					}
				} else if last.Command != "DATA" || last.Code != tt.wantCode || last.Enhanced != tt.wantEnh {
					t.Errorf("rejected message's last reply = %+v; want DATA %d %s", last, tt.wantCode, tt.wantEnh)
				}
				if m.Body != nil || m.SHA256 == "" || m.Seq != 0 {
					t.Errorf("rejected message Body=%v SHA256=%q Seq=%d; want nil, set, 0", m.Body, m.SHA256, m.Seq)
				}
			}
			if strings.HasPrefix(tt.name, "mail") {
				_ = c.Quit()
				if n := len(s.Connections()); n != 1 {
					t.Errorf("connections = %d; want 1", n)
				}
			}
		})
	}
}

func TestDelay(t *testing.T) {
	// A delay longer than the client's timeout makes the client fail at that
	// step; Close must still cut the delay short.
	tests := []struct {
		command string
		run     func(c *smtp.Client) error
	}{
		{"CONNECT", func(c *smtp.Client) error { return c.Hello("x") }},
		{"EHLO", func(c *smtp.Client) error { return c.Hello("x") }},
		{"MAIL", func(c *smtp.Client) error { return c.Mail("a@x", nil) }},
		{"RCPT", func(c *smtp.Client) error { return send(c, "a@x", []string{"b@y"}, "x\r\n") }},
		{"DATA", func(c *smtp.Client) error { return send(c, "a@x", []string{"b@y"}, "x\r\n") }},
		{"NOOP", func(c *smtp.Client) error { return c.Noop() }},
	}
	for _, tt := range tests {
		t.Run(tt.command, func(t *testing.T) {
			var asked sync.Map
			s := start(t, func(s *fakesource.Server) {
				s.Delay = func(cmd string) time.Duration {
					asked.Store(cmd, true)
					if cmd == tt.command {
						return time.Hour
					}
					return 0
				}
			})
			c := dial(t, s)
			c.CommandTimeout = 200 * time.Millisecond
			c.SubmissionTimeout = 200 * time.Millisecond
			err := tt.run(c)
			var ne net.Error
			if !errors.As(err, &ne) || !ne.Timeout() {
				t.Fatalf("client error = %v; want a timeout", err)
			}
			if _, ok := asked.Load(tt.command); !ok {
				t.Errorf("Delay(%q) was never asked", tt.command)
			}
		})
	}
}

func TestSTARTTLS(t *testing.T) {
	s := fakesource.NewUnstartedServer()
	s.AuthUsers = map[string]string{"relay": "secret"}
	s.StartTLS()
	t.Cleanup(func() { s.Close() })
	cfg, err := s.ClientTLSConfig()
	if err != nil {
		t.Fatalf("ClientTLSConfig: %v", err)
	}
	conn, err := net.Dial("tcp", s.Addr)
	if err != nil {
		t.Fatal(err)
	}
	c, err := smtp.NewClientStartTLS(conn, cfg)
	if err != nil {
		t.Fatalf("NewClientStartTLS: %v", err)
	}
	defer c.Close()
	if _, ok := c.TLSConnectionState(); !ok {
		t.Fatal("client TLSConnectionState ok = false; want true")
	}
	if err := c.Auth(sasl.NewPlainClient("", "relay", "secret")); err != nil {
		t.Fatalf("Auth: %v", err)
	}
	if err := send(c, "a@source.example", []string{"b@corp.example"}, message("tls")); err != nil {
		t.Fatalf("send: %v", err)
	}
	if err := c.Quit(); err != nil {
		t.Fatalf("Quit: %v", err)
	}
	msgs := s.Messages()
	if len(msgs) != 1 {
		t.Fatalf("len(Messages()) = %d; want 1", len(msgs))
	}
	m := msgs[0]
	if !m.TLS || m.AuthUser != "relay" {
		t.Errorf("TLS = %v, AuthUser = %q; want true, relay", m.TLS, m.AuthUser)
	}
	want := []string{"CONNECT 220", "EHLO 250", "STARTTLS 220", "EHLO 250", "AUTH 235", "MAIL 250", "RCPT 250", "DATA 354", "DATA 250"}
	if got := verbs(m.Replies); !reflect.DeepEqual(got, want) {
		t.Errorf("Replies = %v; want %v", got, want)
	}
	if !strings.Contains(m.Replies[1].Text, "STARTTLS") || strings.Contains(m.Replies[3].Text, "STARTTLS") {
		t.Errorf("EHLO replies %q / %q; want STARTTLS offered before TLS only", m.Replies[1].Text, m.Replies[3].Text)
	}
	if !strings.HasPrefix(string(m.FirstBytes), "EHLO localhost\r\nSTARTTLS\r\n") {
		t.Errorf("FirstBytes = %q; want the plaintext EHLO and STARTTLS", m.FirstBytes)
	}

	// Without a TLS config STARTTLS is not offered.
	plain := start(t, nil)
	pc := dial(t, plain)
	if err := pc.Hello("x"); err != nil {
		t.Fatal(err)
	}
	if ok, _ := pc.Extension("STARTTLS"); ok {
		t.Error("STARTTLS offered without TLSConfig; want not offered")
	}
}

func TestAuth(t *testing.T) {
	tests := []struct {
		name     string
		client   sasl.Client
		wantErr  int // 0: success
		wantUser string
	}{
		{"plain good", sasl.NewPlainClient("", "alice", "pa55"), 0, "alice"},
		{"plain bad password", sasl.NewPlainClient("", "alice", "wrong-pw"), 535, ""},
		{"plain unknown user", sasl.NewPlainClient("", "mallory", "pa55"), 535, ""},
		{"plain other identity", sasl.NewPlainClient("bob", "alice", "pa55"), 535, ""},
		{"login good", sasl.NewLoginClient("alice", "pa55"), 0, "alice"},
		{"login bad password", sasl.NewLoginClient("alice", "wrong-pw"), 535, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := start(t, func(s *fakesource.Server) {
				s.AuthUsers = map[string]string{"alice": "pa55"}
				s.AuthRequired = true
			})
			c := dial(t, s)
			if err := c.Hello("x"); err != nil {
				t.Fatal(err)
			}
			if !c.SupportsAuth("PLAIN") || !c.SupportsAuth("LOGIN") {
				t.Fatalf("AUTH PLAIN and LOGIN not both offered")
			}
			err := c.Auth(tt.client)
			if tt.wantErr != 0 {
				var se *smtp.SMTPError
				if !errors.As(err, &se) || se.Code != tt.wantErr {
					t.Fatalf("Auth error = %v; want SMTP %d", err, tt.wantErr)
				}
				// AuthRequired refuses the transaction.
				err = c.Mail("a@x", nil)
				if !errors.As(err, &se) || se.Code != 502 || se.EnhancedCode != (smtp.EnhancedCode{5, 7, 0}) {
					t.Fatalf("Mail without auth = %v; want 502 5.7.0", err)
				}
				if n := len(s.Messages()); n != 0 {
					t.Errorf("messages = %d; want 0", n)
				}
				return
			}
			if err != nil {
				t.Fatalf("Auth: %v", err)
			}
			if err := send(c, "a@x", []string{"b@y"}, message("auth")); err != nil {
				t.Fatalf("send: %v", err)
			}
			msgs := s.Messages()
			if len(msgs) != 1 || msgs[0].AuthUser != tt.wantUser {
				t.Fatalf("messages %d, AuthUser %q; want 1, %q", len(msgs), msgs[0].AuthUser, tt.wantUser)
			}
			if string(msgs[0].FirstBytes) != "EHLO x\r\n" {
				t.Errorf("FirstBytes = %q; want them cut before AUTH", msgs[0].FirstBytes)
			}
			if dump := fmt.Sprintf("%+v %s", msgs[0], msgs[0].FirstBytes); strings.Contains(dump, "pa55") {
				t.Errorf("the recorded message contains the password: %s", dump)
			}
			if got := verbs(msgs[0].Replies); got[2] != "AUTH 334" && got[2] != "AUTH 235" {
				t.Errorf("reply after EHLO = %q; want an AUTH reply", got[2])
			}
		})
	}

	t.Run("no AuthUsers offers no AUTH", func(t *testing.T) {
		s := start(t, nil)
		c := dial(t, s)
		if err := c.Hello("x"); err != nil {
			t.Fatal(err)
		}
		if ok, _ := c.Extension("AUTH"); ok {
			t.Error("AUTH offered; want not offered")
		}
	})
}

func TestLimits(t *testing.T) {
	t.Run("message size", func(t *testing.T) {
		s := start(t, func(s *fakesource.Server) { s.MaxMessageBytes = 1000 })
		c := dial(t, s)
		big := message("big") + strings.Repeat(strings.Repeat("x", 98)+"\r\n", 20)
		err := send(c, "a@x", []string{"b@y"}, big)
		var se *smtp.SMTPError
		if !errors.As(err, &se) || se.Code != 552 {
			t.Fatalf("oversize DATA error = %v; want 552", err)
		}
		// SIZE announced too large is refused at MAIL.
		err = c.Mail("a@x", &smtp.MailOptions{Size: 5000})
		if !errors.As(err, &se) || se.Code != 552 {
			t.Fatalf("MAIL SIZE=5000 error = %v; want 552", err)
		}
		if n := len(s.Messages()); n != 0 {
			t.Errorf("messages = %d; want 0", n)
		}
		rej := s.Rejected()
		if len(rej) != 1 || rej[0].Replies[len(rej[0].Replies)-1].Code != 552 {
			t.Fatalf("Rejected() = %+v; want one message refused with 552", rej)
		}
		// The connection still works for a small message.
		if err := send(c, "a@x", []string{"b@y"}, message("small")); err != nil {
			t.Fatalf("small send: %v", err)
		}
	})
	t.Run("recipients", func(t *testing.T) {
		s := start(t, func(s *fakesource.Server) { s.MaxRecipients = 2 })
		c := dial(t, s)
		err := send(c, "a@x", []string{"1@y", "2@y", "3@y"}, message("r"))
		var se *smtp.SMTPError
		if !errors.As(err, &se) || se.Code != 452 {
			t.Fatalf("third RCPT error = %v; want 452", err)
		}
	})
	t.Run("kept body", func(t *testing.T) {
		s := start(t, func(s *fakesource.Server) { s.KeepBodyBytes = 100 })
		c := dial(t, s)
		big := message("big") + strings.Repeat("y", 500) + "\r\n"
		small := "Subject: s\r\n\r\nok\r\n"
		for _, msg := range []string{big, small} {
			if err := send(c, "a@x", []string{"b@y"}, msg); err != nil {
				t.Fatal(err)
			}
		}
		msgs := s.Messages()
		sum := sha256.Sum256([]byte(big))
		if msgs[0].Body != nil || msgs[0].BodySize != int64(len(big)) || msgs[0].SHA256 != hex.EncodeToString(sum[:]) {
			t.Errorf("big: Body len %d, BodySize %d, SHA256 %s; want nil, %d, hash", len(msgs[0].Body), msgs[0].BodySize, msgs[0].SHA256, len(big))
		}
		if string(msgs[1].Body) != small {
			t.Errorf("small Body = %q; want %q", msgs[1].Body, small)
		}
		if msgs[0].MessageID != "<big@test>" {
			t.Errorf("big MessageID = %q; want header still parsed", msgs[0].MessageID)
		}
	})
	t.Run("max messages and total kept bytes", func(t *testing.T) {
		s := start(t, func(s *fakesource.Server) {
			s.MaxMessages = 3
			s.IndexHeader = "X-Splitcheck-Probe"
			s.KeepTotalBytes = int64(2 * len(message("m1")))
		})
		c := dial(t, s)
		for i := 1; i <= 5; i++ {
			if err := send(c, "a@x", []string{"b@y"}, message(fmt.Sprintf("m%d", i))); err != nil {
				t.Fatal(err)
			}
		}
		msgs := s.Messages()
		var seqs []uint64
		kept := 0
		for _, m := range msgs {
			seqs = append(seqs, m.Seq)
			if m.Body != nil {
				kept++
			}
		}
		if !reflect.DeepEqual(seqs, []uint64{3, 4, 5}) {
			t.Errorf("seqs = %v; want [3 4 5]", seqs)
		}
		if kept != 2 || msgs[0].Body != nil {
			t.Errorf("bodies kept = %d, oldest Body nil = %v; want 2, true", kept, msgs[0].Body == nil)
		}
		if n := len(s.ByIndex("m1")); n != 0 {
			t.Errorf("ByIndex(evicted) = %d; want 0", n)
		}
		if got := s.ByIndex("m4"); len(got) != 1 || got[0].Seq != 4 {
			t.Errorf("ByIndex(m4) = %v; want seq 4", got)
		}
	})
}

// rawSession dials s and returns a textproto conn after writing first.
func rawSession(t *testing.T, s *fakesource.Server, first []byte) (*textproto.Conn, net.Conn) {
	t.Helper()
	nc, err := net.Dial("tcp", s.Addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	nc.SetDeadline(time.Now().Add(30 * time.Second))
	if len(first) > 0 {
		if _, err := nc.Write(first); err != nil {
			t.Fatal(err)
		}
	}
	return textproto.NewConn(nc), nc
}

func expect(t *testing.T, tc *textproto.Conn, code int) {
	t.Helper()
	if _, msg, err := tc.ReadResponse(code); err != nil {
		t.Fatalf("ReadResponse(%d) = %v (%s)", code, err, msg)
	}
}

func TestProxyHeader(t *testing.T) {
	src, dst := &net.TCPAddr{IP: net.IPv4(203, 0, 113, 7), Port: 40000}, &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 25}
	v1 := proxyproto.HeaderProxyFromAddrs(1, src, dst)
	v2 := proxyproto.HeaderProxyFromAddrs(2, src, dst)
	b1, _ := v1.Format()
	b2, _ := v2.Format()

	t.Run("v1 then a message", func(t *testing.T) {
		s := start(t, nil)
		tc, _ := rawSession(t, s, b1)
		expect(t, tc, 220)
		expect(t, tc, 501) // go-smtp's reply to the PROXY line
		for _, step := range []struct {
			cmd  string
			code int
		}{{"EHLO probe.example", 250}, {"MAIL FROM:<a@x>", 250}, {"RCPT TO:<b@y>", 250}, {"DATA", 354}} {
			tc.PrintfLine("%s", step.cmd)
			expect(t, tc, step.code)
		}
		w := tc.DotWriter()
		io.WriteString(w, message("v1"))
		w.Close()
		expect(t, tc, 250)
		msgs := s.Messages()
		if len(msgs) != 1 || !msgs[0].ProxyHeader || !strings.HasPrefix(string(msgs[0].FirstBytes), "PROXY TCP4 203.0.113.7 ") {
			t.Fatalf("message ProxyHeader/FirstBytes = %v; want a recorded PROXY v1 header", msgs)
		}
		if got, want := verbs(msgs[0].Replies)[:3], []string{"CONNECT 220", " 501", "EHLO 250"}; !reflect.DeepEqual(got, want) {
			t.Errorf("Replies = %v; want %v", got, want)
		}
	})
	for _, tt := range []struct {
		name  string
		first []byte
		proxy bool
	}{
		{"v2", b2, true},
		{"plain EHLO", []byte("EHLO x\r\nQUIT\r\n"), false},
		{"PROXY without space", []byte("PROXYX\r\nQUIT\r\n"), false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s := start(t, nil)
			_, nc := rawSession(t, s, append(tt.first, "QUIT\r\n"...))
			io.Copy(io.Discard, nc) // until the server closes after QUIT
			conns := s.Connections()
			if len(conns) != 1 {
				t.Fatalf("connections = %d; want 1", len(conns))
			}
			if conns[0].ProxyHeader != tt.proxy || !bytes.HasPrefix(conns[0].FirstBytes, tt.first) {
				t.Errorf("ProxyHeader = %v, FirstBytes = %q; want %v, %q...", conns[0].ProxyHeader, conns[0].FirstBytes, tt.proxy, tt.first)
			}
		})
	}
}

func TestForbidConnections(t *testing.T) {
	var seen atomic.Int32
	s := start(t, func(s *fakesource.Server) {
		s.ForbidConnections = true
		s.OnViolation = func(ci fakesource.ConnInfo) {
			if ci.Forbidden {
				seen.Add(1)
			}
		}
	})
	c := dial(t, s)
	err := c.Hello("x")
	var se *smtp.SMTPError
	if !errors.As(err, &se) || se.Code != 554 {
		t.Fatalf("Hello on a forbidden sink = %v; want 554", err)
	}
	c.Close()

	tc, nc := rawSession(t, s, []byte("EHLO intruder\r\nQUIT\r\n"))
	expect(t, tc, 554)
	expect(t, tc, 503)
	expect(t, tc, 221)
	io.Copy(io.Discard, nc)

	v := s.Violations()
	if len(v) != 2 || seen.Load() != 2 {
		t.Fatalf("Violations() = %d, OnViolation calls = %d; want 2, 2", len(v), seen.Load())
	}
	if !v[1].Forbidden || string(v[1].FirstBytes) != "EHLO intruder\r\nQUIT\r\n" {
		t.Errorf("violation = %+v; want Forbidden with the first bytes", v[1])
	}
	if n := len(s.Messages()); n != 0 {
		t.Errorf("messages = %d; want 0", n)
	}
	if n := len(s.Connections()); n != 2 {
		t.Errorf("connections = %d; want 2", n)
	}

	ok := start(t, nil)
	if n := len(ok.Violations()); n != 0 {
		t.Errorf("Violations() of an ordinary sink = %d; want 0", n)
	}
}

func TestWaitFor(t *testing.T) {
	s := start(t, nil)
	c := dial(t, s)
	if err := send(c, "a@x", []string{"early@corp.example"}, message("early")); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	t.Run("already there", func(t *testing.T) {
		m, err := s.WaitFor(ctx, fakesource.To("EARLY@corp.example"))
		if err != nil || m.MessageID != "<early@test>" {
			t.Fatalf("WaitFor = %q, %v; want <early@test>", m.MessageID, err)
		}
	})
	t.Run("arrives later", func(t *testing.T) {
		type result struct {
			m   fakesource.Message
			err error
		}
		got := make(chan result, 1)
		go func() {
			m, err := s.WaitFor(ctx, fakesource.HeaderIs("x-splitcheck-probe", "late"))
			got <- result{m, err}
		}()
		if err := send(c, "a@x", []string{"late@corp.example"}, message("other")); err != nil {
			t.Fatal(err)
		}
		if err := send(c, "a@x", []string{"late@corp.example"}, message("late")); err != nil {
			t.Fatal(err)
		}
		r := <-got
		if r.err != nil || r.m.MessageID != "<late@test>" {
			t.Fatalf("WaitFor = %q, %v; want <late@test>", r.m.MessageID, r.err)
		}
	})
	t.Run("deadline", func(t *testing.T) {
		short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
		defer cancel()
		_, err := s.WaitFor(short, fakesource.To("never@corp.example"))
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("WaitFor = %v; want DeadlineExceeded", err)
		}
	})
	t.Run("closed", func(t *testing.T) {
		s2 := start(t, nil)
		s2.Close()
		_, err := s2.WaitFor(ctx, fakesource.Any())
		if !errors.Is(err, fakesource.ErrClosed) {
			t.Fatalf("WaitFor on a closed server = %v; want ErrClosed", err)
		}
	})
}

func TestQuiet(t *testing.T) {
	s := start(t, nil)
	c := dial(t, s)
	if err := send(c, "a@x", []string{"there@corp.example"}, message("there")); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()

	t.Run("quiet window", func(t *testing.T) {
		if err := s.Quiet(ctx, 20*time.Millisecond, fakesource.To("nobody@corp.example")); err != nil {
			t.Fatalf("Quiet = %v; want nil", err)
		}
	})
	t.Run("already there", func(t *testing.T) {
		err := s.Quiet(ctx, time.Hour, fakesource.To("there@corp.example"))
		if !errors.Is(err, fakesource.ErrUnexpected) || !strings.Contains(err.Error(), "<there@test>") {
			t.Fatalf("Quiet = %v; want ErrUnexpected naming <there@test>", err)
		}
	})
	t.Run("arrives within window", func(t *testing.T) {
		errc := make(chan error, 1)
		go func() { errc <- s.Quiet(ctx, time.Hour, fakesource.To("stray@corp.example")) }()
		if err := send(c, "a@x", []string{"stray@corp.example"}, message("stray")); err != nil {
			t.Fatal(err)
		}
		err := <-errc
		if !errors.Is(err, fakesource.ErrUnexpected) || !strings.Contains(err.Error(), "<stray@test>") {
			t.Fatalf("Quiet = %v; want ErrUnexpected naming <stray@test>", err)
		}
	})
	t.Run("ctx ends before window", func(t *testing.T) {
		short, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
		defer cancel()
		err := s.Quiet(short, time.Hour, fakesource.To("nobody@corp.example"))
		if !errors.Is(err, context.DeadlineExceeded) || errors.Is(err, fakesource.ErrUnexpected) {
			t.Fatalf("Quiet = %v; want DeadlineExceeded only", err)
		}
	})
}

func TestConcurrentSessions(t *testing.T) {
	const n = 1000
	s := start(t, func(s *fakesource.Server) { s.IndexHeader = "X-Splitcheck-Probe" })
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Go(func() {
			id := fmt.Sprintf("probe-%04d", i)
			c, err := s.Dial(context.Background())
			if err != nil {
				errs <- err
				return
			}
			defer c.Close()
			if err := send(c, "a@source.example", []string{id + "@corp.example"}, message(id)); err != nil {
				errs <- fmt.Errorf("%s: %w", id, err)
				return
			}
			if err := c.Quit(); err != nil {
				errs <- fmt.Errorf("%s quit: %w", id, err)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	msgs := s.Messages()
	if len(msgs) != n {
		t.Fatalf("len(Messages()) = %d; want %d", len(msgs), n)
	}
	seqs := map[uint64]bool{}
	for _, m := range msgs {
		seqs[m.Seq] = true
	}
	if len(seqs) != n {
		t.Errorf("distinct Seq = %d; want %d", len(seqs), n)
	}
	for i := range n {
		id := fmt.Sprintf("probe-%04d", i)
		got := s.ByIndex(id)
		if len(got) != 1 || got[0].Rcpts[0].Addr != id+"@corp.example" {
			t.Errorf("ByIndex(%s) = %d messages; want exactly 1 to %s@corp.example", id, len(got), id)
		}
	}
	if c := len(s.Connections()); c != n {
		t.Errorf("connections = %d; want %d", c, n)
	}
}

func TestPipeliningAndBDAT(t *testing.T) {
	s := start(t, nil)
	tc, nc := rawSession(t, s, nil)
	expect(t, tc, 220)
	tc.PrintfLine("EHLO pipe.example")
	expect(t, tc, 250)
	// One write: the whole envelope and DATA, as a PIPELINING client sends it.
	io.WriteString(nc, "MAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nRCPT TO:<c@y>\r\nNOOP\r\nDATA\r\n")
	for _, code := range []int{250, 250, 250, 250, 354} {
		expect(t, tc, code)
	}
	// The body contains a line that looks like a reply and a dot-stuffed dot.
	io.WriteString(nc, "Subject: p\r\n\r\n250 not a reply\r\n..\r\n.\r\nRSET\r\n")
	expect(t, tc, 250)
	expect(t, tc, 250)
	chunk := "Subject: bdat\r\n\r\nDATA\r\nQUIT\r\n"
	fmt.Fprintf(nc, "MAIL FROM:<a@x>\r\nRCPT TO:<d@y>\r\nBDAT %d LAST\r\n%s", len(chunk), chunk)
	for _, code := range []int{250, 250, 250} {
		expect(t, tc, code)
	}
	tc.PrintfLine("QUIT")
	expect(t, tc, 221)

	msgs := s.Messages()
	if len(msgs) != 2 {
		t.Fatalf("messages = %d; want 2", len(msgs))
	}
	want := []string{"CONNECT 220", "EHLO 250", "MAIL 250", "RCPT 250", "RCPT 250", "NOOP 250", "DATA 354", "DATA 250"}
	if got := verbs(msgs[0].Replies); !reflect.DeepEqual(got, want) {
		t.Errorf("first message Replies = %v; want %v", got, want)
	}
	want = append(want, "RSET 250", "MAIL 250", "RCPT 250", "BDAT 250")
	if got := verbs(msgs[1].Replies); !reflect.DeepEqual(got, want) {
		t.Errorf("BDAT message Replies = %v; want %v", got, want)
	}
	if string(msgs[1].Body) != chunk || string(msgs[0].Body) != "Subject: p\r\n\r\n250 not a reply\r\n.\r\n" {
		t.Errorf("bodies = %q, %q", msgs[0].Body, msgs[1].Body)
	}
}

func TestCloseAndShutdown(t *testing.T) {
	t.Run("close twice and after", func(t *testing.T) {
		s := fakesource.NewServer()
		c, err := s.Dial(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if err := c.Hello("x"); err != nil {
			t.Fatal(err)
		}
		if err := s.Close(); err != nil {
			t.Fatalf("Close = %v", err)
		}
		if err := s.Close(); err != nil {
			t.Fatalf("second Close = %v", err)
		}
		if err := c.Noop(); err == nil {
			t.Error("Noop after Close succeeded; want a connection error")
		}
	})
	t.Run("shutdown waits for a client that quits", func(t *testing.T) {
		s := fakesource.NewServer()
		c, err := s.Dial(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Hello("x"); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- s.Shutdown(context.Background()) }()
		if err := send(c, "a@x", []string{"b@y"}, message("during-shutdown")); err != nil {
			t.Fatalf("send during shutdown: %v", err)
		}
		c.Quit()
		if err := <-done; err != nil {
			t.Fatalf("Shutdown = %v; want nil", err)
		}
		if n := len(s.Messages()); n != 1 {
			t.Errorf("messages = %d; want 1", n)
		}
	})
	t.Run("shutdown deadline closes idle clients", func(t *testing.T) {
		s := fakesource.NewServer()
		c, err := s.Dial(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if err := c.Hello("x"); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		if err := s.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Shutdown = %v; want DeadlineExceeded", err)
		}
	})
}

func TestListen(t *testing.T) {
	s := fakesource.NewUnstartedServer()
	if err := s.Listen("127.0.0.1:0"); err != nil {
		t.Fatalf("Listen: %v", err)
	}
	defer s.Close()
	if !strings.HasPrefix(s.Addr, "127.0.0.1:") || strings.HasSuffix(s.Addr, ":0") {
		t.Errorf("Addr = %q; want 127.0.0.1:<port>", s.Addr)
	}
	if err := s.Listen("127.0.0.1:0"); !errors.Is(err, fakesource.ErrStarted) {
		t.Errorf("second Listen = %v; want ErrStarted", err)
	}
	other := fakesource.NewUnstartedServer()
	if err := other.Listen(s.Addr); err == nil {
		other.Close()
		t.Errorf("Listen(%s) on a busy port = nil; want an error", s.Addr)
	}
	// A banner answers on the address.
	nc, err := net.Dial("tcp", s.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	nc.SetDeadline(time.Now().Add(10 * time.Second))
	line, err := bufio.NewReader(nc).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "220 fakesource.test ESMTP") {
		t.Errorf("banner = %q, %v; want 220 fakesource.test ESMTP...", line, err)
	}
}

func TestOnMessageAndHostname(t *testing.T) {
	got := make(chan fakesource.Message, 1)
	s := start(t, func(s *fakesource.Server) {
		s.Hostname = "old.source.example"
		s.OnMessage = func(m fakesource.Message) { got <- m }
	})
	c := dial(t, s)
	if err := send(c, "a@x", []string{"b@y"}, message("cb")); err != nil {
		t.Fatal(err)
	}
	m := <-got
	if m.Seq != 1 || m.MessageID != "<cb@test>" {
		t.Errorf("OnMessage got Seq %d, MessageID %q; want 1, <cb@test>", m.Seq, m.MessageID)
	}
	if !strings.HasPrefix(m.Replies[0].Text, "old.source.example ") {
		t.Errorf("banner = %q; want it to name old.source.example", m.Replies[0].Text)
	}
}

func TestHeaderValues(t *testing.T) {
	m := fakesource.Message{Header: []byte("Received: a\r\n b\r\nsubject : one\r\nX-Empty:\r\nReceived:c\r\nbroken line\r\n\tfolded-orphan\r\n")}
	for _, tt := range []struct {
		name string
		want []string
	}{
		{"Received", []string{"a b", "c"}},
		{"SUBJECT", []string{"one"}},
		{"x-empty", []string{""}},
		{"Missing", nil},
	} {
		if got := m.HeaderValues(tt.name); !reflect.DeepEqual(got, tt.want) {
			t.Errorf("HeaderValues(%q) = %q; want %q", tt.name, got, tt.want)
		}
	}
}

func TestGenerateCert(t *testing.T) {
	cert, err := fakesource.GenerateCert("127.0.0.1", "mx.example")
	if err != nil {
		t.Fatal(err)
	}
	if err := cert.Leaf.VerifyHostname("mx.example"); err != nil {
		t.Errorf("VerifyHostname(mx.example) = %v", err)
	}
	if err := cert.Leaf.VerifyHostname("127.0.0.1"); err != nil {
		t.Errorf("VerifyHostname(127.0.0.1) = %v", err)
	}
	if err := cert.Leaf.VerifyHostname("other.example"); err == nil {
		t.Error("VerifyHostname(other.example) = nil; want an error")
	}
	if _, err := fakesource.NewUnstartedServer().ClientTLSConfig(); err == nil {
		t.Error("ClientTLSConfig without a certificate = nil error; want an error")
	}
}
