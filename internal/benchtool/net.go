package benchtool

import (
	"context"
	"fmt"
	"net"
	"time"

	"github.com/splitcheck/splitcheck/internal/freeport"
)

// FreePorts returns n distinct TCP ports that were free on 127.0.0.1, from
// below the ephemeral range (the bench's own connections use that range), held
// all at once and released together. Another process may still take one before
// the caller binds it.
func FreePorts(n int) ([]int, error) {
	var held []*freeport.Reservation
	defer func() {
		for _, r := range held {
			r.Release()
		}
	}()
	ports := make([]int, 0, n)
	for range n {
		r, err := freeport.Reserve("127.0.0.1", false)
		if err != nil {
			return nil, fmt.Errorf("free ports: %w", err)
		}
		held = append(held, r)
		ports = append(ports, r.Port)
	}
	return ports, nil
}

// WaitListening returns once a TCP connection to addr succeeds (it closes
// it at once), trying again every interval until ctx ends.
func WaitListening(ctx context.Context, addr string, interval time.Duration) error {
	t := time.NewTicker(interval)
	defer t.Stop()
	var d net.Dialer
	for {
		dctx, cancel := context.WithTimeout(ctx, time.Second)
		c, err := d.DialContext(dctx, "tcp", addr)
		cancel()
		if err == nil {
			c.Close()
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for %s: %w (last error: %w)", addr, context.Cause(ctx), err)
		case <-t.C:
		}
	}
}
