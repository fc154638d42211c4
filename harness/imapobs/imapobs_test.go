package imapobs_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapserver"
	"github.com/emersion/go-imap/v2/imapserver/imapmemserver"
	"go.uber.org/goleak"

	"github.com/splitcheck/splitcheck/fakesource"
	"github.com/splitcheck/splitcheck/harness/imapobs"
	"github.com/splitcheck/splitcheck/scenarios"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// mailServer is an in-memory IMAP server on a loopback port.
type mailServer struct {
	addr  string
	users map[string]*imapmemserver.User
}

func startIMAP(t *testing.T, accounts ...string) *mailServer {
	t.Helper()
	return startIMAPTLS(t, "", accounts...)
}

// startIMAPTLS starts the server with TLS: "starttls", "implicit" or "" (none).
func startIMAPTLS(t *testing.T, mode string, accounts ...string) *mailServer {
	t.Helper()
	mem := imapmemserver.New()
	ms := &mailServer{users: map[string]*imapmemserver.User{}}
	for _, a := range accounts {
		u := imapmemserver.NewUser(a, "secret-"+a)
		for _, mbox := range []string{"INBOX", "Junk", "Archive"} {
			if strings.HasPrefix(a, "nojunk") && mbox == "Junk" {
				continue
			}
			if err := u.Create(mbox, nil); err != nil {
				t.Fatalf("create %s: %v", mbox, err)
			}
		}
		mem.AddUser(u)
		ms.users[a] = u
	}
	opts := &imapserver.Options{
		NewSession: func(*imapserver.Conn) (imapserver.Session, *imapserver.GreetingData, error) {
			return mem.NewSession(), nil, nil
		},
		Caps:         imap.CapSet{imap.CapIMAP4rev1: {}, imap.CapIMAP4rev2: {}},
		InsecureAuth: true,
		Logger:       discardLogger{},
	}
	var tlsConfig *tls.Config
	if mode != "" {
		cert, err := fakesource.GenerateCert("127.0.0.1", "imap.test")
		if err != nil {
			t.Fatal(err)
		}
		tlsConfig = &tls.Config{Certificates: []tls.Certificate{cert}}
	}
	if mode == imapobs.TLSStartTLS {
		opts.TLSConfig = tlsConfig
		opts.Caps[imap.CapStartTLS] = struct{}{}
	}
	srv := imapserver.New(opts)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if mode == imapobs.TLSImplicit {
		ln = tls.NewListener(ln, tlsConfig)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(ln)
	}()
	t.Cleanup(func() {
		srv.Close()
		ln.Close() // in case Serve had not registered it yet
		<-done
	})
	ms.addr = ln.Addr().String()
	return ms
}

type discardLogger struct{}

func (discardLogger) Printf(string, ...any) {}

func (ms *mailServer) deliver(t *testing.T, account, mailbox, probeID string, to ...string) {
	t.Helper()
	msg := fmt.Sprintf("Received: from mx.example.org by mx.example.org with LMTP\r\n"+
		"Received: from probe.splitcheck.test (unknown [198.51.100.7])\r\n\tby mx.example.org (Postfix)\r\n"+
		"Message-ID: %s\r\nTo: %s\r\nSubject: probe\r\n\r\nbody\r\n", scenarios.MessageID(probeID), strings.Join(to, ", "))
	if _, err := ms.users[account].Append(mailbox, bytes.NewReader([]byte(msg)), &imap.AppendOptions{}); err != nil {
		t.Fatalf("append to %s %s: %v", account, mailbox, err)
	}
}

func (ms *mailServer) observer(accounts ...string) *imapobs.Observer {
	o := &imapobs.Observer{Timeout: 5 * time.Second}
	for _, a := range accounts {
		o.Accounts = append(o.Accounts, imapobs.Account{Address: a, Server: ms.addr, Password: "secret-" + a})
	}
	return o
}

func TestObserve(t *testing.T) {
	ms := startIMAP(t, "alice@example.org", "nojunk@example.org")
	ms.deliver(t, "alice@example.org", "INBOX", "p1", "alice@example.org")
	ms.deliver(t, "alice@example.org", "Junk", "p1", "alice@example.org")
	ms.deliver(t, "alice@example.org", "INBOX", "p10", "alice@example.org") // a longer id must not match p1
	ms.deliver(t, "alice@example.org", "Archive", "p2", "alice@example.org")
	ms.deliver(t, "alice@example.org", "INBOX", "mixed", "alice@example.org", "bob@example.org", "carol@external.test")
	ms.deliver(t, "alice@example.org", "INBOX", "catchall", "bob@example.org")
	ms.deliver(t, "nojunk@example.org", "INBOX", "p3", "NOJUNK+x@EXAMPLE.ORG")

	o := ms.observer("alice@example.org", "nojunk@example.org")
	t.Cleanup(func() { o.Close() })
	ctx := context.Background()
	if err := o.Check(ctx); err != nil {
		t.Fatalf("Check: %v", err)
	}
	for _, tt := range []struct {
		probe, rcpt string
		want        []string // Where of each observation
	}{
		{"p1", "alice@example.org", []string{"alice@example.org INBOX", "alice@example.org Junk"}},
		{"p1", "ALICE+tag@Example.ORG", []string{"alice@example.org INBOX", "alice@example.org Junk"}},
		{"p2", "alice@example.org", nil}, // only INBOX and Junk are searched
		{"p9", "alice@example.org", nil},
		{"mixed", "alice@example.org", []string{"alice@example.org INBOX"}},
		{"mixed", "bob@example.org", nil}, // alice's copy is alice's
		{"mixed", "carol@external.test", nil},
		{"catchall", "bob@example.org", []string{"alice@example.org INBOX"}},
		{"p3", "nojunk+x@example.org", []string{"nojunk@example.org INBOX"}},
	} {
		t.Run(tt.probe+"/"+tt.rcpt, func(t *testing.T) {
			obs, err := o.Observe(ctx, tt.probe, tt.rcpt)
			if err != nil {
				t.Fatalf("Observe: %v", err)
			}
			var got []string
			for _, ob := range obs {
				got = append(got, ob.Where)
				if ob.Place != scenarios.RouteLocal {
					t.Errorf("Place = %s; want local", ob.Place)
				}
				if !strings.HasPrefix(ob.Evidence, "IMAP "+ms.addr+": ") || !strings.Contains(ob.Evidence, " uid ") {
					t.Errorf("Evidence = %q; want the server, folder and uid", ob.Evidence)
				}
				if want := []string{"from mx.example.org by mx.example.org with LMTP",
					"from probe.splitcheck.test (unknown [198.51.100.7]) by mx.example.org (Postfix)"}; !slices.Equal(ob.Received, want) {
					t.Errorf("Received = %q; want %q", ob.Received, want)
				}
				if ob.At.IsZero() {
					t.Errorf("At is zero")
				}
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("Observe(%s, %s) found %q; want %q", tt.probe, tt.rcpt, got, tt.want)
			}
		})
	}
	if !o.Covers("bob@EXAMPLE.org") || o.Covers("carol@external.test") {
		t.Errorf("Covers: bob=%v carol=%v; want true, false", o.Covers("bob@EXAMPLE.org"), o.Covers("carol@external.test"))
	}
}

func TestWait(t *testing.T) {
	ms := startIMAP(t, "alice@example.org")
	o := ms.observer("alice@example.org")
	o.PollInterval = 20 * time.Millisecond
	t.Cleanup(func() { o.Close() })

	errc := make(chan error, 1)
	go func() { errc <- o.Wait(context.Background(), "late", "alice@example.org") }()
	// Wait has not found anything yet: the message does not exist.
	ms.deliver(t, "alice@example.org", "INBOX", "late", "alice@example.org")
	if err := <-errc; err != nil {
		t.Fatalf("Wait = %v; want nil after delivery", err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	go func() { errc <- o.Wait(ctx, "never", "carol@external.test") }()
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Errorf("Wait for an unobservable recipient = %v; want context.Canceled", err)
	}
}

func TestErrors(t *testing.T) {
	ms := startIMAP(t, "alice@example.org")
	o := ms.observer("alice@example.org")
	o.Accounts[0].Password = "wrong"
	t.Cleanup(func() { o.Close() })
	ctx := context.Background()
	if err := o.Check(ctx); err == nil || !strings.Contains(err.Error(), "login") {
		t.Errorf("Check with a wrong password = %v; want a login error", err)
	}
	if _, err := o.Observe(ctx, "p", "alice@example.org"); err == nil {
		t.Errorf("Observe with a wrong password = nil; want an error")
	}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	ln.Close()
	o2 := &imapobs.Observer{Accounts: []imapobs.Account{{Address: "a@example.org", Server: dead, Password: "x"}}, Timeout: time.Second}
	if err := o2.Check(ctx); err == nil || !strings.Contains(err.Error(), "a@example.org") {
		t.Errorf("Check against a closed port = %v; want an error naming the account", err)
	}
	o2.Close()
	if _, err := o2.Observe(ctx, "p", "a@example.org"); !errors.Is(err, imapobs.ErrClosed) {
		t.Errorf("Observe after Close = %v; want ErrClosed", err)
	}

	bad := &imapobs.Observer{Accounts: []imapobs.Account{{Address: "a@example.org", Server: ms.addr, TLS: "tls1.0"}}}
	if err := bad.Check(ctx); err == nil || !strings.Contains(err.Error(), "unknown tls mode") {
		t.Errorf("Check with a bad TLS mode = %v; want unknown tls mode", err)
	}
	bad.Close()
}

func TestTLS(t *testing.T) {
	for _, mode := range []string{imapobs.TLSStartTLS, imapobs.TLSImplicit} {
		for _, insecure := range []bool{true, false} {
			t.Run(fmt.Sprintf("%s/insecure=%v", mode, insecure), func(t *testing.T) {
				ms := startIMAPTLS(t, mode, "alice@example.org")
				ms.deliver(t, "alice@example.org", "INBOX", "p1", "alice@example.org")
				o := ms.observer("alice@example.org")
				o.Accounts[0].TLS, o.Accounts[0].InsecureSkipVerify = mode, insecure
				t.Cleanup(func() { o.Close() })
				obs, err := o.Observe(context.Background(), "p1", "alice@example.org")
				switch {
				case insecure && (err != nil || len(obs) != 1):
					t.Errorf("Observe over %s accepting a self-signed certificate = %d, %v; want 1 sighting", mode, len(obs), err)
				case !insecure && (err == nil || !strings.Contains(err.Error(), "certificate")):
					t.Errorf("Observe over %s verifying a self-signed certificate = %v; want a certificate error", mode, err)
				}
			})
		}
	}
}

func TestStartTLSRefused(t *testing.T) {
	// The in-memory server offers no STARTTLS: asking for it must fail, not fall back.
	ms := startIMAP(t, "alice@example.org")
	o := ms.observer("alice@example.org")
	o.Accounts[0].TLS = imapobs.TLSStartTLS
	t.Cleanup(func() { o.Close() })
	if err := o.Check(context.Background()); err == nil || !strings.Contains(err.Error(), "starttls") {
		t.Errorf("Check = %v; want a starttls error", err)
	}
}

func TestAssign(t *testing.T) {
	accounts := map[string]bool{"alice@example.org": true, "dave@example.org": true}
	isAccount := func(a string) bool { return accounts[scenarios.Canonical(a)] }
	hits := func(n int, to ...string) []imapobs.Hit {
		var out []imapobs.Hit
		for i := range n {
			out = append(out, imapobs.Hit{UID: uint32(i + 1), To: to})
		}
		return out
	}
	for _, tt := range []struct {
		name string
		hits []imapobs.Hit
		rcpt string
		want []uint32
	}{
		{"own copy", hits(1, "alice@example.org"), "alice@example.org", []uint32{1}},
		{"own copy, case and tag", hits(1, "ALICE+x@example.org"), "alice@example.org", []uint32{1}},
		{"duplicate delivery is the owner's twice", hits(2, "alice@example.org"), "alice@example.org", []uint32{1, 2}},
		{"stray alone gets every copy", hits(1, "bob@example.org"), "bob@example.org", []uint32{1}},
		{"owner's only copy is not the stray's", hits(1, "alice@example.org", "bob@example.org"), "bob@example.org", nil},
		{"owner first, stray second (owner)", hits(2, "alice@example.org", "bob@example.org"), "alice@example.org", []uint32{1}},
		{"owner first, stray second (stray)", hits(2, "alice@example.org", "bob@example.org"), "bob@example.org", []uint32{2}},
		{"strays share in turn", hits(3, "bob@example.org", "carol@example.org"), "carol@example.org", []uint32{2}},
		{"another account is no stray", hits(1, "dave@example.org"), "dave@example.org", nil},
		{"other domain is no stray", hits(1, "erin@external.test"), "erin@external.test", nil},
		{"recipient missing from To is still counted", hits(1), "bob@example.org", []uint32{1}},
		{"no copies", nil, "alice@example.org", nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var got []uint32
			for _, h := range imapobs.Assign(tt.hits, "alice@example.org", tt.rcpt, isAccount) {
				got = append(got, h.UID)
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("Assign(..., %s) = uids %v; want %v", tt.rcpt, got, tt.want)
			}
		})
	}
}
