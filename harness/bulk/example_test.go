package bulk_test

import (
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/splitcheck/splitcheck/harness/bulk"
)

// A list is read row by row; a malformed row names its line and the reader
// goes on with the next one.
func ExampleNewCSV() {
	list := "address,route\nalice@example.org,local\nbob@example.org,sauce\nerin@external.test,mx\n"
	rows := bulk.NewCSV(strings.NewReader(list), "list.csv", []string{"example.org"})
	for {
		row, err := rows.Next()
		var bad *bulk.RowError
		switch {
		case errors.Is(err, io.EOF):
			return
		case errors.As(err, &bad):
			fmt.Println("malformed:", bad)
		default:
			fmt.Println(row.Line, row.Address, row.Expect)
		}
	}
	// Output:
	// 2 alice@example.org local
	// malformed: list.csv:3: route "sauce" is not local, source, mx or reject: "bob@example.org,sauce"
	// 4 erin@external.test mx
}

// Each address lands in exactly one part of a sharded run.
func ExampleShard() {
	shard, _ := bulk.ParseShard("2/3")
	for _, a := range []string{"alice@example.org", "bob@example.org", "carol@example.org", "dave@example.org"} {
		fmt.Println(a, shard.Of(a), shard.Contains(a))
	}
	// Output:
	// alice@example.org 2 true
	// bob@example.org 1 false
	// carol@example.org 1 false
	// dave@example.org 3 false
}
