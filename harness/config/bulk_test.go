package config

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestBulkDefaults(t *testing.T) {
	cfg, err := Parse("run.yaml", []byte(validYAML+"bulk: {}\n"), env(map[string]string{"ALICE_PW": "pw"}))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	b := cfg.Bulk
	want := BulkDefaults()
	if b.Concurrency != want.Concurrency || b.BatchSize != 100 || b.Retries != 5 || b.Backoff != 500*time.Millisecond ||
		b.MaxBackoff != 30*time.Second || b.InFlight != 20000 || b.Pipelining != "auto" || b.OnMalformed != "stop" {
		t.Errorf("bulk defaults = %+v; want %+v", *b, *want)
	}
}

func TestBulkMailbox(t *testing.T) {
	yaml := validYAML + `bulk:
  concurrency: 8
  mailbox:
    address: 127.0.0.1:993
    username: "{address}*master"
    password: {env: MASTER_PW}
`
	cfg, err := Parse("run.yaml", []byte(yaml), env(map[string]string{"ALICE_PW": "pw", "MASTER_PW": "m"}))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	m := cfg.Bulk.Mailbox
	if got := m.LoginFor("zoe@example.org"); got != "zoe@example.org*master" {
		t.Errorf("LoginFor = %q; want zoe@example.org*master", got)
	}
	if m.TLS != "implicit" || m.Password.Value() != "m" || cfg.Bulk.Concurrency != 8 {
		t.Errorf("mailbox = tls %q, password set %v, concurrency %d; want implicit, true, 8", m.TLS, m.Password.IsSet(), cfg.Bulk.Concurrency)
	}
}

func TestBulkInvalid(t *testing.T) {
	for _, tt := range []struct {
		name, yaml, field string
	}{
		{"concurrency", "bulk:\n  concurrency: 1000\n", "bulk.concurrency"},
		{"batch size", "bulk:\n  batch_size: -3\n", "bulk.batch_size"},
		{"in flight below batch", "bulk:\n  batch_size: 50\n  in_flight: 10\n", "bulk.in_flight"},
		{"backoff order", "bulk:\n  backoff: 10s\n  max_backoff: 1s\n", "bulk.max_backoff"},
		{"pipelining", "bulk:\n  pipelining: always\n", "bulk.pipelining"},
		{"malformed", "bulk:\n  on_malformed: ignore\n", "bulk.on_malformed"},
		{"mailbox username", "bulk:\n  mailbox:\n    address: 127.0.0.1:143\n    username: master\n    password: x\n", "bulk.mailbox.username"},
		{"mailbox password", "bulk:\n  mailbox:\n    address: 127.0.0.1:143\n", "bulk.mailbox.password"},
		{"unknown key", "bulk:\n  fast: true\n", "fast"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse("run.yaml", []byte(validYAML+tt.yaml), env(map[string]string{"ALICE_PW": "pw"}))
			var ce *Error
			if !errors.As(err, &ce) {
				t.Fatalf("Parse error = %v; want a *config.Error", err)
			}
			if !strings.Contains(err.Error(), tt.field) {
				t.Errorf("Parse error = %q; want it to name %s", err, tt.field)
			}
			if ce.Line == 0 {
				t.Errorf("error %q has no line number", err)
			}
		})
	}
}
