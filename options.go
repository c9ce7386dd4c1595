package snakepit

import (
	"fmt"
	"time"
	"unicode/utf8"

	"github.com/snakepit-go/snakepit/pool"
)

// CallOption adjusts one call.
type CallOption func(*callOptions)

type callOptions struct {
	pool      pool.CallOptions
	session   string
	requestID string
	binary    map[string][]byte
	err       error
}

// WithSession runs the call in a session: Python sees the id in its
// context, and the pool prefers the worker that served the session last.
// The id must be valid UTF-8 (it crosses the wire as a protobuf string).
func WithSession(id string) CallOption {
	return func(o *callOptions) {
		if !utf8.ValidString(id) {
			o.err = fmt.Errorf("%w: session id %q is not valid UTF-8", ErrInvalidConfig, id)
			return
		}
		o.session = id
	}
}

// Affinity says how strictly a session call sticks to the worker that
// served its session last.
type Affinity = pool.AffinityMode

// The affinity modes.
const (
	// AffinityHint (the default) prefers the session's worker when it has a
	// free slot and otherwise takes any worker.
	AffinityHint = pool.AffinityHint
	// AffinityStrictQueue waits (FIFO, under the queue timeout) for the
	// session's worker only.
	AffinityStrictQueue = pool.AffinityStrictQueue
	// AffinityStrictFailFast uses the session's worker only and fails with
	// ErrSessionWorkerBusy when it has no free slot.
	AffinityStrictFailFast = pool.AffinityStrictFailFast
)

// ParseAffinity reads a mode as written in flags and configuration:
// "hint" (or ""), "strict-queue" or "strict-fail-fast".
func ParseAffinity(s string) (Affinity, error) { return pool.ParseAffinity(s) }

// WithAffinity sets how strictly a session call sticks to its worker.
func WithAffinity(mode Affinity) CallOption {
	return func(o *callOptions) {
		if mode > AffinityStrictFailFast {
			o.err = fmt.Errorf("%w: unknown affinity mode %d; use AffinityHint, AffinityStrictQueue or AffinityStrictFailFast", ErrInvalidConfig, mode)
			return
		}
		o.pool.Affinity = mode
	}
}

// Idempotent marks a call safe to retry on another worker if its worker crashes.
func Idempotent() CallOption { return func(o *callOptions) { o.pool.Idempotent = true } }

// WithQueueTimeout overrides how long this call may wait for a worker.
func WithQueueTimeout(d time.Duration) CallOption {
	return func(o *callOptions) {
		if d <= 0 {
			o.err = fmt.Errorf("%w: queue timeout must be positive, got %s", ErrInvalidConfig, d)
			return
		}
		o.pool.QueueTimeout = d
	}
}

// WithBinary passes a keyword argument as raw bytes (not JSON). The name
// must be valid UTF-8 (it is a Python keyword); the data may be anything.
func WithBinary(name string, data []byte) CallOption {
	return func(o *callOptions) {
		if !utf8.ValidString(name) {
			o.err = fmt.Errorf("%w: binary argument name %q is not valid UTF-8", ErrInvalidArgs, name)
			return
		}
		if o.binary == nil {
			o.binary = map[string][]byte{}
		}
		o.binary[name] = data
	}
}

// WithRequestID names the call for logs and traces end to end: Python sees
// it as ctx.request_id and in the log records of the call, the abandoned-
// call report lists it, and it crosses agents. Without it the App makes one
// (unique per App). At most 128 bytes of printable ASCII.
func WithRequestID(id string) CallOption {
	return func(o *callOptions) {
		if err := validRequestID(id); err != nil {
			o.err = err
			return
		}
		o.requestID = id
	}
}

func validRequestID(id string) error {
	if len(id) > 128 {
		return fmt.Errorf("%w: request id is %d bytes; at most 128", ErrInvalidConfig, len(id))
	}
	for i := 0; i < len(id); i++ {
		if id[i] < 0x20 || id[i] > 0x7e {
			return fmt.Errorf("%w: request id must be printable ASCII; byte %d is %#x", ErrInvalidConfig, i, id[i])
		}
	}
	return nil
}
