package stalwart

import (
	"strings"
)

// cliField is one --field key=value of a stalwart-cli command.
type cliField struct{ key, value string }

// cliObject drops the x: prefix: stalwart-cli names objects without it.
func cliObject(object string) string { return strings.TrimPrefix(object, "x:") }

func cliCommand(verb, object, id string, fields []cliField) string {
	parts := []string{"stalwart-cli", verb, cliObject(object)}
	if id != "" {
		parts = append(parts, shellQuote(id))
	}
	for _, f := range fields {
		parts = append(parts, "--field", shellQuote(f.key+"="+f.value))
	}
	return strings.Join(parts, " ")
}

// shellQuote quotes s for a POSIX shell when it needs it.
func shellQuote(s string) string {
	if s == "" {
		return "''"
	}
	safe := true
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.ContainsRune("-_./=:@,+%", c)) {
			safe = false
			break
		}
	}
	if safe {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// idPlaceholder stands for the id of an object the plan creates.
func idPlaceholder(what string) string { return "<id of " + what + ">" }
