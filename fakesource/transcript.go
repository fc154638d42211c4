package fakesource

import (
	"bytes"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Limits that keep a transcript's memory bounded whatever the client sends.
const (
	maxReplies    = 256      // replies kept per connection (the latest)
	maxQueue      = 1024     // command verbs awaiting a reply
	maxHold       = 64 << 10 // input held back after DATA, AUTH or STARTTLS
	maxCmdLine    = 4 << 10  // bytes of one command line kept to find its verb
	maxReplyLine  = 4 << 10  // bytes of one reply line kept
	maxReplyLines = 128      // lines of one multi-line reply kept
)

// Input modes of a transcript.
const (
	modeCommand = iota // reading command lines
	modeData           // reading a DATA body, looking for CRLF.CRLF
	modeSkip           // skipping a BDAT chunk
)

// States of the DATA end detector; they mirror go-smtp's dataReader so that
// the transcript ends the body exactly where go-smtp does.
const (
	dataBeginLine = iota
	dataDot
	dataDotCR
	dataCR
	dataMiddle
)

// transcript follows one SMTP connection from both directions, as go-smtp
// reads and writes it, and pairs every reply with the command it answers.
// It keeps only command verbs, never arguments or SASL responses.
//
// Input (what go-smtp read from the client) is parsed eagerly into a queue of
// verbs, except after DATA, AUTH or a SASL response and STARTTLS: what follows
// those depends on the reply, so it is held until the reply is seen.
type transcript struct {
	// input side
	mode      int
	dataState int
	skip      uint64
	line      []byte
	queue     []string
	holding   bool
	hold      []byte
	saslNext  bool
	delays    []string // verbs read since the caller last took them

	// output side
	out    []byte
	lines  []string
	banner bool
	// replies is append-only: recorded messages share windows of it (see
	// window), so an entry is never changed once written. When it is full
	// and holds maxReplies or more, the latest maxReplies-1 move to a new
	// array of replyArray entries, which bounds it and makes the move cheap
	// per reply.
	replies []Reply
	// predicted reports that the last entry of replies is a reply the
	// server is about to send (see predict), not yet seen on the wire.
	predicted bool
}

// replyArray is the capacity of a new replies array after a move.
const replyArray = 2 * maxReplies

// input feeds bytes go-smtp read from the client.
func (t *transcript) input(p []byte) {
	if t.holding {
		t.appendHold(p)
		return
	}
	t.feed(p)
}

func (t *transcript) appendHold(p []byte) { t.hold = appendMax(t.hold, p, maxHold, 0) }

// appendMax appends to dst as much of p as keeps it within limit bytes,
// allocating initCap first when dst is nil and initCap > 0.
func appendMax(dst, p []byte, limit, initCap int) []byte {
	if dst == nil && initCap > 0 {
		dst = make([]byte, 0, initCap)
	}
	if room := limit - len(dst); len(p) > room {
		p = p[:room]
	}
	return append(dst, p...)
}

func (t *transcript) feed(p []byte) {
	for len(p) > 0 {
		if t.holding {
			t.appendHold(p)
			return
		}
		switch t.mode {
		case modeSkip:
			n := uint64(len(p))
			if n > t.skip {
				n = t.skip
			}
			p = p[n:]
			t.skip -= n
			if t.skip == 0 {
				t.mode = modeCommand
			}
		case modeData:
			p = t.scanData(p)
		default:
			i := bytes.IndexByte(p, '\n')
			if i < 0 {
				t.appendLine(p)
				return
			}
			t.appendLine(p[:i+1])
			p = p[i+1:]
			t.commandLine()
		}
	}
}

// Initial capacities of a transcript's buffers, enough for a plain session
// without growing.
const (
	initReplies = 16
	initQueue   = 4
	initLine    = 256
)

func (t *transcript) appendLine(p []byte) { t.line = appendMax(t.line, p, maxCmdLine, initLine) }

// scanData consumes DATA body bytes and returns what follows the end marker.
func (t *transcript) scanData(p []byte) []byte {
	for i, c := range p {
		switch t.dataState {
		case dataBeginLine:
			switch c {
			case '.':
				t.dataState = dataDot
			case '\r':
				t.dataState = dataCR
			default:
				t.dataState = dataMiddle
			}
		case dataDot:
			if c == '\r' {
				t.dataState = dataDotCR
			} else {
				t.dataState = dataMiddle
			}
		case dataDotCR:
			if c == '\n' {
				t.mode = modeCommand
				t.push("DATA") // the end-of-data reply
				return p[i+1:]
			}
			t.dataState = dataMiddle
		case dataCR:
			if c == '\n' {
				t.dataState = dataBeginLine
			} else {
				t.dataState = dataMiddle
			}
		case dataMiddle:
			if c == '\r' {
				t.dataState = dataCR
			}
		}
	}
	return nil
}

func (t *transcript) push(verb string) {
	if len(t.queue) >= maxQueue {
		t.pop()
	}
	if t.queue == nil {
		t.queue = make([]string, 0, initQueue)
	}
	t.queue = append(t.queue, verb)
}

// pop removes and returns the oldest queued verb. It shifts the rest down
// rather than reslicing, so the queue keeps its array and pushes do not
// allocate.
func (t *transcript) pop() string {
	v := t.queue[0]
	n := copy(t.queue, t.queue[1:])
	t.queue[n] = ""
	t.queue = t.queue[:n]
	return v
}

// commandLine handles the complete line in t.line.
func (t *transcript) commandLine() {
	defer func() { t.line = t.line[:0] }()
	if t.saslNext {
		// A SASL response: credentials, never parsed or kept.
		t.saslNext = false
		t.push("AUTH")
		t.holding = true
		return
	}
	verb, arg := commandVerbBytes(t.line)
	t.push(verb)
	switch verb {
	case "DATA", "AUTH", "STARTTLS":
		t.holding = true
	case "BDAT":
		if n, ok := bdatSize(arg); ok && n > 0 {
			t.mode = modeSkip
			t.skip = n
		}
	}
	switch verb {
	case "", "MAIL", "RCPT", "DATA":
		// MAIL, RCPT and DATA are delayed by the session itself.
	default:
		if len(t.delays) < maxQueue {
			t.delays = append(t.delays, verb)
		}
	}
}

// commandVerbBytes is commandVerb(string(line)) without allocating for an
// ASCII line with a common verb.
func commandVerbBytes(line []byte) (verb, arg string) {
	for _, c := range line {
		if c >= utf8.RuneSelf {
			return commandVerb(string(line))
		}
	}
	line = bytes.TrimRight(line, "\r\n")
	switch {
	case len(line) >= 8 && bytes.EqualFold(line[:8], []byte("STARTTLS")):
		return "STARTTLS", ""
	case len(line) == 4:
		return upperVerb(line), ""
	case len(line) < 6 || line[4] != ' ':
		return "", ""
	}
	verb = upperVerb(line[:4])
	if verb == "BDAT" {
		// Only BDAT's argument is used (its chunk size).
		arg = strings.TrimSpace(string(line[5:]))
	}
	return verb, arg
}

// upperVerb upper-cases a four-byte ASCII verb, returning a constant for
// the verbs SMTP clients send.
func upperVerb(b []byte) string {
	var u [4]byte
	for i, c := range b[:4] {
		if 'a' <= c && c <= 'z' {
			c -= 'a' - 'A'
		}
		u[i] = c
	}
	switch string(u[:]) {
	case "EHLO":
		return "EHLO"
	case "HELO":
		return "HELO"
	case "LHLO":
		return "LHLO"
	case "MAIL":
		return "MAIL"
	case "RCPT":
		return "RCPT"
	case "DATA":
		return "DATA"
	case "BDAT":
		return "BDAT"
	case "RSET":
		return "RSET"
	case "NOOP":
		return "NOOP"
	case "QUIT":
		return "QUIT"
	case "AUTH":
		return "AUTH"
	case "VRFY":
		return "VRFY"
	}
	return string(u[:])
}

// commandVerb mirrors go-smtp's parseCmd: it returns the upper-case verb and
// the argument of a command line, or "" for a line go-smtp calls malformed.
func commandVerb(line string) (verb, arg string) {
	line = strings.TrimRight(line, "\r\n")
	switch {
	case strings.HasPrefix(strings.ToUpper(line), "STARTTLS"): // a cold path: hot lines go through commandVerbBytes
		return "STARTTLS", ""
	case len(line) == 4:
		return strings.ToUpper(line), ""
	case len(line) < 6 || line[4] != ' ':
		return "", ""
	}
	return strings.ToUpper(line[:4]), strings.TrimSpace(line[5:])
}

// bdatSize mirrors go-smtp's handleBdat: it returns the chunk size that
// follows a BDAT command, and whether go-smtp reads that chunk at all.
func bdatSize(arg string) (uint64, bool) {
	f := strings.Fields(arg)
	if len(f) == 0 || len(f) > 2 || (len(f) == 2 && !strings.EqualFold(f[1], "LAST")) {
		return 0, false
	}
	n, err := strconv.ParseUint(f[0], 10, 32)
	return n, err == nil
}

// output feeds bytes go-smtp wrote to the client.
func (t *transcript) output(p []byte) {
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			t.appendOut(p)
			return
		}
		t.appendOut(p[:i+1])
		p = p[i+1:]
		t.replyLine(strings.TrimRight(string(t.out), "\r\n"))
		t.out = t.out[:0]
	}
}

func (t *transcript) appendOut(p []byte) { t.out = appendMax(t.out, p, maxReplyLine, initLine) }

func (t *transcript) replyLine(line string) {
	if len(line) < 3 {
		return
	}
	code, err := strconv.Atoi(line[:3])
	if err != nil || code < 100 || code > 999 {
		return
	}
	text := ""
	if len(line) > 3 {
		text = line[4:]
		if line[3] == '-' {
			if len(t.lines) < maxReplyLines {
				t.lines = append(t.lines, text)
			}
			return
		}
	}
	enhanced, rest := splitEnhanced(text)
	t.lines = append(t.lines, rest)
	r := Reply{Code: code, Enhanced: enhanced, Text: strings.Join(t.lines, "\n")}
	t.lines = t.lines[:0]
	t.reply(r)
}

// splitEnhanced splits an RFC 3463 enhanced status code off the front of text.
func splitEnhanced(text string) (enhanced, rest string) {
	code, rest, _ := strings.Cut(text, " ")
	class, subject, ok1 := strings.Cut(code, ".")
	subject, detail, ok2 := strings.Cut(subject, ".")
	if !ok1 || !ok2 || len(class) != 1 || !strings.Contains("245", class) ||
		!isCodePart(subject) || !isCodePart(detail) {
		return "", text
	}
	return code, rest
}

// isCodePart reports whether p is one to three ASCII digits.
func isCodePart(p string) bool {
	if len(p) < 1 || len(p) > 3 {
		return false
	}
	for i := 0; i < len(p); i++ {
		if !isDigit(p[i]) {
			return false
		}
	}
	return true
}

// reply records a complete reply and resolves a held command.
func (t *transcript) reply(r Reply) {
	switch {
	case !t.banner:
		t.banner = true
		r.Command = "CONNECT"
	case len(t.queue) > 0:
		r.Command = t.pop()
	}
	if t.predicted {
		t.predicted = false
		if n := len(t.replies); t.replies[n-1] != r {
			// A wrong prediction stays with the message it was given to;
			// the transcript gets the real reply, in a new array.
			t.replies = t.replies[: n-1 : n-1]
			t.appendReply(r)
		}
	} else {
		t.appendReply(r)
	}

	if !t.holding || len(t.queue) > 0 || r.Command == "" {
		return
	}
	held := t.hold
	t.hold = nil
	t.holding = false
	switch r.Command {
	case "DATA":
		if r.Code == 354 {
			t.mode = modeData
			t.dataState = dataBeginLine
		}
	case "AUTH":
		if r.Code == 334 {
			t.saslNext = true
		}
	case "STARTTLS":
		if r.Code == 220 {
			// go-smtp starts TLS now; plaintext it had buffered is lost.
			held = nil
			t.line = t.line[:0]
		}
	}
	t.feed(held)
}

// takeDelays returns and clears the verbs read since the last call.
func (t *transcript) takeDelays() []string {
	d := t.delays
	t.delays = nil
	return d
}

// pending returns the verb the next reply will answer, "" if none is known.
func (t *transcript) pending() string {
	if len(t.queue) == 0 {
		return ""
	}
	return t.queue[0]
}

// appendReply adds r to replies, moving the latest ones to a new array
// when the current one is full and long enough.
func (t *transcript) appendReply(r Reply) {
	if n := len(t.replies); n == cap(t.replies) && n >= maxReplies {
		moved := make([]Reply, maxReplies-1, replyArray)
		copy(moved, t.replies[n-(maxReplies-1):])
		t.replies = moved
	}
	if t.replies == nil {
		t.replies = make([]Reply, 0, initReplies)
	}
	t.replies = append(t.replies, r)
}

// window returns the latest maxReplies replies (at most). It shares the
// transcript's array, whose entries never change, and its capacity ends
// at its length, so an append to it copies.
func (t *transcript) window() []Reply {
	n := len(t.replies)
	if n == 0 {
		return nil
	}
	return t.replies[max(0, n-maxReplies):n:n]
}

// predict records r as the reply about to answer the pending command and
// returns the window that ends with it, read-only. When the reply is
// written, reply confirms the prediction or, if it differs, replaces it
// in the transcript (not in the returned window).
func (t *transcript) predict(r Reply) []Reply {
	// An unconfirmed earlier prediction (its write failed) stays as it is.
	if r.Command == "" && len(t.queue) > 0 {
		r.Command = t.queue[0]
	}
	t.appendReply(r)
	t.predicted = true
	return t.window()
}
