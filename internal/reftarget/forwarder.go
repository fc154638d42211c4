package reftarget

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/pires/go-proxyproto"
)

// Forwarder timeouts.
const (
	fwdHeaderTimeout = 5 * time.Second // like Postfix's smtpd_upstream_proxy_timeout
	fwdIdleTimeout   = 5 * time.Minute
	fwdDialTimeout   = 5 * time.Second
)

// forwarder implements MutationProxyIgnored: it owns ProxyListen, reads and
// discards the client's PROXY header, and opens the real Postfix PROXY
// listener with a fresh v1 header naming its TCP peer. Close stops it and
// waits for every connection goroutine.
type forwarder struct {
	ln       net.Listener
	upstream string
	log      *slog.Logger

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu    sync.Mutex
	conns map[net.Conn]struct{}
}

func startForwarder(listen, upstream string, log *slog.Logger) (*forwarder, error) {
	ln, err := net.Listen("tcp4", listen)
	if err != nil {
		return nil, fmt.Errorf("%w: %s (proxy-ignored forwarder): %v", ErrAddressInUse, listen, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	f := &forwarder{ln: ln, upstream: upstream, log: log, ctx: ctx, cancel: cancel, conns: map[net.Conn]struct{}{}}
	f.wg.Add(1)
	go f.serve()
	log.Info("proxy-ignored forwarder listening", "listen", listen, "upstream", upstream)
	return f, nil
}

func (f *forwarder) serve() {
	defer f.wg.Done()
	for {
		c, err := f.ln.Accept()
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				f.log.Warn("forwarder accept", "err", err)
			}
			return
		}
		if !f.track(c) {
			_ = c.Close()
			return
		}
		f.wg.Add(1)
		go func() {
			defer f.wg.Done()
			defer f.untrack(c)
			f.handle(c)
		}()
	}
}

// track registers a connection; false once the forwarder is closing.
func (f *forwarder) track(c net.Conn) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.conns == nil {
		return false
	}
	f.conns[c] = struct{}{}
	return true
}

func (f *forwarder) untrack(c net.Conn) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.conns != nil {
		delete(f.conns, c)
	}
	_ = c.Close()
}

func (f *forwarder) handle(client net.Conn) {
	br := bufio.NewReader(client)
	_ = client.SetReadDeadline(time.Now().Add(fwdHeaderTimeout))
	// The announced header is read and thrown away: that is the mutation.
	// Without one (or with a broken one) the bytes read so far are forwarded.
	if _, err := proxyproto.Read(br); err != nil {
		f.log.Debug("forwarder: no usable PROXY header", "remote", client.RemoteAddr().String(), "err", err)
	}
	_ = client.SetReadDeadline(time.Time{})

	d := net.Dialer{Timeout: fwdDialTimeout}
	up, err := d.DialContext(f.ctx, "tcp4", f.upstream)
	if err != nil {
		f.log.Warn("forwarder dial", "upstream", f.upstream, "err", err)
		return
	}
	if !f.track(up) {
		_ = up.Close()
		return
	}
	defer f.untrack(up)

	hdr, err := proxyproto.HeaderProxyFromAddrs(1, client.RemoteAddr(), client.LocalAddr()).Format()
	if err != nil {
		f.log.Warn("forwarder header", "err", err)
		return
	}
	// The real header plus anything already buffered goes out in one Write:
	// Postfix needs the header in a single segment.
	if n := br.Buffered(); n > 0 {
		buf, _ := br.Peek(n)
		hdr = append(hdr, buf...)
		_, _ = br.Discard(n)
	}
	_ = up.SetWriteDeadline(time.Now().Add(fwdDialTimeout))
	if _, err := up.Write(hdr); err != nil {
		f.log.Warn("forwarder write header", "err", err)
		return
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		copyIdle(up, br, client)
		closeWrite(up)
	}()
	copyIdle(client, up, up)
	// The server side is done: an SMTP session is over, so drop both ends
	// rather than wait for an idle client.
	_ = client.Close()
	_ = up.Close()
	wg.Wait()
}

// copyIdle copies src to dst, giving up after fwdIdleTimeout without data.
func copyIdle(dst net.Conn, src io.Reader, srcConn net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		_ = srcConn.SetReadDeadline(time.Now().Add(fwdIdleTimeout))
		n, err := src.Read(buf)
		if n > 0 {
			_ = dst.SetWriteDeadline(time.Now().Add(fwdIdleTimeout))
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func closeWrite(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.CloseWrite()
		return
	}
	_ = c.Close()
}

// Close stops accepting, closes every open connection and waits for the
// connection goroutines.
func (f *forwarder) Close() error {
	f.cancel()
	err := f.ln.Close()
	f.mu.Lock()
	for c := range f.conns {
		_ = c.Close()
	}
	f.conns = nil
	f.mu.Unlock()
	f.wg.Wait()
	if err != nil && !errors.Is(err, net.ErrClosed) {
		return fmt.Errorf("close forwarder: %w", err)
	}
	return nil
}
