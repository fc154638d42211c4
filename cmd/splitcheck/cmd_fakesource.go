package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/spf13/cobra"

	"github.com/splitcheck/splitcheck/fakesource"
)

// fakesourceAuthEnv holds user:pass entries when no --auth flag is given.
const fakesourceAuthEnv = "SPLITCHECK_FAKESOURCE_AUTH"

// fakesourceOptions are the flags of `splitcheck fakesource`.
type fakesourceOptions struct {
	listen          string
	hostname        string
	starttls        bool
	auth            []string
	authRequired    bool
	maxMessageBytes int64
	maxRecipients   int
	rejectRcpt      []string
	forbid          bool
	indexHeader     string
	getenv          func(string) string
}

func newFakesourceCmd(ios *ioStreams) *cobra.Command {
	opts := &fakesourceOptions{getenv: os.Getenv}
	cmd := &cobra.Command{
		Use:   "fakesource --listen ADDR [flags]",
		Short: "Run an SMTP sink that records the mail it receives (a stand-in old server or MX)",
		Long: `fakesource runs an SMTP sink that stands in for the old mail server (the "source") or
for a remote MX. It accepts mail, keeps nothing on disk, and prints each message it
receives as one JSON line on stdout (envelope, client address, HELO, TLS and AUTH state,
Message-ID, size, SHA-256, and the replies it gave; never the body, never a password) and
one human-readable line on stderr. It prints "listening on ADDR" on stderr once it
accepts connections, and exits 0 on SIGINT or SIGTERM.

With --forbid it is a sink that must not be reached: every connection is refused with
554 and reported as a violation line ("kind":"violation") on stdout and on stderr.

Users for --auth can also come from $` + fakesourceAuthEnv + `
(USER:PASS entries separated by commas or newlines), which keeps passwords out of the
process list; it is read only when no --auth flag is given.`,
		Example: `  splitcheck fakesource --listen 127.0.0.1:2525 --reject-rcpt gone@corp.example=550
  SPLITCHECK_FAKESOURCE_AUTH=relay:secret splitcheck fakesource --listen 127.0.0.1:2587 --starttls --auth-required
  splitcheck fakesource --listen 127.0.0.1:0 --forbid`,
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) > 0 {
				return &usageError{fmt.Errorf("fakesource takes no arguments, got %q", args)}
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := fakesourceLogger(cmd, ios)
			if err != nil {
				return err
			}
			return runFakesource(cmd.Context(), opts, ios, log)
		},
	}
	cmd.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return &usageError{err} })
	f := cmd.Flags()
	f.StringVar(&opts.listen, "listen", "", "address to listen on, such as 127.0.0.1:2525; port 0 picks a free one (required)")
	f.StringVar(&opts.hostname, "hostname", fakesource.DefaultHostname, "name in the banner and the EHLO reply")
	f.BoolVar(&opts.starttls, "starttls", false, "offer STARTTLS with a self-signed certificate")
	f.StringArrayVar(&opts.auth, "auth", nil, "USER:PASS to accept with AUTH PLAIN/LOGIN (repeatable; default $"+fakesourceAuthEnv+")")
	f.BoolVar(&opts.authRequired, "auth-required", false, "refuse MAIL FROM before AUTH")
	f.Int64Var(&opts.maxMessageBytes, "max-message-bytes", fakesource.DefaultMaxMessageBytes, "largest message accepted; larger gets 552")
	f.IntVar(&opts.maxRecipients, "max-recipients", fakesource.DefaultMaxRecipients, "most recipients per message; more get 452")
	f.StringArrayVar(&opts.rejectRcpt, "reject-rcpt", nil, "ADDR=CODE: refuse that recipient with CODE, 4xx or 5xx (repeatable)")
	f.StringVar(&opts.indexHeader, "index-header", "", "header field whose value is printed as \"index\"")
	f.BoolVar(&opts.forbid, "forbid", false, "refuse every connection with 554 and report it as a violation")
	return cmd
}

// fakesourceLogger uses the root's --log-level/--log-format when present.
func fakesourceLogger(cmd *cobra.Command, ios *ioStreams) (*slog.Logger, error) {
	if cmd.Flags().Lookup("log-level") == nil || cmd.Flags().Lookup("log-format") == nil {
		return slog.New(slog.NewTextHandler(ios.ErrOut, &slog.HandlerOptions{Level: slog.LevelWarn})), nil
	}
	return newLogger(cmd, ios)
}

// buildFakesource turns the options into an unstarted server.
func buildFakesource(opts *fakesourceOptions) (*fakesource.Server, error) {
	if opts.listen == "" {
		return nil, &usageError{fmt.Errorf("--listen is required (for example --listen 127.0.0.1:2525)")}
	}
	if opts.maxMessageBytes <= 0 {
		return nil, &usageError{fmt.Errorf("--max-message-bytes %d: want a positive number", opts.maxMessageBytes)}
	}
	if opts.maxRecipients <= 0 {
		return nil, &usageError{fmt.Errorf("--max-recipients %d: want a positive number", opts.maxRecipients)}
	}
	s := fakesource.NewUnstartedServer()
	s.Hostname = opts.hostname
	s.MaxMessageBytes = opts.maxMessageBytes
	s.MaxRecipients = opts.maxRecipients
	s.ForbidConnections = opts.forbid
	s.IndexHeader = opts.indexHeader

	entries := opts.auth
	source := "--auth"
	if len(entries) == 0 && opts.getenv != nil {
		if env := opts.getenv(fakesourceAuthEnv); env != "" {
			entries = strings.FieldsFunc(env, func(r rune) bool { return r == ',' || r == '\n' || r == '\r' })
			source = "$" + fakesourceAuthEnv
		}
	}
	if len(entries) > 0 {
		s.AuthUsers = map[string]string{}
		for _, e := range entries {
			user, pass, ok := strings.Cut(strings.TrimSpace(e), ":")
			if !ok || user == "" {
				// Never echo the entry: it holds a password.
				return nil, &usageError{fmt.Errorf("%s: want USER:PASS entries", source)}
			}
			s.AuthUsers[user] = pass
		}
	}
	if opts.authRequired {
		if s.AuthUsers == nil {
			return nil, &usageError{fmt.Errorf("--auth-required needs --auth or $%s", fakesourceAuthEnv)}
		}
		s.AuthRequired = true
	}

	if len(opts.rejectRcpt) > 0 {
		reject := map[string]*smtp.SMTPError{}
		for _, r := range opts.rejectRcpt {
			addr, codeText, ok := strings.Cut(r, "=")
			code, err := strconv.Atoi(codeText)
			if !ok || addr == "" || err != nil || code < 400 || code > 599 {
				return nil, &usageError{fmt.Errorf("--reject-rcpt %q: want ADDR=CODE with CODE 400-599", r)}
			}
			reject[strings.ToLower(addr)] = &smtp.SMTPError{
				Code:         code,
				EnhancedCode: smtp.EnhancedCodeNotSet,
				Message:      "rejected by fakesource --reject-rcpt",
			}
		}
		s.RcptErr = func(rcpt string) error {
			if e, ok := reject[strings.ToLower(rcpt)]; ok {
				return e
			}
			return nil
		}
	}

	if opts.starttls {
		cert, err := fakesource.GenerateCert("127.0.0.1", "::1", "localhost", opts.hostname)
		if err != nil {
			return nil, fmt.Errorf("fakesource: %w", err)
		}
		s.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}
	return s, nil
}

func runFakesource(ctx context.Context, opts *fakesourceOptions, ios *ioStreams, log *slog.Logger) error {
	s, err := buildFakesource(opts)
	if err != nil {
		return err
	}
	s.Logger = log
	p := &fakesourcePrinter{out: ios.Out, errOut: ios.ErrOut, indexHeader: opts.indexHeader}
	s.OnMessage = p.message
	s.OnViolation = p.violation
	if err := s.Listen(opts.listen); err != nil {
		return fmt.Errorf("fakesource: %w", err)
	}
	p.status("listening on %s", s.Addr)
	<-ctx.Done()
	p.status("stopping")
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := s.Shutdown(sctx); err != nil {
		// Clients still connected after 5s were cut off; that is not a failure.
		log.Debug("fakesource shutdown", "err", err)
	}
	return nil
}

// fakesourcePrinter writes one JSON line per event on out and a human line
// on errOut; sessions call it concurrently.
type fakesourcePrinter struct {
	mu          sync.Mutex
	out, errOut io.Writer
	indexHeader string
}

// fakesourceLine is the JSON form of a received message or a violation.
type fakesourceLine struct {
	Kind        string            `json:"kind"`
	Seq         uint64            `json:"seq,omitempty"`
	ConnID      uint64            `json:"conn_id"`
	Time        time.Time         `json:"time"`
	From        *string           `json:"from,omitempty"`
	MailParams  map[string]string `json:"mail_params,omitempty"`
	Rcpts       []fakesourceRcpt  `json:"rcpts,omitempty"`
	RemoteAddr  string            `json:"remote_addr"`
	LocalAddr   string            `json:"local_addr"`
	Helo        string            `json:"helo,omitempty"`
	TLS         bool              `json:"tls"`
	AuthUser    string            `json:"auth_user,omitempty"`
	ProxyHeader bool              `json:"proxy_header"`
	FirstBytes  string            `json:"first_bytes"`
	MessageID   string            `json:"message_id,omitempty"`
	Index       []string          `json:"index,omitempty"`
	Received    []string          `json:"received,omitempty"`
	Size        int64             `json:"size,omitempty"`
	SHA256      string            `json:"sha256,omitempty"`
	Replies     []string          `json:"replies,omitempty"`
}

type fakesourceRcpt struct {
	Addr   string            `json:"addr"`
	Params map[string]string `json:"params,omitempty"`
}

func (p *fakesourcePrinter) message(m fakesource.Message) {
	from := m.From
	line := fakesourceLine{
		Kind: "message", Seq: m.Seq, ConnID: m.ConnID, Time: m.ReceivedAt,
		From: &from, MailParams: m.MailParams,
		RemoteAddr: m.RemoteAddr, LocalAddr: m.LocalAddr, Helo: m.Helo, TLS: m.TLS, AuthUser: m.AuthUser,
		ProxyHeader: m.ProxyHeader, FirstBytes: string(m.FirstBytes),
		MessageID: m.MessageID, Received: m.Received, Size: m.BodySize, SHA256: m.SHA256,
	}
	if p.indexHeader != "" {
		line.Index = m.HeaderValues(p.indexHeader)
	}
	rcpts := make([]string, len(m.Rcpts))
	for i, r := range m.Rcpts {
		line.Rcpts = append(line.Rcpts, fakesourceRcpt{Addr: r.Addr, Params: r.Params})
		rcpts[i] = "<" + r.Addr + ">"
	}
	for _, r := range m.Replies {
		line.Replies = append(line.Replies, strings.TrimSpace(fmt.Sprintf("%s %d %s", r.Command, r.Code, r.Enhanced)))
	}
	var notes []string
	notes = append(notes, fmt.Sprintf("%d bytes", m.BodySize))
	if m.TLS {
		notes = append(notes, "TLS")
	}
	if m.AuthUser != "" {
		notes = append(notes, "auth "+m.AuthUser)
	}
	if m.ProxyHeader {
		notes = append(notes, "PROXY HEADER RECEIVED")
	}
	id := m.MessageID
	if id == "" {
		id = "(no Message-ID)"
	}
	p.emit(line, fmt.Sprintf("message %d from <%s> to %s via %s (%s) %s",
		m.Seq, m.From, strings.Join(rcpts, ", "), m.RemoteAddr, strings.Join(notes, ", "), id))
}

func (p *fakesourcePrinter) violation(ci fakesource.ConnInfo) {
	line := fakesourceLine{
		Kind: "violation", ConnID: ci.ID, Time: ci.At, RemoteAddr: ci.RemoteAddr, LocalAddr: ci.LocalAddr,
		ProxyHeader: ci.ProxyHeader, FirstBytes: string(ci.FirstBytes),
	}
	p.emit(line, fmt.Sprintf("VIOLATION: connection %d from %s to a forbidden sink", ci.ID, ci.RemoteAddr))
}

func (p *fakesourcePrinter) emit(line fakesourceLine, human string) {
	b, err := json.Marshal(line)
	p.mu.Lock()
	defer p.mu.Unlock()
	if err == nil {
		fmt.Fprintf(p.out, "%s\n", b)
	}
	fmt.Fprintf(p.errOut, "fakesource: %s\n", human)
}

func (p *fakesourcePrinter) status(format string, args ...any) {
	p.mu.Lock()
	defer p.mu.Unlock()
	fmt.Fprintf(p.errOut, format+"\n", args...)
}
