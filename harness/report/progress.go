package report

import (
	"fmt"
	"io"
	"strings"
	"sync"
	"unicode/utf8"

	"github.com/splitcheck/splitcheck/scenarios"
)

// Step is one progress event: a check reached a stage ("send", "wait delivery", ...)
// or finished with a Status. Done of Total checks have a verdict.
type Step struct {
	Check  string
	Stage  string
	Status scenarios.Status // empty until the check has a verdict
	Done   int
	Total  int
}

// Progress reports a run's progress on stderr. On a terminal it keeps one live line,
// rewritten in place with every step ("[3/20] waiting: route/local/alice@example.org");
// elsewhere it writes one plain line per judged check ("[4/20] PASS route/..."), so a CI
// log shows how far a slow run got without a line for every stage. Its methods may be
// called from several goroutines. It starts no goroutines.
type Progress struct {
	// W receives the progress (usually stderr).
	W io.Writer
	// TTY says W is a terminal: keep one live line instead of printing lines.
	TTY bool
	// Width is the terminal's width in columns; 0 means 80. Live lines are cut to fit.
	Width int

	mu   sync.Mutex
	live bool   // a live line is on the screen
	last string // the live line, redrawn after Write
}

// Update reports one step. Write errors are ignored: progress is best effort.
func (p *Progress) Update(s Step) {
	p.mu.Lock()
	defer p.mu.Unlock()
	line := stepLine(s)
	if !p.TTY {
		if s.Status != "" {
			fmt.Fprintln(p.W, line)
		}
		return
	}
	width := p.Width
	if width <= 0 {
		width = 80
	}
	if n := max(width-1, 10); utf8.RuneCountInString(line) > n {
		line = string([]rune(line)[:n-3]) + "..."
	}
	// \r and erase-line: a narrower line never leaves the tail of the last one.
	fmt.Fprint(p.W, "\r\x1b[K"+line)
	p.live, p.last = true, line
}

// Write writes b (whole log lines) to W above the live line: the live line is erased,
// b written, and the live line drawn again below it. Off a terminal it just writes b.
// Point a logger at the Progress so logs and the live line do not overwrite each other.
func (p *Progress) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.live {
		return p.W.Write(b)
	}
	if _, err := io.WriteString(p.W, "\r\x1b[K"); err != nil {
		return 0, err
	}
	n, err := p.W.Write(b)
	if err != nil {
		return n, err
	}
	_, err = io.WriteString(p.W, p.last)
	return n, err
}

// Clear erases the live line, so the next output starts on a clean line. Call it
// before printing anything else to the same terminal. It does nothing off a terminal.
func (p *Progress) Clear() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.live {
		fmt.Fprint(p.W, "\r\x1b[K")
		p.live, p.last = false, ""
	}
}

func stepLine(s Step) string {
	var b strings.Builder
	fmt.Fprintf(&b, "[%d/%d] ", s.Done, s.Total)
	name := cell(s.Check)
	switch {
	case s.Status != "":
		fmt.Fprintf(&b, "%s %s", statusWord(s.Status), name)
	case s.Stage != "":
		fmt.Fprintf(&b, "%s: %s", cell(s.Stage), name)
	default:
		b.WriteString(name)
	}
	return b.String()
}
