// Package yamlpos says where in a YAML file a problem is, the one way splitcheck's
// configuration and scenario files report it: "file:line: field f: message".
//
// Split takes the line out of go.yaml.in/yaml's own messages ("yaml: line 3: did not
// find expected key"); Format writes the place. Both packages that read such files
// (harness/config and scenarios) keep their own error types and use these two.
package yamlpos

import (
	"fmt"
	"strconv"
	"strings"
)

// Split turns a yaml error message into its line and the rest: "yaml: line 3: did
// not find expected key" (with or without the "yaml: " prefix) is 3 and "did not
// find expected key". A message without a line is 0 and the message, unprefixed.
func Split(msg string) (line int, rest string) {
	msg = strings.TrimPrefix(msg, "yaml: ")
	after, ok := strings.CutPrefix(msg, "line ")
	if !ok {
		return 0, msg
	}
	num, text, ok := strings.Cut(after, ":")
	if !ok {
		return 0, msg
	}
	n, err := strconv.Atoi(num)
	if err != nil {
		return 0, msg
	}
	return n, strings.TrimSpace(text)
}

// Format is "file:line: field f: msg", leaving out a line of 0 and an empty field.
func Format(file string, line int, field, msg string) string {
	var b strings.Builder
	b.WriteString(file)
	if line > 0 {
		fmt.Fprintf(&b, ":%d", line)
	}
	if field != "" {
		fmt.Fprintf(&b, ": field %s", field)
	}
	b.WriteString(": ")
	b.WriteString(msg)
	return b.String()
}
