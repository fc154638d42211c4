package bulk

import (
	"container/list"
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"

	"github.com/splitcheck/splitcheck/harness/imapobs"
)

// mailbox says how to read one local account's mail over IMAP.
type mailbox struct {
	Account  string // the address, for evidence
	Addr     string // host:port
	TLS      string // none, starttls, implicit
	Insecure bool
	Username string
	Password string
}

func (m mailbox) key() string { return m.Addr + "\x00" + m.Username }

// hit is one copy of a probe found in a mailbox.
type hit struct {
	Folder string
	UID    imap.UID
}

// imapPool keeps a few logged-in IMAP sessions so that searching the same
// account again costs one SELECT and one SEARCH, not a login. At most max idle
// sessions are kept (least recently used closed first).
type imapPool struct {
	timeout time.Duration
	max     int

	mu    sync.Mutex
	idle  map[string]*list.Element // key -> element holding *imapSession
	order *list.List               // front: most recently used
}

type imapSession struct {
	key     string
	c       *imapclient.Client
	folders []string // INBOX, then the junk folder if the account has one
}

func newIMAPPool(timeout time.Duration, max int) *imapPool {
	return &imapPool{timeout: timeout, max: max, idle: map[string]*list.Element{}, order: list.New()}
}

// search returns every copy of the message whose header ProbeHeader is id in the
// account's INBOX and junk folder.
func (p *imapPool) search(ctx context.Context, m mailbox, id string) ([]hit, error) {
	ctx, cancel := context.WithTimeout(ctx, p.timeout)
	defer cancel()
	s := p.take(m.key())
	if s == nil {
		var err error
		if s, err = p.login(ctx, m); err != nil {
			return nil, err
		}
	}
	// Closing the client is the only way to interrupt a command.
	stop := context.AfterFunc(ctx, func() { _ = s.c.Close() })
	hits, err := s.search(id)
	if !stop() {
		err = fmt.Errorf("search %s: %w", m.Account, context.Cause(ctx))
	}
	if err != nil {
		_ = s.c.Close()
		return nil, err
	}
	p.put(s)
	return hits, nil
}

func (s *imapSession) search(id string) ([]hit, error) {
	var hits []hit
	crit := &imap.SearchCriteria{Header: []imap.SearchCriteriaHeaderField{{Key: ProbeHeader, Value: id}}}
	for _, f := range s.folders {
		if _, err := s.c.Select(f, &imap.SelectOptions{ReadOnly: true}).Wait(); err != nil {
			return nil, fmt.Errorf("select %s: %w", f, err)
		}
		data, err := s.c.UIDSearch(crit, nil).Wait()
		if err != nil {
			return nil, fmt.Errorf("search %s: %w", f, err)
		}
		for _, uid := range data.AllUIDs() {
			hits = append(hits, hit{Folder: f, UID: uid})
		}
	}
	return hits, nil
}

func (p *imapPool) login(ctx context.Context, m mailbox) (*imapSession, error) {
	d := net.Dialer{Timeout: p.timeout}
	raw, err := d.DialContext(ctx, "tcp", m.Addr)
	if err != nil {
		return nil, fmt.Errorf("imap %s: %w", m.Account, err)
	}
	host, _, _ := net.SplitHostPort(m.Addr)
	tc := &tls.Config{ServerName: host, InsecureSkipVerify: m.Insecure}
	var c *imapclient.Client
	stop := context.AfterFunc(ctx, func() { _ = raw.Close() })
	defer stop()
	switch m.TLS {
	case "implicit":
		tconn := tls.Client(raw, tc)
		if err := tconn.HandshakeContext(ctx); err != nil {
			raw.Close()
			return nil, fmt.Errorf("imap %s: tls: %w", m.Account, err)
		}
		c = imapclient.New(tconn, nil)
	case "starttls":
		if c, err = imapclient.NewStartTLS(raw, &imapclient.Options{TLSConfig: tc}); err != nil {
			return nil, fmt.Errorf("imap %s: starttls: %w", m.Account, err)
		}
	default:
		c = imapclient.New(raw, nil)
	}
	if err := c.WaitGreeting(); err != nil {
		c.Close()
		return nil, fmt.Errorf("imap %s: greeting: %w", m.Account, err)
	}
	if err := c.Login(m.Username, m.Password).Wait(); err != nil {
		c.Close()
		return nil, fmt.Errorf("imap %s: login as %s: %w", m.Account, m.Username, err)
	}
	folders, err := imapobs.Folders(c)
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("imap %s: %w", m.Account, err)
	}
	return &imapSession{key: m.key(), c: c, folders: folders}, nil
}

func (p *imapPool) take(key string) *imapSession {
	p.mu.Lock()
	defer p.mu.Unlock()
	e, ok := p.idle[key]
	if !ok {
		return nil
	}
	delete(p.idle, key)
	return p.order.Remove(e).(*imapSession)
}

func (p *imapPool) put(s *imapSession) {
	p.mu.Lock()
	var evict []*imapSession
	if _, dup := p.idle[s.key]; dup || p.max <= 0 {
		evict = append(evict, s)
	} else {
		p.idle[s.key] = p.order.PushFront(s)
		for p.order.Len() > p.max {
			old := p.order.Remove(p.order.Back()).(*imapSession)
			delete(p.idle, old.key)
			evict = append(evict, old)
		}
	}
	p.mu.Unlock()
	for _, s := range evict {
		s.logout()
	}
}

func (s *imapSession) logout() {
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = s.c.Logout().Wait()
	}()
	select {
	case <-done:
	case <-time.After(time.Second):
	}
	_ = s.c.Close()
	<-done
}

// close logs out of every idle session.
func (p *imapPool) close() {
	p.mu.Lock()
	var all []*imapSession
	for e := p.order.Front(); e != nil; e = e.Next() {
		all = append(all, e.Value.(*imapSession))
	}
	p.idle = map[string]*list.Element{}
	p.order.Init()
	p.mu.Unlock()
	for _, s := range all {
		s.logout()
	}
}
