package bulk

import (
	"bytes"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapserver"
	"github.com/emersion/go-imap/v2/imapserver/imapmemserver"
	"github.com/emersion/go-smtp"
	"github.com/pires/go-proxyproto"
	"go.uber.org/goleak"

	"github.com/splitcheck/splitcheck/fakesource"
	"github.com/splitcheck/splitcheck/harness/config"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// memSink is a Sink the test target fills directly, indexed by probe id.
type memSink struct {
	mu  sync.Mutex
	seq uint64
	idx map[string][]fakesource.Message
}

func newMemSink() *memSink { return &memSink{idx: map[string][]fakesource.Message{}} }

func (s *memSink) add(id string, m fakesource.Message) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.seq++
	m.Seq = s.seq
	s.idx[id] = append(s.idx[id], m)
}

func (s *memSink) ByIndex(v string) []fakesource.Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]fakesource.Message(nil), s.idx[v]...)
}

// target is a split-delivery MTA made for the tests: a PROXY-protocol front
// (go-proxyproto) piping to a fakesource that plays the MTA; what it accepts
// is routed at once by the MTA's OnMessage hook: recipients with an IMAP
// account into their INBOX, the rest into the source sink. A second
// fakesource, with AUTH required, is the submission listener; what it
// accepts goes to the MX sink.
type target struct {
	t       *testing.T
	front   net.Listener
	mta     *fakesource.Server
	sub     *fakesource.Server
	source  *memSink
	mx      *memSink
	imapAdr string
	users   map[string]*imapmemserver.User
	first   *imapmemserver.User // the first account, where "local" misroutes go
	junk    string              // the junk folder's name

	// hidePipelining rewrites PIPELINING out of the MTA's EHLO reply.
	hidePipelining atomic.Bool // set by a test after the target started: atomic
	// misroute, when set, picks the place for a recipient: "local", "junk"
	// (the account's junk folder), "source" or "drop"; "" keeps the normal routing.
	misroute func(rcpt string) string

	maxRcptPerRead atomic.Int64 // most RCPT commands seen in one read from a client
	mu             sync.Mutex
	rcptPerConn    []int    // RCPT commands of each finished connection
	announced      sync.Map // client addresses the PROXY headers claimed
	wg             sync.WaitGroup
}

// targetOpts tweak the MTA before it starts.
type targetOpts struct {
	rcptErr func(rcpt string) error
	mailErr func(from string) error
	junk    string // the accounts' junk folder; default "Junk"
}

func startTarget(t *testing.T, accounts []string, o targetOpts) *target {
	t.Helper()
	tg := &target{t: t, source: newMemSink(), mx: newMemSink(), users: map[string]*imapmemserver.User{}, junk: o.junk}
	if tg.junk == "" {
		tg.junk = "Junk"
	}
	tg.startIMAP(accounts)

	tg.mta = fakesource.NewUnstartedServer()
	tg.mta.IndexHeader = ProbeHeader
	tg.mta.RcptErr = func(rcpt string) error {
		if strings.HasSuffix(strings.ToLower(rcpt), "@external.test") {
			return &smtp.SMTPError{Code: 554, EnhancedCode: smtp.EnhancedCode{5, 7, 1}, Message: "<" + rcpt + ">: Relay access denied"}
		}
		if o.rcptErr != nil {
			return o.rcptErr(rcpt)
		}
		return nil
	}
	tg.mta.MailErr = o.mailErr
	tg.mta.OnMessage = tg.route
	if err := tg.mta.Listen("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tg.mta.Close() })

	tg.sub = fakesource.NewUnstartedServer()
	tg.sub.AuthUsers = map[string]string{"sub@example.org": "sub-secret"}
	tg.sub.AuthRequired = true
	tg.sub.OnMessage = func(m fakesource.Message) {
		if ids := m.HeaderValues(ProbeHeader); len(ids) > 0 {
			tg.mx.add(ids[0], m)
		}
	}
	if err := tg.sub.Listen("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tg.sub.Close() })

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	tg.front = &proxyproto.Listener{Listener: ln, ReadHeaderTimeout: 5 * time.Second}
	tg.wg.Add(1)
	go tg.serve()
	t.Cleanup(func() {
		tg.front.Close()
		tg.wg.Wait()
	})
	return tg
}

// route delivers one accepted message the way a split-delivery MTA would.
func (tg *target) route(m fakesource.Message) {
	ids := m.HeaderValues(ProbeHeader)
	if len(ids) == 0 {
		return
	}
	var rest []fakesource.Rcpt
	for _, r := range m.Rcpts {
		place := ""
		if tg.misroute != nil {
			place = tg.misroute(r.Addr)
		}
		u, isLocal := tg.users[strings.ToLower(r.Addr)]
		switch {
		case place == "drop":
		case place == "junk" && isLocal:
			if _, err := u.Append(tg.junk, bytes.NewReader(m.Body), &imap.AppendOptions{}); err != nil {
				tg.t.Errorf("append to %s's %s: %v", r.Addr, tg.junk, err)
			}
		case place == "local" || (place == "" && isLocal):
			if u == nil {
				u = tg.first
			}
			if _, err := u.Append("INBOX", bytes.NewReader(m.Body), &imap.AppendOptions{}); err != nil {
				tg.t.Errorf("append to %s: %v", r.Addr, err)
			}
		default:
			rest = append(rest, r)
		}
	}
	if len(rest) > 0 {
		m.Rcpts = rest
		tg.source.add(ids[0], m)
	}
}

func (tg *target) serve() {
	defer tg.wg.Done()
	for {
		c, err := tg.front.Accept()
		if err != nil {
			return
		}
		tg.wg.Add(1)
		go func() {
			defer tg.wg.Done()
			tg.pipe(c)
		}()
	}
}

// pipe joins a client to the MTA, counting RCPT commands per client read.
func (tg *target) pipe(c net.Conn) {
	defer c.Close()
	up, err := net.Dial("tcp", tg.mta.Addr)
	if err != nil {
		return
	}
	defer up.Close()
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 32<<10)
		for {
			_ = up.SetReadDeadline(time.Now().Add(10 * time.Second))
			n, err := up.Read(buf)
			if n > 0 {
				out := buf[:n]
				if tg.hidePipelining.Load() {
					out = bytes.ReplaceAll(out, []byte("PIPELINING"), []byte("XIPELINING"))
				}
				if _, werr := c.Write(out); werr != nil {
					return
				}
			}
			if err != nil {
				c.Close()
				return
			}
		}
	}()
	buf := make([]byte, 32<<10)
	total := 0
	defer func() {
		tg.mu.Lock()
		tg.rcptPerConn = append(tg.rcptPerConn, total)
		tg.mu.Unlock()
	}()
	for {
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		n, err := c.Read(buf)
		if n > 0 {
			tg.announced.Store(c.RemoteAddr().String(), true)
			k := int64(bytes.Count(buf[:n], []byte("RCPT TO:")))
			total += int(k)
			for {
				cur := tg.maxRcptPerRead.Load()
				if k <= cur || tg.maxRcptPerRead.CompareAndSwap(cur, k) {
					break
				}
			}
			if _, werr := up.Write(buf[:n]); werr != nil {
				break
			}
		}
		if err != nil {
			break
		}
	}
	up.Close()
	<-done
}

type discardLogger struct{}

func (discardLogger) Printf(string, ...any) {}

func (tg *target) startIMAP(accounts []string) {
	mem := imapmemserver.New()
	for _, a := range accounts {
		u := imapmemserver.NewUser(a, "pw-"+a)
		for _, mbox := range []string{"INBOX", tg.junk} {
			if err := u.Create(mbox, nil); err != nil {
				tg.t.Fatalf("create %s: %v", mbox, err)
			}
		}
		mem.AddUser(u)
		tg.users[strings.ToLower(a)] = u
		if tg.first == nil {
			tg.first = u
		}
	}
	srv := imapserver.New(&imapserver.Options{
		NewSession: func(*imapserver.Conn) (imapserver.Session, *imapserver.GreetingData, error) {
			return mem.NewSession(), nil, nil
		},
		Caps:         imap.CapSet{imap.CapIMAP4rev1: {}},
		InsecureAuth: true,
		Logger:       discardLogger{},
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tg.t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.Serve(ln); err != nil && !errors.Is(err, net.ErrClosed) {
			_ = err
		}
	}()
	tg.t.Cleanup(func() {
		srv.Close()
		ln.Close() // in case Serve had not registered it yet
		<-done
	})
	tg.imapAdr = ln.Addr().String()
}

// config describes the target to a Runner.
func (tg *target) config(accounts []string) *config.Config {
	cfg := &config.Config{
		Target: config.Target{SMTP: tg.front.Addr().String(), Submission: tg.sub.Addr, SubmissionTLS: "none"},
		Plan:   config.Plan{Domains: []string{"example.org"}},
		Submitter: config.Submitter{Username: "sub@example.org", Password: config.NewSecret("sub-secret"),
			Mechanism: "plain"},
		Proxy:    config.Proxy{Version: 2, Announce: "198.51.100.7"},
		Probe:    config.Probe{Helo: "probe.splitcheck.test", Sender: "probe@splitcheck.test"},
		Timeouts: config.Timeouts{Connect: 5 * time.Second, Delivery: 3 * time.Second, Absence: 30 * time.Millisecond, Run: time.Minute},
		Bulk:     config.BulkDefaults(),
	}
	cfg.Bulk.Backoff = 5 * time.Millisecond
	cfg.Bulk.MaxBackoff = 20 * time.Millisecond
	for _, a := range accounts {
		cfg.Plan.Local = append(cfg.Plan.Local, config.LocalAccount{Address: a, Mailbox: config.Mailbox{
			Protocol: "imap", Address: tg.imapAdr, TLS: "none", Username: a, Password: config.NewSecret("pw-" + a)}})
	}
	return cfg
}

// runner returns a Runner wired to the target's sinks.
func (tg *target) runner(cfg *config.Config) *Runner {
	return &Runner{Config: cfg, Source: tg.source, MX: tg.mx}
}

// listOf renders rows as CSV.
func listOf(rows ...string) io.Reader {
	return strings.NewReader("address,route\n" + strings.Join(rows, "\n") + "\n")
}
