package bridge

import (
	"errors"
	"fmt"
	"time"

	"github.com/snakepit-go/snakepit/worker"
)

// Sentinel errors. The concrete types below match them with errors.Is.
var (
	// ErrSessionNotFound: no session has that id (never created, deleted, or swept).
	ErrSessionNotFound = errors.New("snakepit: session not found")
	// ErrSessionExpired: the session existed but its TTL passed without access;
	// it has now been removed.
	ErrSessionExpired = errors.New("snakepit: session expired")
	// ErrSessionQuota: creating the session would exceed Options.MaxSessions.
	ErrSessionQuota = errors.New("snakepit: session quota reached")
	// ErrInvalidSessionID: the id is empty, too long or has characters outside
	// the allowed set.
	ErrInvalidSessionID = errors.New("snakepit: invalid session id")
	// ErrDuplicateTool: a host tool of that name is already registered.
	ErrDuplicateTool = errors.New("snakepit: host tool already registered")
	// ErrInvalidHostTool: a host tool registration is missing its name or function.
	ErrInvalidHostTool = errors.New("snakepit: invalid host tool")
	// ErrInvalidOptions: New was given options it cannot work with. It is
	// snakepit.ErrInvalidConfig (worker.ErrInvalidConfig).
	ErrInvalidOptions = worker.ErrInvalidConfig
	// errAlreadyServing: Serve was called while another Serve of the same
	// Server is running.
	errAlreadyServing = errors.New("snakepit: bridge Serve is already running; a Server serves one listener at a time — create another Server for a second one")
)

// SessionError reports a session operation that failed. Err is one of the
// session sentinels above.
type SessionError struct {
	ID  string
	Err error
	// Limit is Options.MaxSessions, for ErrSessionQuota.
	Limit int
	// Idle and TTL say how long the session went unused, for ErrSessionExpired.
	Idle, TTL time.Duration
	// Reason says what is wrong with the id, for ErrInvalidSessionID.
	Reason string
}

func (e *SessionError) Error() string {
	switch e.Err {
	case ErrSessionNotFound:
		return fmt.Sprintf("snakepit: session %q not found; it was never created, was deleted, or expired and was swept — create it again (InitializeSession)", e.ID)
	case ErrSessionExpired:
		return fmt.Sprintf("snakepit: session %q expired (unused for %v, TTL %v) and was removed; create it again, and access it more often than its TTL or give it a longer one", e.ID, e.Idle.Round(time.Millisecond), e.TTL)
	case ErrSessionQuota:
		return fmt.Sprintf("snakepit: cannot create session %q: %d sessions exist, the limit; delete sessions you no longer need (CleanupSession) or raise Options.MaxSessions", e.ID, e.Limit)
	case ErrInvalidSessionID:
		return fmt.Sprintf("snakepit: invalid session id %s: %s; use 1–%d bytes of ASCII letters, digits and %s", quoteShort(e.ID), e.Reason, maxSessionIDLen, sessionIDPunct)
	default:
		return fmt.Sprintf("snakepit: session %q: %v", e.ID, e.Err)
	}
}

// Unwrap returns the sentinel, so errors.Is(err, ErrSessionNotFound) works.
func (e *SessionError) Unwrap() error { return e.Err }

// RegistrationError reports a host tool that could not be registered. Err is
// ErrDuplicateTool or ErrInvalidHostTool.
type RegistrationError struct {
	Name   string
	Err    error
	Reason string
}

func (e *RegistrationError) Error() string {
	if e.Err == ErrDuplicateTool {
		return fmt.Sprintf("snakepit: host tool %q is already registered; register each name once (pick another name for a second tool)", e.Name)
	}
	return fmt.Sprintf("snakepit: cannot register host tool %q: %s", e.Name, e.Reason)
}

// Unwrap returns the sentinel.
func (e *RegistrationError) Unwrap() error { return e.Err }

// OptionsError names the Options field New rejected and what to do about it.
type OptionsError struct {
	Field  string
	Reason string
}

func (e *OptionsError) Error() string {
	return fmt.Sprintf("snakepit: bridge Options.%s: %s", e.Field, e.Reason)
}

// Is makes errors.Is(err, ErrInvalidOptions) true.
func (e *OptionsError) Is(target error) bool { return target == ErrInvalidOptions }

// quoteShort quotes s for an error message, cutting it so that an overlong or
// hostile id cannot blow up log lines.
func quoteShort(s string) string {
	const max = 64
	if len(s) > max {
		return fmt.Sprintf("%q… (%d bytes)", s[:max], len(s))
	}
	return fmt.Sprintf("%q", s)
}
