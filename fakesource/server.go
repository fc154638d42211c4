// Package fakesource is an SMTP sink for tests: it stands in for an old mail
// server that mail is relayed to, or for a remote MX, and records everything
// a client did so a test can check where mail went and how.
//
// It is shaped like net/http/httptest: [NewServer] listens on a loopback port
// chosen by the system and serves at once, [Server.Addr] says where, and
// [Server.Close] stops it and waits for every connection goroutine. Messages
// are recorded with their envelope, parameters, client address, HELO, TLS and
// AUTH state, raw first bytes (a PROXY header arriving is evidence of a
// misconfiguration), header block, hash and (small) body, and every reply the
// server gave. Faults are injected per stage with func fields that return
// *smtp.SMTPError values, which go-smtp passes to the client unchanged.
// [Server.WaitFor] and [Server.Quiet] wait for arrival and for absence
// without polling.
//
// It is built on github.com/emersion/go-smtp. It does not deliver, queue or
// relay anything, and all its memory use is bounded: bodies are hashed as they
// stream and kept only up to a size, and only the latest messages are kept.
package fakesource

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/pires/go-proxyproto"
)

// Defaults for zero Server fields.
const (
	DefaultHostname        = "fakesource.test"
	DefaultMaxMessageBytes = 10 << 20
	DefaultMaxRecipients   = 1000
	DefaultKeepBodyBytes   = 1 << 20
	DefaultKeepTotalBytes  = 256 << 20
	DefaultMaxMessages     = 100000
	DefaultTimeout         = 60 * time.Second
)

// Server is an SMTP sink listening on a TCP address. Set its fields before
// Start, StartTLS or Listen and do not change them afterwards; zero fields
// get the defaults documented on them when the server starts.
type Server struct {
	// Addr is the address the server listens on, such as "127.0.0.1:53811";
	// Start and Listen set it.
	Addr string
	// Hostname is the domain in the banner and the EHLO reply; default
	// "fakesource.test".
	Hostname string
	// Logger receives a line per message and per notable event; nil is silent.
	Logger *slog.Logger

	// MaxMessageBytes limits the DATA size (and the SIZE parameter); larger
	// messages get 552. Default 10 MiB; negative means no limit.
	MaxMessageBytes int64
	// MaxRecipients limits RCPT TO per message; more get 452. Default 1000;
	// negative means no limit.
	MaxRecipients int
	// KeepBodyBytes is the largest message whose bytes are kept in
	// Message.Body; larger ones are only hashed. Default 1 MiB; negative
	// keeps no body.
	KeepBodyBytes int64
	// KeepTotalBytes bounds the bodies kept across all recorded messages;
	// past it the oldest bodies are dropped (Body nil). Default 256 MiB.
	KeepTotalBytes int64
	// MaxMessages is how many recorded messages are kept (the oldest are
	// dropped); it also bounds Rejected, Connections and Violations.
	// Default 100000; there is no unbounded setting.
	MaxMessages int
	// ReadTimeout and WriteTimeout are the deadlines of every socket read
	// (per command line; for DATA, the whole body) and write. Default 60s.
	ReadTimeout, WriteTimeout time.Duration

	// TLSConfig, when set, makes the server offer STARTTLS with it. StartTLS
	// sets it to a self-signed certificate (see GenerateCert) if it is nil.
	TLSConfig *tls.Config
	// AuthUsers, when non-nil, maps usernames to passwords and makes the
	// server offer AUTH PLAIN and LOGIN, also without TLS.
	AuthUsers map[string]string
	// AuthRequired refuses MAIL FROM with 502 5.7.0 before AUTH succeeds.
	AuthRequired bool
	// IndexHeader names a header field (such as "X-Splitcheck-Probe") whose
	// values index recorded messages for ByIndex.
	IndexHeader string
	// ForbidConnections makes this a sink that must not be connected to:
	// every connection is recorded as a violation and answered with 554.
	ForbidConnections bool
	// AcceptProxy makes the server expect a PROXY protocol v1 or v2 header
	// at the start of every connection, as a mail server behind a load
	// balancer does. The header is parsed with go-proxyproto before the
	// banner, and the source address it announces becomes the RemoteAddr
	// recorded for the connection and its messages (a v2 LOCAL or v1
	// UNKNOWN header keeps the real one). FirstBytes still hold the header
	// and ProxyHeader is still true. A connection that sends anything else,
	// or nothing within ReadTimeout, is closed without a banner; its
	// ConnInfo keeps the bytes it sent. ForbidConnections overrides it.
	AcceptProxy bool

	// MailErr, when it returns an error, refuses MAIL FROM with it; return an
	// *smtp.SMTPError to choose the reply.
	MailErr func(from string) error
	// RcptErr, when it returns an error, refuses that RCPT TO with it, such
	// as &smtp.SMTPError{Code: 450, ...} for a chosen recipient.
	RcptErr func(rcpt string) error
	// DataErr, when it returns an error, refuses the message after its body
	// was read; m has every field but Seq.
	DataErr func(m *Message) error
	// Delay returns how long to wait before replying to command: "CONNECT"
	// (the banner), "MAIL", "RCPT", "DATA" (the reply after the body), and for
	// any other verb ("EHLO", "STARTTLS", "AUTH", "RSET", ...) the wait starts
	// when its command line is read. Close interrupts a delay.
	Delay func(command string) time.Duration
	// DropAfterData, when it returns true, closes the connection after the
	// DATA body without replying; the message is not recorded as accepted.
	DropAfterData func(m *Message) bool
	// OnMessage is called with each recorded message, from the connection's
	// goroutine, before the client gets its reply.
	OnMessage func(Message)
	// OnViolation is called when a connection arrives in ForbidConnections
	// mode, from the connection's goroutine, before it is refused.
	OnViolation func(ConnInfo)
	// Configure, when set, is called with the go-smtp server built for each
	// connection, after the defaults are applied; it may change options
	// such as AllowInsecureAuth, EnableDSN or MaxLineLength. It must not set
	// Backend, Debug or ErrorLog.
	Configure func(*smtp.Server)

	log     *slog.Logger
	mu      sync.Mutex
	ln      net.Listener
	started bool
	closed  bool
	done    chan struct{}
	wg      sync.WaitGroup
	live    map[*recConn]struct{}

	nextConnID    uint64
	nextSeq       uint64
	nextRejected  uint64
	nextViolation uint64
	msgs          ring[entry]
	rejected      ring[Message]
	conns         ring[ConnInfo]
	violations    ring[ConnInfo]
	index         map[string][]uint64
	keptBytes     int64
	bodyFloor     uint64
	notify        chan struct{}

	bufs sync.Pool // *[]byte of dataBufSize, for reading DATA bodies
}

// dataBufSize is the read buffer of a DATA body.
const dataBufSize = 32 << 10

// dataBuf returns a DATA read buffer; put it back in s.bufs.
func (s *Server) dataBuf() *[]byte {
	if bp, ok := s.bufs.Get().(*[]byte); ok {
		return bp
	}
	b := make([]byte, dataBufSize)
	return &b
}

// ErrStarted is returned by Listen when the server was already started.
var ErrStarted = errors.New("fakesource: server already started")

// errShutdown is returned to go-smtp when a delay was cut short by Close.
var errShutdown = &smtp.SMTPError{Code: 421, EnhancedCode: smtp.EnhancedCode{4, 3, 2}, Message: "fakesource: shutting down"}

// NewServer starts and returns a Server listening on a loopback port chosen
// by the system. It panics if it cannot listen. The caller should Close it.
func NewServer() *Server {
	s := NewUnstartedServer()
	s.Start()
	return s
}

// NewUnstartedServer returns a Server that is not started yet, so the caller
// can set its fields; call Start, StartTLS or Listen next.
func NewUnstartedServer() *Server {
	return &Server{}
}

// Start starts the server on a loopback port chosen by the system
// (127.0.0.1:0, or [::1]:0 if IPv4 is unavailable) and sets Addr. It panics
// if it cannot listen or was already started.
func (s *Server) Start() {
	ln, err := listen("tcp", "127.0.0.1:0")
	if err != nil {
		if ln, err = listen("tcp6", "[::1]:0"); err != nil {
			panic(fmt.Sprintf("fakesource: failed to listen on a port: %v", err))
		}
	}
	if err := s.serve(ln); err != nil {
		panic(err.Error())
	}
}

// StartTLS is Start with STARTTLS offered: when TLSConfig is nil it is set to
// a self-signed certificate for 127.0.0.1, ::1, localhost and Hostname.
// ClientTLSConfig returns a client configuration that trusts it.
func (s *Server) StartTLS() {
	if err := s.ensureTLS(); err != nil {
		panic(err.Error())
	}
	s.Start()
}

func (s *Server) ensureTLS() error {
	if s.TLSConfig != nil {
		return nil
	}
	host := s.Hostname
	if host == "" {
		host = DefaultHostname
	}
	cert, err := GenerateCert("127.0.0.1", "::1", "localhost", host)
	if err != nil {
		return fmt.Errorf("start tls: %w", err)
	}
	s.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	return nil
}

// Listen binds addr (":0" picks a port), sets Addr and serves in the
// background; it returns once the server accepts connections. Unlike Start it
// reports errors. With STARTTLS wanted and no certificate, set TLSConfig from
// GenerateCert first.
func (s *Server) Listen(addr string) error {
	ln, err := listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen %s: %w", addr, err)
	}
	if err := s.serve(ln); err != nil {
		ln.Close()
		return err
	}
	return nil
}

// listen binds a TCP listener whose connections have no TCP keepalive: a
// sink's sessions are short and bounded by read deadlines, and the probes
// keepalive needs cost four syscalls per connection.
func listen(network, addr string) (net.Listener, error) {
	lc := net.ListenConfig{KeepAlive: -1}
	return lc.Listen(context.Background(), network, addr)
}

// serve applies the defaults and starts the accept loop on ln.
func (s *Server) serve(ln net.Listener) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.started {
		return fmt.Errorf("listen: %w", ErrStarted)
	}
	if s.closed {
		return fmt.Errorf("listen: %w", ErrClosed)
	}
	s.started = true
	s.defaults()
	s.ln = ln
	s.Addr = ln.Addr().String()
	s.wg.Add(1)
	go s.acceptLoop(ln)
	return nil
}

func (s *Server) defaults() {
	if s.Hostname == "" {
		s.Hostname = DefaultHostname
	}
	if s.MaxMessageBytes == 0 {
		s.MaxMessageBytes = DefaultMaxMessageBytes
	}
	if s.MaxRecipients == 0 {
		s.MaxRecipients = DefaultMaxRecipients
	}
	if s.KeepBodyBytes == 0 {
		s.KeepBodyBytes = DefaultKeepBodyBytes
	}
	if s.KeepTotalBytes <= 0 {
		s.KeepTotalBytes = DefaultKeepTotalBytes
	}
	if s.MaxMessages <= 0 {
		s.MaxMessages = DefaultMaxMessages
	}
	if s.ReadTimeout <= 0 {
		s.ReadTimeout = DefaultTimeout
	}
	if s.WriteTimeout <= 0 {
		s.WriteTimeout = DefaultTimeout
	}
	s.log = s.Logger
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	s.done = make(chan struct{})
	s.notify = make(chan struct{})
	s.live = map[*recConn]struct{}{}
	s.index = map[string][]uint64{}
	s.msgs.max = s.MaxMessages
	s.rejected.max = s.MaxMessages
	s.conns.max = s.MaxMessages
	s.violations.max = s.MaxMessages
}

// closing returns a channel closed when Close or Shutdown begins.
func (s *Server) closing() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.done
}

func (s *Server) acceptLoop(ln net.Listener) {
	defer s.wg.Done()
	var backoff time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			select {
			case <-s.done:
				return
			default:
			}
			if !isTemporary(err) {
				s.log.Error("accept failed", "err", err)
				return
			}
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			t := time.NewTimer(backoff)
			select {
			case <-s.done:
				t.Stop()
				return
			case <-t.C:
			}
			continue
		}
		backoff = 0
		rc := s.track(c)
		if rc == nil {
			c.Close()
			continue
		}
		go s.handle(rc)
	}
}

// isTemporary reports whether an Accept error is worth retrying (EMFILE,
// ECONNABORTED and the like).
func isTemporary(err error) bool {
	var t interface{ Temporary() bool }
	return errors.As(err, &t) && t.Temporary()
}

// track registers a new connection, or returns nil when the server is closing.
func (s *Server) track(c net.Conn) *recConn {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.nextConnID++
	rc := &recConn{Conn: c, s: s, id: s.nextConnID, closed: make(chan struct{}), first: make([]byte, 0, maxFirstBytes)}
	info := ConnInfo{
		ID:         rc.id,
		RemoteAddr: c.RemoteAddr().String(),
		LocalAddr:  c.LocalAddr().String(),
		At:         time.Now(),
		Forbidden:  s.ForbidConnections,
	}
	s.conns.push(rc.id, info)
	if s.ForbidConnections {
		s.nextViolation++
		rc.violation = s.nextViolation
		s.violations.push(rc.violation, info)
	}
	s.live[rc] = struct{}{}
	s.wg.Add(1)
	return rc
}

func (s *Server) handle(rc *recConn) {
	defer s.wg.Done()
	defer func() {
		s.mu.Lock()
		delete(s.live, rc)
		s.mu.Unlock()
	}()
	defer rc.Close()
	if s.AcceptProxy && !s.ForbidConnections {
		if err := s.readProxyHeader(rc); err != nil {
			s.log.Info("connection closed: no valid PROXY header", "conn_id", rc.id, "remote", rc.RemoteAddr().String(), "err", err)
			return
		}
	}
	log := connLogger{base: s.log, rc: rc}
	if s.ForbidConnections {
		log.Warn("connection to a forbidden sink")
		if s.OnViolation != nil {
			s.mu.Lock()
			info := ConnInfo{ID: rc.id, RemoteAddr: rc.RemoteAddr().String(), LocalAddr: rc.LocalAddr().String(), Forbidden: true}
			if ci := s.violations.at(rc.violation); ci != nil {
				info = *ci
			}
			s.mu.Unlock()
			s.OnViolation(info)
		}
		s.refuse(rc)
		return
	}
	log.Debug("connection accepted")
	if !rc.pause("CONNECT") {
		return
	}
	srv := smtp.NewServer(smtp.BackendFunc(func(c *smtp.Conn) (smtp.Session, error) {
		return &session{s: s, c: rc, sc: c}, nil
	}))
	srv.Domain = s.Hostname
	srv.MaxMessageBytes = max(s.MaxMessageBytes, 0)
	srv.MaxRecipients = max(s.MaxRecipients, 0)
	srv.ReadTimeout = s.ReadTimeout
	srv.WriteTimeout = s.WriteTimeout
	srv.TLSConfig = s.TLSConfig
	srv.AllowInsecureAuth = true
	srv.EnableSMTPUTF8 = true
	srv.EnableDSN = true
	if s.Configure != nil {
		s.Configure(srv)
	}
	srv.Debug = debugWriter{rc}
	srv.ErrorLog = logAdapter{log}
	// go-smtp serves a connection only through Serve; a listener that yields
	// this one connection gives each connection its own go-smtp server, and so
	// its own Debug transcript.
	_ = srv.Serve(&oneConnListener{c: rc, done: make(chan struct{})})
	// Serve returns once rc is closed; Shutdown waits for go-smtp's
	// connection goroutine to finish.
	_ = srv.Shutdown(context.Background())
	log.Debug("connection closed")
}

// maxProxyHeaderBuf is the read buffer for a PROXY header; go-proxyproto
// reads past it as needed (a v2 header with TLVs can be longer).
const maxProxyHeaderBuf = 512

// readProxyHeader reads the PROXY header at the start of rc (bounded by
// ReadTimeout), keeps any bytes read past it for go-smtp, and makes the
// announced source address rc's RemoteAddr.
func (s *Server) readProxyHeader(rc *recConn) error {
	if err := rc.SetReadDeadline(time.Now().Add(s.ReadTimeout)); err != nil {
		return fmt.Errorf("read PROXY header: %w", err)
	}
	br := bufio.NewReaderSize(rc, maxProxyHeaderBuf)
	h, err := proxyproto.Read(br)
	if err != nil {
		return fmt.Errorf("read PROXY header: %w", err)
	}
	if err := rc.SetReadDeadline(time.Time{}); err != nil {
		return fmt.Errorf("read PROXY header: %w", err)
	}
	if n := br.Buffered(); n > 0 {
		rest, _ := br.Peek(n)
		rc.pre = append([]byte(nil), rest...)
	}
	if src, ok := h.SourceAddr.(*net.TCPAddr); ok && h.Command.IsProxy() {
		rc.remote = src
		s.mu.Lock()
		if ci := s.conns.at(rc.id); ci != nil {
			ci.RemoteAddr = src.String()
		}
		s.mu.Unlock()
	}
	return nil
}

// refuse answers a connection in ForbidConnections mode: 554, then 503 to
// anything but QUIT, reading only so the first bytes are recorded.
func (s *Server) refuse(rc *recConn) {
	deadline := time.Now().Add(s.ReadTimeout)
	_ = rc.SetDeadline(deadline)
	fmt.Fprintf(rc, "554 5.7.1 %s fakesource: connections to this sink are forbidden\r\n", s.Hostname)
	buf := make([]byte, 512)
	var line []byte
	for range 16 {
		n, err := rc.Read(buf)
		line = append(line, buf[:n]...)
		for {
			i := bytes.IndexByte(line, '\n')
			if i < 0 {
				break
			}
			cmd := string(line[:i])
			line = line[i+1:]
			if v, _ := commandVerb(cmd); v == "QUIT" {
				fmt.Fprintf(rc, "221 2.0.0 Bye\r\n")
				return
			}
			fmt.Fprintf(rc, "503 5.5.1 No SMTP service here\r\n")
		}
		if err != nil || len(line) > 4096 {
			return
		}
	}
}

// Close stops the server at once: it closes the listener and every
// connection and waits for all their goroutines. It is safe to call twice.
func (s *Server) Close() error {
	err := s.stop()
	s.mu.Lock()
	for rc := range s.live {
		rc.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
	return err
}

// Shutdown stops accepting connections and waits for the open ones to end
// (clients quit or time out). If ctx ends first it closes them, waits for
// their goroutines, and returns ctx's error.
func (s *Server) Shutdown(ctx context.Context) error {
	err := s.stop()
	idle := make(chan struct{})
	go func() {
		s.wg.Wait()
		close(idle)
	}()
	select {
	case <-idle:
		return err
	case <-ctx.Done():
		cerr := s.Close()
		<-idle
		return errors.Join(fmt.Errorf("shutdown: %w", ctx.Err()), cerr)
	}
}

// stop marks the server closed and closes its listener.
func (s *Server) stop() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || !s.started {
		s.closed = true
		return nil
	}
	s.closed = true
	close(s.done)
	if err := s.ln.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
		return fmt.Errorf("close listener: %w", err)
	}
	return nil
}

// Dial connects an SMTP client to the server; the client has not greeted
// yet. Use ClientTLSConfig with its StartTLS. The caller closes the client.
func (s *Server) Dial(ctx context.Context) (*smtp.Client, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", s.Addr)
	if err != nil {
		return nil, fmt.Errorf("dial fakesource: %w", err)
	}
	return smtp.NewClient(c), nil
}

// recConn is an accepted connection that records what goes over it.
type recConn struct {
	net.Conn
	s         *Server
	id        uint64
	violation uint64

	writes    atomic.Uint64 // raw writes so far
	firstDone atomic.Bool

	// pre holds bytes read past a PROXY header, served before the socket's;
	// remote is the address the header announced. Both are set before
	// go-smtp starts and only read (pre consumed) by its goroutine after.
	pre    []byte
	remote net.Addr

	mu         sync.Mutex
	first      []byte
	proxy      bool
	lastWrites uint64 // writes at the previous debug write
	tr         transcript

	closeOnce sync.Once
	closed    chan struct{}
}

func (c *recConn) Read(p []byte) (int, error) {
	if len(c.pre) > 0 {
		n := copy(p, c.pre)
		c.pre = c.pre[n:]
		return n, nil
	}
	n, err := c.Conn.Read(p)
	if n > 0 && !c.firstDone.Load() {
		c.mu.Lock()
		take := min(n, maxFirstBytes-len(c.first))
		c.first = append(c.first, p[:take]...)
		if i := authLine(c.first); i >= 0 {
			// Never record credentials: stop before an AUTH command.
			c.first = c.first[:i]
			c.firstDone.Store(true)
		}
		c.proxy = isProxyHeader(c.first)
		// The bytes of c.first never change once read (later reads only
		// append past this view's end), so the view is shared, not copied.
		first := c.first[:len(c.first):len(c.first)]
		proxy := c.proxy
		if len(c.first) >= maxFirstBytes {
			c.firstDone.Store(true)
		}
		c.mu.Unlock()
		c.s.noteFirstBytes(c, first, proxy)
	}
	return n, err
}

// authLine returns the offset of the first line of b that starts with AUTH
// (ignoring case), or -1.
func authLine(b []byte) int {
	for i := 0; i < len(b); {
		if len(b)-i >= 4 && strings.EqualFold(string(b[i:i+4]), "AUTH") {
			return i
		}
		j := bytes.IndexByte(b[i:], '\n')
		if j < 0 {
			break
		}
		i += j + 1
	}
	return -1
}

// RemoteAddr is the address a PROXY header announced, else the peer's.
func (c *recConn) RemoteAddr() net.Addr {
	if c.remote != nil {
		return c.remote
	}
	return c.Conn.RemoteAddr()
}

func (c *recConn) Write(p []byte) (int, error) {
	c.writes.Add(1)
	return c.Conn.Write(p)
}

// Close closes the connection once; later calls return nil.
func (c *recConn) Close() error {
	err := net.ErrClosed
	c.closeOnce.Do(func() {
		close(c.closed)
		err = c.Conn.Close()
	})
	if errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}

// firstBytes returns the first bytes so far, read-only: once complete
// they never change and are shared, not copied.
func (c *recConn) firstBytes() ([]byte, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.firstDone.Load() {
		return c.first[:len(c.first):len(c.first)], c.proxy
	}
	return append([]byte(nil), c.first...), c.proxy
}

// replies returns the replies so far (read-only) and the verb the next one
// answers.
func (c *recConn) replies() ([]Reply, string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.tr.window(), c.tr.pending()
}

// predict records r as the reply about to be written (see
// transcript.predict) and returns the replies ending with it, read-only.
func (c *recConn) predict(r Reply) []Reply {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.tr.predict(r)
}

// pause waits Delay(command); it returns false if the server or the
// connection closed meanwhile.
func (c *recConn) pause(command string) bool {
	if c.s.Delay == nil {
		return true
	}
	d := c.s.Delay(command)
	if d <= 0 {
		return true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-c.s.done:
		return false
	case <-c.closed:
		return false
	}
}

// debug receives go-smtp's Debug stream: what it read from the client and
// what it wrote, mixed. A chunk is a reply when the connection was written
// to since the previous chunk (go-smtp writes the connection first, then
// Debug) and it looks like a reply line; TLS handshake writes are told apart
// by the second test.
func (c *recConn) debug(p []byte) {
	c.mu.Lock()
	w := c.writes.Load()
	if w != c.lastWrites && looksLikeReply(p) {
		c.tr.output(p)
	} else {
		c.tr.input(p)
	}
	c.lastWrites = w
	delays := c.tr.takeDelays()
	c.mu.Unlock()
	for _, v := range delays {
		if !c.pause(v) {
			return
		}
	}
}

func looksLikeReply(p []byte) bool {
	return len(p) >= 4 && isDigit(p[0]) && isDigit(p[1]) && isDigit(p[2]) &&
		(p[3] == ' ' || p[3] == '-' || p[3] == '\r' || p[3] == '\n')
}

func isDigit(b byte) bool { return '0' <= b && b <= '9' }

// noteFirstBytes updates the recorded ConnInfo of c.
func (s *Server) noteFirstBytes(c *recConn, first []byte, proxy bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if ci := s.conns.at(c.id); ci != nil {
		ci.FirstBytes, ci.ProxyHeader = first, proxy
	}
	if c.violation != 0 {
		if ci := s.violations.at(c.violation); ci != nil {
			ci.FirstBytes, ci.ProxyHeader = first, proxy
		}
	}
}

// debugWriter is the io.Writer given to go-smtp as Debug.
type debugWriter struct{ c *recConn }

func (d debugWriter) Write(p []byte) (int, error) {
	d.c.debug(p)
	return len(p), nil
}

// oneConnListener yields one connection, then blocks until it is closed.
type oneConnListener struct {
	c     *recConn
	given bool
	once  sync.Once
	done  chan struct{}
}

func (l *oneConnListener) Accept() (net.Conn, error) {
	if !l.given {
		l.given = true
		return l.c, nil
	}
	select {
	case <-l.c.closed:
	case <-l.done:
	}
	return nil, net.ErrClosed
}

func (l *oneConnListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *oneConnListener) Addr() net.Addr { return l.c.LocalAddr() }

// connLogger logs with a connection's id and remote address, adding them
// only to records that are logged: With would build them for every
// connection, logged or not.
type connLogger struct {
	base *slog.Logger
	rc   *recConn
}

func (l connLogger) log(level slog.Level, msg string) {
	ctx := context.Background()
	if !l.base.Enabled(ctx, level) {
		return
	}
	l.base.Log(ctx, level, msg, "conn_id", l.rc.id, "remote", l.rc.RemoteAddr().String())
}

func (l connLogger) Debug(msg string) { l.log(slog.LevelDebug, msg) }
func (l connLogger) Warn(msg string)  { l.log(slog.LevelWarn, msg) }

// logAdapter turns go-smtp's ErrorLog lines into slog records.
type logAdapter struct{ l connLogger }

func (a logAdapter) Printf(format string, v ...any) {
	a.l.Warn("smtp: " + fmt.Sprintf(format, v...))
}

func (a logAdapter) Println(v ...any) {
	a.l.Warn("smtp: " + fmt.Sprint(v...))
}
