package stalwart

import (
	"errors"
	"fmt"
	"strings"
)

// Sentinel errors; match them with errors.Is.
var (
	// ErrUnauthorized is matched by every *AuthError (HTTP 401).
	ErrUnauthorized = errors.New("stalwart: authentication failed")
	// ErrNotAcknowledged means a /set reply named an id or creation id in none of its
	// maps; Stalwart does that for ids it cannot parse.
	ErrNotAcknowledged = errors.New("stalwart: server did not acknowledge the change")
	// ErrNeedsConfirmation means destructive steps against a server that is not
	// hermetic were refused because they were not confirmed (--yes).
	ErrNeedsConfirmation = errors.New("stalwart: destructive changes need confirmation")
	// ErrConflict means the live state cannot be brought to the wanted state safely
	// (for example a route named "source" that is not a relay).
	ErrConflict = errors.New("stalwart: live state conflicts with the migration")
	// ErrNoDefaultHostname means the server's SystemSettings were never saved, so
	// the first write must carry defaultHostname, and none was configured.
	ErrNoDefaultHostname = errors.New("stalwart: SystemSettings was never saved, so the first write must carry defaultHostname: " +
		"set migration.default_hostname (or target.hostname)")
)

// AuthError is an HTTP 401: the credentials were refused. It names which
// credentials were tried, never the secret.
type AuthError struct {
	// Tried describes the credentials: `user "admin"` or "bearer token".
	Tried  string
	URL    string
	Detail string // the problem+json detail, if any
}

func (e *AuthError) Error() string {
	msg := fmt.Sprintf("stalwart: %s refused the credentials (%s): HTTP 401", e.URL, e.Tried)
	if e.Detail != "" {
		msg += ": " + e.Detail
	}
	return msg
}

// Is makes errors.Is(err, ErrUnauthorized) true.
func (e *AuthError) Is(target error) bool { return target == ErrUnauthorized }

// HTTPError is any other non-200 HTTP reply, with its RFC 7807 problem details
// (request-level JMAP errors such as urn:ietf:params:jmap:error:notRequest).
type HTTPError struct {
	Method, URL string
	Status      int
	Type        string
	Title       string
	Detail      string
}

func (e *HTTPError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "stalwart: %s %s: HTTP %d", e.Method, e.URL, e.Status)
	for _, s := range []string{e.Type, e.Title, e.Detail} {
		if s != "" && s != "about:blank" {
			b.WriteString(": ")
			b.WriteString(s)
		}
	}
	return b.String()
}

// Temporary reports whether the request may succeed if repeated (5xx).
func (e *HTTPError) Temporary() bool { return e.Status >= 500 }

// MethodError is a JMAP method-level error: ["error", {"type", "description"}, callId].
type MethodError struct {
	Method      string // the method that failed, e.g. "x:Domain/set"
	CallID      string
	Type        string // forbidden, invalidArguments, unsupportedFilter, unknownMethod, serverFail, ...
	Description string
	Properties  []string
}

func (e *MethodError) Error() string {
	msg := fmt.Sprintf("stalwart: %s: %s", e.Method, e.Type)
	if e.Description != "" {
		msg += ": " + e.Description
	}
	if len(e.Properties) > 0 {
		msg += " (properties: " + strings.Join(e.Properties, ", ") + ")"
	}
	return msg
}

// ObjectRef names one registry object, as SetError.objectId does ({"object":"Domain","id":"b"}).
type ObjectRef struct {
	Object string `json:"object"`
	ID     string `json:"id"`
}

func (r ObjectRef) String() string { return r.Object + " " + r.ID }

// ValidationError is one entry of a SetError's validationErrors.
type ValidationError struct {
	Type     string `json:"type"` // Required, Invalid, MinValue, MaxValue, ...
	Property string `json:"property"`
	Value    any    `json:"value,omitempty"`
	Required any    `json:"required,omitempty"`
}

func (v ValidationError) String() string {
	s := v.Type + " " + v.Property
	if v.Value != nil {
		s += fmt.Sprintf(" (%v)", v.Value)
	}
	if v.Required != nil {
		s += fmt.Sprintf(" (need %v)", v.Required)
	}
	return s
}

// SetError is one refused create, update or destroy of a /set call.
type SetError struct {
	Method string `json:"-"` // e.g. "x:Domain/set"
	Op     string `json:"-"` // create, update or destroy
	ID     string `json:"-"` // the creation id (create) or object id

	Type             string            `json:"type"`
	Description      string            `json:"description,omitempty"`
	Properties       []string          `json:"properties,omitempty"`
	ObjectID         *ObjectRef        `json:"objectId,omitempty"`
	LinkedObjects    []ObjectRef       `json:"linkedObjects,omitempty"`
	ValidationErrors []ValidationError `json:"validationErrors,omitempty"`
}

func (e *SetError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "stalwart: %s: %s %s: %s", e.Method, e.Op, e.ID, e.Type)
	if e.Description != "" {
		b.WriteString(": " + e.Description)
	}
	if len(e.Properties) > 0 {
		b.WriteString(" (properties: " + strings.Join(e.Properties, ", ") + ")")
	}
	if e.ObjectID != nil {
		b.WriteString(" (existing: " + e.ObjectID.String() + ")")
	}
	if len(e.LinkedObjects) > 0 {
		var refs []string
		for _, r := range e.LinkedObjects {
			refs = append(refs, r.String())
		}
		b.WriteString(" (linked: " + strings.Join(refs, ", ") + ")")
	}
	if len(e.ValidationErrors) > 0 {
		var vs []string
		for _, v := range e.ValidationErrors {
			vs = append(vs, v.String())
		}
		b.WriteString(" (validation: " + strings.Join(vs, "; ") + ")")
	}
	return b.String()
}

// ConfirmationError lists the destructive changes that were not confirmed.
type ConfirmationError struct {
	Changes []Change
}

func (e *ConfirmationError) Error() string {
	var items []string
	for _, c := range e.Changes {
		items = append(items, c.Summary())
	}
	return fmt.Sprintf("stalwart: %d destructive change(s) against a server not marked hermetic need confirmation (--yes): %s",
		len(e.Changes), strings.Join(items, "; "))
}

// Unwrap makes errors.Is(err, ErrNeedsConfirmation) true.
func (e *ConfirmationError) Unwrap() error { return ErrNeedsConfirmation }

// ApplyError is a failed apply. The snapshot has been restored (or an attempt
// made): Restored lists what was put back, RestoreErr is set when that failed too.
type ApplyError struct {
	Step       string // the step that failed
	Err        error
	Restored   []Change
	Kept       []string
	RestoreErr error
}

func (e *ApplyError) Error() string {
	msg := fmt.Sprintf("stalwart: apply failed at step %s: %v", e.Step, e.Err)
	switch {
	case e.RestoreErr != nil:
		msg += fmt.Sprintf("; restoring the snapshot FAILED too: %v (the server may be half-changed: run rollback with the snapshot file)", e.RestoreErr)
	case len(e.Restored) == 0:
		msg += "; nothing had been changed"
	default:
		msg += fmt.Sprintf("; restored the snapshot (%d change(s) undone)", len(e.Restored))
	}
	return msg
}

func (e *ApplyError) Unwrap() error { return e.Err }

// redact replaces every non-empty secret in s with "(redacted)".
func redact(s string, secrets []string) string {
	for _, sec := range secrets {
		if len(sec) >= 4 {
			s = strings.ReplaceAll(s, sec, "(redacted)")
		}
	}
	return s
}

// redactedError hides secrets in an error's message while keeping it matchable.
type redactedError struct {
	err     error
	secrets []string
}

func (e *redactedError) Error() string { return redact(e.err.Error(), e.secrets) }
func (e *redactedError) Unwrap() error { return e.err }

func redactErr(err error, secrets []string) error {
	if err == nil {
		return nil
	}
	msg := err.Error()
	if redact(msg, secrets) == msg {
		return err
	}
	return &redactedError{err: err, secrets: secrets}
}
