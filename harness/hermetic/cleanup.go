package hermetic

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"
)

// DefaultCleanupTimeout bounds the removal of everything a run started, which
// runs even when the run's own context is cancelled (SIGINT) or timed out.
const DefaultCleanupTimeout = 2 * time.Minute

// cleanups is a stack of removals: the last thing started is removed first. Every
// removal is attempted even when an earlier one fails.
type cleanups struct {
	steps []cleanupStep
}

type cleanupStep struct {
	what string
	fn   func(context.Context) error
}

// push registers the removal of what.
func (c *cleanups) push(what string, fn func(context.Context) error) {
	c.steps = append(c.steps, cleanupStep{what: what, fn: fn})
}

// run removes everything, last first, within timeout, on a context that is not
// cancelled with parent (so SIGINT does not stop the clean-up) but keeps its
// values. It returns what was removed and the joined errors of what was not.
func (c *cleanups) run(parent context.Context, timeout time.Duration) ([]string, error) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(parent), timeout)
	defer cancel()
	var removed []string
	var errs []error
	for i := len(c.steps) - 1; i >= 0; i-- {
		s := c.steps[i]
		if err := s.fn(ctx); err != nil {
			errs = append(errs, fmt.Errorf("remove %s: %w", s.what, err))
			continue
		}
		removed = append(removed, s.what)
	}
	c.steps = nil
	if len(errs) > 0 {
		return removed, fmt.Errorf("clean up: %w", errors.Join(errs...))
	}
	return removed, nil
}

// reservePorts finds three ports on ip that are free for TCP, the DNS one for UDP
// too, by binding them all at once and releasing them: the fakes bind them again
// when the checks start, after Stalwart has been told where they are. Nothing
// else binds the bridge's gateway address, so the window is harmless in practice.
func reservePorts(ip netip.Addr) (Ports, error) {
	var closers []func() error
	defer func() {
		for _, c := range closers {
			_ = c()
		}
	}()
	tcp := func() (uint16, error) {
		ln, err := net.Listen("tcp", netip.AddrPortFrom(ip, 0).String())
		if err != nil {
			return 0, err
		}
		closers = append(closers, ln.Close)
		return uint16(ln.Addr().(*net.TCPAddr).Port), nil
	}
	var p Ports
	var err error
	if p.Source, err = tcp(); err != nil {
		return Ports{}, fmt.Errorf("reserve fake source port on %v: %w", ip, err)
	}
	if p.MX, err = tcp(); err != nil {
		return Ports{}, fmt.Errorf("reserve fake MX port on %v: %w", ip, err)
	}
	for range 20 {
		port, err := tcp()
		if err != nil {
			return Ports{}, fmt.Errorf("reserve fake DNS port on %v: %w", ip, err)
		}
		pc, err := net.ListenPacket("udp", netip.AddrPortFrom(ip, port).String())
		if err != nil {
			continue // taken for UDP; try another
		}
		closers = append(closers, pc.Close)
		p.DNS = port
		return p, nil
	}
	return Ports{}, fmt.Errorf("reserve fake DNS port on %v: no port free for both TCP and UDP", ip)
}
