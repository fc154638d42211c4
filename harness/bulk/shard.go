package bulk

import (
	"fmt"
	"hash/fnv"
	"strconv"
	"strings"
)

// Shard selects one of N deterministic parts of a list, so that a CI matrix can
// verify the parts on separate runners. An address belongs to part
// 1 + FNV-1a(lower-case address) mod N: the same address always lands in the same
// part, whatever its line or the list's order, and the parts are disjoint and
// cover the list. The zero value (and 1/1) is the whole list.
type Shard struct {
	K, N int // 1 <= K <= N
}

// ParseShard parses "k/n" with 1 <= k <= n.
func ParseShard(s string) (Shard, error) {
	ks, ns, ok := strings.Cut(strings.TrimSpace(s), "/")
	if !ok {
		return Shard{}, fmt.Errorf("shard %q: want k/n, such as 2/4", s)
	}
	k, err1 := strconv.Atoi(ks)
	n, err2 := strconv.Atoi(ns)
	if err1 != nil || err2 != nil || n < 1 || k < 1 || k > n {
		return Shard{}, fmt.Errorf("shard %q: want k/n with 1 <= k <= n", s)
	}
	return Shard{K: k, N: n}, nil
}

// Whole reports whether the shard is the whole list.
func (s Shard) Whole() bool { return s.N <= 1 }

// Contains reports whether address belongs to this part.
func (s Shard) Contains(address string) bool {
	if s.Whole() {
		return true
	}
	return s.Of(address) == s.K
}

// Of returns the part (1..N) address belongs to.
func (s Shard) Of(address string) int {
	if s.Whole() {
		return 1
	}
	h := fnv.New64a()
	h.Write([]byte(strings.ToLower(address)))
	return int(h.Sum64()%uint64(s.N)) + 1
}

// String is "k/n", or "all" for the whole list.
func (s Shard) String() string {
	if s.Whole() {
		return "all"
	}
	return fmt.Sprintf("%d/%d", s.K, s.N)
}
