package config

// Stalwart says how to reach a Stalwart server's management API.
// (Owned by the Stalwart management work; placeholder shape.)
type Stalwart struct{}

func (s *Stalwart) validate(v *validator) {}

// Migration is the configuration step apply writes to Stalwart.
type Migration struct{}

func (m *Migration) validate(v *validator) {}
