package config

// Bulk tunes bulk verification (splitcheck bulk).
// (Owned by the bulk verification work; placeholder shape.)
type Bulk struct{}

func (b *Bulk) validate(v *validator) {}
