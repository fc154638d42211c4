package yamlpos

import (
	"testing"

	"go.yaml.in/yaml/v3"
)

func TestSplit(t *testing.T) {
	for _, tt := range []struct {
		msg, rest string
		line      int
	}{
		{"yaml: line 3: did not find expected key", "did not find expected key", 3},
		{"line 12: field plain_smpt not found in type config.Target", "field plain_smpt not found in type config.Target", 12},
		{"yaml: unmarshal errors", "unmarshal errors", 0},
		{"yaml: line x: odd", "line x: odd", 0},
		{"yaml: line 4", "line 4", 0},
		{"", "", 0},
	} {
		if line, rest := Split(tt.msg); line != tt.line || rest != tt.rest {
			t.Errorf("Split(%q) = %d, %q; want %d, %q", tt.msg, line, rest, tt.line, tt.rest)
		}
	}
}

// TestSplitYAML keeps Split honest against the yaml package's real wording.
func TestSplitYAML(t *testing.T) {
	var n yaml.Node
	err := yaml.Unmarshal([]byte("a: 1\nb: [\n"), &n)
	if err == nil {
		t.Fatal("Unmarshal of broken YAML succeeded; want an error")
	}
	if line, rest := Split(err.Error()); line != 2 || rest == "" {
		t.Errorf("Split(%q) = %d, %q; want line 2 and a message", err, line, rest)
	}
}

func TestFormat(t *testing.T) {
	for _, tt := range []struct {
		file  string
		line  int
		field string
		msg   string
		want  string
	}{
		{"run.yaml", 3, "target.smtp", "required", "run.yaml:3: field target.smtp: required"},
		{"run.yaml", 0, "target.smtp", "required", "run.yaml: field target.smtp: required"},
		{"run.yaml", 7, "", "did not find expected key", "run.yaml:7: did not find expected key"},
		{"run.yaml", 0, "", "empty file", "run.yaml: empty file"},
	} {
		if got := Format(tt.file, tt.line, tt.field, tt.msg); got != tt.want {
			t.Errorf("Format(%q, %d, %q, %q) = %q; want %q", tt.file, tt.line, tt.field, tt.msg, got, tt.want)
		}
	}
}
