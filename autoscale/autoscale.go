// Package autoscale grows and shrinks one pool's workers between a minimum
// and a maximum: an elastic pool. A Scaler is self-contained — one pool,
// the worker supervisor that adds and removes that pool's workers, and its
// Options — so an application runs one per elastic pool, as a suture
// service beside the pool's worker supervisor.
//
// # The contract
//
//   - Growth: when a call has waited at least ScaleUpAfter for any worker
//     (the oldest call of the pool's general queue or, while no worker has
//     a free slot, the oldest call prefetched into a busy worker and not
//     started: pool.Load) and more calls wait than the workers already
//     starting can take, the Scaler adds one worker;
//     at most one per ScaleUpInterval, never beyond Max. A pool with no
//     worker at all (Min 0) adds one as soon as a call waits.
//   - Shrink: a ready worker that took no call and had nothing in flight
//     for IdleTimeout, and that no session is pinned to, is retired — out of
//     rotation under the pool's lock, so no call can land on it meanwhile —
//     then stopped and removed; never below Min. Nothing is in flight on
//     it, so no call is lost or cut short.
//   - Failures: a worker the Scaler added that its Starter gives up (too
//     many failed starts) pauses growth for FailurePause, so a broken
//     adapter costs one failing worker per pause, not a start loop; it is
//     removed like an idle worker once IdleTimeout has passed (above Min),
//     and retried by its Starter meanwhile like any given-up worker.
//   - Every other guarantee is the worker supervisor's: a worker added here
//     is an ordinary member (recorded, restarted, recycled make-before-break,
//     stopped and reaped with the others), and removal goes through the same
//     drain-then-stop path as any other.
//
// Each scaling decision is logged on one line and counted in Stats.
package autoscale

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/snakepit-go/snakepit/pool"
	"github.com/snakepit-go/snakepit/supervisor"
	"github.com/snakepit-go/snakepit/worker"
)

// Defaults for zero Options fields (and the App's Config fields that feed
// them).
const (
	// DefaultIdleTimeout: a worker idle this long is removed (above Min).
	DefaultIdleTimeout = 60 * time.Second
	// DefaultScaleUpAfter: the queue wait that makes the pool grow. A
	// Python call typically takes milliseconds; a call that has waited
	// 200 ms for a slot means every slot is taken and stays taken.
	DefaultScaleUpAfter = 200 * time.Millisecond
	// DefaultScaleUpInterval: at most one new worker per interval. A
	// Python worker takes about a second to start; one a second lets each
	// new worker absorb its share before the next is judged necessary.
	DefaultScaleUpInterval = time.Second
	// DefaultFailurePause: growth pauses this long after a worker the
	// Scaler added was given up (the App passes RetryGivenUpAfter).
	DefaultFailurePause = 30 * time.Second
	defaultDrainGrace   = 2 * time.Second
	minTick, maxTick    = 10 * time.Millisecond, 250 * time.Millisecond
)

// Members adds and removes the pool's workers: *supervisor.Workers.
type Members interface {
	AddWorker(id string, f worker.Factory, opts ...supervisor.AddOption) error
	RemoveWorker(ctx context.Context, id string) error
}

// Source is the pool the Scaler watches: *pool.Pool.
type Source interface {
	Load() pool.Load
	RetireIdle(id string, calls uint64) bool
}

// Options configure a Scaler. Zero durations take the defaults above.
type Options struct {
	// Min and Max bound the number of managed workers; 0 <= Min < Max.
	Min, Max int
	// IdleTimeout, ScaleUpAfter, ScaleUpInterval, FailurePause: see the
	// package doc.
	IdleTimeout     time.Duration
	ScaleUpAfter    time.Duration
	ScaleUpInterval time.Duration
	FailurePause    time.Duration
	// DrainGrace bounds the drain of a removed worker (there is nothing in
	// flight on it; this is a bound, not a wait). Default 2 s.
	DrainGrace time.Duration

	Pool    Source
	Members Members
	// Factory builds the workers the Scaler adds.
	Factory worker.Factory
	// Managed says which of the pool's workers count against Min and Max
	// and may be removed (nil: all; an App leaves out remote workers).
	Managed func(id string) bool
	// NewID names the n-th worker (nil: "w<n>", the worker supervisor's
	// naming); FirstID is the first n tried (the initial workers' count).
	NewID   func(n int) string
	FirstID int

	Logger *slog.Logger
}

// Direction is the direction of a scaling event.
type Direction string

// The directions.
const (
	Up   Direction = "up"
	Down Direction = "down"
)

// Event is one scaling decision.
type Event struct {
	At        time.Time
	Direction Direction
	WorkerID  string
	// Reason says what the decision was made on, e.g. "oldest queued call
	// waited 312ms (ScaleUpAfter 200ms), 24 queued".
	Reason string
	// Workers is the number of managed workers right after the decision.
	Workers int
}

// Stats is a snapshot of the Scaler.
type Stats struct {
	// Elastic is false for a pool without a Scaler (the App's zero value).
	Elastic  bool
	Min, Max int
	// Workers counts the managed workers (starting, restarting and given-up
	// ones included; those being removed excluded): the size the Scaler
	// has decided on. Ready counts those ready.
	Workers, Ready int
	// ScaleUps and ScaleDowns count the workers added and removed.
	ScaleUps, ScaleDowns uint64
	// FailedStarts counts workers the Scaler added that were given up.
	FailedStarts uint64
	// PausedUntil is when growth resumes after a failed start (zero: not paused).
	PausedUntil time.Time
	// Last is the latest event (zero At: none yet).
	Last Event
}

// Scaler is a suture.Service; see the package doc.
type Scaler struct {
	opts Options
	log  *slog.Logger
	tick time.Duration

	mu       sync.Mutex
	st       Stats
	nextID   int
	nextUp   time.Time
	idle     map[string]idleMark
	failedAt map[string]time.Time
}

// idleMark is when a worker was last seen used, and its call count then.
type idleMark struct {
	calls uint64
	since time.Time
}

// ErrInvalid: Options out of range; the message says which.
var ErrInvalid = errors.New("snakepit: invalid autoscale options")

// New checks opts and builds a Scaler; nothing runs until Serve.
func New(opts Options) (*Scaler, error) {
	switch {
	case opts.Min < 0 || opts.Max <= opts.Min:
		return nil, fmt.Errorf("%w: need 0 <= MinWorkers < MaxWorkers, got %d and %d", ErrInvalid, opts.Min, opts.Max)
	case opts.Pool == nil || opts.Members == nil || opts.Factory == nil:
		return nil, fmt.Errorf("%w: Pool, Members and Factory are required", ErrInvalid)
	case opts.IdleTimeout < 0 || opts.ScaleUpAfter < 0 || opts.ScaleUpInterval < 0 || opts.FailurePause < 0 || opts.DrainGrace < 0:
		return nil, fmt.Errorf("%w: IdleTimeout, ScaleUpAfter, ScaleUpInterval and FailurePause must not be negative", ErrInvalid)
	}
	opts.IdleTimeout = or(opts.IdleTimeout, DefaultIdleTimeout)
	opts.ScaleUpAfter = or(opts.ScaleUpAfter, DefaultScaleUpAfter)
	opts.ScaleUpInterval = or(opts.ScaleUpInterval, DefaultScaleUpInterval)
	opts.FailurePause = or(opts.FailurePause, DefaultFailurePause)
	opts.DrainGrace = or(opts.DrainGrace, defaultDrainGrace)
	if opts.Managed == nil {
		opts.Managed = func(string) bool { return true }
	}
	if opts.NewID == nil {
		opts.NewID = func(n int) string { return fmt.Sprintf("w%d", n) }
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	// Fine enough to notice a wait of ScaleUpAfter soon after it happens,
	// coarse enough that a pool at rest costs nothing measurable.
	tick := min(opts.ScaleUpAfter, opts.IdleTimeout) / 4
	tick = min(max(tick, minTick), maxTick)
	return &Scaler{
		opts: opts, log: opts.Logger, tick: tick, nextID: opts.FirstID,
		// The worker supervisor starts Min workers; the first look confirms it.
		st:   Stats{Elastic: true, Min: opts.Min, Max: opts.Max, Workers: opts.Min},
		idle: map[string]idleMark{}, failedAt: map[string]time.Time{},
	}, nil
}

func or(d, def time.Duration) time.Duration {
	if d == 0 {
		return def
	}
	return d
}

func (s *Scaler) String() string { return "autoscale" }

// Stats returns a snapshot.
func (s *Scaler) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.st
}

// Serve implements suture.Service: it looks at the pool every tick until
// ctx ends. A removal under way then finishes on its own, bounded by the
// worker supervisor's stop, which waits for it.
func (s *Scaler) Serve(ctx context.Context) error {
	t := time.NewTicker(s.tick)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			s.step(ctx, time.Now())
		}
	}
}

// view is the managed part of one Load.
type view struct {
	load     pool.Load
	workers  []pool.WorkerLoad // managed, not draining, sorted by id
	ready    int
	starting int // starting or restarting: slots about to open
	startCap int
}

func (s *Scaler) look() view {
	v := view{load: s.opts.Pool.Load()}
	for _, w := range v.load.Workers {
		if !s.opts.Managed(w.ID) || w.State == pool.WorkerDraining {
			continue
		}
		v.workers = append(v.workers, w)
		switch w.State {
		case pool.WorkerReady:
			v.ready++
		case pool.WorkerStarting, pool.WorkerExited:
			v.starting++
			v.startCap += max(w.Capacity, 1)
		}
	}
	slices.SortFunc(v.workers, func(a, b pool.WorkerLoad) int { return strings.Compare(a.ID, b.ID) })
	return v
}

// step makes at most one growth decision, or else the shrink decisions,
// for one look at the pool.
func (s *Scaler) step(ctx context.Context, now time.Time) {
	v := s.look()
	s.noteFailures(v, now)
	n := len(v.workers)
	s.mu.Lock()
	s.st.Workers, s.st.Ready = n, v.ready
	s.mu.Unlock()
	if reason := s.growReason(v, now); reason != "" {
		s.grow(ctx, n, reason, now)
		return
	}
	if v.load.Queued == 0 {
		s.shrink(v, now)
	}
}

// growReason says why the pool should grow now, or "" when it should not.
func (s *Scaler) growReason(v view, now time.Time) string {
	n, o := len(v.workers), s.opts
	s.mu.Lock()
	defer s.mu.Unlock()
	if n >= o.Max || now.Before(s.nextUp) || now.Before(s.st.PausedUntil) {
		return ""
	}
	if n < o.Min {
		return fmt.Sprintf("%d workers, below MinWorkers %d", n, o.Min)
	}
	if v.load.Queued == 0 {
		return ""
	}
	if n == 0 {
		return "a call is waiting and no worker runs (MinWorkers 0)"
	}
	if v.load.OldestWait >= o.ScaleUpAfter && v.load.Queued > v.startCap {
		return fmt.Sprintf("oldest queued call waited %s (ScaleUpAfter %s), %d queued, %d worker(s) starting",
			v.load.OldestWait.Round(time.Millisecond), o.ScaleUpAfter, v.load.Queued, v.starting)
	}
	return ""
}

// grow adds one worker under the next free id.
func (s *Scaler) grow(ctx context.Context, n int, reason string, now time.Time) {
	s.mu.Lock()
	s.nextUp = now.Add(s.opts.ScaleUpInterval)
	s.mu.Unlock()
	// Ids in use (a worker added by hand, one still leaving) are skipped;
	// the bound keeps a pathological caller from looping here.
	for range 64 {
		s.mu.Lock()
		id := s.opts.NewID(s.nextID)
		s.nextID++
		s.mu.Unlock()
		err := s.opts.Members.AddWorker(id, s.opts.Factory)
		switch {
		case err == nil:
			s.record(Up, id, reason, n+1, now)
			return
		case errors.Is(err, supervisor.ErrWorkerExists):
			continue
		case errors.Is(err, supervisor.ErrNotServing) || ctx.Err() != nil:
			return // stopping
		default:
			s.log.Warn("snakepit: autoscale could not add a worker; growth pauses", "worker_id", id, "err", err, "pause", s.opts.FailurePause)
			s.mu.Lock()
			s.st.PausedUntil = now.Add(s.opts.FailurePause)
			s.mu.Unlock()
			return
		}
	}
}

// shrink retires the workers idle for IdleTimeout, and the given-up ones
// failed that long, down to Min.
func (s *Scaler) shrink(v view, now time.Time) {
	n, o := len(v.workers), s.opts
	seen := make(map[string]bool, n)
	for _, w := range v.workers {
		seen[w.ID] = true
		s.mu.Lock()
		m, ok := s.idle[w.ID]
		if !ok || w.State != pool.WorkerReady || w.InFlight > 0 || w.Calls != m.calls {
			m = idleMark{calls: w.Calls, since: now}
			s.idle[w.ID] = m
		}
		failedAt, failed := s.failedAt[w.ID]
		s.mu.Unlock()
		if n <= o.Min {
			continue
		}
		switch {
		case w.State == pool.WorkerReady && now.Sub(m.since) >= o.IdleTimeout:
			if !o.Pool.RetireIdle(w.ID, w.Calls) {
				continue // used meanwhile, or a session is pinned to it
			}
			n--
			s.remove(w.ID, fmt.Sprintf("idle for %s (IdleTimeout %s)", now.Sub(m.since).Round(time.Millisecond), o.IdleTimeout), n, now)
		case w.State == pool.WorkerFailed && failed && now.Sub(failedAt) >= o.IdleTimeout:
			n--
			s.remove(w.ID, fmt.Sprintf("given up %s ago (IdleTimeout %s)", now.Sub(failedAt).Round(time.Millisecond), o.IdleTimeout), n, now)
		}
	}
	s.mu.Lock()
	for id := range s.idle {
		if !seen[id] {
			delete(s.idle, id)
		}
	}
	s.mu.Unlock()
}

// remove records the decision and stops the worker in the background: the
// worker supervisor drains it (nothing is in flight), stops its process and
// forgets it; its stop waits for removals under way.
func (s *Scaler) remove(id, reason string, n int, now time.Time) {
	s.record(Down, id, reason, n, now)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), s.opts.DrainGrace)
		defer cancel()
		err := s.opts.Members.RemoveWorker(ctx, id)
		if err != nil && !errors.Is(err, supervisor.ErrNotServing) && !errors.Is(err, supervisor.ErrNoSuchWorker) {
			s.log.Warn("snakepit: autoscale removal of an idle worker ended with an error", "worker_id", id, "err", err)
		}
	}()
}

// noteFailures counts the managed workers newly given up and pauses growth.
func (s *Scaler) noteFailures(v view, now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, w := range v.workers {
		_, was := s.failedAt[w.ID]
		switch {
		case w.State == pool.WorkerFailed && !was:
			s.failedAt[w.ID] = now
			s.st.FailedStarts++
			s.st.PausedUntil = now.Add(s.opts.FailurePause)
			s.log.Warn("snakepit: autoscale: a worker was given up; growth pauses", "worker_id", w.ID, "pause", s.opts.FailurePause, "workers", len(v.workers))
		case w.State != pool.WorkerFailed && was:
			delete(s.failedAt, w.ID)
		}
	}
}

func (s *Scaler) record(d Direction, id, reason string, n int, now time.Time) {
	e := Event{At: now, Direction: d, WorkerID: id, Reason: reason, Workers: n}
	s.mu.Lock()
	if d == Up {
		s.st.ScaleUps++
	} else {
		s.st.ScaleDowns++
		delete(s.idle, id)
		delete(s.failedAt, id)
	}
	s.st.Workers = n
	s.st.Last = e
	s.mu.Unlock()
	s.log.Info("snakepit: scaled "+string(d), "worker_id", id, "workers", n, "min", s.opts.Min, "max", s.opts.Max, "reason", reason)
}
