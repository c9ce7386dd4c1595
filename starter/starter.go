// Package starter owns exactly one worker: a suture supervisor per worker
// that restarts it with exponential backoff and jitter, keeps its failure
// budget apart from its siblings', and gives up on a worker that cannot even
// start.
//
// Contract:
//   - The Starter builds its worker (so it can see the worker's lifecycle
//     events) and forwards every event to the Events the caller gave it.
//   - After a lifetime fails, the next start waits InitialBackoff, doubling
//     per consecutive failure up to MaxBackoff, each with ±20% jitter; a
//     lifetime that became ready resets the doubling.
//   - StartupFailures consecutive failures before ready (a missing module, a
//     bad adapter, a handshake timeout) give the worker up: OnGiveUp is
//     called and the next start waits RetryGivenUpAfter (default 30 s), so a
//     broken configuration cannot cause a restart storm while a fixed
//     environment heals without a restart of the App.
//   - Only failures the worker itself causes count toward that budget. A
//     start ended by a signal from outside (a *worker.StartupError whose
//     Signal is SIGKILL — the OOM killer, an operator —, SIGTERM, SIGINT,
//     SIGHUP, SIGQUIT) does not count; its backoff doubles only up to 1 s.
//     A crash signal (SIGSEGV, SIGABRT, …) is the code's own and counts.
//     Nor does a start that failed for a host resource (EMFILE, ENFILE,
//     ENOMEM, EAGAIN; worker.StartupResource): its backoff doubles up to
//     MaxBackoff and the log names the limit to raise.
//   - An optional start gate bounds how many workers are between spawn and
//     ready at once across the pool.
//
// # Who imports it
//
// Applications reach this package through the root package snakepit, which
// wraps it and re-exports the types its API returns; the names exported
// here beyond that are seams between snakepit's own packages.
package starter

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"syscall"
	"time"

	"github.com/thejerf/suture/v4"

	"github.com/snakepit-go/snakepit/worker"
)

// Options tune one Starter.
type Options struct {
	InitialBackoff  time.Duration // default 100 ms
	MaxBackoff      time.Duration // default 10 s
	StartupFailures int           // consecutive failed starts before giving up; default 3
	// RetryGivenUpAfter is the pause before a given-up worker is tried
	// again; default 30 s.
	RetryGivenUpAfter time.Duration
	// StopTimeout is how long the Starter waits for its worker to stop; it
	// must exceed the worker's own grace period. Default 5 s.
	StopTimeout time.Duration
	// Gate, when non-nil, is a counting semaphore (its capacity is the
	// bound) held from spawn until the worker is ready or has exited.
	Gate chan struct{}
	// OnGiveUp is called each time the worker is given up; retryAt is when
	// it will be tried again.
	OnGiveUp  func(id string, err error, retryAt time.Time)
	EventHook suture.EventHook
	Logger    *slog.Logger
}

func (o *Options) setDefaults() {
	if o.InitialBackoff <= 0 {
		o.InitialBackoff = 100 * time.Millisecond
	}
	if o.MaxBackoff <= 0 {
		o.MaxBackoff = 10 * time.Second
	}
	if o.StartupFailures <= 0 {
		o.StartupFailures = 3
	}
	if o.StopTimeout <= 0 {
		o.StopTimeout = DefaultStopTimeout
	}
	if o.RetryGivenUpAfter <= 0 {
		o.RetryGivenUpAfter = defaultRetryGivenUpAfter
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
}

// validate rejects negative values (zero means the default): a negative
// budget or backoff is a mistake to report, not to replace silently.
func (o *Options) validate() error {
	for _, f := range []struct {
		name string
		v    int64
	}{
		{"InitialBackoff", int64(o.InitialBackoff)}, {"MaxBackoff", int64(o.MaxBackoff)},
		{"StartupFailures", int64(o.StartupFailures)}, {"RetryGivenUpAfter", int64(o.RetryGivenUpAfter)},
		{"StopTimeout", int64(o.StopTimeout)},
	} {
		if f.v < 0 {
			return fmt.Errorf("%w: starter option %s is negative (%d); use 0 for the default", worker.ErrInvalidConfig, f.name, f.v)
		}
	}
	return nil
}

// DefaultStopTimeout is Options.StopTimeout's default.
const DefaultStopTimeout = 5 * time.Second

// defaultRetryGivenUpAfter is how long a given-up worker rests before its
// next try: long enough not to burn CPU on a broken adapter, short enough
// that a fixed environment heals the pool within a minute.
const defaultRetryGivenUpAfter = 30 * time.Second

// Starter is the per-worker supervisor. It is a suture.Service.
type Starter struct {
	*suture.Supervisor
	w      worker.Worker
	events worker.Events
	opts   Options
	log    *slog.Logger

	mu       sync.Mutex
	holding  bool // this starter holds a slot of the start gate
	ready    bool // the current lifetime reached Ready
	restarts int
}

// New builds the worker through f and wraps it. spec.Events receives the
// worker's events (forwarded by the Starter).
func New(f worker.Factory, spec worker.Spec, opts Options) (*Starter, error) {
	if err := opts.validate(); err != nil {
		return nil, err
	}
	opts.setDefaults()
	s := &Starter{events: spec.Events, opts: opts, log: opts.Logger.With("worker_id", spec.ID)}
	inner := spec
	inner.Events = s
	w, err := f.NewWorker(inner)
	if err != nil {
		return nil, fmt.Errorf("snakepit: cannot build worker %s: %w", spec.ID, err)
	}
	s.w = w
	hook := opts.EventHook
	if hook == nil {
		hook = func(suture.Event) {}
	}
	s.Supervisor = suture.New("starter-"+spec.ID, suture.Spec{
		EventHook: hook,
		// Backoff is ours (exponential, per worker); suture's own threshold
		// would pause all restarts of this supervisor with a fixed delay.
		FailureThreshold: 1e9,
		FailureDecay:     1,
		Timeout:          opts.StopTimeout,
	})
	s.Add(&attempts{s: s})
	return s, nil
}

// Worker returns the supervised worker.
func (s *Starter) Worker() worker.Worker { return s.w }

// restartCount counts lifetimes started after the first.
func (s *Starter) restartCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.restarts
}

func (s *Starter) String() string { return "starter-" + s.w.ID() }

// Starting implements worker.Events.
func (s *Starter) Starting(id string) {
	s.mu.Lock()
	s.ready = false
	s.mu.Unlock()
	s.events.Starting(id)
}

// Ready implements worker.Events.
func (s *Starter) Ready(id string, info worker.Info) {
	s.mu.Lock()
	s.ready = true
	s.mu.Unlock()
	s.releaseGate()
	s.events.Ready(id, info)
}

// Exited implements worker.Events.
func (s *Starter) Exited(id string, err error) {
	s.releaseGate()
	s.events.Exited(id, err)
}

// Recycled implements worker.Events.
func (s *Starter) Recycled(id string, info worker.Info, reason string) {
	s.events.Recycled(id, info, reason)
}

func (s *Starter) acquireGate(ctx context.Context) bool {
	if s.opts.Gate == nil {
		return true
	}
	select {
	case s.opts.Gate <- struct{}{}:
		s.mu.Lock()
		s.holding = true
		s.mu.Unlock()
		return true
	case <-ctx.Done():
		return false
	}
}

func (s *Starter) releaseGate() {
	s.mu.Lock()
	held := s.holding
	s.holding = false
	s.mu.Unlock()
	if held {
		<-s.opts.Gate
	}
}

// attempts is the Starter's only child: one Serve is one worker lifetime,
// preceded by the backoff the previous failures earned.
type attempts struct {
	s          *Starter
	delay      time.Duration
	noJitter   bool // the next delay is the given-up pause, announced exactly
	startFails int
	started    bool
}

func (a *attempts) String() string { return "worker-" + a.s.w.ID() }

func (a *attempts) Serve(ctx context.Context) error {
	s := a.s
	d := a.delay
	if !a.noJitter {
		d = jitter(d)
	}
	a.noJitter = false
	if d > 0 && !sleep(ctx, d) {
		return nil
	}
	if !s.acquireGate(ctx) {
		return nil
	}
	if a.started {
		s.mu.Lock()
		s.restarts++
		s.mu.Unlock()
	}
	a.started = true
	// A worker may fail before it reports Starting; the previous lifetime's
	// readiness must not make that failure look like a crash after ready.
	s.mu.Lock()
	s.ready = false
	s.mu.Unlock()
	err := s.w.Serve(ctx)
	s.releaseGate() // a worker that returned without reporting must not keep the slot
	if ctx.Err() != nil {
		return nil
	}
	if err == nil {
		err = errors.New("worker returned without being asked to stop")
	}
	s.mu.Lock()
	wasReady := s.ready
	s.mu.Unlock()
	switch {
	case wasReady:
		a.startFails = 0
		a.delay = s.opts.InitialBackoff
	case hostResourceShort(err):
		// Not the adapter's fault either: the host is out of file
		// descriptors, memory or processes. No budget spent — giving the
		// worker up would blame its code — but the full backoff applies,
		// since such a shortage rarely clears within a second.
		a.delay = min(max(a.delay*2, s.opts.InitialBackoff), s.opts.MaxBackoff)
		limit, _ := worker.ResourceLimit(err)
		s.log.Warn("worker could not start for lack of a host resource; retrying", "after", a.delay, "limit", limit, "err", err)
		return err
	case killedFromOutside(err):
		// Not the adapter's fault: no budget spent. The backoff still grows,
		// to at most outsideKillMaxBackoff, so an import the OOM killer
		// always ends cannot become a restart storm, while a pool under
		// outside kills is back within about a second of the last one.
		a.delay = min(max(a.delay*2, s.opts.InitialBackoff), outsideKillMaxBackoff, s.opts.MaxBackoff)
		s.log.Warn("worker was killed from outside while starting; restarting it", "after", a.delay, "err", err)
		return err
	default:
		a.startFails++
		if a.startFails >= s.opts.StartupFailures {
			retry := s.opts.RetryGivenUpAfter
			s.log.Error("worker failed to start too many times in a row; giving it up for now",
				"failures", a.startFails, "retry_after", retry, "err", err)
			if s.opts.OnGiveUp != nil {
				s.opts.OnGiveUp(s.w.ID(), err, time.Now().Add(retry))
			}
			a.startFails = 0
			a.delay = retry
			a.noJitter = true
			return err
		}
		a.delay = min(max(a.delay*2, s.opts.InitialBackoff), s.opts.MaxBackoff)
	}
	s.log.Warn("worker lifetime ended; restarting", "after", a.delay, "err", err)
	return err
}

// hostResourceShort: the start failed because the host ran out of a
// resource (see worker.StartupResource).
func hostResourceShort(err error) bool {
	var se *worker.StartupError
	if errors.As(err, &se) {
		return se.Class() == worker.StartupResource
	}
	_, ok := worker.ResourceLimit(err)
	return ok
}

// outsideKillMaxBackoff caps the pause after starts killed from outside.
const outsideKillMaxBackoff = time.Second

// killedFromOutside: the start was ended by a signal the process did not
// raise itself.
func killedFromOutside(err error) bool {
	var se *worker.StartupError
	if !errors.As(err, &se) {
		return false
	}
	switch se.Signal {
	case syscall.SIGKILL, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP, syscall.SIGQUIT:
		return true
	}
	return false
}

// jitter spreads restarts by ±20% so workers that died together do not
// come back in lockstep.
func jitter(d time.Duration) time.Duration {
	f := 0.8 + 0.4*rand.Float64()
	return time.Duration(float64(d) * f)
}

// sleep waits d or until ctx ends; false means ctx ended.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
