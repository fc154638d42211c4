// Package hermetic runs splitcheck's whole matrix against a throwaway Stalwart in
// Docker: `splitcheck run --hermetic` and, for Go tests, RunT.
//
// Run creates a bridge network of its own, starts the pinned Stalwart image
// (harness/stalwart's testcontainers module) and two socat relays on it, bootstraps
// and configures Stalwart as the migration guide says, restarts it, runs every check
// (harness.Verify), and removes the containers and the network on every path:
// success, failure, timeout and cancellation (testcontainers' reaper removes them if
// the process dies).
//
// # Addresses
//
// The fakes (source, MX, DNS) run in this process and listen on the host's address
// on the run's network: the bridge's gateway, never loopback (Stalwart drops loopback
// MX hosts, and a container's loopback is its own) and never 0.0.0.0. Three rules
// shape the rest:
//
//   - Stalwart delivers MX mail to port 25 only. The MX relay container answers on
//     its port 25 and forwards to the fake MX; the fake DNS gives the relay's address
//     for the external domains' MX host. No privileged port is bound on the host.
//   - The fake DNS is reached through a Custom DnsResolver, which allows any port;
//     the "source" relay route points at the fake source directly (any port).
//   - Connections to published ports reach a container from the gateway, so the
//     gateway must never be trusted for PROXY headers (every headerless connection
//     from the host, the management API included, would hang or be dropped). The
//     harness's proxy therefore reaches Stalwart through the proxy relay container,
//     and proxyTrustedNetworks holds exactly the relay's address as a /32. The
//     relay copies bytes and adds nothing, so the PROXY header arrives intact.
//
// HostAddress, TrustedProxy and PlanLayout choose and check these addresses; they
// are pure functions.
//
// # Requirements
//
// A Docker engine on the same machine (Linux; the gateway must be one of this
// machine's addresses), able to pull the Stalwart and socat images, and a firewall
// that lets containers reach the host's gateway address on high ports. Without an
// engine, Run fails fast with a *DockerError (ErrNoDocker) naming every place it
// looked; tests skip with that message, or fail when SPLITCHECK_REQUIRE_DOCKER=1.
package hermetic
