package scenarios

import "strings"

// ProbeHeader is the header field every probe message carries with its probe id.
const ProbeHeader = "X-Splitcheck-Probe"

// MessageIDDomain is the right-hand side of every probe's Message-ID.
const MessageIDDomain = "splitcheck.test"

// MessageID is the Message-ID header value of the probe with id probeID:
// "<probeID@splitcheck.test>".
func MessageID(probeID string) string {
	return "<" + probeID + "@" + MessageIDDomain + ">"
}

// ProbeIDFromMessageID returns the probe id in a Message-ID value made by
// MessageID, and false for any other value.
func ProbeIDFromMessageID(v string) (string, bool) {
	v = strings.TrimSpace(v)
	inner, ok := strings.CutPrefix(v, "<")
	if !ok {
		return "", false
	}
	inner, ok = strings.CutSuffix(inner, "@"+MessageIDDomain+">")
	if !ok || inner == "" || strings.ContainsAny(inner, "<>@ \t\r\n") {
		return "", false
	}
	return inner, true
}
