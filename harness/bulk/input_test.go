package bulk

import (
	"errors"
	"fmt"
	"io"
	"runtime"
	"strings"
	"testing"

	"github.com/splitcheck/splitcheck/scenarios"
)

// drain reads every row and every malformed row of rows.
func drain(t *testing.T, rows Rows) ([]Row, []*RowError) {
	t.Helper()
	var ok []Row
	var bad []*RowError
	for {
		row, err := rows.Next()
		var re *RowError
		switch {
		case errors.Is(err, io.EOF):
			return ok, bad
		case errors.As(err, &re):
			bad = append(bad, re)
		case err != nil:
			t.Fatalf("Next: %v", err)
		default:
			ok = append(ok, row)
		}
	}
}

func TestCSV(t *testing.T) {
	in := "address,route\n" + // 1
		"alice@example.org,local\n" + // 2
		"\n" + // 3
		"# a comment\n" + // 4
		" bob@example.org , SOURCE \r\n" + // 5
		`"quoted.q@example.org","source"` + "\n" + // 6
		"erin@external.test,mx\n" + // 7
		"mallory@external.test,reject\n" + // 8
		"no-at-sign,source\n" + // 9
		"dave@example.org,elsewhere\n" + // 10
		"dave@example.org,source,extra\n" + // 11
		`"unterminated@example.org,source` + "\n" + // 12
		"frank@external.test,local\n" + // 13
		"Name <x@example.org>,source\n" + // 14
		strings.Repeat("x", MaxLineBytes+10) + "\n" + // 15
		"last@example.org,source" // 16, no newline
	rows, bad := drain(t, NewCSV(strings.NewReader(in), "list.csv", []string{"example.org"}))
	want := []Row{
		{2, "alice@example.org", scenarios.RouteLocal},
		{5, "bob@example.org", scenarios.RouteSource},
		{6, "quoted.q@example.org", scenarios.RouteSource},
		{7, "erin@external.test", scenarios.RouteMX},
		{8, "mallory@external.test", scenarios.RouteReject},
		{16, "last@example.org", scenarios.RouteSource},
	}
	if fmt.Sprint(rows) != fmt.Sprint(want) {
		t.Errorf("rows = %v; want %v", rows, want)
	}
	wantBad := []struct {
		line int
		msg  string
	}{
		{9, `"no-at-sign" is not a bare e-mail address`},
		{10, `route "elsewhere" is not local, source, mx or reject`},
		{11, "want 2 fields (address,route), got 3"},
		{12, "bad CSV"},
		{13, "route local for frank@external.test, which is not in a migrated domain"},
		{14, "is not a bare e-mail address"},
		{15, "line longer than 4096 bytes"},
	}
	if len(bad) != len(wantBad) {
		t.Fatalf("malformed rows = %v; want %d of them", bad, len(wantBad))
	}
	for i, w := range wantBad {
		if bad[i].Line != w.line || !strings.Contains(bad[i].Msg, w.msg) {
			t.Errorf("malformed %d = line %d %q; want line %d %q", i, bad[i].Line, bad[i].Msg, w.line, w.msg)
		}
		if !strings.HasPrefix(bad[i].Error(), fmt.Sprintf("list.csv:%d: ", w.line)) {
			t.Errorf("error %q does not start with list.csv:%d:", bad[i].Error(), w.line)
		}
	}
	if len(bad[6].Text) > 120 {
		t.Errorf("a long line's text is %d bytes; want it cut to 120", len(bad[6].Text))
	}
}

func TestCSVHeaderOnlyOnFirstLine(t *testing.T) {
	_, bad := drain(t, NewCSV(strings.NewReader("a@example.org,source\naddress,route\n"), "l", nil))
	if len(bad) != 1 || bad[0].Line != 2 {
		t.Errorf("malformed = %v; want the second header-like line reported (line 2)", bad)
	}
}

func TestDerived(t *testing.T) {
	migrated, err := ReadAccounts(strings.NewReader("# migrated\nAlice@Example.org\n\ncarol@example.org\n"), "migrated.txt")
	if err != nil {
		t.Fatalf("ReadAccounts: %v", err)
	}
	all := "alice@example.org\nbob@example.org\n# x\nCAROL@example.org\nerin@external.test\nnot an address\n"
	rows, bad := drain(t, NewDerived(strings.NewReader(all), "all.txt", []string{"example.org"}, migrated))
	want := []Row{
		{1, "alice@example.org", scenarios.RouteLocal},
		{2, "bob@example.org", scenarios.RouteSource},
		{4, "CAROL@example.org", scenarios.RouteLocal},
	}
	if fmt.Sprint(rows) != fmt.Sprint(want) {
		t.Errorf("rows = %v; want %v", rows, want)
	}
	if len(bad) != 2 || bad[0].Line != 5 || bad[1].Line != 6 {
		t.Errorf("malformed = %v; want lines 5 and 6", bad)
	}
}

func TestReadAccountsMalformed(t *testing.T) {
	_, err := ReadAccounts(strings.NewReader("a@example.org\nbroken\n"), "migrated.txt")
	var re *RowError
	if !errors.As(err, &re) || re.Line != 2 {
		t.Errorf("ReadAccounts error = %v; want a RowError on line 2", err)
	}
}

// genList produces n CSV rows on the fly, so the test never holds the list.
type genList struct {
	n, i int
	buf  []byte
}

func (g *genList) Read(p []byte) (int, error) {
	for len(g.buf) < len(p) && g.i < g.n {
		if g.i%1000 == 999 {
			g.buf = fmt.Appendf(g.buf, "broken-row-%d\n", g.i)
		} else {
			g.buf = fmt.Appendf(g.buf, "user%07d@example.org,source\n", g.i)
		}
		g.i++
	}
	if len(g.buf) == 0 {
		return 0, io.EOF
	}
	n := copy(p, g.buf)
	g.buf = g.buf[n:]
	return n, nil
}

// TestStreamingMemory streams 100,000 generated rows through the parser and
// checks that the live heap stays flat: nothing of the list is kept.
func TestStreamingMemory(t *testing.T) {
	const n = 100_000
	r := NewCSV(&genList{n: n}, "gen.csv", []string{"example.org"})
	var ms runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms)
	base := ms.HeapAlloc
	var peak uint64
	rows, bad := 0, 0
	for {
		_, err := r.Next()
		var re *RowError
		if errors.Is(err, io.EOF) {
			break
		} else if errors.As(err, &re) {
			bad++
		} else if err != nil {
			t.Fatal(err)
		} else {
			rows++
		}
		if (rows+bad)%10_000 == 0 {
			runtime.GC()
			runtime.ReadMemStats(&ms)
			peak = max(peak, ms.HeapAlloc)
		}
	}
	if rows != n-n/1000 || bad != n/1000 {
		t.Errorf("read %d rows and %d malformed; want %d and %d", rows, bad, n-n/1000, n/1000)
	}
	// 100,000 rows held would take several MiB; the reader keeps one line.
	if grew := int64(peak) - int64(base); grew > 1<<20 {
		t.Errorf("live heap grew by %d bytes while streaming; want under 1 MiB", grew)
	}
}
