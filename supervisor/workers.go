package supervisor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/thejerf/suture/v4"

	"github.com/snakepit-go/snakepit/childproc"
	"github.com/snakepit-go/snakepit/pool"
	"github.com/snakepit-go/snakepit/starter"
	"github.com/snakepit-go/snakepit/worker"
)

// Errors of dynamic membership (AddWorker, RemoveWorker).
var (
	ErrNotServing   = errors.New("snakepit: the pool is not serving (not started yet, or stopping); add and remove workers while the App runs")
	ErrWorkerExists = errors.New("snakepit: a worker with this id is already in the pool; remove it first or pick another id")
	ErrNoSuchWorker = errors.New("snakepit: no worker with this id is in the pool")
)

// WorkersOptions configure the pool's worker supervisor.
type WorkersOptions struct {
	// Count is the number of workers started with the pool (0: none, when
	// all of them join later through AddWorker).
	Count    int
	MinReady int // workers that must be ready before Ready closes; default Count
	Capacity int // concurrent calls per worker; default worker.DefaultCapacity
	RunID    string
	// IDPrefix starts the ids of the workers started with the pool
	// ("<IDPrefix>w0", …): it keeps the ids of several pools under one
	// registry and one bridge apart.
	IDPrefix string
	// PoolName is the pool's name, given to each worker's Launcher (its
	// processes' cgroups lie in the pool's).
	PoolName string
	Factory  worker.Factory
	Pool     *pool.Pool
	Starter  starter.Options
	// StartConcurrency bounds workers between spawn and ready at once;
	// default 2×CPUs (Python start is CPU-bound).
	StartConcurrency int
	// RecycleConcurrency bounds how many workers recycle their process
	// (make-before-break recycling) at once; default 1.
	RecycleConcurrency int
	// DrainGrace is how long in-flight calls may finish at stop before they
	// are cancelled; default 2 s.
	DrainGrace time.Duration
	// StopTimeout bounds the wait for one Starter to stop; it must exceed
	// Starter.StopTimeout. Default Starter.StopTimeout + 1 s.
	StopTimeout time.Duration
	// Observer, when set, also receives every worker's lifecycle events
	// (after the pool).
	Observer worker.Events
	// Recorder returns the open process registry when the workers start
	// (nil: processes are not recorded, for tests).
	Recorder func() childproc.Recorder
	// OnStartFailed, when set, is called once the pool is known unable to
	// become ready (every worker given up, or MinReady out of reach),
	// before the workers are stopped: waiters learn of it at once instead
	// of after the ordered stop.
	OnStartFailed func(error)
	Logger        *slog.Logger
}

// fanout delivers lifecycle events to the pool, then to the observer.
type fanout struct{ a, b worker.Events }

func (f fanout) Starting(id string) { f.a.Starting(id); f.b.Starting(id) }
func (f fanout) Ready(id string, info worker.Info) {
	f.a.Ready(id, info)
	f.b.Ready(id, info)
}
func (f fanout) Exited(id string, err error) { f.a.Exited(id, err); f.b.Exited(id, err) }
func (f fanout) Recycled(id string, info worker.Info, reason string) {
	f.a.Recycled(id, info, reason)
	f.b.Recycled(id, info, reason)
}

// Workers is the pool's subtree: the dispatcher plus a suture supervisor
// holding one Starter per worker. It is a suture.Service and a readier.
type Workers struct {
	opts  WorkersOptions
	sup   *suture.Supervisor
	ready chan struct{}
	log   *slog.Logger

	reloading chan struct{} // one Reload at a time

	mu       sync.Mutex
	starters []*starter.Starter
	tokens   []suture.ServiceToken
	stopped  time.Time
	// Set by Serve for AddWorker: what every Starter is built with.
	serving bool
	closed  bool // stopAll began: no more members
	// stopping is set when Serve's context ends (before the drain): a
	// Reload running then is cut short, not reported as a success.
	stopping    atomic.Bool
	next        int // Spec.Index of the next worker
	sopts       starter.Options
	events      worker.Events
	rec         childproc.Recorder
	recycleGate chan struct{}
	removing    sync.WaitGroup
	leaving     map[string]bool // ids RemoveWorker is still draining or stopping
}

// NewWorkers builds the subtree; nothing runs until Serve.
func NewWorkers(opts WorkersOptions) (*Workers, error) {
	if opts.Count < 0 {
		return nil, fmt.Errorf("snakepit: worker count must not be negative, got %d", opts.Count)
	}
	if opts.Factory == nil || opts.Pool == nil {
		return nil, fmt.Errorf("snakepit: workers need a Factory and a Pool")
	}
	if opts.MinReady <= 0 || opts.MinReady > opts.Count {
		opts.MinReady = opts.Count
	}
	if opts.Capacity <= 0 {
		opts.Capacity = worker.DefaultCapacity
	}
	if opts.StartConcurrency <= 0 {
		opts.StartConcurrency = 2 * runtime.NumCPU()
	}
	if opts.Starter.StopTimeout <= 0 {
		opts.Starter.StopTimeout = starter.DefaultStopTimeout
	}
	if opts.RecycleConcurrency <= 0 {
		opts.RecycleConcurrency = 1
	}
	if opts.StopTimeout <= 0 {
		opts.StopTimeout = opts.Starter.StopTimeout + time.Second
	}
	if opts.DrainGrace <= 0 {
		opts.DrainGrace = 2 * time.Second
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	w := &Workers{opts: opts, ready: make(chan struct{}), reloading: make(chan struct{}, 1), log: opts.Logger}
	w.sup = suture.New("workers", suture.Spec{
		EventHook: eventHook(opts.Logger),
		// Starters keep their own budgets; this level must never pause them all.
		FailureThreshold: 1e9,
		FailureDecay:     1,
		Timeout:          opts.StopTimeout,
	})
	return w, nil
}

func (w *Workers) String() string { return "workers" }

// Ready implements readier.
func (w *Workers) Ready() <-chan struct{} { return w.ready }

// Starters returns the per-worker Starters in worker order.
func (w *Workers) Starters() []*starter.Starter {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]*starter.Starter(nil), w.starters...)
}

// StoppedAt is when the last worker was reaped at stop (zero before).
func (w *Workers) StoppedAt() time.Time {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.stopped
}

// Serve implements suture.Service.
func (w *Workers) Serve(ctx context.Context) error {
	o := w.opts
	inner, cancelInner := context.WithCancel(context.Background())
	supDone := w.sup.ServeBackground(inner)
	defer func() {
		cancelInner()
		<-supDone
	}()
	gate := make(chan struct{}, o.StartConcurrency)
	sopts := o.Starter
	sopts.Gate = gate
	sopts.Logger = o.Logger
	sopts.EventHook = eventHook(o.Logger)
	sopts.OnGiveUp = func(id string, err error, retryAt time.Time) {
		o.Pool.WorkerFailed(id, err, retryAt)
	}
	recycleGate := make(chan struct{}, o.RecycleConcurrency)
	var events worker.Events = o.Pool
	if o.Observer != nil {
		events = fanout{o.Pool, o.Observer}
	}
	var rec childproc.Recorder
	if o.Recorder != nil {
		rec = o.Recorder()
	}
	w.mu.Lock()
	w.sopts, w.events, w.rec, w.recycleGate = sopts, events, rec, recycleGate
	w.serving = true
	for i := 0; i < o.Count; i++ {
		if err := w.startLocked(fmt.Sprintf("%sw%d", o.IDPrefix, i), o.Factory, true); err != nil {
			w.mu.Unlock()
			w.failStart(err)
			return err
		}
	}
	w.mu.Unlock()
	if o.Count == 0 {
		// Every worker joins later (AddWorker); there is nothing to wait for.
		close(w.ready)
		<-ctx.Done()
		w.stopping.Store(true)
		return w.drainAndStop()
	}
	readyErr := make(chan error, 1)
	go func() { readyErr <- o.Pool.WaitReady(ctx, o.MinReady) }()
	select {
	case err := <-readyErr:
		if err != nil && ctx.Err() == nil {
			w.log.Error("the pool cannot become ready", "err", err)
			w.failStart(err)
			// The Application, which tracks this child, keeps suture from
			// restarting it and reports err to its own caller.
			return err
		}
		if err == nil {
			close(w.ready)
		}
	case <-ctx.Done():
	}
	<-ctx.Done()
	w.stopping.Store(true)
	return w.drainAndStop()
}

// failStart tells the observer, then stops every worker started so far.
func (w *Workers) failStart(err error) {
	w.stopping.Store(true)
	if w.opts.OnStartFailed != nil {
		w.opts.OnStartFailed(err)
	}
	w.stopAll()
}

func (w *Workers) drainAndStop() error {
	dctx, cancel := context.WithTimeout(context.Background(), w.opts.DrainGrace)
	w.opts.Pool.Drain(dctx)
	cancel()
	w.stopAll()
	return nil
}

// startLocked builds the Starter of worker id with f, adds it to the pool
// and runs it; gated: its starts take a slot of the start gate. w.mu is held.
func (w *Workers) startLocked(id string, f worker.Factory, gated bool) error {
	o := w.opts
	spec := worker.Spec{
		ID: id, Index: w.next, RunID: o.RunID, Capacity: o.Capacity,
		Events: w.events, Logger: o.Logger, RecycleGate: w.recycleGate,
		Launcher: &childproc.Launcher{RunID: o.RunID, WorkerID: id, Pool: o.PoolName, Recorder: w.rec,
			Logger: o.Logger.With("worker_id", id)},
	}
	sopts := w.sopts
	if !gated {
		sopts.Gate = nil
	}
	s, err := starter.New(f, spec, sopts)
	if err != nil {
		return err
	}
	w.next++
	o.Pool.Add(s.Worker(), o.Capacity)
	w.starters = append(w.starters, s)
	w.tokens = append(w.tokens, w.sup.Add(s))
	return nil
}

func (w *Workers) indexLocked(id string) int {
	for i, s := range w.starters {
		if s.Worker().ID() == id {
			return i
		}
	}
	return -1
}

// AddOption tunes one AddWorker.
type AddOption func(*addOptions)

type addOptions struct{ ungated bool }

// Ungated exempts the worker from the start gate (StartConcurrency), which
// bounds CPU-bound process starts: a worker that only connects somewhere
// (a remote agent, possibly waiting for it to become healthy) must not hold
// back the local processes' starts.
func Ungated() AddOption { return func(o *addOptions) { o.ungated = true } }

// AddWorker starts a worker built by f (once, for its whole membership)
// while the pool serves; it takes calls once it reports Ready. Its Starter
// restarts it like any other, with the same budgets. The id must be unused
// (ErrWorkerExists); before Serve or once the stop began it is
// ErrNotServing.
func (w *Workers) AddWorker(id string, f worker.Factory, opts ...AddOption) error {
	var ao addOptions
	for _, o := range opts {
		o(&ao)
	}
	if id == "" || f == nil {
		return ErrInvalidWorker
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.serving || w.closed {
		return ErrNotServing
	}
	if w.indexLocked(id) >= 0 || w.leaving[id] {
		// A leaving id is still in the pool until its Starter has stopped.
		return fmt.Errorf("%w: %s", ErrWorkerExists, id)
	}
	if err := w.startLocked(id, f, !ao.ungated); err != nil {
		return fmt.Errorf("snakepit: adding worker %s: %w", id, err)
	}
	return nil
}

// RemoveWorker takes worker id out of the pool while it serves: the pool
// stops giving it calls, its in-flight calls may finish until ctx ends
// (pass the drain grace as a deadline), then its Starter is stopped —
// within StopTimeout, for a process: until it is reaped — and the pool
// forgets it. Calls still running when ctx ends fail as the worker stops.
// The returned error is ErrNoSuchWorker, or the drain's when its grace
// ended with calls in flight (the worker is removed all the same).
func (w *Workers) RemoveWorker(ctx context.Context, id string) error {
	w.mu.Lock()
	i := w.indexLocked(id)
	if i < 0 || w.closed {
		w.mu.Unlock()
		if i >= 0 {
			return ErrNotServing // stopAll owns it now
		}
		return fmt.Errorf("%w: %s", ErrNoSuchWorker, id)
	}
	tok := w.tokens[i]
	w.starters = append(w.starters[:i:i], w.starters[i+1:]...)
	w.tokens = append(w.tokens[:i:i], w.tokens[i+1:]...)
	w.removing.Add(1)
	if w.leaving == nil {
		w.leaving = map[string]bool{}
	}
	w.leaving[id] = true
	w.mu.Unlock()
	defer func() {
		w.mu.Lock()
		delete(w.leaving, id)
		w.mu.Unlock()
		w.removing.Done()
	}()
	derr := w.opts.Pool.Retire(ctx, id)
	if err := w.sup.RemoveAndWait(tok, w.opts.StopTimeout); err != nil {
		w.log.Error("removed worker did not stop in time", "worker_id", id, "err", err)
	}
	w.opts.Pool.Remove(id)
	return derr
}

// stopAll removes every Starter. Workers are peers, so they stop
// concurrently; each RemoveAndWait returns only after its process is reaped.
func (w *Workers) stopAll() {
	w.mu.Lock()
	tokens := append([]suture.ServiceToken(nil), w.tokens...)
	starters := append([]*starter.Starter(nil), w.starters...)
	w.tokens = nil
	w.closed = true
	w.mu.Unlock()
	var wg sync.WaitGroup
	for i := len(tokens) - 1; i >= 0; i-- {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			if err := w.sup.RemoveAndWait(tokens[i], w.opts.StopTimeout); err != nil {
				w.log.Error("worker did not stop in time", "worker_id", starters[i].Worker().ID(), "err", err)
			}
			w.opts.Pool.Remove(starters[i].Worker().ID())
		}(i)
	}
	wg.Wait()
	w.removing.Wait() // workers being removed stop within their own bound
	w.mu.Lock()
	w.stopped = time.Now()
	w.mu.Unlock()
}
