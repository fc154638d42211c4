package hermetic

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/splitcheck/splitcheck/internal/freeport"
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
// when the checks start, after Stalwart has been told where they are. The ports
// come from below the ephemeral range, so the connections this run opens from the
// gateway address (to Stalwart, to the relays) cannot take one in the meantime.
func reservePorts(ip netip.Addr) (Ports, error) {
	host := ip.String()
	var held []*freeport.Reservation
	defer func() {
		for _, r := range held {
			r.Release()
		}
	}()
	var p Ports
	for _, want := range []struct {
		role string
		port *uint16
		udp  bool
	}{{"source", &p.Source, false}, {"MX", &p.MX, false}, {"DNS", &p.DNS, true}} {
		r, err := freeport.Reserve(host, want.udp)
		if err != nil {
			return Ports{}, fmt.Errorf("reserve fake %s port: %w", want.role, err)
		}
		held = append(held, r)
		*want.port = uint16(r.Port)
	}
	return p, nil
}
