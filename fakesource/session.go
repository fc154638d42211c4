package fakesource

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

// errDropped is returned to go-smtp after DropAfterData closed the connection;
// its reply cannot reach the client.
var errDropped = errors.New("fakesource: connection dropped after data")

// session is the go-smtp Session of one connection (a new one after
// STARTTLS). go-smtp calls it from the connection's goroutine, except Data
// during BDAT, which runs in a goroutine of its own.
type session struct {
	s  *Server
	c  *recConn
	sc *smtp.Conn

	authUser   string
	helo       string
	tls        bool
	from       string
	mailParams map[string]string
	rcpts      []Rcpt
}

var _ smtp.AuthSession = (*session)(nil)

func (ss *session) Reset() {
	ss.from, ss.mailParams, ss.rcpts = "", nil, nil
}

func (ss *session) Logout() error { return nil }

func (ss *session) AuthMechanisms() []string {
	if ss.s.AuthUsers == nil {
		return nil
	}
	return []string{sasl.Plain, sasl.Login}
}

func (ss *session) Auth(mech string) (sasl.Server, error) {
	if ss.s.AuthUsers == nil {
		return nil, smtp.ErrAuthUnsupported
	}
	switch mech {
	case sasl.Plain:
		return sasl.NewPlainServer(func(identity, username, password string) error {
			if identity != "" && identity != username {
				return smtp.ErrAuthFailed
			}
			return ss.login(username, password)
		}), nil
	case sasl.Login:
		return &loginServer{auth: ss.login}, nil
	}
	return nil, smtp.ErrAuthUnknownMechanism
}

func (ss *session) login(username, password string) error {
	want, ok := ss.s.AuthUsers[username]
	if !ok || want != password {
		ss.s.log.Info("auth failed", "conn_id", ss.c.id, "user", username)
		return smtp.ErrAuthFailed
	}
	ss.authUser = username
	return nil
}

func (ss *session) Mail(from string, opts *smtp.MailOptions) error {
	if !ss.c.pause("MAIL") {
		return errShutdown
	}
	if ss.s.AuthRequired && ss.authUser == "" {
		return smtp.ErrAuthRequired
	}
	if ss.s.MailErr != nil {
		if err := ss.s.MailErr(from); err != nil {
			return err
		}
	}
	ss.Reset()
	ss.from = from
	ss.mailParams = mailParams(opts)
	ss.helo = ss.sc.Hostname()
	_, ss.tls = ss.sc.TLSConnectionState()
	return nil
}

func (ss *session) Rcpt(to string, opts *smtp.RcptOptions) error {
	if !ss.c.pause("RCPT") {
		return errShutdown
	}
	if ss.s.RcptErr != nil {
		if err := ss.s.RcptErr(to); err != nil {
			return err
		}
	}
	ss.rcpts = append(ss.rcpts, Rcpt{Addr: to, Params: rcptParams(opts)})
	return nil
}

func (ss *session) Data(r io.Reader) error {
	s := ss.s
	h := sha256.New()
	hs := headerScanner{max: maxHeaderBytes}
	keeping := s.KeepBodyBytes > 0
	var body []byte
	var size int64
	bp := s.dataBuf()
	defer s.bufs.Put(bp)
	buf := *bp
	var readErr error
	for {
		n, err := r.Read(buf)
		if n > 0 {
			h.Write(buf[:n])
			hs.Write(buf[:n])
			if keeping && size+int64(n) > s.KeepBodyBytes {
				keeping, body = false, nil
			}
			if keeping {
				body = append(body, buf[:n]...)
			}
			size += int64(n)
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			readErr = err
			break
		}
	}
	first, proxy := ss.c.firstBytes()
	replies, verb := ss.c.replies()
	if verb != "BDAT" {
		verb = "DATA"
	}
	m := Message{
		ConnID:      ss.c.id,
		ReceivedAt:  time.Now(),
		From:        ss.from,
		MailParams:  ss.mailParams,
		Rcpts:       ss.rcpts, // Reset drops it, never reuses it
		RemoteAddr:  ss.c.RemoteAddr().String(),
		LocalAddr:   ss.c.LocalAddr().String(),
		Helo:        ss.helo,
		TLS:         ss.tls,
		AuthUser:    ss.authUser,
		FirstBytes:  first,
		ProxyHeader: proxy,
		Header:      hs.buf,
		BodySize:    size,
		SHA256:      hex.EncodeToString(h.Sum(nil)),
		Body:        body,
		Replies:     replies,
	}
	m.Received = m.HeaderValues("Received")
	if ids := m.HeaderValues("Message-ID"); len(ids) > 0 {
		m.MessageID = ids[0]
	}
	log := msgLogger{s.log, &m}
	if readErr != nil {
		m.Replies = ss.c.predict(dataReply(verb, readErr))
		s.recordRejected(m)
		log.Info("message refused while reading data", "err", readErr)
		return readErr
	}
	if !ss.c.pause("DATA") {
		return errShutdown
	}
	if s.DropAfterData != nil && s.DropAfterData(&m) {
		s.recordRejected(m)
		log.Info("connection dropped after data")
		ss.c.Close()
		return errDropped
	}
	var err error
	if s.DataErr != nil {
		err = s.DataErr(&m)
	}
	m.Replies = ss.c.predict(dataReply(verb, err))
	if err != nil {
		s.recordRejected(m)
		log.Info("message rejected after data", "err", err)
		return err
	}
	m = s.record(m)
	log.Debug("message received", "seq", m.Seq, "rcpts", len(m.Rcpts), "size", m.BodySize)
	if s.OnMessage != nil {
		s.OnMessage(m)
	}
	return nil
}

// msgLogger logs about a message with its connection, sender and
// Message-ID, building those attributes only when the level is enabled.
type msgLogger struct {
	l *slog.Logger
	m *Message
}

func (ml msgLogger) log(level slog.Level, msg string, args ...any) {
	ctx := context.Background()
	if !ml.l.Enabled(ctx, level) {
		return
	}
	ml.l.With("conn_id", ml.m.ConnID, "from", ml.m.From, "message_id", ml.m.MessageID).Log(ctx, level, msg, args...)
}

func (ml msgLogger) Info(msg string, args ...any)  { ml.log(slog.LevelInfo, msg, args...) }
func (ml msgLogger) Debug(msg string, args ...any) { ml.log(slog.LevelDebug, msg, args...) }

// dataReply is the reply to verb (DATA or BDAT) that go-smtp gives when Data
// returns err (it mirrors
// go-smtp's dataErrorToStatus and writeResponse).
func dataReply(verb string, err error) Reply {
	r := Reply{Command: verb, Code: 250, Enhanced: "2.0.0", Text: "OK: queued"}
	if err == nil {
		return r
	}
	se, ok := err.(*smtp.SMTPError)
	if !ok {
		r.Code, r.Enhanced, r.Text = 554, "5.0.0", "Error: transaction failed: "+err.Error()
		return r
	}
	r.Code, r.Text = se.Code, se.Message
	switch ec := se.EnhancedCode; ec {
	case smtp.NoEnhancedCode:
		r.Enhanced = ""
	case smtp.EnhancedCodeNotSet:
		r.Enhanced = ""
		if c := se.Code / 100; c == 2 || c == 4 || c == 5 {
			r.Enhanced = strconv.Itoa(c) + ".0.0"
		}
	default:
		r.Enhanced = strconv.Itoa(ec[0]) + "." + strconv.Itoa(ec[1]) + "." + strconv.Itoa(ec[2])
	}
	return r
}

func mailParams(o *smtp.MailOptions) map[string]string {
	p := map[string]string{}
	if o == nil {
		return p
	}
	if o.Body != "" {
		p["BODY"] = string(o.Body)
	}
	if o.Size != 0 {
		p["SIZE"] = strconv.FormatInt(o.Size, 10)
	}
	if o.UTF8 {
		p["SMTPUTF8"] = ""
	}
	if o.RequireTLS {
		p["REQUIRETLS"] = ""
	}
	if o.Return != "" {
		p["RET"] = string(o.Return)
	}
	if o.EnvelopeID != "" {
		p["ENVID"] = o.EnvelopeID
	}
	if o.Auth != nil {
		p["AUTH"] = *o.Auth
		if *o.Auth == "" {
			p["AUTH"] = "<>"
		}
	}
	return p
}

func rcptParams(o *smtp.RcptOptions) map[string]string {
	p := map[string]string{}
	if o == nil {
		return p
	}
	if len(o.Notify) > 0 {
		n := make([]string, len(o.Notify))
		for i, v := range o.Notify {
			n[i] = string(v)
		}
		p["NOTIFY"] = strings.Join(n, ",")
	}
	if o.OriginalRecipient != "" {
		p["ORCPT"] = string(o.OriginalRecipientType) + ";" + o.OriginalRecipient
	}
	if !o.RequireRecipientValidSince.IsZero() {
		p["RRVS"] = o.RequireRecipientValidSince.Format(time.RFC3339)
	}
	if o.DeliverBy != nil {
		p["BY"] = strconv.FormatInt(int64(o.DeliverBy.Time/time.Second), 10) + ";" + string(o.DeliverBy.Mode)
	}
	if o.MTPriority != nil {
		p["MT-PRIORITY"] = strconv.Itoa(*o.MTPriority)
	}
	return p
}

// loginServer is the server side of the obsolete LOGIN SASL mechanism, which
// go-sasl no longer provides. It accepts the username as initial response.
type loginServer struct {
	auth     func(username, password string) error
	state    int
	username string
}

func (l *loginServer) Next(response []byte) (challenge []byte, done bool, err error) {
	switch l.state {
	case 0:
		if response == nil {
			l.state = 1
			return []byte("Username:"), false, nil
		}
		l.username = string(response)
		l.state = 2
		return []byte("Password:"), false, nil
	case 1:
		l.username = string(response)
		l.state = 2
		return []byte("Password:"), false, nil
	case 2:
		l.state = 3
		return nil, true, l.auth(l.username, string(response))
	}
	return nil, false, sasl.ErrUnexpectedClientResponse
}
