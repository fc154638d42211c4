package harness

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/splitcheck/splitcheck/fakesource"
	"github.com/splitcheck/splitcheck/harness/config"
	"github.com/splitcheck/splitcheck/harness/fakedns"
	"github.com/splitcheck/splitcheck/harness/imapobs"
	"github.com/splitcheck/splitcheck/proxy"
	"github.com/splitcheck/splitcheck/scenarios"
)

// needs says which parts of the environment the probes use.
type needs struct {
	proxy, submission bool
	imap              bool // the built-in IMAP observer reads plan.local
	// external are the domains the fake DNS answers for.
	external []string
}

// env is the harness's side of a run: the fakes, the proxy, the observers.
type env struct {
	cfg     *config.Config
	log     *slog.Logger
	source  *fakesource.Server
	mx      *fakesource.Server
	dns     *fakedns.Server
	proxy   *proxy.Proxy
	proxyLn net.Listener
	served  chan struct{} // closed when the proxy's Serve returns
	imap    *imapobs.Observer
}

// Sink names used in evidence.
const (
	sourceName = "fake source"
	mxName     = "fake MX"
)

// startEnv binds every fake the run needs. On error, whatever was started is closed.
func startEnv(ctx context.Context, cfg *config.Config, n needs, log *slog.Logger) (e *env, err error) {
	e = &env{cfg: cfg, log: log}
	defer func() {
		if err != nil {
			e.close()
			e = nil
		}
	}()
	if err := ctx.Err(); err != nil {
		return e, fmt.Errorf("start fakes: %w", context.Cause(ctx))
	}
	timeout := cfg.Timeouts.Connect
	if e.source, err = startSink(cfg.Fakes.Source, "fake-source.splitcheck.test", timeout, log.With("fake", "source")); err != nil {
		return e, fmt.Errorf("start fake source (fakes.source): %w", err)
	}
	if cfg.Fakes.MX != "" {
		if e.mx, err = startSink(cfg.Fakes.MX, "fake-mx.splitcheck.test", timeout, log.With("fake", "mx")); err != nil {
			return e, fmt.Errorf("start fake MX (fakes.mx): %w", err)
		}
	}
	if cfg.Fakes.DNS != "" {
		ip, err := netip.ParseAddr(cfg.Fakes.MXAddress)
		if err != nil {
			return e, fmt.Errorf("%w: fakes.mx_address %q: %w", ErrConfig, cfg.Fakes.MXAddress, err)
		}
		zones := map[string]netip.Addr{}
		for _, d := range n.external {
			zones[d] = ip
		}
		e.dns = &fakedns.Server{MX: zones, Timeout: timeout, Logger: log.With("fake", "dns")}
		if err := e.dns.Start(cfg.Fakes.DNS); err != nil {
			return e, fmt.Errorf("start fake DNS (fakes.dns): %w", err)
		}
	}
	if n.proxy {
		if err := e.startProxy(); err != nil {
			return e, err
		}
	}
	if n.imap && len(cfg.Plan.Local) > 0 {
		o := &imapobs.Observer{Timeout: timeout, PollInterval: 100 * time.Millisecond, Logger: log.With("observer", "imap")}
		for _, a := range cfg.Plan.Local {
			m := a.Mailbox
			if m.Protocol != "" && m.Protocol != "imap" {
				continue // refused before the run unless the caller observes local
			}
			o.Accounts = append(o.Accounts, imapobs.Account{
				Address: a.Address, Server: m.Address, TLS: m.TLS, InsecureSkipVerify: m.InsecureSkipVerify,
				Username: m.Username, Password: m.Password.Value(),
			})
		}
		e.imap = o
	}
	return e, nil
}

func startSink(addr, hostname string, timeout time.Duration, log *slog.Logger) (*fakesource.Server, error) {
	s := fakesource.NewUnstartedServer()
	s.Hostname = hostname
	s.IndexHeader = scenarios.ProbeHeader
	s.ReadTimeout = max(timeout, 10*time.Second)
	s.WriteTimeout = max(timeout, 10*time.Second)
	s.MaxMessages = 10000
	s.Logger = log
	if err := s.Listen(addr); err != nil {
		return nil, err
	}
	return s, nil
}

func (e *env) startProxy() error {
	cfg := e.cfg
	announce, err := config.ParseIPPort(cfg.Proxy.Announce)
	if err != nil {
		return fmt.Errorf("%w: proxy.announce: %w", ErrConfig, err)
	}
	ln, err := net.Listen("tcp", cfg.Proxy.Listen)
	if err != nil {
		return fmt.Errorf("start proxy (proxy.listen): %w", err)
	}
	e.proxyLn = ln
	e.proxy = &proxy.Proxy{
		Upstream:    cfg.Target.SMTP,
		Header:      proxy.Announce(byte(cfg.Proxy.Version), announce),
		LocalAddr:   cfg.Proxy.SourceAddress,
		DialTimeout: cfg.Timeouts.Connect,
		IdleTimeout: 2 * cfg.Timeouts.Connect,
		Logger:      e.log.With("fake", "proxy"),
	}
	e.served = make(chan struct{})
	go func() {
		defer close(e.served)
		if err := e.proxy.Serve(ln); err != nil && !errors.Is(err, proxy.ErrClosed) {
			e.log.Warn("proxy stopped", "err", err)
		}
	}()
	return nil
}

// proxyAddr is where probes connect to go through the proxy.
func (e *env) proxyAddr() string {
	if e.proxyLn == nil {
		return ""
	}
	return e.proxyLn.Addr().String()
}

// places are the observers of the run, local first. local overrides IMAP.
func (e *env) places(local Observer) []place {
	var out []place
	switch {
	case local != nil:
		out = append(out, place{route: scenarios.RouteLocal, obs: local})
	case e.imap != nil:
		out = append(out, place{route: scenarios.RouteLocal, obs: e.imap, recheck: true})
	}
	out = append(out, place{route: scenarios.RouteSource, obs: &sinkObserver{route: scenarios.RouteSource, name: sourceName, srv: e.source}, recheck: true})
	if e.mx != nil {
		out = append(out, place{route: scenarios.RouteMX, obs: &sinkObserver{route: scenarios.RouteMX, name: mxName, srv: e.mx}, recheck: true})
	}
	return out
}

// close stops everything startEnv started and waits for it.
func (e *env) close() {
	if e == nil {
		return
	}
	if e.proxy != nil {
		if err := e.proxy.Close(); err != nil {
			e.log.Debug("close proxy", "err", err)
		}
		<-e.served
	} else if e.proxyLn != nil {
		e.proxyLn.Close()
	}
	if e.imap != nil {
		e.imap.Close()
	}
	for _, s := range []*fakesource.Server{e.source, e.mx} {
		if s != nil {
			if err := s.Close(); err != nil {
				e.log.Debug("close sink", "addr", s.Addr, "err", err)
			}
		}
	}
	if e.dns != nil {
		if err := e.dns.Close(); err != nil {
			e.log.Debug("close fake DNS", "err", err)
		}
	}
}

// preflight proves the target is there before any probe is sent: its port 25, its
// submission port when used, and every mailbox login.
func (r *run) preflight(ctx context.Context) error {
	n := r.needs()
	dial := func(what, addr string) error {
		ctx, cancel := context.WithTimeout(ctx, r.cfg.Timeouts.Connect)
		defer cancel()
		var d net.Dialer
		c, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			return fmt.Errorf("%s %s unreachable: %w", what, addr, err)
		}
		return c.Close()
	}
	if err := dial("target port 25 (target.smtp)", r.cfg.Target.SMTP); err != nil {
		return err
	}
	if n.submission {
		if err := dial("target submission (target.submission)", r.cfg.Target.Submission); err != nil {
			return err
		}
	}
	if r.env.imap != nil {
		ctx, cancel := context.WithTimeout(ctx, 2*r.cfg.Timeouts.Connect)
		defer cancel()
		if err := r.env.imap.Check(ctx); err != nil {
			return fmt.Errorf("local mailbox: %w", err)
		}
	}
	return nil
}

// place is one place a probe can land, and who watches it.
type place struct {
	route scenarios.Route
	obs   Observer
	// recheck marks the built-in observers (fake sinks, IMAP), which may be asked
	// again for late copies; the caller's may claim what they report.
	recheck bool
}

// sinkObserver watches a fakesource sink.
type sinkObserver struct {
	route scenarios.Route
	name  string
	srv   *fakesource.Server
}

// Observe lists the sink's messages carrying the probe id for rcpt (case and "+tag"
// ignored), one sighting per message.
func (s *sinkObserver) Observe(ctx context.Context, probeID, rcpt string) ([]scenarios.Observation, error) {
	var out []scenarios.Observation
	for _, m := range s.srv.ByIndex(probeID) {
		r, ok := rcptOf(m, rcpt)
		if !ok {
			continue
		}
		out = append(out, scenarios.Observation{
			Place: s.route,
			Where: s.name + " " + s.srv.Addr,
			Evidence: fmt.Sprintf("%s %s: message %d RCPT <%s> from %s, helo %s", s.name, s.srv.Addr, m.Seq, r,
				hostOf(m.RemoteAddr), m.Helo),
			Received: unfoldAll(m.Received),
			At:       m.ReceivedAt,
		})
	}
	return out, nil
}

// Wait blocks until the sink records the probe for rcpt.
func (s *sinkObserver) Wait(ctx context.Context, probeID, rcpt string) error {
	_, err := s.srv.WaitFor(ctx, func(m fakesource.Message) bool {
		if !hasHeader(m, probeID) {
			return false
		}
		_, ok := rcptOf(m, rcpt)
		return ok
	})
	return err
}

func hasHeader(m fakesource.Message, probeID string) bool {
	for _, v := range m.HeaderValues(scenarios.ProbeHeader) {
		if v == probeID {
			return true
		}
	}
	return false
}

func rcptOf(m fakesource.Message, rcpt string) (string, bool) {
	want := scenarios.Canonical(rcpt)
	for _, r := range m.Rcpts {
		if scenarios.Canonical(r.Addr) == want {
			return r.Addr, true
		}
	}
	return "", false
}

// unfoldAll puts each header value on one line with single spaces.
func unfoldAll(vs []string) []string {
	out := make([]string, len(vs))
	for i, v := range vs {
		out[i] = strings.Join(strings.Fields(v), " ")
	}
	return out
}

func hostOf(addr string) string {
	if h, _, err := net.SplitHostPort(addr); err == nil {
		return h
	}
	return strings.TrimSpace(addr)
}
