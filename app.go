// Package snakepit runs a supervised pool of Python worker processes and
// lets Go code call Python "tools" on them over gRPC.
//
// An App is a suture tree (see package supervisor): the process registry,
// the last-resort cleanup, the bridge that Python calls back into, and the
// pool with one supervised Starter per worker. Start it with Start/Stop, or
// add it to your own suture supervisor (App is a suture.Service): cancelling
// its context performs the same ordered stop. Give that supervisor a
// Timeout above Config.StopTimeout. An App that cannot start tells every
// waiter at once and returns the *StartError from Serve; the parent's
// restart (its backoff) is a fresh start.
//
// The invariant it keeps: no Python process it started, nor anything that
// process spawned, outlives it; and it never signals a process it cannot
// prove is its own. See docs/GUARANTEES.md.
//
// The design's names and the Go types behind them:
//
//	Application          App (its tree: supervisor.Application)
//	Registry             registry.Service, on bbolt (registry.Registry)
//	Pool                 pool.Pool, inside supervisor.Workers
//	WorkerSupervisor     supervisor.Workers (a suture supervisor of Starters)
//	Starter              starter.Starter (one per worker: backoff, give-up, retry)
//	GRPCWorker           grpcworker.Worker (the Python worker type), on childproc
//	ApplicationCleanup   cleanup.Service (stopped last)
//
// A call (Execute, ExecuteStream) takes a free worker slot or queues for
// one. Limits a tool declares in Python hold across the whole pool:
// @tool(max_concurrency=N) queues calls beyond N, @tool(timeout=s) is the
// deadline of a call whose ctx has none (*ToolTimeoutError). The span
// context in ctx reaches the tool as W3C traceparent/tracestate (only the
// OpenTelemetry API is used; no SDK is required).
//
// Calls fail with errors to test with errors.Is/As: ErrWorkerCrashed
// (*CrashError), ErrToolFailed (*ToolError), ErrQueueTimeout,
// ErrPoolSaturated, ErrNotReady (*NotReadyError), ErrNotStarted, and the
// others declared in errors.go. Your own worker types plug in through
// Config.WorkerFactory (packages worker and childproc); package snakepittest
// runs the lifecycle guarantees against your Config.
//
// # Several pools
//
// An App has a default pool, which the top-level Config fields describe
// and the App's methods use, and one more pool per Config.Pools entry,
// each with its own adapter, interpreter, environment, size and limits
// (PoolConfig; what it leaves unset it inherits from the top-level
// fields). App.Pool(name) is a handle with the same Execute,
// ExecuteStream, Tools, Stats, WaitReady and Reload, for that pool alone.
// The pools share the App's one registry, bridge (sessions, host tools),
// cleanup and stop budget: their worker supervisors are one child of the
// tree, started side by side and stopped together. The App is ready when
// every pool is, and fails to start when any pool does. A handle rather
// than a per-call option routes calls because a pool is more than a
// destination: it has its own tools, stats and reloads, which an option
// on one call could not express.
package snakepit

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"iter"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/thejerf/suture/v4"

	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/snakepit-go/snakepit/bridge"
	"github.com/snakepit-go/snakepit/cleanup"
	"github.com/snakepit-go/snakepit/grpcworker"
	"github.com/snakepit-go/snakepit/internal/auth"
	"github.com/snakepit-go/snakepit/internal/wire"
	"github.com/snakepit-go/snakepit/pool"
	"github.com/snakepit-go/snakepit/registry"
	"github.com/snakepit-go/snakepit/supervisor"
	"github.com/snakepit-go/snakepit/worker"
)

// App is one snakepit instance.
type App struct {
	cfg    Config
	runID  string
	token  auth.Token
	log    *slog.Logger
	stop   stopBudget
	bridge *bridge.Server
	// pools are the resolved pool configurations with their worker
	// factories, the default pool first; fixed by New.
	pools []appPool

	// tr is Config.TracerProvider's tracer; globalTr the global
	// provider's (tracing.go).
	tr       trace.Tracer
	globalTr atomic.Pointer[globalTracer]
	// reqPrefix and reqSeq make the request ids of calls that bring none.
	reqPrefix string
	reqSeq    atomic.Uint64

	// cur is the run the next (or current) Serve uses. The bridge, with its
	// sessions and host tools, outlives runs; everything else is per run.
	cur atomic.Pointer[run]

	// running is set once Start or Serve began: calls made before fail
	// fast with ErrNotStarted instead of waiting out their deadline.
	running atomic.Bool

	mu      sync.Mutex
	stopped bool // Stop was called: the App is over
	cancel  context.CancelFunc
	done    chan struct{}
	serveEr error
}

// run is one Serve of the App's tree. suture restarts a failed service by
// calling Serve again, so each Serve after the first builds a fresh run: a
// registry, a pool and workers that start from nothing.
type run struct {
	reg   *registry.Service
	clean *cleanup.Service
	// pools[0] is the default pool, which AddWorker, RemoveWorker and
	// Tools act on.
	pools []*poolRun // in App.pools' order
	group *supervisor.Group
	tree  *supervisor.Application
	// watches keeps each pool's remote workers in line with its Discovery
	// (empty when no pool has one).
	watches watchGroup
	// scalers grow and shrink the elastic pools, one each (none when
	// every pool has a fixed size).
	scalers scalerGroup

	served   bool          // a Serve took this run (App.mu)
	failOnce sync.Once     // guards err and failed
	err      error         // why the start failed; set before failed closes
	failed   chan struct{} // closed once the start is known to have failed
	stopping chan struct{} // closed when Serve's ctx ended
	ended    chan struct{} // closed when Serve returned
}

func (r *run) fail(err error) {
	r.failOnce.Do(func() {
		r.err = err
		close(r.failed)
	})
}

// failure is the start error once the start is known to have failed.
func (r *run) failure() error {
	select {
	case <-r.failed:
		return r.err
	default:
		return nil
	}
}

// callError replaces the pool's "stopping" with the start error when the
// pool stopped because the start failed: the caller needs the Python error.
func (r *run) callError(err error) error {
	if err != nil && errors.Is(err, ErrPoolStopping) {
		if ferr := r.failure(); ferr != nil {
			return ferr
		}
	}
	return err
}

// New validates cfg and builds the tree; nothing runs until Start or Serve.
// A missing Python interpreter is reported here.
func New(cfg Config) (*App, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	pcs, err := cfg.pools()
	if err != nil {
		return nil, err
	}
	stop, err := newStopBudget(cfg, pcs)
	if err != nil {
		return nil, err
	}
	a := &App{cfg: cfg, tr: providerTracer(cfg.TracerProvider), runID: registry.NewRunID(), stop: stop, reqPrefix: newRequestPrefix()}
	a.log = cfg.Logger.With("run_id", a.runID)
	a.token = auth.NewToken()
	a.bridge, err = bridge.New(bridge.Options{Token: a.token, StopGrace: stop.bridgeGrace, SessionTTL: cfg.SessionTTL, MaxSessions: cfg.MaxSessions, MaxMessageBytes: bridgeMessageBytes(pcs), Logger: a.log})
	if err != nil {
		return nil, err
	}
	for _, pc := range pcs {
		f, err := a.newFactory(pc)
		if err != nil {
			return nil, err
		}
		a.pools = append(a.pools, appPool{cfg: pc, factory: f})
	}
	r, err := a.newRun()
	if err != nil {
		return nil, err
	}
	a.cur.Store(r)
	if cfg.Metrics != nil {
		if err := cfg.Metrics.Register(NewCollector(a)); err != nil {
			return nil, fmt.Errorf("snakepit: registering the metrics collector: %w", err)
		}
	}
	return a, nil
}

// newRun builds the per-run part of the tree around the App's bridge.
func (a *App) newRun() (*run, error) {
	cfg, stop := a.cfg, a.stop
	r := &run{failed: make(chan struct{}), stopping: make(chan struct{}), ended: make(chan struct{})}
	path := cfg.RegistryPath
	if path == "" {
		path = registry.DefaultPath(cfg.Instance)
	}
	r.reg = registry.NewService(registry.Options{Path: path, Instance: cfg.Instance, RunID: a.runID, Logger: a.log, KillGrace: cfg.StopGrace,
		Containment: cfg.Containment, Pools: cgroupLimits(a.pools)})
	r.pools = make([]*poolRun, len(a.pools))
	members := make([]*supervisor.Workers, len(a.pools))
	for i := range a.pools {
		pr, err := a.newPoolRun(r, &a.pools[i])
		if err != nil {
			return nil, err
		}
		r.pools[i], members[i] = pr, pr.work
		if pr.scale != nil {
			r.scalers = append(r.scalers, pr.scale)
		}
	}
	r.group = supervisor.NewGroup(members...)
	if err := a.newWatchers(r); err != nil {
		return nil, err
	}
	r.clean = cleanup.New(cleanup.Options{RunID: a.runID, Registry: r.reg.Registry, Logger: a.log, KillGrace: stop.cleanupKill})
	// Start order registry → cleanup → bridge → workers; the Application
	// stops them in reverse, so cleanup sweeps after every worker is reaped
	// and the bridge is gone, while the registry it reads is still open.
	children := []supervisor.Child{
		{Name: "registry", Service: r.reg, StopTimeout: stop.registry},
		{Name: "cleanup", Service: r.clean, StopTimeout: stop.cleanup},
		{Name: "bridge", Service: a.bridge, StopTimeout: stop.bridge},
		{Name: "workers", Service: r.group, StopTimeout: stop.workers},
	}
	if len(r.scalers) > 0 {
		// After the workers: it adds to them, and stops before they do.
		children = append(children, supervisor.Child{Name: "autoscale", Service: r.scalers, StopTimeout: stop.scaler})
	}
	if len(r.watches.watches) > 0 {
		// After the workers: it adds to them, and stops before they do.
		children = append(children, supervisor.Child{Name: "discovery", Service: &r.watches, StopTimeout: stop.discovery})
	}
	r.tree = supervisor.NewApplication("snakepit", children, a.log)
	return r, nil
}

// runObserver drops what a worker registered with the bridge when its
// process ends (the next lifetime registers afresh), and asks discovery to
// look again at once when a remote worker fails: its agent may be gone.
type runObserver struct {
	a *App
	r *run
}

func (runObserver) Starting(string)           {}
func (runObserver) Ready(string, worker.Info) {}
func (o runObserver) Exited(id string, err error) {
	o.a.bridge.ForgetWorker(id)
	if err != nil {
		o.r.refreshDiscovery(id)
	}
}

// Recycled keeps the registrations: the new process made its own before it
// took over, under the same worker id.
func (runObserver) Recycled(string, worker.Info, string) {}

// AddWorker joins a worker built by f to the default pool while the App runs (it
// takes calls once ready; its Starter restarts it like the others). The id
// must be unused (ErrWorkerExists); before Start or once stopping it is
// ErrNotServing. An id starting with a named pool's "<pool>." is refused
// (ErrInvalidWorker): that prefix is the named pool's, and ids are shared by
// every pool's registry records and bridge registrations.
func (a *App) AddWorker(id string, f worker.Factory) error {
	if id == "" || f == nil {
		return fmt.Errorf("%w: %w", ErrInvalidConfig, ErrInvalidWorker)
	}
	for _, ap := range a.pools[1:] {
		if p := ap.cfg.workerPrefix(); strings.HasPrefix(id, p) {
			return fmt.Errorf("%w: %w: worker id %q starts with %q, the prefix of pool %s's workers; choose an id without it", ErrInvalidConfig, ErrInvalidWorker, id, p, ap.cfg.Name)
		}
	}
	return a.cur.Load().pools[0].work.AddWorker(id, f)
}

// RemoveWorker drains worker id of the default pool (no new calls; in-flight ones may finish
// until ctx ends), stops it and takes it out of the pool. It returns
// ErrNoSuchWorker for an unknown id, or the drain's error when ctx ended
// with calls in flight (the worker is removed all the same).
func (a *App) RemoveWorker(ctx context.Context, id string) error {
	return a.cur.Load().pools[0].work.RemoveWorker(ctx, id)
}

// lateFactory binds what exists only once the tree runs (the bridge's
// address) to the Python worker factory.
type lateFactory struct {
	app  *App
	base *grpcworker.Factory
}

func (f *lateFactory) NewWorker(spec worker.Spec) (worker.Worker, error) {
	// The address is read at each process start, not now: a bridge that
	// restarted listens elsewhere, and restarted workers must follow it.
	return f.base.With(f.app.bridge.Addr).NewWorker(spec)
}

// String names the App in a parent supervisor's events and logs; without it
// suture would dump the whole value with %#v.
func (a *App) String() string { return "snakepit(" + a.runID + ")" }

// GoString keeps %#v (suture's fallback, debug dumps) to the same short
// name: a dump of the App's internals would race with its running tree.
func (a *App) GoString() string { return "snakepit.App(" + a.runID + ")" }

// RunID is this instance's unique run id; every worker carries it in argv
// and environment.
func (a *App) RunID() string { return a.runID }

// Serve implements suture.Service: it runs the tree until ctx ends, then
// stops it in order, and returns the cleanup's error if anything survived
// the ordered stop.
//
// When the App cannot start (every worker given up, MinReady out of reach,
// a locked registry), it stops what it started, WaitReady, Reload and calls
// get the *StartError at once, and Serve returns that *StartError: a parent
// suture supervisor logs it (EventServiceTerminate) and restarts the App
// after its own backoff, like any failed service. Each Serve after the
// first is a fresh start of the tree (new processes, same RunID; sessions
// and host tools are kept), so a cause fixed meanwhile heals on the next
// restart. Serve runs one at a time; after Stop it returns ErrStopped.
func (a *App) Serve(ctx context.Context) error {
	r, err := a.beginRun()
	if err != nil {
		return err
	}
	return a.serveRun(ctx, r)
}

// beginRun hands Serve the current run, or a fresh one once the last has
// been served.
func (a *App) beginRun() (*run, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.stopped {
		return nil, misuse{ErrStopped}
	}
	r := a.cur.Load()
	if r.served {
		select {
		case <-r.ended:
		default:
			return nil, misuse{fmt.Errorf("%w: Serve is already running; an App runs once at a time", ErrAlreadyStarted)}
		}
		nr, err := a.newRun()
		if err != nil {
			return nil, err
		}
		a.cur.Store(nr)
		r = nr
	}
	r.served = true
	a.running.Store(true)
	return r, nil
}

func (a *App) serveRun(ctx context.Context, r *run) error {
	defer close(r.ended)
	stopWatch := context.AfterFunc(ctx, func() { close(r.stopping) })
	defer func() {
		if stopWatch() {
			close(r.stopping) // ended without ctx: a failed start
		}
	}()
	if err := r.tree.Serve(ctx); err != nil {
		r.fail(err) // the tree's *StartError names the child; keep the first
		return r.err
	}
	if rep, ok := r.clean.Report(); ok {
		return rep.Err()
	}
	return nil
}

// misuse is an error a parent supervisor must not answer with a restart
// (errors.Is suture.ErrDoNotRestart), without suture's wording in the
// message a user reads.
type misuse struct{ err error }

func (m misuse) Error() string { return m.err.Error() }
func (m misuse) Unwrap() error { return m.err }
func (m misuse) Is(target error) bool {
	return target == suture.ErrDoNotRestart
}

// Start runs the App in the background and returns once it is ready, or
// with the start error once it has failed to start and stopped what it
// started, or with ctx's error (after stopping) when ctx ends first. An App
// starts once: Start after Stop is ErrStopped (build a new App with New).
func (a *App) Start(ctx context.Context) error {
	a.mu.Lock()
	switch {
	case a.stopped:
		a.mu.Unlock()
		return ErrStopped
	case a.done != nil:
		a.mu.Unlock()
		return fmt.Errorf("%w: Start was already called; an App starts once (build a new App with New to start again)", ErrAlreadyStarted)
	}
	a.mu.Unlock()
	r, err := a.beginRun()
	if err != nil {
		return err
	}
	runCtx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	a.mu.Lock()
	a.cancel, a.done = cancel, done
	a.mu.Unlock()
	go func() {
		err := a.serveRun(runCtx, r)
		a.mu.Lock()
		a.serveEr = err
		a.mu.Unlock()
		close(done)
	}()
	select {
	case <-r.tree.Ready():
		return nil
	case <-done:
		a.mu.Lock()
		defer a.mu.Unlock()
		if a.serveEr == nil {
			return fmt.Errorf("%w: the App stopped before it became ready", ErrPoolStopping)
		}
		return a.serveEr
	case <-ctx.Done():
		cancel()
		<-done
		return ctx.Err()
	}
}

// StopReport says what the stop did, in order.
type StopReport struct {
	// Children lists each child's stop, in the order they stopped.
	Children []StopRecord
	// WorkersStoppedAt is when the last worker was reaped.
	WorkersStoppedAt time.Time
	// Cleanup is the last-resort sweep's report; on a correct stop it found nothing.
	Cleanup CleanupReport
}

// Stop performs the ordered stop and waits for it (or ctx). The error is
// non-nil when the cleanup had to kill survivors (errors.Is ErrSurvivors),
// or is the start error when the App had failed to start. Stop before
// Start is ErrNotStarted (an App added to a supervisor stops with the
// supervisor's context instead). The App cannot be started again.
func (a *App) Stop(ctx context.Context) (StopReport, error) {
	a.mu.Lock()
	cancel, done := a.cancel, a.done
	if done != nil {
		a.stopped = true
	}
	a.mu.Unlock()
	if done == nil {
		return StopReport{}, fmt.Errorf("%w: Stop called before Start", ErrNotStarted)
	}
	cancel()
	select {
	case <-done:
	case <-ctx.Done():
		return StopReport{}, fmt.Errorf("snakepit: stop did not finish: %w", ctx.Err())
	}
	r := a.cur.Load()
	rep := StopReport{Children: r.tree.StopRecords(), WorkersStoppedAt: r.group.StoppedAt()}
	rep.Cleanup, _ = r.clean.Report()
	a.mu.Lock()
	defer a.mu.Unlock()
	return rep, a.serveEr
}

// Reload recycles every worker's process, in every pool (one pool after
// the other, in PoolNames order; App.Pool(name).Reload reloads one pool):
// a fresh one running the adapter's current code (a new interpreter
// imports the module again), make-before-break and at most
// RecycleConcurrency workers of a pool at once:
// each worker's new process must be ready before its old one stops taking
// calls; the old one then finishes its in-flight calls and stops. No call
// fails because of a reload. Each counts as a recycle with
// reason "reload" in its pool's Stats().Pools[name].RecycleReasons (not as a restart); the
// worker's sessions lose their Python-side state, as after any recycle.
//
// Reload returns once every worker's new process has taken over (old
// processes may still be draining). The ReloadReport lists the workers
// recycled, and those skipped because they had no running process (a
// worker starting, restarting or given up starts with the current code
// anyway).
//
// If a new process fails to import the adapter or to become ready, the
// reload stops there: that worker and those not yet recycled keep their
// old processes, which keep serving, nothing is retried, and Reload
// returns a *ReloadError naming the worker; errors.As(err, &startupErr)
// finds the new process's *StartupError (with its stderr) through it.
//
// When ctx ends, no further worker is started, recycles waiting or
// still starting are withdrawn (their old processes keep serving), and
// Reload returns an error matching ctx.Err(). Before Start it fails with
// ErrNotStarted, before the App is ready it waits for readiness (or ctx),
// once the App is stopping or stopped it fails with ErrPoolStopping.
// Workers whose type cannot recycle a process (not a worker.Recycler, e.g.
// remote workers, whose code is reloaded on their agent) are listed in
// ReloadReport.NotRecyclable; only a pool of nothing but such workers
// fails with ErrReloadUnsupported (with several pools: only when no pool
// reloaded has a worker that can recycle). Concurrent Reloads run one after the
// other. A Reload that the App's stop cuts short returns ErrPoolStopping;
// on an App that failed to start it returns the start error. A pool whose
// reload fails ends the whole Reload: the pools after it keep their old
// processes. `snakepit run` calls Reload on SIGHUP.
func (a *App) Reload(ctx context.Context) (ReloadReport, error) {
	return a.reload(ctx, "")
}

// Ready is closed once every child of the current run's tree is ready, and
// stays closed after Stop. It never closes for a run that failed to start;
// WaitReady reports that failure.
func (a *App) Ready() <-chan struct{} { return a.cur.Load().tree.Ready() }

// WaitReady blocks until the App is ready. It returns at once the
// *StartError (errors.Is ErrNotReady or ErrStartup, errors.As finds each
// worker's *StartupError with its Python error) when the App failed to
// start; ErrPoolStopping when it stopped before it became ready, or is
// stopping; ctx's error when ctx ends first. Before the App is started
// (Start, or Serve by a parent supervisor) it waits: that can still change.
// An App whose parent restarts it after a failed start is waited for
// afresh by the next WaitReady.
func (a *App) WaitReady(ctx context.Context) error {
	return a.waitRun(ctx, a.cur.Load())
}

func (a *App) waitRun(ctx context.Context, r *run) error {
	return a.waitReady(ctx, r, r.tree.Ready())
}

// waitReady waits for ready (the tree's, or one pool's) in run r.
func (a *App) waitReady(ctx context.Context, r *run, ready <-chan struct{}) error {
	select {
	case <-r.stopping:
		if ferr := r.failure(); ferr != nil {
			return ferr
		}
		return fmt.Errorf("%w: the App is stopping or stopped", ErrPoolStopping)
	default:
	}
	select {
	case <-ready:
		return nil
	case <-r.failed:
		return r.err
	case <-r.stopping:
		if ferr := r.failure(); ferr != nil {
			return ferr
		}
		return fmt.Errorf("%w: the App stopped before it became ready", ErrPoolStopping)
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Execute calls tool with args (a map, a struct, json.RawMessage or nil) on
// a free worker. See the CallOptions for sessions, affinity and retries.
// Before Start or Serve it fails at once with ErrNotStarted; once started it
// waits for a ready worker (an embedder that adds the App to its own
// supervisor should WaitReady first: until the supervisor calls Serve, the
// App is not started).
func (a *App) Execute(ctx context.Context, tool string, args any, opts ...CallOption) (*Result, error) {
	r := a.cur.Load()
	return a.execute(ctx, r, r.pools[0], tool, args, opts)
}

func (a *App) execute(ctx context.Context, r *run, pr *poolRun, tool string, args any, opts []CallOption) (*Result, error) {
	ctx, span := a.startSpan(ctx, spanExecute, tool, pr.cfg.Name)
	call, co, err := a.prepare(r, pr, tool, args, opts)
	if err != nil {
		span.end(err)
		return nil, err
	}
	span.observe(&co, call.RequestID)
	call.Metadata = traceMetadata(ctx) // the span is Python's parent
	// A remote worker sends the options on to its agent's pool (internal/wire).
	res, err := pr.pool.Execute(wire.WithCallOptions(ctx, co), call, co)
	err = r.callError(err)
	span.end(err)
	return res, err
}

// ExecuteStream calls a streaming tool; range over the result to receive its
// chunks in order. Breaking out of the loop cancels the stream in Python.
func (a *App) ExecuteStream(ctx context.Context, tool string, args any, opts ...CallOption) iter.Seq2[Chunk, error] {
	r := a.cur.Load()
	return a.executeStream(ctx, r, r.pools[0], tool, args, opts)
}

func (a *App) executeStream(ctx context.Context, r *run, pr *poolRun, tool string, args any, opts []CallOption) iter.Seq2[Chunk, error] {
	call, co, err := a.prepare(r, pr, tool, args, opts)
	// The span covers the iteration: that is when the call runs.
	return func(yield func(Chunk, error) bool) {
		ctx, span := a.startSpan(ctx, spanExecuteStream, tool, pr.cfg.Name)
		if err != nil {
			span.end(err)
			yield(Chunk{}, err)
			return
		}
		var last error
		defer func() { span.end(last) }() // also when the loop body panics
		co := co
		span.observe(&co, call.RequestID)
		call.Metadata = traceMetadata(ctx) // the span is Python's parent
		for c, err := range pr.pool.ExecuteStream(wire.WithCallOptions(ctx, co), call, co) {
			if err = r.callError(err); err != nil {
				last = err
			}
			if !yield(c, err) {
				return
			}
		}
	}
}

// traceContext is the W3C propagator, used directly rather than the global
// one: the global default propagates nothing, and the trace must reach
// Python whether or not the application configured OpenTelemetry.
var traceContext propagation.TraceContext

// traceMetadata is the caller's span context as "traceparent" and
// "tracestate" entries, or nil (no allocation) when ctx carries no span.
func traceMetadata(ctx context.Context) map[string]string {
	if !trace.SpanContextFromContext(ctx).IsValid() {
		return nil
	}
	m := propagation.MapCarrier{}
	traceContext.Inject(ctx, m)
	return m
}

// prepare builds the call for pool pr of run r, or refuses it: every call
// refused here is counted in that pool (pool.Refused), like the calls the
// pool itself ends, so that each call made counts once.
func (a *App) prepare(r *run, pr *poolRun, tool string, args any, opts []CallOption) (*worker.Call, pool.CallOptions, error) {
	refuse := func(err error) (*worker.Call, pool.CallOptions, error) {
		pr.pool.Refused(OutcomeOf(err))
		return nil, pool.CallOptions{}, err
	}
	if !a.running.Load() {
		return refuse(ErrNotStarted)
	}
	var o callOptions
	for _, opt := range opts {
		opt(&o)
	}
	if o.err != nil {
		return refuse(o.err)
	}
	raw, err := worker.EncodeArgs(tool, args)
	if err != nil {
		return refuse(err)
	}
	if ferr := r.failure(); ferr != nil {
		return refuse(ferr)
	}
	id := o.requestID
	if id == "" {
		id = a.nextRequestID()
	}
	call := &worker.Call{Tool: tool, Args: raw, Binary: o.binary, SessionID: o.session, RequestID: id}
	po := o.pool
	po.ArgsChecked = true // EncodeArgs above: one pass over the arguments
	return call, po, nil
}

// newRequestPrefix is a random prefix that keeps generated request ids
// apart across Apps and hosts (an agent's calls carry the host's ids).
func newRequestPrefix() string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:]) + "-"
}

// nextRequestID is the id of a call whose caller gave none (WithRequestID).
func (a *App) nextRequestID() string {
	var buf [24]byte
	b := append(buf[:0], a.reqPrefix...)
	return string(strconv.AppendUint(b, a.reqSeq.Add(1), 36))
}

// Tools lists the tools the default pool's ready workers offer.
func (a *App) Tools() []ToolSpec { return a.cur.Load().pools[0].pool.Tools() }

// Stats is a snapshot of the App.
type Stats struct {
	RunID string
	// Pool is the default pool's snapshot.
	Pool PoolStats
	// Pools has every pool's snapshot by name, DefaultPool's (the same as
	// Pool) included.
	Pools map[string]PoolStats
	// Reap is what the startup reaper did about earlier runs.
	Reap ReapReport
	// Containment is how worker processes are contained: "cgroup2" or
	// "cgroup2-hybrid" (one cgroup v2 per worker process), or the
	// fallback to process groups, tags and run ids — "off" (switched
	// off), "none" (no cgroup v2), "no-permission" (not delegated).
	// Empty before the registry is open. See Config.Containment.
	Containment string
}

// Stats returns a snapshot.
func (a *App) Stats() Stats {
	r := a.cur.Load()
	s := Stats{RunID: a.runID, Pools: make(map[string]PoolStats, len(r.pools)), Reap: r.reg.LastReap()}
	for _, pr := range r.pools {
		s.Pools[pr.cfg.Name] = pr.stats()
	}
	s.Pool = s.Pools[DefaultPool]
	if reg := r.reg.Registry(); reg != nil {
		s.Containment = reg.Containment()
	}
	return s
}

// RegisterHostTool makes a Go function callable from Python tools as
// context.call_host_tool(name, **kwargs).
func (a *App) RegisterHostTool(name string, fn HostToolFunc, spec ToolSpec) error {
	return a.bridge.RegisterHostTool(name, fn, spec)
}

// Sessions is the session store shared with Python workers.
func (a *App) Sessions() *Sessions { return a.bridge.Sessions() }

// BridgeAddress is the loopback address of the host-side server Python
// workers call back (sessions, host tools); empty before Start.
func (a *App) BridgeAddress() string { return a.bridge.Addr() }

// Decode is a convenience: unmarshal a JSON result into T.
func Decode[T any](r *Result, err error) (T, error) {
	var v T
	if err != nil {
		return v, err
	}
	return v, r.Decode(&v)
}
