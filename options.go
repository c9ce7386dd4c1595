package snakepit

import (
	"fmt"
	"time"

	"github.com/snakepit-go/snakepit/pool"
)

// CallOption adjusts one call.
type CallOption func(*callOptions)

type callOptions struct {
	pool    pool.CallOptions
	session string
	binary  map[string][]byte
	err     error
}

// WithSession runs the call in a session: Python sees the id in its
// context, and the pool prefers the worker that served the session last.
func WithSession(id string) CallOption { return func(o *callOptions) { o.session = id } }

// WithAffinity sets how strictly a session call sticks to its worker:
// "hint" (default), "strict-queue" or "strict-fail-fast".
func WithAffinity(mode string) CallOption {
	return func(o *callOptions) {
		m, err := pool.ParseAffinity(mode)
		if err != nil {
			o.err = err
			return
		}
		o.pool.Affinity = m
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

// WithBinary passes a keyword argument as raw bytes (not JSON).
func WithBinary(name string, data []byte) CallOption {
	return func(o *callOptions) {
		if o.binary == nil {
			o.binary = map[string][]byte{}
		}
		o.binary[name] = data
	}
}
