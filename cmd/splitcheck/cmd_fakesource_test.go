package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

// lockedBuffer is a bytes.Buffer safe for the command's goroutines; it reports
// the address of the first "listening on ADDR" line on listening (searching the
// whole buffer, so a line split across writes is still found). The fakesource and
// proxy command tests share it.
type lockedBuffer struct {
	mu        sync.Mutex
	buf       bytes.Buffer
	listening chan string
}

var listeningRe = regexp.MustCompile(`(?m)^listening on (\S+)$`)

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	n, err := b.buf.Write(p)
	if m := listeningRe.FindSubmatch(b.buf.Bytes()); m != nil && b.listening != nil {
		b.listening <- string(m[1])
		b.listening = nil
	}
	return n, err
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// startFakesourceCmd runs `fakesource args...` until the returned cancel is
// called; wait returns the command's error.
func startFakesourceCmd(t *testing.T, args ...string) (addr string, stdout, stderr *lockedBuffer, stop func() error) {
	t.Helper()
	stdout, stderr = &lockedBuffer{}, &lockedBuffer{listening: make(chan string, 1)}
	listening := stderr.listening
	ios := &ioStreams{In: strings.NewReader(""), Out: stdout, ErrOut: stderr}
	cmd := newFakesourceCmd(ios)
	cmd.SetArgs(args)
	cmd.SetOut(stdout)
	cmd.SetErr(stderr)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- cmd.ExecuteContext(ctx) }()
	stopped := false
	stop = func() error {
		if stopped {
			return nil
		}
		stopped = true
		cancel()
		return <-done
	}
	t.Cleanup(func() { stop() })
	select {
	case addr = <-listening:
	case err := <-done:
		stopped = true
		t.Fatalf("fakesource %v exited early: %v; stderr: %s", args, err, stderr)
	case <-time.After(30 * time.Second):
		t.Fatalf("fakesource %v never printed 'listening on'; stderr: %s", args, stderr)
	}
	return addr, stdout, stderr, stop
}

func TestFakesourceCmdReceives(t *testing.T) {
	addr, stdout, stderr, stop := startFakesourceCmd(t,
		"--listen", "127.0.0.1:0", "--hostname", "old.source.example",
		"--auth", "relay:s3cret-pw", "--auth-required",
		"--reject-rcpt", "Gone@corp.example=550", "--index-header", "X-Splitcheck-Probe",
		"--max-recipients", "5")
	c, err := smtp.Dial(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Auth(sasl.NewPlainClient("", "relay", "s3cret-pw")); err != nil {
		t.Fatalf("Auth: %v", err)
	}
	if err := c.Mail("a@source.example", nil); err != nil {
		t.Fatal(err)
	}
	var se *smtp.SMTPError
	if err := c.Rcpt("gone@corp.example", nil); !errors.As(err, &se) || se.Code != 550 {
		t.Fatalf("Rcpt(gone) = %v; want 550", err)
	}
	if err := c.Rcpt("bob@corp.example", nil); err != nil {
		t.Fatal(err)
	}
	w, err := c.Data()
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(w, "Message-ID: <p1@test>\r\nX-Splitcheck-Probe: p-1\r\n\r\nsecret body text\r\n")
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	c.Quit()
	if err := stop(); err != nil {
		t.Fatalf("fakesource after cancel = %v; want nil (exit 0)", err)
	}

	lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
	if len(lines) != 1 {
		t.Fatalf("stdout has %d lines; want 1 JSON line: %q", len(lines), stdout)
	}
	var got struct {
		Kind     string   `json:"kind"`
		Seq      uint64   `json:"seq"`
		From     string   `json:"from"`
		AuthUser string   `json:"auth_user"`
		Index    []string `json:"index"`
		Rcpts    []struct {
			Addr string `json:"addr"`
		} `json:"rcpts"`
		MessageID string   `json:"message_id"`
		Replies   []string `json:"replies"`
	}
	if err := json.Unmarshal([]byte(lines[0]), &got); err != nil {
		t.Fatalf("stdout line %q: %v", lines[0], err)
	}
	if got.Kind != "message" || got.Seq != 1 || got.From != "a@source.example" || got.AuthUser != "relay" ||
		len(got.Rcpts) != 1 || got.Rcpts[0].Addr != "bob@corp.example" || got.MessageID != "<p1@test>" ||
		len(got.Index) != 1 || got.Index[0] != "p-1" {
		t.Errorf("JSON line = %+v; want message 1 from a@source.example by relay to bob@corp.example, <p1@test>, index p-1", got)
	}
	if want := "RCPT 550 5.0.0"; !strings.Contains(strings.Join(got.Replies, "|"), want) {
		t.Errorf("replies %v; want one %q", got.Replies, want)
	}
	all := stdout.String() + stderr.String()
	for _, secret := range []string{"s3cret-pw", "secret body text", "czNjcmV0LXB3"} {
		if strings.Contains(all, secret) {
			t.Errorf("output contains %q; want no password or body:\n%s", secret, all)
		}
	}
	if !strings.Contains(stderr.String(), "fakesource: message 1 from <a@source.example> to <bob@corp.example>") {
		t.Errorf("stderr = %q; want a human line for message 1", stderr)
	}
}

func TestFakesourceCmdForbid(t *testing.T) {
	addr, stdout, stderr, stop := startFakesourceCmd(t, "--listen", "127.0.0.1:0", "--forbid")
	c, err := smtp.Dial(addr)
	if err != nil {
		t.Fatal(err)
	}
	var se *smtp.SMTPError
	if err := c.Hello("intruder"); !errors.As(err, &se) || se.Code != 554 {
		t.Errorf("Hello = %v; want 554", err)
	}
	c.Close()
	if err := stop(); err != nil {
		t.Fatalf("stop = %v", err)
	}
	if !strings.Contains(stdout.String(), `"kind":"violation"`) || !strings.Contains(stderr.String(), "VIOLATION") {
		t.Errorf("stdout %q, stderr %q; want a violation reported on both", stdout, stderr)
	}
}

func TestFakesourceCmdUsage(t *testing.T) {
	tests := []struct {
		name string
		args []string
		env  string
	}{
		{"no listen", nil, ""},
		{"argument", []string{"--listen", "127.0.0.1:0", "extra"}, ""},
		{"unknown flag", []string{"--listen", "127.0.0.1:0", "--bogus"}, ""},
		{"bad reject code", []string{"--listen", "127.0.0.1:0", "--reject-rcpt", "a@b=250"}, ""},
		{"reject without code", []string{"--listen", "127.0.0.1:0", "--reject-rcpt", "a@b"}, ""},
		{"auth without colon", []string{"--listen", "127.0.0.1:0", "--auth", "hunter2"}, ""},
		{"bad env auth", []string{"--listen", "127.0.0.1:0"}, "hunter2"},
		{"auth-required alone", []string{"--listen", "127.0.0.1:0", "--auth-required"}, ""},
		{"zero max bytes", []string{"--listen", "127.0.0.1:0", "--max-message-bytes", "0"}, ""},
		{"not a number", []string{"--listen", "127.0.0.1:0", "--max-recipients", "many"}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			cmd := newFakesourceCmd(&ioStreams{Out: &out, ErrOut: &errOut})
			t.Setenv(fakesourceAuthEnv, tt.env)
			cmd.SetArgs(tt.args)
			cmd.SetOut(&out)
			cmd.SetErr(&errOut)
			cmd.SilenceErrors, cmd.SilenceUsage = true, true
			err := cmd.ExecuteContext(context.Background())
			var ue *usageError
			if !errors.As(err, &ue) {
				t.Fatalf("error = %v (%T); want *usageError", err, err)
			}
			if strings.Contains(err.Error(), "hunter2") {
				t.Errorf("error %q echoes the password", err)
			}
		})
	}
}

func TestFakesourceEnvAuth(t *testing.T) {
	opts := &fakesourceOptions{listen: "127.0.0.1:0", hostname: "h", maxMessageBytes: 1, maxRecipients: 1,
		getenv: func(k string) string {
			if k == fakesourceAuthEnv {
				return "alice:pw1, bob:pw:2\ncarol:"
			}
			return ""
		}}
	s, err := buildFakesource(opts)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"alice": "pw1", "bob": "pw:2", "carol": ""}
	if len(s.AuthUsers) != len(want) {
		t.Fatalf("AuthUsers = %d users; want %d", len(s.AuthUsers), len(want))
	}
	for u, p := range want {
		if s.AuthUsers[u] != p {
			t.Errorf("AuthUsers[%q] wrong; want the env's password", u)
		}
	}
	opts.auth = []string{"dave:pw"}
	s, err = buildFakesource(opts)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := s.AuthUsers["alice"]; ok || s.AuthUsers["dave"] != "pw" {
		t.Errorf("with --auth the env is still read; want --auth only")
	}
}

func TestFakesourceHelp(t *testing.T) {
	var out bytes.Buffer
	cmd := newFakesourceCmd(&ioStreams{Out: &out, ErrOut: &out})
	cmd.SetArgs([]string{"--help"})
	cmd.SetOut(&out)
	if err := cmd.Execute(); err != nil {
		t.Fatal(err)
	}
	for _, flag := range []string{"--listen", "--hostname", "--starttls", "--auth", "--auth-required", "--max-message-bytes",
		"--max-recipients", "--reject-rcpt", "--index-header", "--forbid", fakesourceAuthEnv} {
		if !strings.Contains(out.String(), flag) {
			t.Errorf("--help lacks %s", flag)
		}
	}
}
