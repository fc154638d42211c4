package reftarget

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net"
	"os"
	"os/user"
	"strconv"
	"strings"
	"time"
)

// ids holds the numeric identities the files are owned by.
type ids struct {
	postfixUID, postfixGID, dovecotGID int
}

func lookupIDs() (ids, error) {
	var v ids
	u, err := user.Lookup("postfix")
	if err != nil {
		return v, fmt.Errorf("look up user postfix: %w", err)
	}
	if v.postfixUID, err = strconv.Atoi(u.Uid); err != nil {
		return v, fmt.Errorf("look up user postfix: %w", err)
	}
	if v.postfixGID, err = strconv.Atoi(u.Gid); err != nil {
		return v, fmt.Errorf("look up user postfix: %w", err)
	}
	g, err := user.LookupGroup("dovecot")
	if err != nil {
		return v, fmt.Errorf("look up group dovecot: %w", err)
	}
	if v.dovecotGID, err = strconv.Atoi(g.Gid); err != nil {
		return v, fmt.Errorf("look up group dovecot: %w", err)
	}
	return v, nil
}

// writeFiles lays out the scratch directory:
//
//	pf/etc        main.cf, master.cf, texthash maps
//	pf/spool      queue_directory, also the smtp client's chroot (etc/resolv.conf)
//	pf/data       data_directory
//	pf/maillog    postlogd output
//	dc/           dovecot.conf, users, run/, state/, dovecot.log
//	mail/         mailboxes, owned by uid 5000
//	tls/          generated certificate when the snakeoil one is absent
func (t *Target) writeFiles() error {
	id, err := lookupIDs()
	if err != nil {
		return err
	}
	for _, top := range []string{"pf", "dc", "mail", "tls"} {
		if _, err := os.Lstat(t.path(top)); err == nil {
			return fmt.Errorf("%w: %s already exists; use an empty Dir", ErrInvalidOptions, t.path(top))
		}
		t.made = append(t.made, t.path(top))
	}
	dirs := []struct {
		path     string
		mode     os.FileMode
		uid, gid int
	}{
		{t.path("pf"), 0o755, 0, 0},
		{t.path("pf", "etc"), 0o755, 0, 0},
		{t.path("pf", "spool"), 0o755, 0, 0},
		{t.path("pf", "spool", "etc"), 0o755, 0, 0},
		{t.path("pf", "spool", "private"), 0o700, id.postfixUID, 0},
		{t.path("pf", "data"), 0o700, id.postfixUID, id.postfixGID},
		{t.path("dc"), 0o755, 0, 0},
		{t.path("mail"), 0o700, mailUID, mailUID},
	}
	for _, d := range dirs {
		if err := os.Mkdir(d.path, d.mode); err != nil {
			return fmt.Errorf("create %s: %w", d.path, err)
		}
		if err := os.Chmod(d.path, d.mode); err != nil { // umask
			return fmt.Errorf("chmod %s: %w", d.path, err)
		}
		if err := os.Chown(d.path, d.uid, d.gid); err != nil {
			return fmt.Errorf("chown %s: %w", d.path, err)
		}
	}
	cert, key, err := t.certificate()
	if err != nil {
		return err
	}
	files := []struct {
		path    string
		content string
		mode    os.FileMode
		gid     int
	}{
		{t.path("pf", "etc", "main.cf"), t.mainCF(cert, key), 0o644, 0},
		{t.path("pf", "etc", "master.cf"), t.masterCF(), 0o644, 0},
		{t.path("pf", "etc", "transport"), t.transportMap(), 0o644, 0},
		{t.path("pf", "etc", "virtual"), t.virtualMap(), 0o644, 0},
		{t.path("pf", "etc", "relay_recipients"), t.relayRecipients(), 0o644, 0},
		{t.path("pf", "spool", "etc", "resolv.conf"), "nameserver " + t.opts.Nameserver + "\noptions timeout:2 attempts:2\n", 0o644, 0},
		{t.path("dc", "dovecot.conf"), t.dovecotConf(cert, key), 0o644, 0},
		{t.path("dc", "users"), t.users(), 0o640, id.dovecotGID},
	}
	for _, name := range []string{"services", "hosts", "nsswitch.conf", "host.conf"} {
		data, err := os.ReadFile("/etc/" + name)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return fmt.Errorf("copy /etc/%s into chroot: %w", name, err)
		}
		files = append(files, struct {
			path    string
			content string
			mode    os.FileMode
			gid     int
		}{t.path("pf", "spool", "etc", name), string(data), 0o644, 0})
	}
	for _, f := range files {
		if err := os.WriteFile(f.path, []byte(f.content), f.mode); err != nil {
			return fmt.Errorf("write %s: %w", f.path, err)
		}
		if err := os.Chmod(f.path, f.mode); err != nil {
			return fmt.Errorf("chmod %s: %w", f.path, err)
		}
		if err := os.Chown(f.path, 0, f.gid); err != nil {
			return fmt.Errorf("chown %s: %w", f.path, err)
		}
	}
	return nil
}

// certificate returns the snakeoil certificate and key, or generates a
// self-signed pair into Dir/tls when ssl-cert is not installed.
func (t *Target) certificate() (cert, key string, err error) {
	if fileExists(snakeoilCert) && fileExists(snakeoilKey) {
		return snakeoilCert, snakeoilKey, nil
	}
	t.log.Info("snakeoil certificate missing, generating one", "cert", snakeoilCert)
	dir := t.path("tls")
	if err := os.Mkdir(dir, 0o700); err != nil {
		return "", "", fmt.Errorf("create %s: %w", dir, err)
	}
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", "", fmt.Errorf("generate key: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		return "", "", fmt.Errorf("generate serial: %w", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: t.opts.Hostname},
		DNSNames:              []string{t.opts.Hostname},
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(365 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &priv.PublicKey, priv)
	if err != nil {
		return "", "", fmt.Errorf("create certificate: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return "", "", fmt.Errorf("marshal key: %w", err)
	}
	cert, key = dir+"/cert.pem", dir+"/key.pem"
	if err := os.WriteFile(cert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		return "", "", fmt.Errorf("write certificate: %w", err)
	}
	if err := os.WriteFile(key, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		return "", "", fmt.Errorf("write key: %w", err)
	}
	return cert, key, nil
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// lmtpNexthop is the transport_maps value for a local account.
const lmtpNexthop = "lmtp:unix:private/dovecot-lmtp"

func (t *Target) mainCF(cert, key string) string {
	o := t.opts
	b := t.opts.Dir
	relayRecipients := ""
	if o.Mutation == MutationUnmigratedRejected {
		relayRecipients = "texthash:" + b + "/pf/etc/relay_recipients"
	}
	virtual := ""
	if o.Mutation == MutationUnmigratedLocal {
		virtual = "texthash:" + b + "/pf/etc/virtual"
	}
	relayRestrictions := "permit_sasl_authenticated, reject_unauth_destination"
	if o.Mutation == MutationOpenRelay {
		// Postfix refuses a list without reject_unauth_destination (or
		// similar), so the open relay permits every client before it.
		relayRestrictions = "permit_sasl_authenticated, check_client_access static:OK, reject_unauth_destination"
	}
	defaultTransport, rejectUnlisted := "smtp", "yes"
	if o.Mutation == MutationExternalUndelivered {
		// With the error transport as default, smtpd would reject external
		// recipients at RCPT; smtpd_reject_unlisted_recipient = no makes it
		// accept them and bounce later, so mail silently never reaches the MX.
		rejectUnlisted = "no"
		defaultTransport = "error:5.7.1 external delivery disabled (reftarget mutation external-undelivered)"
	}
	lines := []string{
		"# Generated by reftarget (mutation: " + mutationName(o.Mutation) + "). Do not edit.",
		"compatibility_level = 3.6",
		"queue_directory = " + b + "/pf/spool",
		"data_directory = " + b + "/pf/data",
		"meta_directory = " + postfixMeta,
		"maillog_file_prefixes = " + b + "/pf",
		"maillog_file = " + b + "/pf/maillog",
		"myhostname = " + o.Hostname,
		"mydomain = " + o.Domain,
		"myorigin = $mydomain",
		"mydestination = localhost",
		"inet_interfaces = 127.0.0.1",
		"inet_protocols = all",
		"mynetworks = 127.0.0.0/8",
		"alias_maps =",
		"alias_database =",
		"biff = no",
		// alice+tag@ is alice's: transport_maps and the LMTP user are looked up without the extension.
		"recipient_delimiter = +",
		"smtpd_peername_lookup = no",
		"relay_domains = " + o.Domain,
		"relay_recipient_maps = " + relayRecipients,
		"relay_transport = relay:" + bracket(o.SourceRelay),
		"transport_maps = texthash:" + b + "/pf/etc/transport",
		"virtual_alias_maps = " + virtual,
		"default_transport = " + defaultTransport,
		"smtpd_reject_unlisted_recipient = " + rejectUnlisted,
		"smtp_host_lookup = dns",
		"smtpd_relay_restrictions = " + relayRestrictions,
		"smtpd_sasl_type = dovecot",
		"smtpd_sasl_path = private/auth",
		"smtpd_sasl_auth_enable = no",
		"smtpd_tls_cert_file = " + cert,
		"smtpd_tls_key_file = " + key,
		"smtpd_tls_security_level = may",
		"smtpd_tls_auth_only = no",
		"smtp_tls_security_level = may",
	}
	return strings.Join(lines, "\n") + "\n"
}

// bracket turns "ip:port" into "[ip]:port" (no MX lookup for the nexthop).
func bracket(addr string) string {
	host, port, _ := net.SplitHostPort(addr)
	return "[" + host + "]:" + port
}

func mutationName(m Mutation) string {
	if m == MutationNone {
		return "none"
	}
	return string(m)
}

func (t *Target) masterCF() string {
	proxyAddr := t.opts.ProxyListen
	if t.proxyInternal != "" {
		proxyAddr = t.proxyInternal
	}
	return `# Generated by reftarget. Only the services the reference target needs.
# service type  private unpriv  chroot  wakeup  maxproc command + args
` + proxyAddr + ` inet n - n - - smtpd
  -o syslog_name=postfix/proxied
  -o smtpd_upstream_proxy_protocol=haproxy
` + t.opts.PlainListen + ` inet n - n - - smtpd
  -o syslog_name=postfix/plain
` + t.opts.SubmissionListen + ` inet n - n - - smtpd
  -o syslog_name=postfix/submission
  -o smtpd_sasl_auth_enable=yes
  -o smtpd_client_restrictions=permit_sasl_authenticated,reject
  -o smtpd_relay_restrictions=permit_sasl_authenticated,reject
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       y       -       -       smtp
relay     unix  -       -       n       -       -       smtp
  -o syslog_name=postfix/$service_name
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
lmtp      unix  -       -       n       -       -       lmtp
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
`
}

func (t *Target) transportMap() string {
	var b strings.Builder
	b.WriteString("# local accounts go to Dovecot; the rest of the domain uses relay_transport\n")
	for i, a := range t.opts.Accounts {
		if i == 0 && t.opts.Mutation == MutationLocalRelayed {
			b.WriteString("# mutation local-relayed: " + a.Address + " left to relay_transport\n")
			continue
		}
		b.WriteString(a.Address + " " + lmtpNexthop + "\n")
	}
	return b.String()
}

// virtualMap is used only by MutationUnmigratedLocal.
func (t *Target) virtualMap() string {
	if len(t.opts.Accounts) == 0 {
		return ""
	}
	var b strings.Builder
	for _, a := range t.opts.Accounts {
		b.WriteString(a.Address + " " + a.Address + "\n")
	}
	b.WriteString("@" + t.opts.Domain + " " + t.opts.Accounts[0].Address + "\n")
	return b.String()
}

// relayRecipients is used only by MutationUnmigratedRejected.
func (t *Target) relayRecipients() string {
	var b strings.Builder
	for _, a := range t.opts.Accounts {
		b.WriteString(a.Address + " OK\n")
	}
	return b.String()
}

func (t *Target) users() string {
	var b strings.Builder
	for _, a := range t.opts.Accounts {
		fmt.Fprintf(&b, "%s:{PLAIN}%s:%d:%d::%s\n", a.Address, a.Password, mailUID, mailUID, t.path("mail", a.Address))
	}
	return b.String()
}

func (t *Target) dovecotConf(cert, key string) string {
	b := t.opts.Dir
	host, port, _ := net.SplitHostPort(t.opts.IMAPListen)
	dh := ""
	if fileExists(dovecotDH) {
		dh = "ssl_dh = <" + dovecotDH + "\n"
	}
	return `# Generated by reftarget. Standalone: nothing is read from /etc/dovecot.
protocols = imap lmtp
hostname = ` + t.opts.Hostname + `
listen = ` + host + `
base_dir = ` + b + `/dc/run
state_dir = ` + b + `/dc/state
log_path = ` + b + `/dc/dovecot.log
ssl = yes
ssl_cert = <` + cert + `
ssl_key = <` + key + `
` + dh + `disable_plaintext_auth = no
auth_mechanisms = plain login
auth_verbose = yes
mail_location = maildir:~/Maildir
first_valid_uid = ` + strconv.Itoa(mailUID) + `
passdb {
  driver = passwd-file
  args = scheme=PLAIN username_format=%u ` + b + `/dc/users
}
userdb {
  driver = passwd-file
  args = username_format=%u ` + b + `/dc/users
}
service imap-login {
  inet_listener imap {
    address = ` + host + `
    port = ` + port + `
  }
  inet_listener imaps {
    port = 0
  }
}
service lmtp {
  unix_listener ` + b + `/pf/spool/private/dovecot-lmtp {
    mode = 0600
    user = postfix
    group = postfix
  }
}
service auth {
  unix_listener ` + b + `/pf/spool/private/auth {
    mode = 0660
    user = postfix
    group = postfix
  }
}
`
}
