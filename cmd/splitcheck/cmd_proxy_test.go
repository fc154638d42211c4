package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pires/go-proxyproto"
)

// runProxyCmd runs `proxy args...` and waits for it to finish (for arguments
// that fail before listening).
func runProxyCmd(t *testing.T, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	var out, errOut lockedBuffer
	cmd := newProxyCmd(&ioStreams{In: strings.NewReader(""), Out: &out, ErrOut: &errOut})
	cmd.SetArgs(args)
	cmd.SetOut(&out)
	cmd.SetErr(&errOut)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	err = cmd.ExecuteContext(ctx)
	return out.String(), errOut.String(), err
}

// startProxyCmd runs `proxy args...` until stop is called.
func startProxyCmd(t *testing.T, args ...string) (addr string, stdout, stderr *lockedBuffer, stop func() error) {
	t.Helper()
	stdout, stderr = &lockedBuffer{}, &lockedBuffer{listening: make(chan string, 1)}
	listening := stderr.listening
	cmd := newProxyCmd(&ioStreams{In: strings.NewReader(""), Out: stdout, ErrOut: stderr})
	cmd.SetArgs(args)
	cmd.SetOut(stdout)
	cmd.SetErr(stderr)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- cmd.ExecuteContext(ctx) }()
	stop = sync.OnceValue(func() error {
		cancel()
		return <-done
	})
	t.Cleanup(func() { _ = stop() })
	timer := time.NewTimer(20 * time.Second)
	defer timer.Stop()
	select {
	case addr = <-listening:
	case err := <-done:
		t.Fatalf("proxy %v exited early: %v; stderr: %s", args, err, stderr)
	case <-timer.C:
		t.Fatalf("proxy %v never printed 'listening on'; stderr: %s", args, stderr)
	}
	return addr, stdout, stderr, stop
}

func TestProxyCmdUsageErrors(t *testing.T) {
	be := "127.0.0.1:2525"
	for _, tt := range []struct {
		name string
		args []string
		want string // in the error text
	}{
		{"no listen", []string{"--backend", be}, "--listen is required"},
		{"no backend", []string{"--listen", "127.0.0.1:0"}, "--backend is required"},
		{"backend without port", []string{"--listen", "127.0.0.1:0", "--backend", "127.0.0.1"}, "--backend"},
		{"listen without port", []string{"--listen", "127.0.0.1", "--backend", be}, "--listen"},
		{"version 3", []string{"--listen", "127.0.0.1:0", "--backend", be, "--proxy-version", "3"}, "--proxy-version 3"},
		{"version not a number", []string{"--listen", "127.0.0.1:0", "--backend", be, "--proxy-version", "two"}, "proxy-version"},
		{"tlv with v1", []string{"--listen", "127.0.0.1:0", "--backend", be, "--tlv", "5=00"}, "needs --proxy-version 2"},
		{"tlv no equals", []string{"--listen", "127.0.0.1:0", "--backend", be, "--proxy-version", "2", "--tlv", "5"}, "TYPE=HEX"},
		{"tlv type too big", []string{"--listen", "127.0.0.1:0", "--backend", be, "--proxy-version", "2", "--tlv", "256=00"}, "want 0-255"},
		{"tlv bad hex", []string{"--listen", "127.0.0.1:0", "--backend", be, "--proxy-version", "2", "--tlv", "0x05=zz"}, "hex"},
		{"announce bad", []string{"--listen", "127.0.0.1:0", "--backend", be, "--announce", "mx.example"}, "--announce"},
		{"announce port 0", []string{"--listen", "127.0.0.1:0", "--backend", be, "--announce", "198.51.100.7:0"}, "port 0"},
		{"announce without header", []string{"--listen", "127.0.0.1:0", "--backend", be, "--proxy-version", "0", "--announce", "198.51.100.7"}, "needs a header"},
		{"source addr with port", []string{"--listen", "127.0.0.1:0", "--backend", be, "--source-addr", "127.0.0.9:25"}, "--source-addr"},
		{"idle timeout zero", []string{"--listen", "127.0.0.1:0", "--backend", be, "--idle-timeout", "0s"}, "--idle-timeout"},
		{"idle timeout garbage", []string{"--listen", "127.0.0.1:0", "--backend", be, "--idle-timeout", "soon"}, "idle-timeout"},
		{"unknown flag", []string{"--listen", "127.0.0.1:0", "--backend", be, "--frobnicate"}, "frobnicate"},
		{"positional argument", []string{"--listen", "127.0.0.1:0", "--backend", be, "extra"}, "no arguments"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := runProxyCmd(t, tt.args...)
			var ue *usageError
			if !errors.As(err, &ue) {
				t.Fatalf("proxy %q = %v; want a *usageError", tt.args, err)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error = %q; want it to mention %q", err, tt.want)
			}
			if got := exitCode(err); got != exitUsage {
				t.Errorf("exitCode = %d; want %d", got, exitUsage)
			}
		})
	}
}

func TestProxyCmdListenFails(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	_, _, err = runProxyCmd(t, "--listen", ln.Addr().String(), "--backend", "127.0.0.1:2525")
	var ue *usageError
	if err == nil || errors.As(err, &ue) {
		t.Errorf("proxy on a busy port = %v; want a non-usage error", err)
	}
	if got := exitCode(err); got != exitEnv {
		t.Errorf("exitCode = %d; want %d", got, exitEnv)
	}
}

func TestProxyCmdHelp(t *testing.T) {
	stdout, _, err := runProxyCmd(t, "--help")
	if err != nil {
		t.Fatalf("proxy --help = %v", err)
	}
	for _, flag := range []string{"--listen", "--backend", "--proxy-version", "--announce", "--source-addr",
		"--tlv", "--idle-timeout", "--dial-timeout", "--drain-timeout", "listening on", "SIGTERM"} {
		if !strings.Contains(stdout, flag) {
			t.Errorf("--help output does not mention %q", flag)
		}
	}
}

// headerBackend answers each connection with the PROXY header it parsed and
// the first line of payload, then closes.
func headerBackend(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(20 * time.Second))
				br := bufio.NewReader(c)
				h, err := proxyproto.Read(br)
				if err != nil {
					fmt.Fprintf(c, "no header: %v\n", err)
					return
				}
				tlvs, _ := h.TLVs()
				line, _ := br.ReadString('\n')
				fmt.Fprintf(c, "v%d %v %v %q\n", h.Version, h.SourceAddr, tlvs, line)
				_, _ = io.Copy(io.Discard, br) // until the client closes
			})
		}
	})
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	return ln.Addr().String()
}

func TestProxyCmdServes(t *testing.T) {
	backend := headerBackend(t)
	addr, stdout, stderr, stop := startProxyCmd(t, "--listen", "127.0.0.1:0", "--backend", backend,
		"--proxy-version", "2", "--announce", "198.51.100.7", "--tlv", "0x05=6964", "--source-addr", "127.0.0.9")
	c, err := net.DialTimeout("tcp", addr, 20*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	fmt.Fprintf(c, "EHLO client.example\r\n")
	reply, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		t.Fatalf("read reply: %v", err)
	}
	port := c.LocalAddr().(*net.TCPAddr).Port
	want := fmt.Sprintf("v2 198.51.100.7:%d [{5 [105 100]}] %q\n", port, "EHLO client.example\r\n")
	if reply != want {
		t.Errorf("backend reply = %q; want %q", reply, want)
	}
	c.Close()

	if err := stop(); err != nil {
		t.Errorf("proxy after cancel = %v; want nil", err)
	}
	var stats struct {
		Accepted, Active, Failed uint64
		BytesUp                  uint64 `json:"bytes_up"`
	}
	if err := json.Unmarshal([]byte(stdout.String()), &stats); err != nil {
		t.Fatalf("stdout %q is not the JSON stats: %v", stdout, err)
	}
	if stats.Accepted != 1 || stats.Active != 0 || stats.Failed != 0 || stats.BytesUp != 21 {
		t.Errorf("stats = %+v; want 1 accepted, 0 active, 0 failed, 21 bytes up", stats)
	}
	for _, want := range []string{"proxy connection open", "proxy connection closed", "stopping"} {
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("stderr = %q; want it to contain %q", stderr, want)
		}
	}
}

// TestProxyCmdDrainTimeout stops the command while a client stays connected:
// it must cut the connection after --drain-timeout and still exit cleanly.
func TestProxyCmdDrainTimeout(t *testing.T) {
	backend := headerBackend(t)
	addr, _, stderr, stop := startProxyCmd(t, "--listen", "127.0.0.1:0", "--backend", backend, "--drain-timeout", "50ms")
	c, err := net.DialTimeout("tcp", addr, 20*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	fmt.Fprintf(c, "hello\n")
	br := bufio.NewReader(c)
	if _, err := br.ReadString('\n'); err != nil {
		t.Fatalf("read reply: %v", err)
	}
	if err := stop(); err != nil {
		t.Errorf("proxy after cancel = %v; want nil", err)
	}
	if !strings.Contains(stderr.String(), "drain timeout") {
		t.Errorf("stderr = %q; want a drain timeout notice", stderr)
	}
	if b, err := br.ReadByte(); err == nil {
		t.Errorf("read after drain timeout = %q; want the connection cut", b)
	}
}
