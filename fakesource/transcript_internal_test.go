package fakesource

import (
	"fmt"
	"reflect"
	"testing"
)

func TestTranscriptPredict(t *testing.T) {
	for _, tt := range []struct {
		name      string
		predicted Reply
		wire      string
		wantLast  Reply // the transcript's last reply after the wire reply
	}{
		{
			name:      "confirmed",
			predicted: Reply{Command: "NOOP", Code: 250, Enhanced: "2.0.0", Text: "OK"},
			wire:      "250 2.0.0 OK\r\n",
			wantLast:  Reply{Command: "NOOP", Code: 250, Enhanced: "2.0.0", Text: "OK"},
		},
		{
			name:      "wrong",
			predicted: Reply{Command: "NOOP", Code: 250, Enhanced: "2.0.0", Text: "predicted"},
			wire:      "451 4.3.0 actual\r\n",
			wantLast:  Reply{Command: "NOOP", Code: 451, Enhanced: "4.3.0", Text: "actual"},
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var tr transcript
			tr.output([]byte("220 banner\r\n"))
			tr.input([]byte("NOOP\r\n"))
			w := tr.predict(tt.predicted)
			if got, want := len(w), 2; got != want {
				t.Fatalf("len(predict window) = %d; want %d", got, want)
			}
			tr.output([]byte(tt.wire))
			if got, want := len(tr.replies), 2; got != want {
				t.Fatalf("len(replies) = %d; want %d (no duplicate of the predicted reply)", got, want)
			}
			if got := tr.replies[1]; got != tt.wantLast {
				t.Errorf("transcript reply = %+v; want %+v", got, tt.wantLast)
			}
			if got := w[1]; got != tt.predicted {
				t.Errorf("window reply = %+v; want the prediction %+v, unchanged", got, tt.predicted)
			}
			tr.input([]byte("NOOP\r\n"))
			tr.output([]byte("250 2.0.0 again\r\n"))
			if got, want := len(tr.replies), 3; got != want {
				t.Errorf("len(replies) after another reply = %d; want %d", got, want)
			}
			if got := w[1]; got != tt.predicted {
				t.Errorf("window reply after another reply = %+v; want %+v", got, tt.predicted)
			}
		})
	}
}

func TestTranscriptWindow(t *testing.T) {
	var tr transcript
	tr.output([]byte("220 banner\r\n"))
	var windows [][]Reply
	var all []Reply
	all = append(all, Reply{Command: "CONNECT", Code: 220, Text: "banner"})
	const n = 3*replyArray + 7
	for i := range n {
		tr.input([]byte("NOOP\r\n"))
		tr.output(fmt.Appendf(nil, "250 reply %d\r\n", i))
		all = append(all, Reply{Command: "NOOP", Code: 250, Text: fmt.Sprintf("reply %d", i)})
		windows = append(windows, tr.window())
		if len(tr.replies) > replyArray || cap(tr.replies) > replyArray {
			t.Fatalf("after %d replies: len %d, cap %d; want both <= %d", i+2, len(tr.replies), cap(tr.replies), replyArray)
		}
	}
	// Every window taken is still the latest maxReplies replies of its time.
	for i, w := range windows {
		end := i + 2
		want := all[max(0, end-maxReplies):end]
		if !reflect.DeepEqual(w, want) {
			t.Fatalf("window %d: len %d, first %+v; want len %d, first %+v", i, len(w), w[0], len(want), want[0])
		}
	}
}

func commandVerbSeeds() []string {
	return []string{
		"MAIL FROM:<a@b>\r\n", "mail from:<a@b>\r\n", "QUIT\r\n", "quit", "DATA\r\n", "BDAT 12 LAST\r\n",
		"bdat  7 \r\n", "STARTTLS\r\n", "starttls extra\r\n", "EHLO\r\n", "EHL\r\n", "EHLO5\r\n",
		"RCPT\tTO:<x>\r\n", "", "\r\n", "XYZW arg\r\n", "ÉHLO x\r\n", "MAIL FROM:<ünï@b>\r\n", "\xffAIL x\r\n",
		"sTaRtTlS", "AUTH PLAIN\r\n", "a\x00cd e\r\n",
	}
}

func TestCommandVerbBytes(t *testing.T) {
	for _, line := range commandVerbSeeds() {
		gv, ga := commandVerbBytes([]byte(line))
		wv, wa := commandVerb(line)
		if gv != wv || (wv == "BDAT" && ga != wa) {
			t.Errorf("commandVerbBytes(%q) = %q, %q; want %q, %q (as commandVerb)", line, gv, ga, wv, wa)
		}
	}
}

func FuzzCommandVerbBytes(f *testing.F) {
	for _, s := range commandVerbSeeds() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, line string) {
		gv, ga := commandVerbBytes([]byte(line))
		wv, wa := commandVerb(line)
		if gv != wv || (wv == "BDAT" && ga != wa) {
			t.Errorf("commandVerbBytes(%q) = %q, %q; want %q, %q (as commandVerb)", line, gv, ga, wv, wa)
		}
	})
}

func TestRing(t *testing.T) {
	for _, max := range []int{1, 3, ringChunk, ringChunk + 5, 3*ringChunk - 1} {
		t.Run(fmt.Sprint(max), func(t *testing.T) {
			r := ring[int]{max: max}
			if got := r.since(0); len(got) != 0 {
				t.Fatalf("since(0) of an empty ring = %v; want none", got)
			}
			const first = 7
			n := 2*max + 3
			for i := range n {
				seq := uint64(first + i)
				old, evicted := r.push(seq, i)
				if wantEvicted := i >= max; evicted != wantEvicted || (evicted && old != i-max) {
					t.Fatalf("push #%d = %d, %v; want %d, %v", i, old, evicted, i-max, wantEvicted)
				}
				if p := r.at(seq); p == nil || *p != i {
					t.Fatalf("at(%d) after push = %v; want %d", seq, p, i)
				}
			}
			all := r.since(0)
			if len(all) != max {
				t.Fatalf("since(0) holds %d; want %d", len(all), max)
			}
			for j, v := range all {
				if want := n - max + j; v != want {
					t.Fatalf("since(0)[%d] = %d; want %d", j, v, want)
				}
			}
			oldest := uint64(first + n - max)
			if r.at(oldest-1) != nil || r.at(oldest+uint64(max)) != nil {
				t.Errorf("at() outside the window is not nil")
			}
			if got := r.since(oldest + uint64(max) - 1); len(got) != 1 || got[0] != n-1 {
				t.Errorf("since(newest) = %v; want [%d]", got, n-1)
			}
		})
	}
}
