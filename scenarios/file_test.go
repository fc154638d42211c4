package scenarios

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

const goodFile = `# a migration wave: dave moved today
probes:
  - name: late-account
    entry: proxy
    received: true
    recipients:
      - address: dave@example.org
        expect: local
  - name: wave
    entry: submission
    recipients:
      - address: erin@example.org
        expect: source
      - address: frank@external.test
        expect: mx
  - name: no-header
    entry: headerless
  - name: later
    entry: plain
    skip: plain listener not deployed yet
    recipients:
      - {address: dave@example.org, expect: local}
`

func TestParseFile(t *testing.T) {
	got, err := ParseFile("wave.yaml", []byte(goodFile))
	if err != nil {
		t.Fatalf("ParseFile = %v; want nil", err)
	}
	want := []Probe{
		{Name: "late-account", Entry: EntryProxy, Received: true, Recipients: []Recipient{{"dave@example.org", RouteLocal}}},
		{Name: "wave", Entry: EntrySubmission, Recipients: []Recipient{{"erin@example.org", RouteSource}, {"frank@external.test", RouteMX}}},
		{Name: "no-header", Entry: EntryHeaderless},
		{Name: "later", Entry: EntryPlain, Skip: "plain listener not deployed yet", Recipients: []Recipient{{"dave@example.org", RouteLocal}}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("ParseFile =\n%+v\nwant\n%+v", got, want)
	}
}

func TestParseFileErrors(t *testing.T) {
	for _, tt := range []struct {
		name, data string
		want       string // the first error, in full
	}{
		{"empty", "", "f.yaml: empty file: want a list of probes under \"probes\""},
		{"comment only", "# nothing\n", "f.yaml: empty file: want a list of probes under \"probes\""},
		{"syntax", "probes: [\n", "f.yaml:1: did not find expected node content"},
		{"top-level list", "- a\n", "f.yaml:1: want a mapping with keys probes, got a list"},
		{"unknown top key", "probes: []\nprobe: x\n", "f.yaml:2: field probe: unknown key (known: probes)"},
		{"no probes key", "{}\n", "f.yaml:1: field probes: required: a list of probes"},
		{"empty probes", "probes: []\n", "f.yaml:1: field probes: empty list: a scenario file needs at least one probe"},
		{"probes not a list", "probes: 3\n", "f.yaml:1: field probes: want a list of probes, got a number"},
		{"unknown probe key", "probes:\n  - name: a\n    entry: proxy\n    to: x@y.org\n", "f.yaml:4: field probes.0.to: unknown key (known: name, entry, recipients, received, skip)"},
		{"repeated key", "probes:\n  - name: a\n    name: b\n", "f.yaml:3: field probes.0.name: key repeated"},
		{"missing name", "probes:\n  - entry: headerless\n", "f.yaml:2: field probes.0.name: required"},
		{"blank name", "probes:\n  - name: ' '\n    entry: headerless\n", "f.yaml:2: field probes.0.name: must not be empty"},
		{"name a list", "probes:\n  - name: [a]\n    entry: headerless\n", "f.yaml:2: field probes.0.name: want a string, got a list"},
		{"bad entry", "probes:\n  - name: a\n    entry: smtp\n", "f.yaml:3: field probes.0.entry: \"smtp\" is not one of proxy, submission, plain, headerless"},
		{"missing entry", "probes:\n  - name: a\n", "f.yaml:2: field probes.0.entry: required (proxy, submission, plain or headerless)"},
		{"received not bool", "probes:\n  - name: a\n    entry: proxy\n    received: yes please\n    recipients: [{address: a@b.org, expect: local}]\n",
			"f.yaml:4: field probes.0.received: want true or false, got a string"},
		{"empty skip", "probes:\n  - name: a\n    entry: headerless\n    skip: ''\n", "f.yaml:4: field probes.0.skip: give the reason for skipping, or leave the key out"},
		{"no recipients", "probes:\n  - name: a\n    entry: proxy\n", "f.yaml:2: field probes.0.recipients: required: at least one recipient"},
		{"empty recipients", "probes:\n  - name: a\n    entry: proxy\n    recipients: []\n", "f.yaml:4: field probes.0.recipients: empty list: at least one recipient"},
		{"recipient not a mapping", "probes:\n  - name: a\n    entry: proxy\n    recipients: [a@b.org]\n",
			"f.yaml:4: field probes.0.recipients.0: want a mapping with keys address, expect, got a string"},
		{"bad address", "probes:\n  - name: a\n    entry: proxy\n    recipients:\n      - address: Bob <b@x.org>\n        expect: local\n",
			"f.yaml:5: field probes.0.recipients.0.address: \"Bob <b@x.org>\" is not a bare e-mail address"},
		{"missing expect", "probes:\n  - name: a\n    entry: proxy\n    recipients:\n      - address: b@x.org\n",
			"f.yaml:5: field probes.0.recipients.0.expect: required (local, source, mx or reject)"},
		{"bad expect", "probes:\n  - name: a\n    entry: proxy\n    recipients:\n      - address: b@x.org\n        expect: none\n",
			"f.yaml:6: field probes.0.recipients.0.expect: \"none\" is not one of local, source, mx, reject"},
		{"same mailbox", "probes:\n  - name: a\n    entry: proxy\n    recipients:\n      - {address: b@x.org, expect: local}\n      - {address: B+1@x.org, expect: local}\n",
			"f.yaml:6: field probes.0.recipients.1.address: \"B+1@x.org\" is the same mailbox as probes.0.recipients.0"},
		{"headerless with recipients", "probes:\n  - name: a\n    entry: headerless\n    recipients: [{address: b@x.org, expect: local}]\n",
			"f.yaml:4: field probes.0.recipients: a headerless probe carries no recipients"},
		{"headerless received", "probes:\n  - name: a\n    entry: headerless\n    received: true\n",
			"f.yaml:4: field probes.0.received: a headerless probe delivers nothing whose Received header could be read"},
		{"duplicate name", "probes:\n  - {name: a, entry: headerless}\n  - {name: a, entry: headerless}\n",
			"f.yaml:3: field probes.1.name: probe name \"a\" already used by probes.0"},
		{"check name collision", "probes:\n  - {name: a, entry: proxy, recipients: [{address: b@x.org, expect: local}]}\n  - {name: route/a, entry: headerless}\n",
			"f.yaml:2: field probes: check \"route/a\" is produced twice"},
		{"alias", "x: &r {address: b@x.org, expect: local}\n", "f.yaml:1: field x: unknown key (known: probes)"},
		{"alias used", "probes:\n  - &p {name: a, entry: headerless}\n  - *p\n", "f.yaml:2: field probes.0: YAML anchors and aliases are not supported"},
		{"two documents", "probes:\n  - {name: a, entry: headerless}\n---\nprobes: []\n", "f.yaml:3: more than one YAML document"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			probes, err := ParseFile("f.yaml", []byte(tt.data))
			if err == nil {
				t.Fatalf("ParseFile = %+v, nil; want error %q", probes, tt.want)
			}
			if probes != nil {
				t.Errorf("ParseFile probes = %+v; want nil with an error", probes)
			}
			var fe *FileError
			if !errors.As(err, &fe) {
				t.Fatalf("ParseFile error %T %v is not a *FileError", err, err)
			}
			if got := fe.Error(); got != tt.want {
				t.Errorf("first error = %q; want %q", got, tt.want)
			}
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("errors.Is(%v, ErrInvalid) = false; want true", err)
			}
		})
	}
}

func TestParseFileReportsEveryError(t *testing.T) {
	data := "probes:\n  - name: a\n    entry: nope\n  - name: b\n    entry: proxy\n    recipients: [{address: x, expect: y}]\n"
	_, err := ParseFile("f.yaml", []byte(data))
	var es FileErrors
	if !errors.As(err, &es) {
		t.Fatalf("error %T is not FileErrors", err)
	}
	if len(es) != 3 {
		t.Errorf("got %d errors:\n%v\nwant 3 (entry, address, expect)", len(es), err)
	}
}

func FuzzParseFile(f *testing.F) {
	f.Add([]byte(goodFile))
	f.Add([]byte("probes:\n  - {name: a, entry: headerless}\n"))
	f.Add([]byte("probes:\n  - &p {name: a, entry: headerless}\n  - *p\n"))
	f.Add([]byte("probes: [{name: x, entry: submission, recipients: [{address: A+b@C.org, expect: mx}]}]"))
	f.Add([]byte("probes:\n  - name: 1\n    entry: proxy\n    recipients:\n      - address: b@x.org\n        expect: reject\n"))
	f.Add([]byte("--- \n..."))
	f.Fuzz(func(t *testing.T, data []byte) {
		probes, err := ParseFile("fuzz.yaml", data)
		if err != nil {
			if probes != nil {
				t.Fatalf("probes %+v returned with error %v", probes, err)
			}
			if !strings.HasPrefix(err.Error(), "fuzz.yaml") {
				t.Fatalf("error %q does not name the file", err)
			}
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error %v does not match ErrInvalid", err)
			}
			return
		}
		if len(probes) == 0 {
			t.Fatal("no probes and no error")
		}
		if err := Validate(probes); err != nil {
			t.Fatalf("ParseFile accepted probes that Validate refuses: %v", err)
		}
	})
}
