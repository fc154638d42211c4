// Package imapobs observes local delivery: it finds probe messages in the mailboxes of
// a mail server's local accounts over IMAP (github.com/emersion/go-imap/v2), by the
// probe's Message-ID, in INBOX and in the Junk folder when there is one.
//
// An Observer keeps one logged-in IMAP connection per account and reuses it; every
// command is bounded by Timeout, and Close logs out and closes them all. It starts no
// goroutine of its own (the IMAP client runs one reader per connection, which Close
// stops).
package imapobs

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/mail"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"

	"github.com/splitcheck/splitcheck/scenarios"
)

// DefaultTimeout bounds each connect and IMAP command when Observer.Timeout is zero.
const DefaultTimeout = 10 * time.Second

// ErrClosed is returned once the Observer has been closed.
var ErrClosed = errors.New("imapobs: observer closed")

// TLS modes of an Account.
const (
	TLSNone     = "none"
	TLSStartTLS = "starttls"
	TLSImplicit = "implicit"
)

// Account is one local account and how to read its mailbox.
type Account struct {
	// Address is the account's e-mail address; recipients are matched to it
	// case-insensitively and ignoring a "+tag".
	Address string
	// Server is the IMAP server's host:port.
	Server string
	// TLS is TLSNone (default), TLSStartTLS or TLSImplicit.
	TLS string
	// InsecureSkipVerify accepts any certificate (a self-signed one, say).
	InsecureSkipVerify bool
	// ServerName is the name checked in the certificate; default Server's host.
	ServerName string
	// Username defaults to Address.
	Username string
	Password string
}

// Observer finds probes in local mailboxes. Set the fields before the first call;
// the methods are safe for concurrent use.
type Observer struct {
	Accounts []Account
	// Timeout bounds each connect and each IMAP command; default 10s.
	Timeout time.Duration
	// PollInterval is the longest pause between two looks in Wait; Wait starts
	// at a twentieth of it and backs off. Default 250ms.
	PollInterval time.Duration
	// Logger gets a debug line per search; nil is silent.
	Logger *slog.Logger

	mu       sync.Mutex
	closed   bool
	sessions map[string]*session  // by canonical account address
	seen     map[string]time.Time // when each copy was first found, by account, folder, UID validity and UID
}

// session is one account's connection; sem serializes its commands.
type session struct {
	acct Account
	sem  chan struct{}
	conn net.Conn
	c    *imapclient.Client
	// folders to search, INBOX first; junk is the Junk folder's name or "".
	folders []string
}

// Hit is one copy of a probe message found in a mailbox.
type Hit struct {
	Account  string // the account's address
	Mailbox  string // "INBOX", "Junk", ...
	UID      uint32
	Server   string
	To       []string  // addresses in the To and Cc header fields
	Received []string  // Received header values, top first
	Seen     time.Time // when this Observer first found this copy
}

func (o *Observer) timeout() time.Duration {
	if o.Timeout > 0 {
		return o.Timeout
	}
	return DefaultTimeout
}

func (o *Observer) log() *slog.Logger {
	if o.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return o.Logger
}

// account returns the account whose mailbox receives rcpt, if any.
func (o *Observer) account(rcpt string) (Account, bool) {
	c := scenarios.Canonical(rcpt)
	for _, a := range o.Accounts {
		if scenarios.Canonical(a.Address) == c {
			return a, true
		}
	}
	return Account{}, false
}

// Check logs in to every account once, so that a wrong password or an unreachable
// IMAP server is found before any probe is sent.
func (o *Observer) Check(ctx context.Context) error {
	for _, a := range o.Accounts {
		s, err := o.session(a)
		if err != nil {
			return err
		}
		if err := s.lock(ctx); err != nil {
			return err
		}
		err = o.connect(ctx, s)
		s.unlock()
		if err != nil {
			return err
		}
	}
	return nil
}

// Observe returns the copies of the probe that the local mailboxes hold for rcpt.
// Copies are searched in the mailbox of the account rcpt names ("+tag" and case
// ignored) or, when rcpt is no local account, in the mailboxes of the accounts of its
// domain (mail misrouted there, say by a catch-all). Copies in one mailbox are
// shared out among the probe's recipients (from its To and Cc fields) as Assign
// describes. Place is local; Where names the account and folder; Evidence the IMAP
// server, folder and UID; Received holds the copy's Received headers.
func (o *Observer) Observe(ctx context.Context, probeID, rcpt string) ([]scenarios.Observation, error) {
	hits, err := o.Find(ctx, probeID, rcpt)
	if err != nil {
		return nil, err
	}
	out := make([]scenarios.Observation, 0, len(hits))
	for _, h := range hits {
		out = append(out, h.Observation(scenarios.RouteLocal, "IMAP"))
	}
	return out, nil
}

// Observation is h as a sighting at place: Where names the account and folder,
// Evidence says "<label> <server>: <account> <folder> uid <n>".
func (h Hit) Observation(place scenarios.Route, label string) scenarios.Observation {
	return scenarios.Observation{
		Place:    place,
		Where:    h.Account + " " + h.Mailbox,
		Evidence: fmt.Sprintf("%s %s: %s %s uid %d", label, h.Server, h.Account, h.Mailbox, h.UID),
		Received: h.Received,
		At:       h.Seen,
	}
}

// Find is Observe returning the raw hits.
func (o *Observer) Find(ctx context.Context, probeID, rcpt string) ([]Hit, error) {
	var accts []Account
	if own, ok := o.account(rcpt); ok {
		accts = []Account{own}
	} else {
		domain := domainOf(rcpt)
		for _, a := range o.Accounts {
			if domainOf(a.Address) == domain {
				accts = append(accts, a)
			}
		}
	}
	var out []Hit
	for _, a := range accts {
		hits, err := o.search(ctx, a, probeID)
		if err != nil {
			return nil, err
		}
		out = append(out, Assign(hits, a.Address, rcpt, o.isAccount)...)
	}
	return out, nil
}

// Copies describes every copy of the probe in the mailboxes of rcpt's domain, whoever
// it would be counted for ("IMAP 127.0.0.1:143: alice@example.org INBOX uid 7"):
// evidence for a recipient seen nowhere that may have been folded into another
// mailbox.
func (o *Observer) Copies(ctx context.Context, probeID, rcpt string) ([]string, error) {
	var out []string
	for _, a := range o.Accounts {
		if domainOf(a.Address) != domainOf(rcpt) {
			continue
		}
		hits, err := o.search(ctx, a, probeID)
		if err != nil {
			return out, err
		}
		for _, h := range hits {
			out = append(out, fmt.Sprintf("IMAP %s: %s %s uid %d", h.Server, h.Account, h.Mailbox, h.UID))
		}
	}
	return out, nil
}

func (o *Observer) isAccount(addr string) bool {
	_, ok := o.account(addr)
	return ok
}

func domainOf(addr string) string {
	_, d, _ := strings.Cut(strings.ToLower(addr), "@")
	return d
}

// Assign picks, from the copies of one probe found in account's mailbox (in folder
// and UID order), those that belong to rcpt. The probe's recipients are the To and Cc
// addresses of the copies plus rcpt. Owners are recipients that are account
// itself; strays are recipients of account's domain that are no local account at all
// (isAccount false), mail a catch-all or alias could have put there.
//
//   - Without strays, every copy is the owner's (two copies: seen twice).
//   - With strays, the owner gets the first copy and the strays share the rest,
//     one each in turn; without an owner, the strays share them all.
//
// A catch-all that folds bob@ into alice's mailbox thus shows as a second copy there,
// which is bob's, not a duplicate of alice's.
func Assign(hits []Hit, account, rcpt string, isAccount func(string) bool) []Hit {
	if len(hits) == 0 {
		return nil
	}
	acct := scenarios.Canonical(account)
	recipients := append(slices.Clone(hits[0].To), rcpt)
	var owner string
	var strays []string
	seen := map[string]bool{}
	for _, r := range recipients {
		c := scenarios.Canonical(r)
		if seen[c] {
			continue
		}
		seen[c] = true
		switch {
		case c == acct:
			owner = c
		case domainOf(c) == domainOf(acct) && !isAccount(c):
			strays = append(strays, c)
		}
	}
	want := scenarios.Canonical(rcpt)
	if len(strays) == 0 {
		if want == owner {
			return hits
		}
		return nil
	}
	rest := hits
	if owner != "" {
		if want == owner {
			return hits[:1]
		}
		rest = hits[1:]
	}
	i := slices.Index(strays, want)
	if i < 0 {
		return nil
	}
	var out []Hit
	for j := i; j < len(rest); j += len(strays) {
		out = append(out, rest[j])
	}
	return out
}

// Covers reports whether Observe could ever find anything for rcpt: it is a local
// account or in the domain of one.
func (o *Observer) Covers(rcpt string) bool {
	domain := domainOf(rcpt)
	for _, a := range o.Accounts {
		if domainOf(a.Address) == domain {
			return true
		}
	}
	return false
}

// Wait blocks until Observe finds a copy of the probe for rcpt, looking again with a
// growing pause (up to PollInterval) between looks. It returns nil when found, the
// first IMAP error, or ctx's error. For a recipient Observe can never see, it just
// waits for ctx.
func (o *Observer) Wait(ctx context.Context, probeID, rcpt string) error {
	if !o.Covers(rcpt) {
		<-ctx.Done()
		return context.Cause(ctx)
	}
	maxPause := o.PollInterval
	if maxPause <= 0 {
		maxPause = 250 * time.Millisecond
	}
	pause := maxPause / 20
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return context.Cause(ctx)
		case <-timer.C:
		}
		obs, err := o.Observe(ctx, probeID, rcpt)
		if err != nil {
			return err
		}
		if len(obs) > 0 {
			return nil
		}
		timer.Reset(pause)
		pause = min(pause*3/2, maxPause)
	}
}

// Close logs out of every account and closes the connections.
func (o *Observer) Close() error {
	o.mu.Lock()
	o.closed = true
	sessions := o.sessions
	o.sessions = nil
	o.mu.Unlock()
	for _, s := range sessions {
		s.sem <- struct{}{}
		if s.c != nil {
			o.logout(s)
		}
		<-s.sem
	}
	return nil
}

func (o *Observer) session(a Account) (*session, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.closed {
		return nil, ErrClosed
	}
	if o.sessions == nil {
		o.sessions = map[string]*session{}
	}
	key := scenarios.Canonical(a.Address)
	s := o.sessions[key]
	if s == nil {
		s = &session{acct: a, sem: make(chan struct{}, 1)}
		o.sessions[key] = s
	}
	return s, nil
}

func (s *session) lock(ctx context.Context) error {
	select {
	case s.sem <- struct{}{}:
		return nil
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}

func (s *session) unlock() { <-s.sem }

// search finds the probe's copies in one account's folders.
func (o *Observer) search(ctx context.Context, a Account, probeID string) ([]Hit, error) {
	s, err := o.session(a)
	if err != nil {
		return nil, err
	}
	if err := s.lock(ctx); err != nil {
		return nil, err
	}
	defer s.unlock()
	if err := o.connect(ctx, s); err != nil {
		return nil, err
	}
	hits, err := o.searchFolders(s, probeID)
	if err != nil {
		// The connection may be broken: drop it, the next look reconnects.
		o.drop(s)
		return nil, fmt.Errorf("imap %s %s: %w", a.Server, a.Address, err)
	}
	return hits, nil
}

// guard closes the connection if the command running under it takes longer than
// the timeout, which makes the blocked call return.
func (o *Observer) guard(s *session) func() bool {
	conn := s.conn
	return time.AfterFunc(o.timeout(), func() { conn.Close() }).Stop
}

func (o *Observer) searchFolders(s *session, probeID string) ([]Hit, error) {
	msgID := scenarios.MessageID(probeID)
	var hits []Hit
	for _, folder := range s.folders {
		stop := o.guard(s)
		sel, err := s.c.Select(folder, &imap.SelectOptions{ReadOnly: true}).Wait()
		if err != nil {
			stop()
			return nil, fmt.Errorf("select %s: %w", folder, err)
		}
		data, err := s.c.UIDSearch(&imap.SearchCriteria{
			Header: []imap.SearchCriteriaHeaderField{{Key: "Message-ID", Value: msgID}},
		}, nil).Wait()
		stop()
		if err != nil {
			return nil, fmt.Errorf("search %s: %w", folder, err)
		}
		uids := data.AllUIDs()
		if len(uids) == 0 {
			continue
		}
		found, err := o.fetch(s, folder, sel.UIDValidity, uids, msgID)
		if err != nil {
			return nil, err
		}
		hits = append(hits, found...)
	}
	o.log().Debug("imap search", "account", s.acct.Address, "probe", probeID, "hits", len(hits))
	return hits, nil
}

// headerSection is what is fetched of each found message.
var headerSection = &imap.FetchItemBodySection{
	Specifier:    imap.PartSpecifierHeader,
	HeaderFields: []string{"Message-ID", "To", "Cc", "Received"},
	Peek:         true,
}

// firstSeen returns when the copy called key was first found (now, the first time).
func (o *Observer) firstSeen(key string, now time.Time) time.Time {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.seen == nil {
		o.seen = map[string]time.Time{}
	}
	if t, ok := o.seen[key]; ok {
		return t
	}
	if len(o.seen) >= maxSeen {
		clear(o.seen)
	}
	o.seen[key] = now
	return now
}

// maxSeen bounds the first-seen times kept.
const maxSeen = 100000

func (o *Observer) fetch(s *session, folder string, validity uint32, uids []imap.UID, msgID string) ([]Hit, error) {
	stop := o.guard(s)
	defer stop()
	msgs, err := s.c.Fetch(imap.UIDSetNum(uids...), &imap.FetchOptions{
		UID:         true,
		BodySection: []*imap.FetchItemBodySection{headerSection},
	}).Collect()
	if err != nil {
		return nil, fmt.Errorf("fetch %s: %w", folder, err)
	}
	var hits []Hit
	now := time.Now()
	for _, m := range msgs {
		hdr, err := mail.ReadMessage(bytes.NewReader(append(m.FindBodySection(headerSection), '\r', '\n')))
		if err != nil {
			continue
		}
		// SEARCH HEADER matches substrings; keep only the exact Message-ID.
		if strings.TrimSpace(hdr.Header.Get("Message-ID")) != msgID {
			continue
		}
		h := Hit{Account: s.acct.Address, Mailbox: folder, UID: uint32(m.UID), Server: s.acct.Server,
			Seen: o.firstSeen(fmt.Sprintf("%s\x00%s\x00%d\x00%d", scenarios.Canonical(s.acct.Address), folder, validity, m.UID), now)}
		for _, v := range hdr.Header["Received"] {
			h.Received = append(h.Received, unfold(v))
		}
		for _, key := range []string{"To", "Cc"} {
			if list, err := hdr.Header.AddressList(key); err == nil {
				for _, a := range list {
					h.To = append(h.To, a.Address)
				}
			}
		}
		hits = append(hits, h)
	}
	return hits, nil
}

// unfold joins a folded header value into one line.
func unfold(v string) string {
	return strings.Join(strings.Fields(v), " ")
}

// connect makes sure s has a logged-in connection with its folder list.
func (o *Observer) connect(ctx context.Context, s *session) error {
	if s.c != nil {
		return nil
	}
	a := s.acct
	ctx, cancel := context.WithTimeout(ctx, o.timeout())
	defer cancel()
	d := net.Dialer{}
	conn, err := d.DialContext(ctx, "tcp", a.Server)
	if err != nil {
		return fmt.Errorf("imap %s: %w", a.Address, err)
	}
	host, _, _ := net.SplitHostPort(a.Server)
	tlsConfig := &tls.Config{ServerName: host, InsecureSkipVerify: a.InsecureSkipVerify, MinVersion: tls.VersionTLS12} //nolint:gosec // opt-in for self-signed test servers
	if a.ServerName != "" {
		tlsConfig.ServerName = a.ServerName
	}
	// Bound the whole login: closing the connection unblocks the client.
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	var c *imapclient.Client
	switch a.TLS {
	case TLSImplicit:
		tc := tls.Client(conn, tlsConfig)
		if err := tc.HandshakeContext(ctx); err != nil {
			conn.Close()
			return fmt.Errorf("imap %s: tls handshake with %s: %w", a.Address, a.Server, err)
		}
		conn = tc
		c = imapclient.New(conn, nil)
	case TLSStartTLS:
		c, err = imapclient.NewStartTLS(conn, &imapclient.Options{TLSConfig: tlsConfig})
		if err != nil {
			conn.Close()
			return fmt.Errorf("imap %s: starttls with %s: %w", a.Address, a.Server, err)
		}
	case TLSNone, "":
		c = imapclient.New(conn, nil)
	default:
		conn.Close()
		return fmt.Errorf("imap %s: unknown tls mode %q", a.Address, a.TLS)
	}
	s.conn, s.c = conn, c
	fail := func(format string, err error) error {
		o.drop(s)
		if ctx.Err() != nil {
			err = fmt.Errorf("%w (%w)", err, context.Cause(ctx))
		}
		return fmt.Errorf("imap %s %s: "+format, a.Server, a.Address, err)
	}
	if err := c.WaitGreeting(); err != nil {
		return fail("greeting: %w", err)
	}
	user := a.Username
	if user == "" {
		user = a.Address
	}
	if err := c.Login(user, a.Password).Wait(); err != nil {
		return fail("login: %w", err)
	}
	if s.folders, err = Folders(c); err != nil {
		return fail("%w", err)
	}
	o.log().Debug("imap logged in", "account", a.Address, "server", a.Server, "folders", s.folders)
	return nil
}

// Folders returns where a probe may land in the mailbox c is logged in to:
// INBOX, then the junk folder (by its \Junk special use, else a usual name such
// as Stalwart's "Junk Mail") when there is one.
func Folders(c *imapclient.Client) ([]string, error) {
	listOpts := &imap.ListOptions{}
	if c.Caps().Has(imap.CapSpecialUse) {
		listOpts.ReturnSpecialUse = true
	}
	list, err := c.List("", "*", listOpts).Collect()
	if err != nil {
		return nil, fmt.Errorf("list: %w", err)
	}
	folders := []string{"INBOX"}
	for _, m := range list {
		if isJunk(m) && !strings.EqualFold(m.Mailbox, "INBOX") {
			return append(folders, m.Mailbox), nil
		}
	}
	return folders, nil
}

func isJunk(m *imap.ListData) bool {
	if slices.Contains(m.Attrs, imap.MailboxAttrJunk) {
		return true
	}
	for _, n := range []string{"Junk", "Spam", "Junk E-mail", "Junk Email", "Junk Mail"} {
		if strings.EqualFold(m.Mailbox, n) {
			return true
		}
	}
	return false
}

// drop closes s's connection without logging out.
func (o *Observer) drop(s *session) {
	if s.c != nil {
		s.c.Close()
	}
	s.c, s.conn, s.folders = nil, nil, nil
}

// logout ends s's connection politely, bounded by the timeout.
func (o *Observer) logout(s *session) {
	stop := o.guard(s)
	_ = s.c.Logout().Wait()
	stop()
	o.drop(s)
}
