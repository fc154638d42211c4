package fakesource

import (
	"bytes"
	"strings"
	"time"
)

// Message is one mail transaction the server accepted (or, from
// [Server.Rejected], refused after DATA). Values returned by the Server share
// their byte slices and maps with its record: treat them as read-only.
type Message struct {
	// Seq numbers accepted messages 1, 2, 3... in the order they were
	// recorded; it is 0 for rejected ones.
	Seq uint64
	// ConnID is the [ConnInfo.ID] of the connection that carried the message.
	ConnID uint64
	// ReceivedAt is when the end of the DATA body was read.
	ReceivedAt time.Time

	// From is the MAIL FROM reverse path without angle brackets ("" for <>).
	From string
	// MailParams holds the MAIL FROM parameters go-smtp understood, keyed by
	// upper-case keyword: SIZE, BODY, SMTPUTF8, REQUIRETLS, RET, ENVID, AUTH.
	// Keywords without a value map to "".
	MailParams map[string]string
	// Rcpts are the accepted RCPT TO recipients in order.
	Rcpts []Rcpt

	// RemoteAddr and LocalAddr are the TCP endpoints of the connection.
	RemoteAddr, LocalAddr string
	// Helo is the EHLO/HELO argument of the session that carried the message.
	Helo string
	// TLS reports whether the message arrived after a successful STARTTLS.
	TLS bool
	// AuthUser is the SASL username, "" when the client did not authenticate.
	AuthUser string

	// FirstBytes are the raw first bytes the client sent on the connection
	// (up to 128), before any TLS; they stop before an AUTH command, so
	// they never hold credentials.
	FirstBytes []byte
	// ProxyHeader reports that FirstBytes start with a PROXY v1 or v2 header:
	// evidence that a PROXY header reached a server that does not expect one.
	ProxyHeader bool

	// Header is the raw header block as received: every header line with its
	// line ending, without the blank line that ends it (at most 64 KiB).
	Header []byte
	// Received holds the values of the Received header fields, top first.
	Received []string
	// MessageID is the value of the Message-ID header field, "" if absent.
	MessageID string

	// BodySize is the size in bytes of the whole message as received after
	// DATA (header and body, dot-unstuffed, CRLF line endings as sent).
	BodySize int64
	// SHA256 is the lower-case hex SHA-256 of those BodySize bytes.
	SHA256 string
	// Body is the whole message (header and body); nil when BodySize exceeds
	// [Server.KeepBodyBytes] or the server dropped it to stay under
	// [Server.KeepTotalBytes].
	Body []byte

	// Replies lists every reply the server gave on this connection up to and
	// including the one for this message's DATA (at most the last 256).
	// The DATA reply is absent when [Server.DropAfterData] dropped the
	// connection instead of answering.
	Replies []Reply
}

// Rcpt is one accepted RCPT TO.
type Rcpt struct {
	// Addr is the forward path without angle brackets.
	Addr string
	// Params holds the RCPT parameters go-smtp understood (NOTIFY, ORCPT,
	// RRVS, BY, MT-PRIORITY), keyed by upper-case keyword.
	Params map[string]string
}

// Reply is one SMTP reply the server sent.
type Reply struct {
	// Command is the upper-case verb of the client command this reply
	// answers ("EHLO", "MAIL", "RCPT", "DATA", "AUTH", ...). The banner is
	// "CONNECT". Both the 354 and the end-of-data reply are "DATA". A reply
	// no command line prompted (an idle timeout, say) has "".
	Command string
	// Code is the three-digit reply code.
	Code int
	// Enhanced is the RFC 3463 enhanced status code such as "5.1.1", "" if
	// the reply has none.
	Enhanced string
	// Text is the reply text without code and enhanced code; the lines of a
	// multi-line reply are joined with "\n".
	Text string
}

// ConnInfo describes one TCP connection the server accepted.
type ConnInfo struct {
	// ID numbers connections 1, 2, 3... in the order they were accepted.
	ID uint64
	// RemoteAddr and LocalAddr are the TCP endpoints.
	RemoteAddr, LocalAddr string
	// At is when the connection was accepted.
	At time.Time
	// FirstBytes are the raw first bytes the client sent (up to 128, cut
	// before an AUTH command); they fill in as the client sends them.
	FirstBytes []byte
	// ProxyHeader reports that FirstBytes start with a PROXY v1 or v2 header.
	ProxyHeader bool
	// Forbidden reports that the connection arrived in ForbidConnections mode
	// and is therefore also a violation.
	Forbidden bool
}

// HeaderValues returns the values of every header field called name
// (case-insensitive) in m.Header, top first, unfolded and trimmed.
func (m Message) HeaderValues(name string) []string {
	return headerValues(m.Header, name)
}

const (
	maxFirstBytes  = 128
	maxHeaderBytes = 64 << 10
)

// proxyV2Signature starts every PROXY protocol v2 header.
var proxyV2Signature = [12]byte{'\r', '\n', '\r', '\n', 0, '\r', '\n', 'Q', 'U', 'I', 'T', '\n'}

// isProxyHeader reports whether b starts with a PROXY protocol v1 or v2
// header signature.
func isProxyHeader(b []byte) bool {
	return bytes.HasPrefix(b, []byte("PROXY ")) || bytes.HasPrefix(b, proxyV2Signature[:])
}

// headerValues parses a raw header block and returns the unfolded, trimmed
// values of the fields called name, top first.
func headerValues(header []byte, name string) []string {
	var out []string
	var cur []byte
	in := false // cur holds the value of a matching field
	flush := func() {
		if in {
			out = append(out, strings.TrimSpace(string(cur)))
		}
		in, cur = false, nil
	}
	for len(header) > 0 {
		line := header
		if i := bytes.IndexByte(header, '\n'); i >= 0 {
			line, header = header[:i], header[i+1:]
		} else {
			header = nil
		}
		line = bytes.TrimSuffix(line, []byte("\r"))
		if len(line) > 0 && (line[0] == ' ' || line[0] == '\t') {
			if in {
				cur = append(cur, line...)
			}
			continue
		}
		flush()
		colon := bytes.IndexByte(line, ':')
		if colon < 0 {
			continue
		}
		if strings.EqualFold(string(bytes.TrimRight(line[:colon], " \t")), name) {
			in = true
			cur = append([]byte(nil), line[colon+1:]...)
		}
	}
	flush()
	return out
}

// headerScanner captures the header block of a message streamed through
// Write: the bytes before the first empty line, at most max of them.
type headerScanner struct {
	max  int
	buf  []byte
	done bool
}

// Write implements io.Writer; it never fails.
func (h *headerScanner) Write(p []byte) (int, error) {
	n := len(p)
	if h.done {
		return n, nil
	}
	from := max(len(h.buf)-2, 0)
	room := h.max - len(h.buf)
	if len(p) > room {
		p = p[:room]
	}
	h.buf = append(h.buf, p...)
	if end, ok := headerEnd(h.buf, from); ok {
		h.buf = h.buf[:end]
		h.done = true
	} else if len(h.buf) >= h.max {
		h.done = true
	}
	return n, nil
}

// headerEnd returns the length of the header block in b if b contains the
// empty line that ends it; the search for "\n\r\n" and "\n\n" starts at from.
func headerEnd(b []byte, from int) (int, bool) {
	if bytes.HasPrefix(b, []byte("\r\n")) || bytes.HasPrefix(b, []byte("\n")) {
		return 0, true
	}
	for i := from; i < len(b)-1; i++ {
		if b[i] != '\n' {
			continue
		}
		if b[i+1] == '\n' || (b[i+1] == '\r' && i+2 < len(b) && b[i+2] == '\n') {
			return i + 1, true
		}
	}
	return 0, false
}
