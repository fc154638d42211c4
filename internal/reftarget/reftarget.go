// Package reftarget runs the reference target: a real split-delivery MTA built
// from Debian's Postfix and Dovecot packages, listening on host loopback.
//
// A Target is fully self-contained in its own scratch directory: Postfix is
// started with "postfix -c DIR/pf/etc start" and Dovecot with
// "dovecot -c DIR/dc/dovecot.conf"; nothing is written to /etc/postfix or
// /etc/dovecot. All of Options.Domain is a Postfix relay domain pointed at
// Options.SourceRelay, and each Options.Accounts address is overridden in
// transport_maps to Dovecot LMTP. Mail to other domains goes out by MX lookup
// through Postfix's smtp client, the only chrooted service, whose private
// resolv.conf names Options.Nameserver.
//
// The package does not run the fakes around the target (fake source, fake MX,
// fake DNS): the caller does. A Mutation breaks the configuration on purpose so
// that a harness can prove it notices.
//
// Start needs root (see Available). Only one Target with a given set of listen
// addresses can run at a time: Start fails with ErrAddressInUse naming the
// taken address. Tests that start targets on the same addresses must run them
// one after another; packages whose tests run in parallel (go test ./...) should
// each use their own loopback block (this package's tests use 127.0.2.x, the
// reftarget command's 127.0.3.x).
//
// Postfix's master runs as "master -w" with the configuration directory only
// in its environment (MAIL_CONFIG), so "pgrep -f DIR" does not find it; use
// InstanceProcesses to list an instance's processes.
package reftarget

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/splitcheck/splitcheck/internal/freeport"
)

// Mutation names a deliberate misconfiguration of the target.
type Mutation string

// The mutations. MutationNone is the correct configuration.
const (
	// MutationNone configures the target correctly.
	MutationNone Mutation = ""
	// MutationUnmigratedLocal delivers unmigrated addresses of the domain into a
	// local mailbox: a virtual alias catch-all maps @domain to the first account
	// (exact entries keep the real accounts).
	MutationUnmigratedLocal Mutation = "unmigrated-local"
	// MutationUnmigratedRejected rejects unmigrated addresses at RCPT:
	// relay_recipient_maps lists only the local accounts.
	MutationUnmigratedRejected Mutation = "unmigrated-rejected"
	// MutationLocalRelayed relays the first local account to the source instead
	// of delivering it to Dovecot.
	MutationLocalRelayed Mutation = "local-relayed"
	// MutationOpenRelay accepts unauthenticated port-25 mail to external domains
	// and delivers it by MX.
	MutationOpenRelay Mutation = "open-relay"
	// MutationProxyIgnored does not honour the PROXY header: a forwarder on
	// ProxyListen discards the announced address and announces its TCP peer.
	MutationProxyIgnored Mutation = "proxy-ignored"
	// MutationExternalUndelivered does not deliver authenticated mail to
	// external domains (default_transport = error).
	MutationExternalUndelivered Mutation = "external-undelivered"
)

// Mutations lists every mutation other than MutationNone.
func Mutations() []Mutation {
	return []Mutation{
		MutationUnmigratedLocal, MutationUnmigratedRejected, MutationLocalRelayed,
		MutationOpenRelay, MutationProxyIgnored, MutationExternalUndelivered,
	}
}

// Account is a Dovecot mailbox, also usable as a SASL submission user.
type Account struct {
	Address  string
	Password string
}

// Options configures a Target. The zero value of every field has a default.
type Options struct {
	// Dir is the scratch directory. Default: a new temporary directory, removed
	// by Close. A Dir given here is kept; Close removes only what Start made in it.
	Dir string
	// Domain is the migrated domain. Default "example.org".
	Domain string
	// Hostname is Postfix's myhostname and Dovecot's hostname. Default "mx.example.org".
	Hostname string
	// Accounts are the local mailboxes; each address must be in Domain.
	Accounts []Account
	// ProxyListen is the smtpd that requires a PROXY header. Default "127.0.0.1:25".
	ProxyListen string
	// PlainListen is the smtpd without PROXY. Default "127.0.0.2:25".
	PlainListen string
	// SubmissionListen requires SASL and offers STARTTLS. Default "127.0.0.1:587".
	SubmissionListen string
	// IMAPListen is Dovecot's IMAP (plain login, STARTTLS offered). Default "127.0.0.1:143".
	IMAPListen string
	// SourceRelay is where unmigrated addresses of Domain are relayed. Default "127.0.0.4:2525".
	SourceRelay string
	// Nameserver is written to the smtp client's chroot resolv.conf (port 53). Default "127.0.0.53".
	Nameserver string
	// Mutation breaks the configuration on purpose. Default MutationNone.
	Mutation Mutation
	// Logger receives progress records; nil is silent.
	Logger *slog.Logger
}

// Defaults of Options.
const (
	DefaultDomain           = "example.org"
	DefaultHostname         = "mx.example.org"
	DefaultProxyListen      = "127.0.0.1:25"
	DefaultPlainListen      = "127.0.0.2:25"
	DefaultSubmissionListen = "127.0.0.1:587"
	DefaultIMAPListen       = "127.0.0.1:143"
	DefaultSourceRelay      = "127.0.0.4:2525"
	DefaultNameserver       = "127.0.0.53"
)

// AptPackages are the Debian packages the target relies on (dovecot-core
// comes with dovecot-imapd). ssl-cert is optional: without its snakeoil
// certificate Start generates a self-signed one into Dir.
const AptPackages = "postfix dovecot-imapd dovecot-lmtpd ssl-cert"

// Sentinel errors.
var (
	// ErrUnavailable means the machine cannot run the target (not root, or a
	// binary or system user is missing); the message names what to install.
	ErrUnavailable = errors.New("reftarget: unavailable")
	// ErrAddressInUse means something already listens on a listen address.
	ErrAddressInUse = errors.New("reftarget: address in use")
	// ErrInvalidOptions means Options failed validation.
	ErrInvalidOptions = errors.New("reftarget: invalid options")
	// ErrNotReady means a listener did not answer its banner before the deadline.
	ErrNotReady = errors.New("reftarget: not ready")
)

// StartError is returned by Start. Maillog holds the tail of the Postfix and
// Dovecot logs taken before Start cleaned up.
type StartError struct {
	Err     error
	Maillog string
}

func (e *StartError) Error() string { return "start reftarget: " + e.Err.Error() }

// Unwrap returns the underlying error.
func (e *StartError) Unwrap() error { return e.Err }

// Fixed identities used by the configuration.
const (
	mailUID       = 5000
	snakeoilCert  = "/etc/ssl/certs/ssl-cert-snakeoil.pem"
	snakeoilKey   = "/etc/ssl/private/ssl-cert-snakeoil.key"
	dovecotDH     = "/usr/share/dovecot/dh.pem"
	postfixBin    = "/usr/sbin/postfix"
	dovecotBin    = "/usr/sbin/dovecot"
	doveadmBin    = "/usr/bin/doveadm"
	postfixMeta   = "/etc/postfix"
	bannerTimeout = 2 * time.Second
)

// requirement is one file or system identity the target needs.
type requirement struct {
	kind, name, pkg string // kind: "file", "user" or "group"
}

var requirements = []requirement{
	{"file", postfixBin, "postfix"},
	{"file", "/usr/sbin/postconf", "postfix"},
	{"file", "/usr/lib/postfix/sbin/master", "postfix"},
	{"file", "/usr/lib/postfix/sbin/smtpd", "postfix"},
	{"file", "/usr/lib/postfix/sbin/smtp", "postfix"},
	{"file", "/usr/lib/postfix/sbin/lmtp", "postfix"},
	{"file", "/usr/lib/postfix/sbin/postlogd", "postfix"},
	{"file", "/etc/postfix/postfix-files", "postfix"},
	{"user", "postfix", "postfix"},
	{"group", "postdrop", "postfix"},
	{"file", dovecotBin, "dovecot-core"},
	{"file", doveadmBin, "dovecot-core"},
	{"user", "dovecot", "dovecot-core"},
	{"user", "dovenull", "dovecot-core"},
	{"file", "/usr/lib/dovecot/imap", "dovecot-imapd"},
	{"file", "/usr/lib/dovecot/imap-login", "dovecot-imapd"},
	{"file", "/usr/lib/dovecot/lmtp", "dovecot-lmtpd"},
}

// Available reports whether this machine can run the target: nil if the
// process is root and every binary and system user exists, otherwise an error
// wrapping ErrUnavailable that names exactly what is missing and the apt
// package that provides it.
func Available() error {
	return available(os.Geteuid(), requirements, present)
}

// present checks one requirement on this machine.
func present(r requirement) error {
	switch r.kind {
	case "user":
		_, err := user.Lookup(r.name)
		return err
	case "group":
		_, err := user.LookupGroup(r.name)
		return err
	default:
		_, err := os.Stat(r.name)
		return err
	}
}

func available(uid int, reqs []requirement, check func(requirement) error) error {
	var missing []string
	if uid != 0 {
		missing = append(missing, fmt.Sprintf("root privileges (running as uid %d)", uid))
	}
	pkgs := false
	for _, r := range reqs {
		if err := check(r); err != nil {
			missing = append(missing, fmt.Sprintf("%s %s (apt package %s)", r.kind, r.name, r.pkg))
			pkgs = true
		}
	}
	if len(missing) == 0 {
		return nil
	}
	msg := strings.Join(missing, "; ")
	if pkgs {
		msg += "; install with: apt-get install -y --no-install-recommends " + AptPackages
	}
	return fmt.Errorf("%w: missing %s", ErrUnavailable, msg)
}

// Target is a running reference target. Close it when done.
type Target struct {
	opts   Options
	log    *slog.Logger
	ownDir bool
	made   []string // paths Start created inside Dir, removed by Close

	// proxyInternal is where Postfix's PROXY listener really listens when the
	// proxy-ignored forwarder owns ProxyListen.
	proxyInternal string
	fwd           *forwarder

	postfixStarted bool
	dovecotStarted bool
	ready          bool

	mu       sync.Mutex
	closed   bool
	closeErr error
	finalLog string
}

// Options returns the options with defaults filled in.
func (t *Target) Options() Options { return t.opts }

// withDefaults fills empty fields.
func (o Options) withDefaults() Options {
	def := func(s *string, v string) {
		if *s == "" {
			*s = v
		}
	}
	def(&o.Domain, DefaultDomain)
	def(&o.Hostname, DefaultHostname)
	def(&o.ProxyListen, DefaultProxyListen)
	def(&o.PlainListen, DefaultPlainListen)
	def(&o.SubmissionListen, DefaultSubmissionListen)
	def(&o.IMAPListen, DefaultIMAPListen)
	def(&o.SourceRelay, DefaultSourceRelay)
	def(&o.Nameserver, DefaultNameserver)
	o.Domain = strings.ToLower(o.Domain)
	o.Hostname = strings.ToLower(o.Hostname)
	accts := make([]Account, len(o.Accounts))
	for i, a := range o.Accounts {
		accts[i] = Account{Address: strings.ToLower(a.Address), Password: a.Password}
	}
	o.Accounts = accts
	return o
}

var (
	dnsName   = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)+$`)
	localPart = regexp.MustCompile(`^[a-z0-9][a-z0-9._+-]*$`)
	safePath  = regexp.MustCompile(`^/[A-Za-z0-9._/+-]*$`)
)

// validate checks filled options.
func (o Options) validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrInvalidOptions, fmt.Sprintf(format, args...))
	}
	if !dnsName.MatchString(o.Domain) {
		return bad("domain %q is not a DNS name", o.Domain)
	}
	if !dnsName.MatchString(o.Hostname) {
		return bad("hostname %q is not a DNS name", o.Hostname)
	}
	seen := map[string]bool{}
	for _, a := range o.Accounts {
		lp, dom, ok := strings.Cut(a.Address, "@")
		if !ok || dom != o.Domain || !localPart.MatchString(lp) {
			return bad("account %q is not a plain address in domain %s", a.Address, o.Domain)
		}
		if seen[a.Address] {
			return bad("account %q listed twice", a.Address)
		}
		seen[a.Address] = true
		if a.Password == "" || strings.ContainsAny(a.Password, ":\r\n\x00") {
			return bad("password of %s is empty or contains ':' or a line break", a.Address)
		}
	}
	switch o.Mutation {
	case MutationNone, MutationUnmigratedRejected, MutationOpenRelay, MutationProxyIgnored, MutationExternalUndelivered:
	case MutationUnmigratedLocal, MutationLocalRelayed:
		if len(o.Accounts) == 0 {
			return bad("mutation %s needs at least one account", o.Mutation)
		}
	default:
		return bad("unknown mutation %q", o.Mutation)
	}
	listeners := []struct{ name, addr string }{
		{"ProxyListen", o.ProxyListen}, {"PlainListen", o.PlainListen},
		{"SubmissionListen", o.SubmissionListen}, {"IMAPListen", o.IMAPListen},
		{"SourceRelay", o.SourceRelay},
	}
	used := map[netip.AddrPort]string{}
	for _, l := range listeners {
		ap, err := netip.ParseAddrPort(l.addr)
		if err != nil || !ap.Addr().Is4() || !ap.Addr().IsLoopback() || ap.Port() == 0 {
			return bad("%s %q is not an IPv4 loopback address with a port", l.name, l.addr)
		}
		if prev, dup := used[ap]; dup {
			return bad("%s and %s are both %s", prev, l.name, l.addr)
		}
		used[ap] = l.name
	}
	if ns, err := netip.ParseAddr(o.Nameserver); err != nil || !ns.IsLoopback() {
		return bad("nameserver %q is not a loopback IP address", o.Nameserver)
	}
	if o.Dir != "" && !safePath.MatchString(o.Dir) {
		return bad("dir %q must be an absolute path of letters, digits and ._/+-", o.Dir)
	}
	return nil
}

// DefaultStartTimeout bounds Start when ctx has no deadline.
const DefaultStartTimeout = 60 * time.Second

// Start sets up and starts Dovecot, then Postfix, and returns once every
// listener answers its banner. ctx bounds the whole start (DefaultStartTimeout
// if it has no deadline). On failure Start
// stops whatever it started, removes what it wrote, and returns a *StartError
// carrying the log tail.
func Start(ctx context.Context, o Options) (*Target, error) {
	begin := time.Now()
	o = o.withDefaults()
	if o.Dir != "" {
		abs, err := filepath.Abs(o.Dir)
		if err != nil {
			return nil, &StartError{Err: fmt.Errorf("resolve dir: %w", err)}
		}
		o.Dir = abs
	}
	if err := o.validate(); err != nil {
		return nil, &StartError{Err: err}
	}
	if err := Available(); err != nil {
		return nil, &StartError{Err: err}
	}
	if err := checkFree(o); err != nil {
		return nil, &StartError{Err: err}
	}
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	t := &Target{opts: o, log: log}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, DefaultStartTimeout)
		defer cancel()
	}
	if err := t.start(ctx); err != nil {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 20*time.Second)
		defer cancel()
		tail := t.readMaillog()
		if cerr := t.Close(cctx); cerr != nil {
			err = errors.Join(err, fmt.Errorf("clean up: %w", cerr))
		}
		return nil, &StartError{Err: err, Maillog: tail}
	}
	t.ready = true
	log.Info("reference target ready", "dir", t.opts.Dir, "mutation", string(t.opts.Mutation),
		"elapsed", time.Since(begin).Round(time.Millisecond))
	return t, nil
}

// checkFree fails with ErrAddressInUse if any listen address is taken.
func checkFree(o Options) error {
	for _, l := range []struct{ name, addr string }{
		{"ProxyListen", o.ProxyListen}, {"PlainListen", o.PlainListen},
		{"SubmissionListen", o.SubmissionListen}, {"IMAPListen", o.IMAPListen},
	} {
		ln, err := net.Listen("tcp4", l.addr)
		if err != nil {
			return fmt.Errorf("%w: %s (%s) is taken, is another target or MTA running? %v", ErrAddressInUse, l.addr, l.name, err)
		}
		if err := ln.Close(); err != nil {
			return fmt.Errorf("release %s: %w", l.addr, err)
		}
	}
	return nil
}

// start does the work of Start; the caller cleans up on error.
func (t *Target) start(ctx context.Context) error {
	if t.opts.Dir == "" {
		dir, err := os.MkdirTemp("", "reftarget-")
		if err != nil {
			return fmt.Errorf("create dir: %w", err)
		}
		t.opts.Dir, t.ownDir = dir, true
		if !safePath.MatchString(dir) {
			return fmt.Errorf("%w: temporary dir %q has unusable characters; set Options.Dir", ErrInvalidOptions, dir)
		}
	} else if err := os.MkdirAll(t.opts.Dir, 0o755); err != nil {
		return fmt.Errorf("create dir: %w", err)
	}
	if err := os.Chmod(t.opts.Dir, 0o755); err != nil {
		return fmt.Errorf("chmod dir: %w", err)
	}
	if err := checkTraversable(t.opts.Dir); err != nil {
		return err
	}
	if t.opts.Mutation == MutationProxyIgnored {
		addr, err := freePort(t.opts.ProxyListen)
		if err != nil {
			return err
		}
		t.proxyInternal = addr
	}
	if err := t.writeFiles(); err != nil {
		return err
	}
	if err := t.startDovecot(ctx); err != nil {
		return err
	}
	if t.opts.Mutation == MutationProxyIgnored {
		fwd, err := startForwarder(t.opts.ProxyListen, t.proxyInternal, t.log)
		if err != nil {
			return err
		}
		t.fwd = fwd
	}
	return t.startPostfix(ctx)
}

// checkTraversable makes sure the postfix and dovecot users can reach dir.
func checkTraversable(dir string) error {
	for d := filepath.Dir(dir); ; d = filepath.Dir(d) {
		fi, err := os.Stat(d)
		if err != nil {
			return fmt.Errorf("stat %s: %w", d, err)
		}
		if fi.Mode().Perm()&0o001 == 0 {
			return fmt.Errorf("%w: %s is not searchable by other users (postfix, dovecot); choose another Dir", ErrInvalidOptions, d)
		}
		if d == "/" {
			return nil
		}
	}
}

// freePort picks an unused port on the host of addr, below the ephemeral range
// so no outgoing connection takes it before Postfix binds it.
func freePort(addr string) (string, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return "", fmt.Errorf("pick internal proxy port: %w", err)
	}
	got, err := freeport.TCP(host)
	if err != nil {
		return "", fmt.Errorf("pick internal proxy port: %w", err)
	}
	return got, nil
}

// path joins elements under Dir.
func (t *Target) path(elem ...string) string {
	return filepath.Join(append([]string{t.opts.Dir}, elem...)...)
}

// run runs a command, bounded by ctx, with its output captured in a file (a
// daemon that keeps inherited descriptors cannot block the wait).
func (t *Target) run(ctx context.Context, name string, args ...string) (string, error) {
	out, err := os.CreateTemp(t.opts.Dir, "cmd-*.out")
	if err != nil {
		return "", fmt.Errorf("run %s: %w", name, err)
	}
	defer func() {
		_ = out.Close()
		_ = os.Remove(out.Name())
	}()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stdin = nil
	cmd.Stdout, cmd.Stderr = out, out
	cmd.Env = cleanEnv()
	cmd.WaitDelay = time.Second
	start := time.Now()
	runErr := cmd.Run()
	text, _ := os.ReadFile(out.Name())
	msg := strings.TrimSpace(string(text))
	t.log.Debug("ran", "cmd", name, "elapsed", time.Since(start).Round(time.Millisecond), "args", strings.Join(args, " "), "err", runErr, "output", msg)
	if runErr != nil {
		if msg != "" {
			return msg, fmt.Errorf("run %s %s: %w: %s", filepath.Base(name), strings.Join(args, " "), runErr, msg)
		}
		return msg, fmt.Errorf("run %s %s: %w", filepath.Base(name), strings.Join(args, " "), runErr)
	}
	return msg, nil
}

// cleanEnv is the environment for postfix and dovecot commands.
func cleanEnv() []string {
	env := []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C"}
	if tz, ok := os.LookupEnv("TZ"); ok {
		env = append(env, "TZ="+tz)
	}
	return env
}

func (t *Target) startDovecot(ctx context.Context) error {
	t.dovecotStarted = true
	if _, err := t.run(ctx, dovecotBin, "-c", t.path("dc", "dovecot.conf")); err != nil {
		return fmt.Errorf("start dovecot: %w", err)
	}
	for _, sock := range []string{t.path("pf", "spool", "private", "auth"), t.path("pf", "spool", "private", "dovecot-lmtp")} {
		if err := waitFor(ctx, "dovecot socket "+sock, func() error {
			_, err := os.Stat(sock)
			return err
		}); err != nil {
			return err
		}
	}
	return waitFor(ctx, "IMAP banner on "+t.opts.IMAPListen, func() error {
		return banner(ctx, t.opts.IMAPListen, nil, "* OK")
	})
}

func (t *Target) startPostfix(ctx context.Context) error {
	t.postfixStarted = true
	if _, err := t.run(ctx, postfixBin, "-c", t.path("pf", "etc"), "start"); err != nil {
		return fmt.Errorf("start postfix: %w", err)
	}
	hdr := []byte("PROXY TCP4 127.0.0.1 127.0.0.1 1 25\r\n")
	checks := []struct {
		addr   string
		header []byte
	}{
		{t.opts.ProxyListen, hdr},
		{t.opts.PlainListen, nil},
		{t.opts.SubmissionListen, nil},
	}
	for _, c := range checks {
		if err := waitFor(ctx, "SMTP banner on "+c.addr, func() error {
			if line := t.fatalLine(); line != "" {
				return fmt.Errorf("%w: postfix logged: %s", errGiveUp, line)
			}
			return banner(ctx, c.addr, c.header, "220 ")
		}); err != nil {
			return err
		}
	}
	return nil
}

// errGiveUp stops waitFor early: waiting longer cannot help.
var errGiveUp = errors.New("giving up")

// fatalLine returns the first fatal or panic line of the Postfix maillog.
func (t *Target) fatalLine() string {
	tail, err := tailFile(t.path("pf", "maillog"), 200)
	if err != nil {
		return ""
	}
	for _, line := range strings.Split(tail, "\n") {
		if strings.Contains(line, "]: fatal: ") || strings.Contains(line, "]: panic: ") {
			return line
		}
	}
	return ""
}

// waitFor polls check until it succeeds or ctx ends.
func waitFor(ctx context.Context, what string, check func() error) error {
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		err := check()
		if err == nil {
			return nil
		}
		if errors.Is(err, errGiveUp) {
			return fmt.Errorf("%w: %s: %v", ErrNotReady, what, err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w: %s: %v (last: %v)", ErrNotReady, what, ctx.Err(), err)
		case <-tick.C:
		}
	}
}

// banner dials addr, optionally writes header in one write, and expects a first
// line starting with want.
func banner(ctx context.Context, addr string, header []byte, want string) error {
	d := net.Dialer{Timeout: bannerTimeout}
	conn, err := d.DialContext(ctx, "tcp4", addr)
	if err != nil {
		return err
	}
	defer func() { _ = conn.Close() }()
	if err := conn.SetDeadline(time.Now().Add(bannerTimeout)); err != nil {
		return err
	}
	if header != nil {
		if _, err := conn.Write(header); err != nil {
			return err
		}
	}
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		return fmt.Errorf("read banner: %w", err)
	}
	if !strings.HasPrefix(line, want) {
		return fmt.Errorf("banner %q does not start with %q", strings.TrimSpace(line), want)
	}
	quit := "QUIT\r\n"
	if want == "* OK" {
		quit = "a LOGOUT\r\n"
	}
	_, _ = conn.Write([]byte(quit))
	return nil
}

// Maillog returns the tail of the Postfix maillog and the Dovecot log, for
// failure messages. After Close it returns the tail captured during Close.
func (t *Target) Maillog() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return t.finalLog
	}
	return t.readMaillog()
}

func (t *Target) readMaillog() string {
	if t.opts.Dir == "" {
		return ""
	}
	var b strings.Builder
	for _, f := range []struct{ name, path string }{
		{"postfix maillog", t.path("pf", "maillog")},
		{"dovecot log", t.path("dc", "dovecot.log")},
	} {
		fmt.Fprintf(&b, "==> %s (%s) <==\n", f.name, f.path)
		tail, err := tailFile(f.path, 80)
		if err != nil {
			fmt.Fprintf(&b, "(%v)\n", err)
			continue
		}
		b.WriteString(tail)
	}
	return b.String()
}

// tailFile returns the last n lines of a file, reading at most 64 KiB.
func tailFile(path string, n int) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer func() { _ = f.Close() }()
	const limit = 64 << 10
	fi, err := f.Stat()
	if err != nil {
		return "", err
	}
	off := max(fi.Size()-limit, 0)
	data, err := io.ReadAll(io.NewSectionReader(f, off, fi.Size()-off))
	if err != nil {
		return "", err
	}
	lines := bytes.SplitAfter(data, []byte("\n"))
	if off > 0 && len(lines) > 0 {
		lines = lines[1:] // first line is partial
	}
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	s := string(bytes.Join(lines, nil))
	if s != "" && !strings.HasSuffix(s, "\n") {
		s += "\n"
	}
	return s, nil
}

// Close stops Postfix, Dovecot and the forwarder, makes sure no process of
// the instance is left, and removes what Start wrote. It is idempotent: later
// calls return the first call's result.
func (t *Target) Close(ctx context.Context) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return t.closeErr
	}
	t.closed = true
	begin := time.Now()
	defer func() {
		t.log.Info("reference target closed", "dir", t.opts.Dir, "elapsed", time.Since(begin).Round(time.Millisecond), "err", t.closeErr)
	}()
	var errs []error
	if t.fwd != nil {
		if err := t.fwd.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	var stopErrs []error
	if t.postfixStarted {
		if _, err := t.run(ctx, postfixBin, "-c", t.path("pf", "etc"), "stop"); err != nil {
			stopErrs = append(stopErrs, fmt.Errorf("stop postfix: %w", err))
		}
	}
	if t.dovecotStarted {
		if _, err := t.run(ctx, doveadmBin, "-c", t.path("dc", "dovecot.conf"), "stop"); err != nil {
			stopErrs = append(stopErrs, fmt.Errorf("stop dovecot: %w", err))
		}
	}
	for _, err := range stopErrs {
		t.log.Warn("stop", "err", err)
	}
	if t.ready {
		errs = append(errs, stopErrs...)
	}
	if t.opts.Dir != "" {
		if err := reap(ctx, t.opts.Dir, t.log); err != nil {
			errs = append(errs, err)
		}
		t.finalLog = t.readMaillog()
		if err := t.removeFiles(); err != nil {
			errs = append(errs, err)
		}
	}
	t.closeErr = errors.Join(errs...)
	if t.closeErr != nil {
		t.closeErr = fmt.Errorf("close reftarget: %w", t.closeErr)
	}
	return t.closeErr
}

func (t *Target) removeFiles() error {
	if t.ownDir {
		if err := os.RemoveAll(t.opts.Dir); err != nil {
			return fmt.Errorf("remove dir: %w", err)
		}
		return nil
	}
	var errs []error
	for _, p := range t.made {
		if err := os.RemoveAll(p); err != nil {
			errs = append(errs, fmt.Errorf("remove %s: %w", p, err))
		}
	}
	return errors.Join(errs...)
}
