package bulk

import (
	"fmt"
	"strings"
	"testing"
)

func TestParseShard(t *testing.T) {
	for _, tt := range []struct {
		in      string
		want    Shard
		wantErr bool
	}{
		{"1/1", Shard{1, 1}, false},
		{"2/4", Shard{2, 4}, false},
		{" 4/4 ", Shard{4, 4}, false},
		{"0/4", Shard{}, true},
		{"5/4", Shard{}, true},
		{"1/0", Shard{}, true},
		{"2", Shard{}, true},
		{"a/b", Shard{}, true},
	} {
		got, err := ParseShard(tt.in)
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("ParseShard(%q) = %v, %v; want %v, error %v", tt.in, got, err, tt.want, tt.wantErr)
		}
	}
}

func TestShardPartition(t *testing.T) {
	const total = 10_000
	for _, n := range []int{1, 2, 3, 7} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			counts := make([]int, n+1)
			for i := range total {
				addr := fmt.Sprintf("user%05d@example.org", i)
				in := 0
				for k := 1; k <= n; k++ {
					if (Shard{K: k, N: n}).Contains(addr) {
						in++
						counts[k]++
					}
				}
				if in != 1 {
					t.Fatalf("%s is in %d of %d shards; want exactly 1", addr, in, n)
				}
				if s := (Shard{K: 1, N: n}); s.Of(addr) != s.Of(strings.ToUpper(addr)) {
					t.Fatalf("%s: the shard depends on case", addr)
				}
			}
			for k := 1; k <= n; k++ {
				// FNV spreads evenly: every part gets a fair share.
				if counts[k] < total/n/2 {
					t.Errorf("shard %d/%d has %d of %d addresses; want about %d", k, n, counts[k], total, total/n)
				}
			}
		})
	}
	if !(Shard{}).Contains("x@example.org") || (Shard{}).String() != "all" {
		t.Errorf("the zero Shard is not the whole list")
	}
}
