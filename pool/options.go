package pool

import (
	"log/slog"
	"time"

	"github.com/snakepit-go/snakepit/worker"
)

// Defaults for zero-valued Options fields.
const (
	defaultMaxQueue        = 1000
	defaultQueueTimeout    = 5 * time.Second
	DefaultCapacity        = worker.DefaultCapacity
	DefaultHungGrace       = worker.DefaultHungGrace
	defaultRetryAttempts   = 2
	defaultRetryBackoff    = 50 * time.Millisecond
	defaultReadyTimeout    = 30 * time.Second
	defaultAffinityTTL     = 60 * time.Second
	latencyWindow          = 4096
	sessionSweepMin        = 1024
	maxRetryBackoffScaling = 6 // backoff doubles per attempt, at most 64×
)

// Options configures a Pool. Zero fields take the defaults above; negative
// fields are an *OptionsError.
type Options struct {
	// MaxQueue bounds the number of calls waiting for a slot; beyond it calls
	// fail at once with ErrPoolSaturated.
	MaxQueue int
	// QueueTimeout bounds how long a call waits for a slot (ErrQueueTimeout).
	QueueTimeout time.Duration
	// DefaultCapacity is the in-flight limit of a worker added with capacity <= 0.
	DefaultCapacity int
	// HungGrace is how long past its context's deadline or cancellation a
	// call may stay inside a worker before the worker is killed as hung.
	HungGrace time.Duration
	// StopWait is how long Stop waits, after cancelling the calls still in
	// flight at the end of its grace, for them to return before it gives up
	// with a *StopError (the workers' own stop then ends them); default
	// 2×HungGrace + 1 s, time for a hung worker to be killed. An embedder
	// with a total stop budget passes its share.
	StopWait time.Duration
	// RetryAttempts is how many extra tries an idempotent call gets after a
	// worker crashed under it (and any call gets when the worker turned out
	// to be gone before it started).
	RetryAttempts int
	// RetryBackoff is the pause before the first retry; it doubles per retry.
	RetryBackoff time.Duration
	// ReadyTimeout bounds how long calls made before any worker is ready wait
	// for one (ErrNotReady).
	ReadyTimeout time.Duration
	// AffinityTTL is how long a session remembers the worker that served it.
	AffinityTTL time.Duration
	// PackIdle gives a call, among equally loaded workers, to the most
	// recently used one instead of taking turns, so that light load keeps
	// to few workers and the others stay idle: an elastic pool sets it,
	// or no worker would ever be idle long enough to be removed.
	PackIdle bool
	// ScaleFromZero says no ready worker is a normal state (an elastic pool
	// whose minimum is 0): a call queued then waits its queue timeout for
	// the worker its arrival starts (ErrQueueTimeout), not ReadyTimeout.
	ScaleFromZero bool
	// DisableSerialTools lets every tool use a worker's whole capacity:
	// the pool no longer learns which tools gain nothing from running side
	// by side on one worker and runs those one call per worker (serial.go).
	// For a CPU-bound tool whose calls vary widely in length, sharing the
	// process can give the short calls a better latency than queueing.
	// Without the measure no call is prefetched either (prefetch.go).
	DisableSerialTools bool
	// Logger receives hung-worker kills and lifecycle oddities; nil discards.
	Logger *slog.Logger
	// Now is the clock for latencies and affinity expiry; nil means time.Now.
	// Timers (queue timeout, hung watchdog, retry backoff) use real time.
	Now func() time.Time
}

func (o Options) withDefaults() (Options, error) {
	neg := func(field string, v int64) error {
		if v < 0 {
			return &OptionsError{Field: field, Reason: "must not be negative (0 means the default)"}
		}
		return nil
	}
	for _, c := range []struct {
		f string
		v int64
	}{
		{"MaxQueue", int64(o.MaxQueue)},
		{"QueueTimeout", int64(o.QueueTimeout)},
		{"DefaultCapacity", int64(o.DefaultCapacity)},
		{"HungGrace", int64(o.HungGrace)},
		{"RetryAttempts", int64(o.RetryAttempts)},
		{"RetryBackoff", int64(o.RetryBackoff)},
		{"ReadyTimeout", int64(o.ReadyTimeout)},
		{"AffinityTTL", int64(o.AffinityTTL)},
	} {
		if err := neg(c.f, c.v); err != nil {
			return o, err
		}
	}
	if o.MaxQueue == 0 {
		o.MaxQueue = defaultMaxQueue
	}
	if o.QueueTimeout == 0 {
		o.QueueTimeout = defaultQueueTimeout
	}
	if o.DefaultCapacity == 0 {
		o.DefaultCapacity = DefaultCapacity
	}
	if o.HungGrace == 0 {
		o.HungGrace = DefaultHungGrace
	}
	if o.StopWait <= 0 {
		o.StopWait = 2*o.HungGrace + time.Second
	}
	if o.RetryAttempts == 0 {
		o.RetryAttempts = defaultRetryAttempts
	}
	if o.RetryBackoff == 0 {
		o.RetryBackoff = defaultRetryBackoff
	}
	if o.ReadyTimeout == 0 {
		o.ReadyTimeout = defaultReadyTimeout
	}
	if o.AffinityTTL == 0 {
		o.AffinityTTL = defaultAffinityTTL
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return o, nil
}

// AffinityMode says how strongly a call with a session id sticks to the
// worker that served that session last.
type AffinityMode uint8

const (
	// AffinityHint prefers the session's worker when it has a free slot and
	// otherwise takes any worker.
	AffinityHint AffinityMode = iota
	// AffinityStrictQueue waits (in FIFO order, under the queue timeout) for
	// the session's worker only.
	AffinityStrictQueue
	// AffinityStrictFailFast uses the session's worker only and fails with
	// ErrSessionWorkerBusy when it has no free slot, or the call's tool runs
	// one call per worker (see "Serial tools" in the package doc) and the
	// worker runs one.
	AffinityStrictFailFast
)

func (m AffinityMode) String() string {
	switch m {
	case AffinityHint:
		return "hint"
	case AffinityStrictQueue:
		return "strict-queue"
	case AffinityStrictFailFast:
		return "strict-fail-fast"
	}
	return "AffinityMode(" + itoa(int(m)) + ")"
}

// ParseAffinity parses "hint", "strict-queue" or "strict-fail-fast" ("" is hint).
func ParseAffinity(s string) (AffinityMode, error) {
	switch s {
	case "", "hint":
		return AffinityHint, nil
	case "strict-queue":
		return AffinityStrictQueue, nil
	case "strict-fail-fast":
		return AffinityStrictFailFast, nil
	}
	return 0, &InvalidCallError{Reason: "unknown affinity mode " + quote(s) + "; use hint, strict-queue or strict-fail-fast"}
}

// CallOptions tune one call.
type CallOptions struct {
	// Idempotent allows the pool to run the call again on another worker
	// when the worker crashed under it.
	Idempotent bool
	// Affinity applies when the call has a SessionID.
	Affinity AffinityMode
	// QueueTimeout overrides Options.QueueTimeout for this call; 0 means the
	// pool default, negative is invalid.
	QueueTimeout time.Duration
	// ArgsChecked says call.Args came from worker.EncodeArgs, which has
	// already checked them: the pool then does not scan them again (for a
	// large argument the scan was most of the host's CPU per call).
	ArgsChecked bool
	// Observer, when set, is told from the caller's goroutine each time an
	// attempt of the call has been given a worker (the App's client span
	// records it); it must not block. It stays in this process: it is not
	// sent to an agent.
	Observer AttemptObserver
}

// AttemptObserver is told about each attempt of a call (CallOptions.Observer).
// Implement it with a pointer type: CallOptions are compared.
type AttemptObserver interface {
	Attempt(Attempt)
}

// Attempt is one attempt of a call, as reported to CallOptions.Observer.
type Attempt struct {
	Worker    string        // the worker's id
	Number    int           // 0 for the first attempt, 1 for the first retry
	QueueWait time.Duration // how long this attempt waited for its worker
}
