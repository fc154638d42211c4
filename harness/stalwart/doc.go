// Package stalwart configures and observes a Stalwart (>= 0.16) mail server for a
// split-delivery migration, through its JMAP management API (x: objects on the
// session's apiUrl, usually POST /jmap/).
//
// Client is the management client: session discovery, x:Object get/query/set with
// back-references, typed errors for every refused change (*SetError,
// *MethodError, *HTTPError, *AuthError), bounded timeouts, and retries only for
// requests that merely read.
//
// Plan, Apply and Rollback implement the migration guide's "configure the new
// deployment" step safely: Plan shows current -> wanted per object and field with
// the equivalent stalwart-cli commands; Apply writes a Snapshot file first, changes
// things in dependency order, restores the snapshot if anything fails half way, and
// changes nothing the second time but for a relay secret (the server masks
// secrets on reads, so one can be neither compared nor restored: see
// Change.Unverifiable); Rollback puts back exactly what the snapshot holds and
// destroys only what apply created.
//
// MailObserver, Client.QueueEvidence and Client.CheckPublicURL observe the server
// side of a run: a probe in a test account's mailbox (Inbox or Junk), queue
// entries for relayed mail, and the URL JMAP autodiscovery advertises.
//
// The package does not start Stalwart (see the container helpers) and does not
// judge routes (see package scenarios). Package stalwarttest is a schema-checked
// fake of the API for tests.
package stalwart
