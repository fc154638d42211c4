package bulk

import (
	"bufio"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"net/mail"
	"slices"
	"strings"

	"github.com/splitcheck/splitcheck/scenarios"
)

// MaxLineBytes is the longest line an input list may have; a longer line is a
// malformed row (its bytes are skipped, never held).
const MaxLineBytes = 4096

// Row is one recipient of the list and the route the plan expects for it.
type Row struct {
	// Line is the row's 1-based line number in its input.
	Line    int
	Address string
	Expect  scenarios.Route
}

// RowError is a malformed row. The reader can go on after it: Next returns the
// following row on its next call.
type RowError struct {
	Name string // the input's name, such as a file path
	Line int
	Text string // the row as read, cut to 120 bytes
	Msg  string
}

func (e *RowError) Error() string {
	return fmt.Sprintf("%s:%d: %s: %q", e.Name, e.Line, e.Msg, e.Text)
}

// Rows is a stream of rows. Next returns io.EOF after the last row, a *RowError
// for a malformed row (after which Next may be called again), or another error
// when the input itself fails.
type Rows interface {
	Next() (Row, error)
}

// lineReader reads lines of at most MaxLineBytes without ever holding more.
type lineReader struct {
	br   *bufio.Reader
	line int
}

func newLineReader(r io.Reader) *lineReader {
	return &lineReader{br: bufio.NewReaderSize(r, MaxLineBytes+2)}
}

// next returns the next line without its line ending; tooLong reports that the
// line exceeded MaxLineBytes (text is then its start).
func (l *lineReader) next() (text string, tooLong bool, err error) {
	b, err := l.br.ReadSlice('\n')
	switch {
	case errors.Is(err, bufio.ErrBufferFull):
		text = string(b[:120])
		for errors.Is(err, bufio.ErrBufferFull) {
			_, err = l.br.ReadSlice('\n')
		}
		l.line++
		if err != nil && !errors.Is(err, io.EOF) {
			return "", false, fmt.Errorf("read line %d: %w", l.line, err)
		}
		return text, true, nil
	case errors.Is(err, io.EOF) && len(b) == 0:
		return "", false, io.EOF
	case err != nil && !errors.Is(err, io.EOF):
		return "", false, fmt.Errorf("read line %d: %w", l.line+1, err)
	}
	l.line++
	b = b[:len(b)-bytesSuffix(b)]
	return string(b), false, nil
}

// bytesSuffix is the length of the line ending at the end of b.
func bytesSuffix(b []byte) int {
	n := 0
	if len(b) > 0 && b[len(b)-1] == '\n' {
		n++
		if len(b) > 1 && b[len(b)-2] == '\r' {
			n++
		}
	}
	return n
}

func cut(s string) string {
	if len(s) > 120 {
		return s[:120]
	}
	return s
}

// CSV reads "address,route" rows, one per line: route is local, source, mx or
// reject (any case). Blank lines and lines starting with # are skipped, and so is
// a first line "address,route". Fields may be quoted as in RFC 4180, but a row
// never spans lines. Memory stays bounded by one line whatever the input's size.
type CSV struct {
	// Name is used in errors, such as the file's path.
	Name string
	// Domains, when set, are the migrated domains: a local or source row outside
	// them, and an mx or reject row inside them, is malformed.
	Domains []string

	lr     *lineReader
	header bool // a header line is still allowed
}

// NewCSV returns a CSV reader of r.
func NewCSV(r io.Reader, name string, domains []string) *CSV {
	return &CSV{Name: name, Domains: domains, lr: newLineReader(r), header: true}
}

// Next returns the next row.
func (c *CSV) Next() (Row, error) {
	for {
		text, tooLong, err := c.lr.next()
		if err != nil {
			return Row{}, err
		}
		line := c.lr.line
		if tooLong {
			return Row{}, &RowError{Name: c.Name, Line: line, Text: text, Msg: fmt.Sprintf("line longer than %d bytes", MaxLineBytes)}
		}
		trimmed := strings.TrimSpace(text)
		if trimmed == "" || strings.HasPrefix(trimmed, "#") {
			continue
		}
		fields, err := splitCSV(trimmed)
		if err != nil {
			c.header = false
			return Row{}, &RowError{Name: c.Name, Line: line, Text: cut(text), Msg: err.Error()}
		}
		if c.header {
			c.header = false
			if len(fields) == 2 && strings.EqualFold(strings.TrimSpace(fields[0]), "address") &&
				strings.EqualFold(strings.TrimSpace(fields[1]), "route") {
				continue
			}
		}
		if len(fields) != 2 {
			return Row{}, &RowError{Name: c.Name, Line: line, Text: cut(text),
				Msg: fmt.Sprintf("want 2 fields (address,route), got %d", len(fields))}
		}
		row := Row{Line: line, Address: strings.TrimSpace(fields[0])}
		if msg := checkAddress(row.Address); msg != "" {
			return Row{}, &RowError{Name: c.Name, Line: line, Text: cut(text), Msg: msg}
		}
		route, ok := parseRoute(fields[1])
		if !ok {
			return Row{}, &RowError{Name: c.Name, Line: line, Text: cut(text),
				Msg: fmt.Sprintf("route %q is not local, source, mx or reject", strings.TrimSpace(fields[1]))}
		}
		row.Expect = route
		if msg := checkDomain(row, c.Domains); msg != "" {
			return Row{}, &RowError{Name: c.Name, Line: line, Text: cut(text), Msg: msg}
		}
		return row, nil
	}
}

// splitCSV splits one line into fields; quotes are handled by encoding/csv.
func splitCSV(line string) ([]string, error) {
	if !strings.Contains(line, `"`) {
		return strings.Split(line, ","), nil
	}
	r := csv.NewReader(strings.NewReader(line))
	r.FieldsPerRecord = -1
	fields, err := r.Read()
	if err != nil {
		var pe *csv.ParseError
		if errors.As(err, &pe) {
			return nil, fmt.Errorf("bad CSV: %v", pe.Err)
		}
		return nil, fmt.Errorf("bad CSV: %v", err)
	}
	return fields, nil
}

func parseRoute(s string) (scenarios.Route, bool) {
	switch r := scenarios.Route(strings.ToLower(strings.TrimSpace(s))); r {
	case scenarios.RouteLocal, scenarios.RouteSource, scenarios.RouteMX, scenarios.RouteReject:
		return r, true
	}
	return "", false
}

// checkAddress returns why addr is not a bare e-mail address, or "".
func checkAddress(addr string) string {
	if addr == "" {
		return "empty address"
	}
	if strings.ContainsAny(addr, " \t<>") {
		return fmt.Sprintf("%q is not a bare e-mail address", addr)
	}
	a, err := mail.ParseAddress(addr)
	if err != nil || a.Address != addr || a.Name != "" || !strings.Contains(addr, "@") {
		return fmt.Sprintf("%q is not a bare e-mail address", addr)
	}
	return ""
}

func domainOf(addr string) string {
	return strings.ToLower(addr[strings.LastIndexByte(addr, '@')+1:])
}

func inDomains(addr string, domains []string) bool {
	d := domainOf(addr)
	return slices.ContainsFunc(domains, func(x string) bool { return strings.EqualFold(x, d) })
}

// checkDomain returns why row's route contradicts the migrated domains, or "".
func checkDomain(row Row, domains []string) string {
	if len(domains) == 0 {
		return ""
	}
	in := inDomains(row.Address, domains)
	switch row.Expect {
	case scenarios.RouteLocal, scenarios.RouteSource:
		if !in {
			return fmt.Sprintf("route %s for %s, which is not in a migrated domain", row.Expect, row.Address)
		}
	default:
		if in {
			return fmt.Sprintf("route %s for %s, which is in a migrated domain", row.Expect, row.Address)
		}
	}
	return ""
}

// Derived reads one address per line (blank lines and # comments skipped) from
// the list of all addresses of the migrated domains, and derives each route:
// local when the address is a migrated account, source otherwise. An address
// outside the migrated domains is malformed.
type Derived struct {
	Name     string
	Domains  []string
	Migrated Accounts
	lr       *lineReader
}

// NewDerived returns a reader of the addresses in all.
func NewDerived(all io.Reader, name string, domains []string, migrated Accounts) *Derived {
	return &Derived{Name: name, Domains: domains, Migrated: migrated, lr: newLineReader(all)}
}

// Next returns the next row.
func (d *Derived) Next() (Row, error) {
	for {
		text, tooLong, err := d.lr.next()
		if err != nil {
			return Row{}, err
		}
		line := d.lr.line
		if tooLong {
			return Row{}, &RowError{Name: d.Name, Line: line, Text: text, Msg: fmt.Sprintf("line longer than %d bytes", MaxLineBytes)}
		}
		addr := strings.TrimSpace(text)
		if addr == "" || strings.HasPrefix(addr, "#") {
			continue
		}
		if msg := checkAddress(addr); msg != "" {
			return Row{}, &RowError{Name: d.Name, Line: line, Text: cut(text), Msg: msg}
		}
		if !inDomains(addr, d.Domains) {
			return Row{}, &RowError{Name: d.Name, Line: line, Text: cut(text),
				Msg: fmt.Sprintf("%s is not in a migrated domain", addr)}
		}
		row := Row{Line: line, Address: addr, Expect: scenarios.RouteSource}
		if d.Migrated.Contains(addr) {
			row.Expect = scenarios.RouteLocal
		}
		return row, nil
	}
}

// Accounts is a set of migrated accounts (addresses compared without case). It is
// held in memory: it is the smaller of the two lists.
type Accounts map[string]struct{}

// Contains reports whether addr is in the set.
func (a Accounts) Contains(addr string) bool {
	_, ok := a[strings.ToLower(addr)]
	return ok
}

// ReadAccounts reads the migrated accounts, one address per line (blank lines and
// # comments skipped). Any malformed line is an error naming it.
func ReadAccounts(r io.Reader, name string) (Accounts, error) {
	lr := newLineReader(r)
	set := Accounts{}
	for {
		text, tooLong, err := lr.next()
		if errors.Is(err, io.EOF) {
			return set, nil
		}
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", name, err)
		}
		if tooLong {
			return nil, &RowError{Name: name, Line: lr.line, Text: text, Msg: fmt.Sprintf("line longer than %d bytes", MaxLineBytes)}
		}
		addr := strings.TrimSpace(text)
		if addr == "" || strings.HasPrefix(addr, "#") {
			continue
		}
		if msg := checkAddress(addr); msg != "" {
			return nil, &RowError{Name: name, Line: lr.line, Text: cut(text), Msg: msg}
		}
		set[strings.ToLower(addr)] = struct{}{}
	}
}
