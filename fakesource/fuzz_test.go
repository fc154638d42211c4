package fakesource

import (
	"bufio"
	"bytes"
	"net"
	"strings"
	"testing"

	"github.com/pires/go-proxyproto"
)

// Captures of what clients really sent, used as fuzz seeds.
var (
	seedSession = "EHLO client.example\r\nMAIL FROM:<alice@source.example> BODY=8BITMIME SIZE=321\r\n" +
		"RCPT TO:<bob@corp.example> NOTIFY=FAILURE,DELAY\r\nDATA\r\n"
	seedMessage = "Received: from mx.source.example (mx.source.example [203.0.113.7])\r\n" +
		"\tby relay.example (Postfix) with ESMTPS id 4XyZ; Tue, 1 Jul 2025 10:00:00 +0000 (UTC)\r\n" +
		"Message-ID: <probe-1@test>\r\nX-Splitcheck-Probe: p-1\r\nSubject: hi\r\n\r\nbody\r\n.\r\n"
	seedReplies = "220 fakesource.test ESMTP Service Ready\r\n250-Hello client.example\r\n250-PIPELINING\r\n" +
		"250 SIZE 10485760\r\n250 2.0.0 Roger, accepting mail from <alice@source.example>\r\n" +
		"250 2.0.0 I'll make sure <bob@corp.example> gets this\r\n354 Go ahead. End your data with <CR><LF>.<CR><LF>\r\n" +
		"250 2.0.0 OK: queued\r\n"
)

func proxySeeds() [][]byte {
	src := &net.TCPAddr{IP: net.IPv4(203, 0, 113, 7), Port: 40000}
	dst := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 25}
	src6 := &net.TCPAddr{IP: net.ParseIP("2001:db8::7"), Port: 40000}
	dst6 := &net.TCPAddr{IP: net.ParseIP("::1"), Port: 25}
	var out [][]byte
	for _, h := range []*proxyproto.Header{
		proxyproto.HeaderProxyFromAddrs(1, src, dst),
		proxyproto.HeaderProxyFromAddrs(2, src, dst),
		proxyproto.HeaderProxyFromAddrs(1, src6, dst6),
		proxyproto.HeaderProxyFromAddrs(2, src6, dst6),
	} {
		b, err := h.Format()
		if err == nil {
			out = append(out, append(b, "EHLO x\r\n"...))
		}
	}
	return out
}

// FuzzFirstBytes checks the PROXY header detection on a connection's first
// bytes: whatever go-proxyproto accepts as a header must be flagged.
func FuzzFirstBytes(f *testing.F) {
	for _, s := range proxySeeds() {
		f.Add(s)
	}
	f.Add([]byte(seedSession))
	f.Add([]byte("PROXY UNKNOWN\r\nEHLO x\r\n"))
	f.Add([]byte{0x16, 0x03, 0x01, 0x00, 0xa5, 0x01}) // a TLS ClientHello's start
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) > maxFirstBytes {
			b = b[:maxFirstBytes]
		}
		got := isProxyHeader(b)
		h, err := proxyproto.Read(bufio.NewReader(bytes.NewReader(b)))
		if err == nil && h != nil && !got {
			t.Errorf("isProxyHeader(%q) = false; go-proxyproto reads a header from it", b)
		}
	})
}

// refHeader is the header block of a whole message, found the slow way.
func refHeader(msg []byte) []byte {
	if bytes.HasPrefix(msg, []byte("\r\n")) || bytes.HasPrefix(msg, []byte("\n")) {
		return msg[:0]
	}
	end := -1
	for _, sep := range []string{"\n\r\n", "\n\n"} {
		if i := bytes.Index(msg, []byte(sep)); i >= 0 && (end < 0 || i < end) {
			end = i
		}
	}
	if end < 0 {
		return msg
	}
	return msg[:end+1]
}

// FuzzHeaderBlock checks that the streaming header capture finds the same
// header block as a whole-message search, however the stream is chunked,
// and that HeaderValues copes with any header block.
func FuzzHeaderBlock(f *testing.F) {
	f.Add([]byte(seedMessage), uint8(7))
	f.Add([]byte("Subject: x\n\nbody"), uint8(1))
	f.Add([]byte("\r\nno header"), uint8(2))
	f.Add([]byte("Received: a\r\n b\r\nReceived: c\r"), uint8(3))
	f.Fuzz(func(t *testing.T, msg []byte, chunk uint8) {
		hs := headerScanner{max: maxHeaderBytes}
		step := int(chunk)%31 + 1
		for p := msg; len(p) > 0; {
			n := min(step, len(p))
			hs.Write(p[:n])
			p = p[n:]
		}
		want := refHeader(msg)
		if len(want)+2 < maxHeaderBytes && !bytes.Equal(hs.buf, want) {
			t.Errorf("header of %q in chunks of %d = %q; want %q", msg, step, hs.buf, want)
		}
		if len(hs.buf) > maxHeaderBytes {
			t.Errorf("header length %d; want at most %d", len(hs.buf), maxHeaderBytes)
		}
		lines := bytes.Count(hs.buf, []byte("\n")) + 1
		for _, name := range []string{"Received", "Message-ID", "subject"} {
			if vs := headerValues(hs.buf, name); len(vs) > lines {
				t.Errorf("headerValues(%q) = %d values from %d lines", name, len(vs), lines)
			}
		}
	})
}

// FuzzTranscript feeds arbitrary client and server bytes, interleaved, into
// a transcript: it must not panic, must stay within its memory bounds, and
// must keep nothing but short verbs as commands.
func FuzzTranscript(f *testing.F) {
	f.Add([]byte(seedSession+"Subject: x\r\n\r\nbody\r\n.\r\nQUIT\r\n"), []byte(seedReplies+"221 2.0.0 Bye\r\n"), uint8(5))
	f.Add([]byte("EHLO x\r\nAUTH LOGIN YWxpY2U=\r\ncGE1NQ==\r\n"), []byte("220 x\r\n250 Hello x\r\n334 UGFzc3dvcmQ6\r\n235 2.0.0 Authentication succeeded\r\n"), uint8(3))
	f.Add([]byte("EHLO x\r\nBDAT 5 LAST\r\nDATA\r\nQUIT\r\n"), []byte("220 x\r\n250 Hello\r\n250 2.0.0 OK\r\n221 Bye\r\n"), uint8(9))
	f.Add([]byte("EHLO x\r\nSTARTTLS\r\nEHLO y\r\n"), []byte("220 x\r\n250 Hello\r\n220 2.0.0 Ready to start TLS\r\n250 Hello\r\n"), uint8(4))
	f.Fuzz(func(t *testing.T, in, out []byte, chunk uint8) {
		var tr transcript
		step := int(chunk)%17 + 1
		for len(in) > 0 || len(out) > 0 {
			n := min(step, len(in))
			tr.input(in[:n])
			in = in[n:]
			n = min(step, len(out))
			tr.output(out[:n])
			out = out[n:]
			_ = tr.takeDelays()
		}
		// The array holds up to replyArray replies; what is handed out, the latest maxReplies.
		if len(tr.replies) > replyArray || len(tr.window()) > maxReplies || len(tr.queue) > maxQueue || len(tr.hold) > maxHold ||
			len(tr.line) > maxCmdLine || len(tr.out) > maxReplyLine || len(tr.lines) > maxReplyLines {
			t.Fatalf("bounds exceeded: replies %d queue %d hold %d line %d out %d lines %d",
				len(tr.replies), len(tr.queue), len(tr.hold), len(tr.line), len(tr.out), len(tr.lines))
		}
		for _, r := range tr.window() {
			if len(r.Command) > len("STARTTLS") || strings.ToUpper(r.Command) != r.Command {
				t.Errorf("reply command %q; want a short upper-case verb", r.Command)
			}
			if r.Code < 100 || r.Code > 999 {
				t.Errorf("reply code %d out of range", r.Code)
			}
		}
	})
}

func TestTranscriptSeeds(t *testing.T) {
	// The seeds above, fed whole, pair every reply with its command.
	tests := []struct {
		name    string
		in, out string
		want    []string
	}{
		{"session", seedSession + "Subject: x\r\n\r\nbody\r\n.\r\n", seedReplies,
			[]string{"CONNECT", "EHLO", "MAIL", "RCPT", "DATA", "DATA"}},
		{"auth login", "EHLO x\r\nAUTH LOGIN YWxpY2U=\r\ncGE1NQ==\r\nNOOP\r\n",
			"220 x\r\n250 Hello x\r\n334 UGFzc3dvcmQ6\r\n235 2.0.0 Authentication succeeded\r\n250 ok\r\n",
			[]string{"CONNECT", "EHLO", "AUTH", "AUTH", "NOOP"}},
		{"bdat chunk not parsed", "EHLO x\r\nBDAT 12 LAST\r\nDATA\r\nQUIT\r\nNOOP\r\n",
			"220 x\r\n250 Hello\r\n250 2.0.0 OK\r\n250 ok\r\n",
			[]string{"CONNECT", "EHLO", "BDAT", "NOOP"}},
		{"data refused, next line is a command", "EHLO x\r\nDATA\r\nNOOP\r\n",
			"220 x\r\n250 Hello\r\n502 5.5.1 Missing RCPT TO command.\r\n250 ok\r\n",
			[]string{"CONNECT", "EHLO", "DATA", "NOOP"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var tr transcript
			tr.input([]byte(tt.in))
			tr.output([]byte(tt.out))
			var got []string
			for _, r := range tr.window() {
				got = append(got, r.Command)
			}
			if strings.Join(got, " ") != strings.Join(tt.want, " ") {
				t.Errorf("commands = %v; want %v", got, tt.want)
			}
		})
	}
}
