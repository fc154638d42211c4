package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func TestUsage(t *testing.T) {
	for _, args := range [][]string{
		nil, {"frobnicate"}, {"ports"}, {"ports", "0"}, {"ports", "x"}, {"wait"}, {"sink"},
		{"latency", "-o", "x.json"}, {"latency", "-o", "x.json", "noequals"}, {"report", "-doc", "x.md"},
	} {
		var out, errOut bytes.Buffer
		err := run(context.Background(), args, &out, &errOut)
		var ue *usageError
		if !errors.As(err, &ue) {
			t.Errorf("run(%q) = %v; want a usage error", args, err)
		}
	}
}

func TestPorts(t *testing.T) {
	var out bytes.Buffer
	if err := run(context.Background(), []string{"ports", "3"}, &out, &bytes.Buffer{}); err != nil {
		t.Fatalf("ports: %v", err)
	}
	if f := strings.Fields(out.String()); len(f) != 3 {
		t.Errorf("ports 3 printed %q; want 3 ports", out.String())
	}
}

func TestReport(t *testing.T) {
	dir := t.TempDir()
	write := func(name, text string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	doc := write("doc.md", "# Benchmarks\n\nHand-written notes.\n")
	for _, tt := range []struct {
		name   string
		runs   string
		missed bool
	}{
		{"goals met", "sink\tone\tsmtp-sink\t1\t100\t1\nsink\tone\tfakesource\t1\t100\t0.5\n", false},
		{"goal missed", "sink\tone\tsmtp-sink\t1\t100\t1\nsink\tone\tfakesource\t1\t100\t2\n", true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			runs := write("runs.tsv", tt.runs)
			err := run(context.Background(), []string{"report", "-runs", runs, "-doc", doc}, &bytes.Buffer{}, &bytes.Buffer{})
			var ge *goalError
			if got := errors.As(err, &ge); got != tt.missed || (err != nil && !got) {
				t.Fatalf("report err = %v; want a goal error: %v", err, tt.missed)
			}
			b, err := os.ReadFile(doc)
			if err != nil {
				t.Fatal(err)
			}
			if !strings.HasPrefix(string(b), "# Benchmarks\n\nHand-written notes.\n") || !strings.Contains(string(b), "| one |") {
				t.Errorf("doc = %q; want the notes kept and the table added", b)
			}
		})
	}
}
