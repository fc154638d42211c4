package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"encoding/xml"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/pires/go-proxyproto"

	"github.com/splitcheck/splitcheck/fakesource"
	"github.com/splitcheck/splitcheck/harness/bulk"
	"github.com/splitcheck/splitcheck/harness/report"
)

// bulkMTA is a stand-in target for the command: a PROXY-protocol front piping to
// a fakesource that refuses external recipients (no open relay) and, for the
// test's sake, every address that starts with "gone".
func bulkMTA(t *testing.T) string {
	t.Helper()
	mta := fakesource.NewUnstartedServer()
	mta.RcptErr = func(rcpt string) error {
		switch {
		case strings.HasSuffix(rcpt, "@external.test"):
			return &smtp.SMTPError{Code: 554, EnhancedCode: smtp.EnhancedCode{5, 7, 1}, Message: "Relay access denied"}
		case strings.HasPrefix(rcpt, "gone"):
			return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "User unknown"}
		}
		return nil
	}
	if err := mta.Listen("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { mta.Close() })
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	front := &proxyproto.Listener{Listener: ln, ReadHeaderTimeout: 5 * time.Second}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := front.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				up, err := net.Dial("tcp", mta.Addr)
				if err != nil {
					return
				}
				defer up.Close()
				_ = c.SetDeadline(time.Now().Add(10 * time.Second))
				_ = up.SetDeadline(time.Now().Add(10 * time.Second))
				done := make(chan struct{})
				go func() {
					defer close(done)
					_, _ = io.Copy(c, up)
					c.Close()
				}()
				_, _ = io.Copy(up, c)
				up.Close()
				<-done
			}()
		}
	}()
	t.Cleanup(func() {
		front.Close()
		wg.Wait()
	})
	return ln.Addr().String()
}

func writeBulkConfig(t *testing.T, smtpAddr, extra string) string {
	t.Helper()
	dir := t.TempDir()
	cfg := fmt.Sprintf(`target:
  smtp: %s
plan:
  domains: [example.org]
  unmigrated: [bob@example.org]
fakes:
  source: 127.0.0.1:0
proxy:
  version: 1
  announce: 198.51.100.7
timeouts:
  connect: 5s
  delivery: 500ms
  absence: 20ms
  run: 1m
%s`, smtpAddr, extra)
	path := filepath.Join(dir, "bulk.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// runBulkCmd runs `splitcheck bulk args...` and returns the exit code and output.
func runBulkCmd(t *testing.T, stdin string, args ...string) (int, string, string) {
	t.Helper()
	var out, errOut bytes.Buffer
	ios := &ioStreams{In: strings.NewReader(stdin), Out: &out, ErrOut: &errOut}
	root := newRootCmdForBulk(ios)
	root.SetArgs(append([]string{"bulk"}, args...))
	err := root.ExecuteContext(context.Background())
	if err != nil {
		fmt.Fprintf(&errOut, "splitcheck: %v\n", err)
	}
	return exitCode(err), out.String(), errOut.String()
}

// newRootCmdForBulk is the root command with bulk added (the integrator adds it
// to newRootCmd).
func newRootCmdForBulk(ios *ioStreams) interface {
	SetArgs([]string)
	ExecuteContext(context.Context) error
} {
	root := newRootCmd(ios)
	for _, c := range root.Commands() {
		if c.Name() == "bulk" {
			return root
		}
	}
	root.AddCommand(newBulkCmd(ios))
	return root
}

func TestBulkUsage(t *testing.T) {
	cfg := writeBulkConfig(t, "127.0.0.1:1", "")
	list := writeFile(t, "list.csv", "a@example.org,source\n")
	for _, tt := range []struct {
		name string
		args []string
		want string
	}{
		{"no config", []string{"--list", list}, "--config FILE is required"},
		{"no list", []string{"-c", cfg}, "--list FILE (or --migrated FILE --addresses FILE) is required"},
		{"both inputs", []string{"-c", cfg, "--list", list, "--migrated", list}, "either --list or --migrated"},
		{"half derived", []string{"-c", cfg, "--migrated", list}, "--migrated and --addresses go together"},
		{"bad shard", []string{"-c", cfg, "--list", list, "--shard", "5/4"}, "--shard"},
		{"bad malformed mode", []string{"-c", cfg, "--list", list, "--on-malformed", "ignore"}, "want stop or continue"},
		{"bad concurrency", []string{"-c", cfg, "--list", list, "--concurrency", "999"}, "--concurrency 999"},
		{"missing list", []string{"-c", cfg, "--list", "/nonexistent/list.csv"}, "no such file"},
		{"argument", []string{"-c", cfg, list}, "bulk takes no arguments"},
		{"bad config", []string{"-c", writeFile(t, "bad.yaml", "target: {smtp: nowhere}\n"), "--list", list}, "bad.yaml"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			code, _, errOut := runBulkCmd(t, "", tt.args...)
			if code != exitUsage || !strings.Contains(errOut, tt.want) {
				t.Errorf("exit %d, stderr %q; want exit %d mentioning %q", code, errOut, exitUsage, tt.want)
			}
		})
	}
}

// TestBulkMalformedStopsBeforeSending: with the default "stop", a malformed row
// in a file is found before any mail is sent (the target here is unreachable,
// so sending would be exit 3).
func TestBulkMalformedStopsBeforeSending(t *testing.T) {
	cfg := writeBulkConfig(t, "127.0.0.1:1", "")
	list := writeFile(t, "list.csv", "address,route\na@example.org,source\nb@example.org,nowhere\n")
	junit := filepath.Join(t.TempDir(), "out.xml")
	code, _, errOut := runBulkCmd(t, "", "-c", cfg, "--list", list, "--junit", junit)
	if code != exitUsage || !strings.Contains(errOut, "list.csv:3: route \"nowhere\"") || !strings.Contains(errOut, "nothing sent") {
		t.Errorf("exit %d, stderr %q; want exit 2 naming list.csv:3", code, errOut)
	}
	data, err := os.ReadFile(junit)
	if err != nil || !bytes.Contains(data, []byte(`type="malformed"`)) {
		t.Errorf("junit %s = %q, %v; want the malformed row as an error", junit, data, err)
	}
}

func TestBulkReport(t *testing.T) {
	addr := bulkMTA(t)
	cfg := writeBulkConfig(t, addr, "bulk:\n  batch_size: 3\n")
	rows := []string{"address,route"}
	for i := range 6 {
		rows = append(rows, fmt.Sprintf("relay%d@external.test,reject", i))
	}
	rows = append(rows, "gone1@example.org,source", "relay9@external.test,reject", "gone2@example.org,source")
	list := writeFile(t, "list.csv", strings.Join(rows, "\n")+"\n")

	code, out, errOut := runBulkCmd(t, "", "-c", cfg, "--list", list)
	if code != exitMismatch {
		t.Fatalf("exit %d; want %d (mismatch)\nstdout:\n%s\nstderr:\n%s", code, exitMismatch, out, errOut)
	}
	for _, want := range []string{
		"reject      7       7       0       0        0",
		"source      2       0       2       0        0",
		"FAIL   line 8  gone1@example.org  expected source, observed reject",
		"want source, got reject: RCPT TO: RCPT 550 5.1.1 User unknown",
		"FAIL   line 10  gone2@example.org",
		"7 passed, 2 failed, 0 skipped, 0 errors",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "relay0@external.test") {
		t.Errorf("report lists a passing row:\n%s", out)
	}
	if !strings.Contains(errOut, "2 check(s) failed: gone1@example.org") {
		t.Errorf("stderr %q; want the mismatch summary", errOut)
	}
}

func TestBulkJSONAndJUnit(t *testing.T) {
	addr := bulkMTA(t)
	cfg := writeBulkConfig(t, addr, "")
	junit := filepath.Join(t.TempDir(), "bulk.xml")
	stdin := "a@external.test,reject\nnot-an-address,reject\nb@external.test,reject\n"
	code, out, errOut := runBulkCmd(t, stdin, "-c", cfg, "--list", "-", "--on-malformed", "continue", "--json", "--junit", junit)
	if code != exitUsage || !strings.Contains(errOut, "stdin:2:") || !strings.Contains(errOut, "1 malformed row(s) skipped") {
		t.Errorf("exit %d, stderr %q; want exit 2 after the run, naming stdin:2", code, errOut)
	}
	var types []string
	var summary bulk.SummaryRecord
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		var rec struct {
			Type   string `json:"type"`
			Status string `json:"status"`
		}
		if err := json.Unmarshal(sc.Bytes(), &rec); err != nil {
			t.Fatalf("stdout line %q: %v", sc.Text(), err)
		}
		types = append(types, rec.Type)
		if rec.Type == "summary" {
			if err := json.Unmarshal(sc.Bytes(), &summary); err != nil {
				t.Fatal(err)
			}
		}
		if rec.Type == "check" && rec.Status != "pass" {
			t.Errorf("check %s: status %s; want pass", sc.Text(), rec.Status)
		}
	}
	if got := strings.Join(types, ","); got != "check,malformed,check,summary" && got != "malformed,check,check,summary" {
		t.Errorf("stdout records = %s; want two checks, a malformed row, a summary", got)
	}
	if summary.Passed != 2 || summary.Malformed != 1 || !summary.OK {
		t.Errorf("summary = %+v; want 2 passed, 1 malformed", summary)
	}
	data, err := os.ReadFile(junit)
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Tests  int `xml:"tests,attr"`
		Errors int `xml:"errors,attr"`
	}
	if err := xml.Unmarshal(data, &doc); err != nil || doc.Tests != 3 || doc.Errors != 1 {
		t.Errorf("junit = %+v, %v; want 3 tests, 1 error\n%s", doc, err, data)
	}
}

func TestBulkPassesAndShards(t *testing.T) {
	addr := bulkMTA(t)
	cfg := writeBulkConfig(t, addr, "")
	var rows []string
	for i := range 12 {
		rows = append(rows, fmt.Sprintf("x%d@external.test,reject", i))
	}
	list := writeFile(t, "list.csv", strings.Join(rows, "\n")+"\n")
	total := 0
	for k := 1; k <= 2; k++ {
		code, out, errOut := runBulkCmd(t, "", "-c", cfg, "--list", list, "--shard", fmt.Sprintf("%d/2", k), "--json")
		if code != exitOK {
			t.Fatalf("shard %d/2: exit %d\n%s\n%s", k, code, out, errOut)
		}
		var s bulk.SummaryRecord
		lines := strings.Split(strings.TrimSpace(out), "\n")
		if err := json.Unmarshal([]byte(lines[len(lines)-1]), &s); err != nil {
			t.Fatal(err)
		}
		if s.Shard != fmt.Sprintf("%d/2", k) || s.Passed != len(lines)-1 {
			t.Errorf("shard %d/2 summary = %+v with %d check lines", k, s, len(lines)-1)
		}
		total += s.Passed
	}
	if total != 12 {
		t.Errorf("the two shards verified %d rows; want 12", total)
	}
}

func TestProgressStep(t *testing.T) {
	for _, tt := range []struct {
		p    bulk.Progress
		want string
	}{
		{bulk.Progress{Read: 500, Judged: 400, Total: 1000, Elapsed: 2 * time.Second, Failed: 1},
			"[400/1000] bulk: 200/s, 3s left, 1 failed, 0 errors"},
		{bulk.Progress{Read: 50, Judged: 10, Elapsed: time.Second, RateLimited: 3},
			"[10/50] bulk: 10/s, 0 failed, 0 errors, 3 rate-limited replies"},
	} {
		var b bytes.Buffer
		(&report.Progress{W: &b, TTY: true}).Update(progressStep(tt.p))
		if got := strings.TrimPrefix(b.String(), "\r\x1b[K"); got != tt.want {
			t.Errorf("progress line = %q; want %q", got, tt.want)
		}
	}
}

// TestBulkNothingVerified: an empty list, or one whose every row is skipped (an mx
// row with no submission configured), verifies nothing: exit 2, never 0.
func TestBulkNothingVerified(t *testing.T) {
	addr := bulkMTA(t)
	cfg := writeBulkConfig(t, addr, "")
	for name, content := range map[string]string{
		"empty":       "address,route\n",
		"all skipped": "address,route\nx@mx.test,mx\n",
	} {
		t.Run(name, func(t *testing.T) {
			list := writeFile(t, "list.csv", content)
			code, out, errOut := runBulkCmd(t, "", "-c", cfg, "--list", list)
			if code != exitUsage || !strings.Contains(errOut, "nothing was verified") {
				t.Errorf("exit %d, stderr %q; want 2 saying nothing was verified\n%s", code, errOut, out)
			}
		})
	}
}
