package harness

import (
	"slices"

	"github.com/splitcheck/splitcheck/scenarios"
)

// withObservers replaces the observer of each route named in override (nil
// values are ignored) and adds the routes the run had no observer for, after
// the built-in ones (local first). It is the hook behind VerifyOptions.Observers.
func withObservers(places []place, override map[scenarios.Route]Observer) []place {
	if len(override) == 0 {
		return places
	}
	out := make([]place, 0, len(places)+len(override))
	done := map[scenarios.Route]bool{}
	for _, p := range places {
		if o := override[p.route]; o != nil {
			p.obs, p.recheck = o, false
		}
		done[p.route] = true
		out = append(out, p)
	}
	routes := make([]scenarios.Route, 0, len(override))
	for r, o := range override {
		if o != nil && !done[r] {
			routes = append(routes, r)
		}
	}
	slices.Sort(routes)
	for _, r := range routes {
		p := place{route: r, obs: override[r]}
		if r == scenarios.RouteLocal {
			out = append([]place{p}, out...)
			continue
		}
		out = append(out, p)
	}
	return out
}
