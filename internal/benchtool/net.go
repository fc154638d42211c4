package benchtool

import (
	"context"
	"fmt"
	"net"
	"time"
)

// FreePorts returns n distinct TCP ports that were free on 127.0.0.1: it
// binds n listeners on port 0 at once, notes their ports and closes them.
// Another process may take a port before the caller binds it.
func FreePorts(n int) ([]int, error) {
	var lns []net.Listener
	defer func() {
		for _, ln := range lns {
			ln.Close()
		}
	}()
	ports := make([]int, 0, n)
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("free ports: %w", err)
		}
		lns = append(lns, ln)
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
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
