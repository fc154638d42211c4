package stalwart

import (
	"errors"
	"fmt"
	"net/netip"
	"net/url"
	"strings"
	"time"

	"github.com/testcontainers/testcontainers-go"
)

// DefaultImage is the Stalwart image the hermetic mode runs: a pinned release tag,
// so a regression suite does not change under its users' feet. Pass another tag to
// Run to try a newer release.
const DefaultImage = "stalwartlabs/stalwart:v0.16.18"

// Defaults of the container options.
const (
	// DefaultAdminUser is the recovery administrator's name when WithAdmin is not used.
	DefaultAdminUser = "admin"
	// DefaultStartupTimeout bounds the wait for /healthz/ready, on the first start
	// and on every restart.
	DefaultStartupTimeout = 2 * time.Minute
	// DefaultLogTailLines is how many lines of the container's output LogTail keeps.
	DefaultLogTailLines = 200
)

// The container ports, in testcontainers' "port/proto" form.
const (
	SMTPPort       = "25/tcp"   // SMTP, STARTTLS; the port MX delivery uses
	SubmissionPort = "587/tcp"  // submission; Bootstrap creates the listener
	IMAPSPort      = "993/tcp"  // IMAP over implicit TLS (self-signed certificate)
	HTTPPort       = "8080/tcp" // plain HTTP: JMAP, the management API, /healthz
)

// Paths and values inside the image.
const (
	configPath = "/etc/stalwart/config.json"
	// headlessConfig makes Stalwart start in normal mode with its data in the data
	// volume, skipping the bootstrap wizard (api-notes §4 "Headless alternative").
	headlessConfig = `{"@type":"RocksDb","path":"/var/lib/stalwart/"}`

	envRecoveryAdmin = "STALWART_RECOVERY_ADMIN"
	envPublicURL     = "STALWART_PUBLIC_URL"
	readyPath        = "/healthz/ready"
)

// options is the module's state that is not part of the container request.
type options struct {
	adminUser      string
	adminPassword  string
	publicURL      string
	trustedProxies []netip.Prefix
	startupTimeout time.Duration
	hostIP         netip.Addr
	logTailLines   int
}

func defaultOptions() options {
	return options{
		adminUser:      DefaultAdminUser,
		startupTimeout: DefaultStartupTimeout,
		logTailLines:   DefaultLogTailLines,
	}
}

// Compile-time check that Option is a testcontainers customizer.
var _ testcontainers.ContainerCustomizer = (Option)(nil)

// Option configures what Run and Bootstrap do beyond the container request. It is a
// testcontainers.ContainerCustomizer so it can be passed to Run with the library's
// own options; its Customize does nothing.
type Option func(*options) error

// Customize does nothing: Run reads Options itself. It exists so an Option can be
// passed where a testcontainers.ContainerCustomizer is expected.
func (o Option) Customize(*testcontainers.GenericContainerRequest) error { return nil }

// WithAdmin sets the recovery administrator (STALWART_RECOVERY_ADMIN). Without it
// Run uses DefaultAdminUser and a random 32-character password (GeneratePassword).
func WithAdmin(user, password string) Option {
	return func(o *options) error {
		switch {
		case user == "":
			return errors.New("with admin: empty user name")
		case strings.ContainsAny(user, ": \t\r\n"):
			return fmt.Errorf("with admin: user name %q contains ':' or white space", user)
		case password == "":
			return errors.New("with admin: empty password")
		case strings.ContainsAny(password, "\r\n"):
			return errors.New("with admin: password contains a line break")
		}
		o.adminUser, o.adminPassword = user, password
		return nil
	}
}

// WithPublicURL sets STALWART_PUBLIC_URL, the base URL JMAP autodiscovery
// advertises (in a migration: the proxy's URL). Stalwart reads it at start.
func WithPublicURL(publicURL string) Option {
	return func(o *options) error {
		u, err := url.Parse(publicURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" ||
			u.RawQuery != "" || u.Fragment != "" || u.User != nil {
			return fmt.Errorf("with public url: %q is not an http or https base URL", publicURL)
		}
		o.publicURL = strings.TrimRight(publicURL, "/")
		return nil
	}
}

// WithTrustedProxy adds a network (IP or CIDR) that Bootstrap writes to
// SystemSettings.proxyTrustedNetworks: connections from it must start with a PROXY
// header. Give the proxy's own address (a /32 or /128); wide networks are refused
// (prefixes shorter than /8 do not parse in Stalwart, and trusting a whole Docker
// bridge network would also trust the gateway every published port is reached from).
func WithTrustedProxy(cidr string) Option {
	return func(o *options) error {
		p, err := ParseTrustedNetwork(cidr)
		if err != nil {
			return fmt.Errorf("with trusted proxy: %w", err)
		}
		o.trustedProxies = append(o.trustedProxies, p)
		return nil
	}
}

// WithStartupTimeout bounds the wait for /healthz/ready on every start (default
// DefaultStartupTimeout).
func WithStartupTimeout(d time.Duration) Option {
	return func(o *options) error {
		if d <= 0 {
			return fmt.Errorf("with startup timeout: %v is not positive", d)
		}
		o.startupTimeout = d
		return nil
	}
}

// WithHostIP publishes the container's ports on this host address only (for example
// 127.0.0.1), instead of Docker's default of every interface. The endpoint
// accessors then return this address.
func WithHostIP(ip string) Option {
	return func(o *options) error {
		a, err := netip.ParseAddr(ip)
		if err != nil {
			return fmt.Errorf("with host ip: %q is not an IP address", ip)
		}
		o.hostIP = a
		return nil
	}
}

// WithLogTail sets how many lines of the container's output LogTail keeps (default
// DefaultLogTailLines).
func WithLogTail(lines int) Option {
	return func(o *options) error {
		if lines < 1 {
			return fmt.Errorf("with log tail: %d lines is not positive", lines)
		}
		o.logTailLines = lines
		return nil
	}
}

// ParseTrustedNetwork parses an IP or CIDR for proxyTrustedNetworks. A bare IP
// becomes a /32 (or /128). It refuses the unspecified address and prefixes shorter
// than /8, which Stalwart cannot parse (0.0.0.0/0 among them). The result is masked
// to its network address.
func ParseTrustedNetwork(s string) (netip.Prefix, error) {
	var p netip.Prefix
	if a, err := netip.ParseAddr(s); err == nil {
		if a.Zone() != "" {
			return netip.Prefix{}, fmt.Errorf("%q: zoned addresses are not networks", s)
		}
		p = netip.PrefixFrom(a, a.BitLen())
	} else if p, err = netip.ParsePrefix(s); err != nil {
		return netip.Prefix{}, fmt.Errorf("%q is not an IP address or CIDR network", s)
	}
	p = p.Masked()
	switch {
	case p.Bits() < 8:
		return netip.Prefix{}, fmt.Errorf("%q: prefixes shorter than /8 are refused (Stalwart does not parse them)", s)
	case p.Addr().IsUnspecified():
		return netip.Prefix{}, fmt.Errorf("%q: the unspecified address is not a proxy", s)
	}
	return p, nil
}
