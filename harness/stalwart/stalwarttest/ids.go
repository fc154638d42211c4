package stalwarttest

// idAlphabet is Stalwart's custom base32 alphabet for ids (crates/utils/src/codec/base32_custom.rs).
const idAlphabet = "abcdefghijklmnopqrstuvwxyz792013"

// singletonID is Id::singleton() (20080258862541), which encodes to "singleton".
const singletonID = "singleton"

// encodeID writes n in Stalwart's id alphabet, most significant digit first; 0 is "a".
func encodeID(n uint64) string {
	if n == 0 {
		return "a"
	}
	var buf [13]byte
	i := len(buf)
	for n > 0 {
		i--
		buf[i] = idAlphabet[n&31]
		n >>= 5
	}
	return string(buf[i:])
}

// decodeID parses an id; ok is false for anything Stalwart would not parse
// (such an id is silently dropped by /set).
func decodeID(s string) (uint64, bool) {
	if s == "" || len(s) > 13 {
		return 0, false
	}
	var n uint64
	for i := 0; i < len(s); i++ {
		d := -1
		for j := 0; j < len(idAlphabet); j++ {
			if idAlphabet[j] == s[i] {
				d = j
				break
			}
		}
		if d < 0 {
			return 0, false
		}
		if n > (^uint64(0))>>5 {
			return 0, false
		}
		n = n<<5 | uint64(d)
	}
	return n, true
}
