package benchtool_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	"go.uber.org/goleak"

	"github.com/splitcheck/splitcheck/fakesource"
	"github.com/splitcheck/splitcheck/internal/benchtool"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func startSink(t *testing.T, acceptProxy bool) (*fakesource.Server, *benchtool.SinkCounts) {
	t.Helper()
	var counts benchtool.SinkCounts
	s := benchtool.NewSink(acceptProxy, &counts)
	s.Start()
	t.Cleanup(func() { s.Close() })
	return s, &counts
}

func TestBannerTime(t *testing.T) {
	for _, tt := range []struct {
		name        string
		acceptProxy bool
		proxyV2     bool
	}{
		{"plain sink", false, false},
		{"PROXY-aware sink, header sent by the client", true, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s, _ := startSink(t, tt.acceptProxy)
			d, err := benchtool.BannerTime(context.Background(), benchtool.Target{Name: "x", Addr: s.Addr, ProxyV2: tt.proxyV2}, 10*time.Second)
			if err != nil {
				t.Fatalf("BannerTime: %v", err)
			}
			if d <= 0 {
				t.Errorf("BannerTime = %v; want > 0", d)
			}
			// The session ended with QUIT: the server saw one connection, with the
			// header recorded when one was sent.
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := s.Shutdown(ctx); err != nil {
				t.Fatalf("Shutdown after QUIT: %v", err)
			}
			conns := s.Connections()
			if len(conns) != 1 || conns[0].ProxyHeader != tt.proxyV2 {
				t.Fatalf("Connections() = %+v; want one, ProxyHeader %v", conns, tt.proxyV2)
			}
			if got := string(conns[0].FirstBytes); !strings.HasSuffix(got, "QUIT\r\n") {
				t.Errorf("FirstBytes = %q; want them to end with QUIT", got)
			}
		})
	}
}

// fakeServer answers every connection with banner, then closes.
func fakeServer(t *testing.T, banner string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Write([]byte(banner))
			c.Close()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		<-done
	})
	return ln.Addr().String()
}

func TestBannerTimeErrors(t *testing.T) {
	refused := fakeServer(t, "554 5.7.1 go away\r\n")
	_, err := benchtool.BannerTime(context.Background(), benchtool.Target{Addr: refused}, 10*time.Second)
	if !errors.Is(err, benchtool.ErrReply) {
		t.Errorf("BannerTime against a 554 banner: err = %v; want ErrReply", err)
	}
	closed := fakeServer(t, "")
	if _, err := benchtool.BannerTime(context.Background(), benchtool.Target{Addr: closed}, 10*time.Second); err == nil {
		t.Errorf("BannerTime against a server that closes at once: err = nil; want an error")
	}
}

func TestMeasureLatency(t *testing.T) {
	plain, _ := startSink(t, false)
	aware, _ := startSink(t, true)
	targets := []benchtool.Target{{Name: "plain", Addr: plain.Addr}, {Name: "aware", Addr: aware.Addr, ProxyV2: true}}
	got, err := benchtool.MeasureLatency(context.Background(), targets, 5, 10*time.Second)
	if err != nil {
		t.Fatalf("MeasureLatency: %v", err)
	}
	for _, tg := range targets {
		if n := len(got[tg.Name]); n != 5 {
			t.Errorf("samples of %s = %d; want 5", tg.Name, n)
		}
	}
	if n := len(plain.Connections()) + len(aware.Connections()); n != 10 {
		t.Errorf("connections made = %d; want 10", n)
	}

	for _, tt := range []struct {
		name    string
		targets []benchtool.Target
		n       int
	}{
		{"no targets", nil, 5},
		{"no rounds", targets, 0},
		{"a name twice", []benchtool.Target{{Name: "a", Addr: plain.Addr}, {Name: "a", Addr: aware.Addr}}, 1},
	} {
		if _, err := benchtool.MeasureLatency(context.Background(), tt.targets, tt.n, time.Second); err == nil {
			t.Errorf("MeasureLatency with %s: err = nil; want an error", tt.name)
		}
	}
}

func durations(us ...int) []time.Duration {
	out := make([]time.Duration, len(us))
	for i, u := range us {
		out[i] = time.Duration(u) * time.Microsecond
	}
	return out
}

func TestSummarize(t *testing.T) {
	twenty := make([]int, 20)
	for i := range twenty {
		twenty[i] = 20 - i // 20, 19, ..., 1: unsorted on purpose
	}
	for _, tt := range []struct {
		name string
		in   []time.Duration
		want benchtool.Summary
	}{
		{"none", nil, benchtool.Summary{}},
		{"one", durations(7), benchtool.Summary{N: 1, Min: 7 * time.Microsecond, Median: 7 * time.Microsecond, P95: 7 * time.Microsecond, Max: 7 * time.Microsecond}},
		{"odd", durations(5, 1, 3), benchtool.Summary{N: 3, Min: time.Microsecond, Median: 3 * time.Microsecond, P95: 5 * time.Microsecond, Max: 5 * time.Microsecond}},
		{"even", durations(4, 1, 3, 2), benchtool.Summary{N: 4, Min: time.Microsecond, Median: 2500 * time.Nanosecond, P95: 4 * time.Microsecond, Max: 4 * time.Microsecond}},
		{"twenty", durations(twenty...), benchtool.Summary{N: 20, Min: time.Microsecond, Median: 10500 * time.Nanosecond, P95: 19 * time.Microsecond, Max: 20 * time.Microsecond}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			orig := append([]time.Duration(nil), tt.in...)
			if got := benchtool.Summarize(tt.in); got != tt.want {
				t.Errorf("Summarize = %+v; want %+v", got, tt.want)
			}
			if !reflect.DeepEqual(tt.in, orig) {
				t.Errorf("Summarize changed its input to %v", tt.in)
			}
		})
	}
}

func TestMedianFloat(t *testing.T) {
	for _, tt := range []struct {
		in   []float64
		want float64
	}{{nil, 0}, {[]float64{3}, 3}, {[]float64{9, 1, 5}, 5}, {[]float64{4, 1, 2, 3}, 2.5}} {
		if got := benchtool.MedianFloat(tt.in); got != tt.want {
			t.Errorf("MedianFloat(%v) = %v; want %v", tt.in, got, tt.want)
		}
	}
}

const runsTSV = `# phase	mode	target	run	messages	seconds
sink	one	smtp-sink	1	1000	0.5
sink	one	fakesource	1	1000	0.4
sink	one	smtp-sink	2	1000	0.25
sink	one	fakesource	2	1000	0.5
sink	one	smtp-sink	3	1000	1
sink	one	fakesource	3	1000	0.5

proxy	one	no proxy	1	1000	0.1
proxy	one	haproxy	1	1000	0.5
proxy	one	proxy	1	1000	1
`

func TestParseRunsAndRates(t *testing.T) {
	runs, err := benchtool.ParseRuns(strings.NewReader(runsTSV))
	if err != nil {
		t.Fatalf("ParseRuns: %v", err)
	}
	if len(runs) != 9 {
		t.Fatalf("runs = %d; want 9", len(runs))
	}
	if got, want := runs[1], (benchtool.Run{Phase: "sink", Mode: "one", Target: "fakesource", N: 1, Messages: 1000, Seconds: 0.4}); got != want {
		t.Errorf("runs[1] = %+v; want %+v", got, want)
	}
	if got, want := benchtool.Rates(runs, "sink", "one", "smtp-sink"), []float64{2000, 4000, 1000}; !reflect.DeepEqual(got, want) {
		t.Errorf("Rates(smtp-sink) = %v; want %v", got, want)
	}
	for _, bad := range []string{
		"sink\tone\tx\t1\t1000\n",           // five fields
		"sink\tone\tx\t1\t1000\t0\n",        // zero seconds
		"sink\tone\tx\tone\t1000\t1\n",      // run not a number
		"sink\tone\tx\t1\t1000\tfast\n",     // seconds not a number
		"sink\tone\tx\t1\t-5\t1\n",          // negative messages
		"sink\tone\tx\t1\t1000\t1\textra\n", // seven fields
	} {
		if _, err := benchtool.ParseRuns(strings.NewReader(bad)); !errors.Is(err, benchtool.ErrFormat) {
			t.Errorf("ParseRuns(%q) err = %v; want ErrFormat", bad, err)
		}
	}
}

func TestRender(t *testing.T) {
	runs, err := benchtool.ParseRuns(strings.NewReader(runsTSV))
	if err != nil {
		t.Fatal(err)
	}
	lat := func(haproxy, proxy float64) *benchtool.LatencyResult {
		return &benchtool.LatencyResult{Rounds: 10, Baseline: "direct", Order: []string{"direct", "haproxy", "proxy"},
			Targets: map[string]benchtool.LatencySummary{
				"direct":  {N: 10, MedianUS: 100, P95US: 200},
				"haproxy": {N: 10, MedianUS: haproxy, P95US: 300},
				"proxy":   {N: 10, MedianUS: proxy, P95US: 400},
			}}
	}
	for _, tt := range []struct {
		name       string
		latency    *benchtool.LatencyResult
		wantMissed int
		wantText   []string
	}{
		{
			// sink: fakesource median 2000 vs smtp-sink 2000 = 1.00x (met);
			// proxy: 1000 vs 2000 = 0.50x (missed); latency +50 vs +80 (met).
			name: "proxy throughput missed", latency: lat(180, 150), wantMissed: 1,
			wantText: []string{"| one | **2000** (2000, 4000, 1000) | **2000** (2500, 2000, 2000) | 1.00x | met |",
				"| one | **10000** (10000) | **2000** (2000) | **1000** (1000) | 0.50x | **not met** |",
				"| proxy | 150 | 400 | +50 | +200 |", "(+50 us vs +80 us): met"},
		},
		{
			name: "latency missed too", latency: lat(150, 180), wantMissed: 2,
			wantText: []string{"(+80 us vs +50 us): **not met**"},
		},
		{name: "no latency", wantMissed: 1},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var b bytes.Buffer
			v, err := benchtool.Report{Runs: runs, Latency: tt.latency, Goals: benchtool.DefaultGoals, Commands: "smtp-source -s 20"}.Render(&b)
			if err != nil {
				t.Fatalf("Render: %v", err)
			}
			if len(v.Missed) != tt.wantMissed {
				t.Errorf("missed = %q; want %d goals missed", v.Missed, tt.wantMissed)
			}
			for _, want := range append(tt.wantText, "```sh\nsmtp-source -s 20\n```") {
				if !strings.Contains(b.String(), want) {
					t.Errorf("report lacks %q:\n%s", want, b.String())
				}
			}
		})
	}
	_, err = benchtool.Report{Latency: &benchtool.LatencyResult{Baseline: "gone"}}.Render(&bytes.Buffer{})
	if !errors.Is(err, benchtool.ErrFormat) {
		t.Errorf("Render with a missing latency baseline: err = %v; want ErrFormat", err)
	}
	if r := (benchtool.Run{Messages: 10}).Rate(); r != 0 || math.IsNaN(r) {
		t.Errorf("Rate of a run without time = %v; want 0", r)
	}
}

func TestSplice(t *testing.T) {
	block := func(s string) string { return benchtool.BeginMarker + "\n" + s + "\n" + benchtool.EndMarker }
	for _, tt := range []struct {
		name, doc, want string
		err             bool
	}{
		{name: "empty", doc: "", want: block("new") + "\n"},
		{name: "no markers", doc: "# Title\nprose", want: "# Title\nprose\n\n" + block("new") + "\n"},
		{name: "replace", doc: "before\n" + block("old") + "\nafter\n", want: "before\n" + block("new") + "\nafter\n"},
		{name: "end only", doc: "x " + benchtool.EndMarker, err: true},
		{name: "out of order", doc: benchtool.EndMarker + "\n" + benchtool.BeginMarker, err: true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, err := benchtool.Splice(tt.doc, "\nnew\n")
			if (err != nil) != tt.err {
				t.Fatalf("Splice err = %v; want error %v", err, tt.err)
			}
			if !tt.err && got != tt.want {
				t.Errorf("Splice = %q; want %q", got, tt.want)
			}
		})
	}
	path := filepath.Join(t.TempDir(), "doc.md")
	for i := range 2 {
		if err := benchtool.SpliceFile(path, fmt.Sprint("figures ", i)); err != nil {
			t.Fatalf("SpliceFile: %v", err)
		}
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := string(b), block("figures 1")+"\n"; got != want {
		t.Errorf("file after two splices = %q; want %q", got, want)
	}
}

func TestFreePortsAndWait(t *testing.T) {
	ports, err := benchtool.FreePorts(5)
	if err != nil {
		t.Fatalf("FreePorts: %v", err)
	}
	seen := map[int]bool{}
	for _, p := range ports {
		if p <= 0 || seen[p] {
			t.Fatalf("FreePorts = %v; want 5 distinct ports", ports)
		}
		seen[p] = true
	}
	ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", ports[0]))
	if err != nil {
		t.Fatalf("listen on a free port: %v", err)
	}
	defer ln.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := benchtool.WaitListening(ctx, ln.Addr().String(), 10*time.Millisecond); err != nil {
		t.Errorf("WaitListening on a listener: %v", err)
	}
	short, cancel2 := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel2()
	if err := benchtool.WaitListening(short, fmt.Sprintf("127.0.0.1:%d", ports[1]), 10*time.Millisecond); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("WaitListening on a closed port: err = %v; want DeadlineExceeded", err)
	}
}

func TestNewSinkCounts(t *testing.T) {
	s, counts := startSink(t, false)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := s.Dial(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for i := range 3 {
		if err := c.SendMail("a@source.example", []string{"b@corp.example"}, strings.NewReader(fmt.Sprintf("Subject: %d\r\n\r\nhi\r\n", i))); err != nil {
			t.Fatalf("SendMail: %v", err)
		}
	}
	if got, hdrs := counts.Messages.Load(), counts.ProxyHeaders.Load(); got != 3 || hdrs != 0 {
		t.Errorf("counts = %d messages, %d with headers; want 3, 0", got, hdrs)
	}
}

func TestBareSink(t *testing.T) {
	var counts benchtool.SinkCounts
	b, err := benchtool.ListenBareSink("127.0.0.1:0", &counts)
	if err != nil {
		t.Fatal(err)
	}
	c, err := smtp.Dial(b.Addr())
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := c.SendMail("a@source.example", []string{"b@corp.example"}, strings.NewReader("Subject: x\r\n\r\nhi\r\n")); err != nil {
			t.Fatalf("SendMail: %v", err)
		}
	}
	if err := c.Quit(); err != nil {
		t.Fatalf("Quit: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := b.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if got := counts.Messages.Load(); got != 2 {
		t.Errorf("messages = %d; want 2", got)
	}
}

func TestRenderRoundingShowsAMiss(t *testing.T) {
	runs := []benchtool.Run{
		{Phase: "proxy", Mode: "one", Target: "haproxy", N: 1, Messages: 1000, Seconds: 1},
		{Phase: "proxy", Mode: "one", Target: "proxy", N: 1, Messages: 898, Seconds: 1},
	}
	var b bytes.Buffer
	v, err := benchtool.Report{Runs: runs, Goals: benchtool.DefaultGoals}.Render(&b)
	if err != nil {
		t.Fatal(err)
	}
	if len(v.Missed) != 1 || !strings.Contains(b.String(), "| 0.898x | **not met** |") {
		t.Errorf("missed %q, report:\n%s\nwant 0.898x shown as not met", v.Missed, b.String())
	}
}
