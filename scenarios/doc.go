// Package scenarios is the pure model of a split-delivery check: recipients, routes,
// probes, expected outcomes, the built-in matrix derived from a migration plan, and
// verdicts. It does no I/O and starts no goroutines.
package scenarios
