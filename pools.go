package snakepit

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"log/slog"
	"time"

	"github.com/snakepit-go/snakepit/autoscale"
	"github.com/snakepit-go/snakepit/childproc"
	"github.com/snakepit-go/snakepit/discovery"
	"github.com/snakepit-go/snakepit/grpcworker"
	"github.com/snakepit-go/snakepit/pool"
	"github.com/snakepit-go/snakepit/starter"
	"github.com/snakepit-go/snakepit/supervisor"
	"github.com/snakepit-go/snakepit/worker"
)

// appPool is one pool as New resolved it; it outlives runs.
type appPool struct {
	cfg     PoolConfig
	factory worker.Factory
}

// poolRun is one pool in one run of the tree.
type poolRun struct {
	cfg  *PoolConfig
	pool *pool.Pool
	work *supervisor.Workers
	// scale grows and shrinks the pool when it is elastic (else nil).
	scale *autoscale.Scaler
	// watch joins and removes the pool's remote workers (nil without
	// Discovery).
	watch *discovery.Watcher
}

// newFactory is the pool's worker factory: its WorkerFactory, or the Python
// one with its settings, bound to the App's bridge.
func (a *App) newFactory(pc PoolConfig) (worker.Factory, error) {
	if pc.WorkerFactory != nil {
		return pc.WorkerFactory, nil
	}
	base, err := grpcworker.NewFactory(grpcworker.Options{
		Python: pc.Python, Adapter: pc.Adapter, PythonPath: pc.PythonPath, Env: pc.Env, Token: a.token,
		StartupTimeout: pc.StartupTimeout, StopGrace: a.stop.workerGrace, HealthInterval: pc.HealthInterval,
		HealthMisses: pc.HealthMisses, HungGrace: pc.HungGrace, MaxMessageBytes: pc.MaxMessageBytes, Logger: a.poolLog(&pc),
		RecycleAfterRequests: pc.RecycleAfterRequests, RecycleAfter: pc.RecycleAfter,
		RecycleAboveRSS: pc.RecycleAboveRSS, MemoryCheckInterval: pc.MemoryCheckInterval,
	})
	if err != nil {
		if pc.Name != DefaultPool {
			return nil, fmt.Errorf("snakepit: pool %q: %w", pc.Name, err)
		}
		return nil, err
	}
	return &lateFactory{app: a, base: base}, nil
}

// poolLog tags a named pool's records with its name; the default pool's
// stay as they were.
func (a *App) poolLog(pc *PoolConfig) *slog.Logger {
	if pc.Name == DefaultPool {
		return a.log
	}
	return a.log.With("pool", pc.Name)
}

// bridgeMessageBytes is the bridge's message limit: the largest of the
// pools', since every pool's workers call the one bridge (0: its default).
func bridgeMessageBytes(pcs []PoolConfig) int {
	n := 0
	for i := range pcs {
		n = max(n, pcs[i].MaxMessageBytes)
	}
	return n
}

// newPoolRun builds one pool of run r: its pool.Pool and its Workers.
func (a *App) newPoolRun(r *run, ap *appPool) (*poolRun, error) {
	pc, stop, log := &ap.cfg, a.stop, a.poolLog(&ap.cfg)
	p, err := pool.New(pool.Options{MaxQueue: pc.MaxQueue, QueueTimeout: pc.QueueTimeout, DefaultCapacity: pc.Capacity, HungGrace: pc.HungGrace, ReadyTimeout: pc.ReadyTimeout, AffinityTTL: pc.SessionAffinityTTL, StopWait: stop.cancelWait, Logger: log,
		PackIdle: pc.elastic(), ScaleFromZero: pc.elastic() && pc.MinWorkers == 0, DisableSerialTools: pc.DisableSerialTools})
	if err != nil {
		return nil, err
	}
	child := "workers"
	if pc.Name != DefaultPool {
		child = "workers of pool " + pc.Name
	}
	work, err := supervisor.NewWorkers(supervisor.WorkersOptions{
		Count: pc.Workers, MinReady: pc.MinReady, Capacity: pc.Capacity, RunID: a.runID, IDPrefix: pc.workerPrefix(), PoolName: pc.Name,
		Factory: ap.factory, Pool: p, DrainGrace: stop.drain, StopTimeout: stop.workersSup, Logger: log,
		Observer: runObserver{a, r},
		Recorder: func() childproc.Recorder {
			if rec := r.reg.Registry(); rec != nil {
				return rec
			}
			return nil
		},
		Starter:            starter.Options{StartupFailures: pc.StartupFailures, StopTimeout: stop.starter, RetryGivenUpAfter: pc.RetryGivenUpAfter},
		RecycleConcurrency: pc.RecycleConcurrency,
		OnStartFailed:      func(err error) { r.fail(&StartError{Child: child, Err: err}) },
	})
	if err != nil {
		return nil, err
	}
	pr := &poolRun{cfg: pc, pool: p, work: work}
	if pr.scale, err = a.newScaler(pr, ap.factory); err != nil {
		return nil, err
	}
	return pr, nil
}

// lookup finds pool name in run r.
func (a *App) lookup(r *run, name string) (*poolRun, error) {
	for _, pr := range r.pools {
		if pr.cfg.Name == name {
			return pr, nil
		}
	}
	return nil, &UnknownPoolError{Name: name, Pools: a.PoolNames()}
}

// PoolNames lists the App's pools: DefaultPool, then Config.Pools in order.
func (a *App) PoolNames() []string {
	names := make([]string, len(a.pools))
	for i := range a.pools {
		names[i] = a.pools[i].cfg.Name
	}
	return names
}

// Pool is a handle on one named pool of an App (App.Pool). Its methods are
// the App's, applied to that pool alone; the App's own methods act on the
// default pool (Reload: on every pool). Sessions and host tools are the
// App's, shared by all pools; a session's worker affinity is per pool.
type Pool struct {
	app  *App
	name string
}

// Pool returns the handle of the pool named name (DefaultPool for the
// top-level one). The name is checked by each use: calls, WaitReady and
// Reload on a pool the Config does not have fail with an
// *UnknownPoolError (errors.Is ErrUnknownPool) listing the pools; Err
// checks it up front.
func (a *App) Pool(name string) *Pool { return &Pool{app: a, name: name} }

// Name is the pool's name.
func (p *Pool) Name() string { return p.name }

// Err is nil when the App has this pool, else its *UnknownPoolError.
func (p *Pool) Err() error {
	_, err := p.app.lookup(p.app.cur.Load(), p.name)
	return err
}

// Execute is App.Execute on this pool.
func (p *Pool) Execute(ctx context.Context, tool string, args any, opts ...CallOption) (*Result, error) {
	r := p.app.cur.Load()
	pr, err := p.app.lookup(r, p.name)
	if err != nil {
		return nil, err
	}
	return p.app.execute(ctx, r, pr, tool, args, opts)
}

// ExecuteStream is App.ExecuteStream on this pool.
func (p *Pool) ExecuteStream(ctx context.Context, tool string, args any, opts ...CallOption) iter.Seq2[Chunk, error] {
	r := p.app.cur.Load()
	pr, err := p.app.lookup(r, p.name)
	if err != nil {
		return func(yield func(Chunk, error) bool) { yield(Chunk{}, err) }
	}
	return p.app.executeStream(ctx, r, pr, tool, args, opts)
}

// Tools lists the tools this pool's ready workers offer (nil for an
// unknown pool).
func (p *Pool) Tools() []ToolSpec {
	pr, err := p.app.lookup(p.app.cur.Load(), p.name)
	if err != nil {
		return nil
	}
	return pr.pool.Tools()
}

// Stats is this pool's snapshot, as in App.Stats().Pools (the zero value
// for an unknown pool).
func (p *Pool) Stats() PoolStats {
	pr, err := p.app.lookup(p.app.cur.Load(), p.name)
	if err != nil {
		return PoolStats{}
	}
	return pr.stats()
}

// WaitReady blocks until this pool has its MinReady workers and, with
// Discovery, applied its first poll, with the results of App.WaitReady
// otherwise (the start error of the App, which fails as a whole when any
// pool cannot start).
func (p *Pool) WaitReady(ctx context.Context) error {
	r := p.app.cur.Load()
	pr, err := p.app.lookup(r, p.name)
	if err != nil {
		return err
	}
	if err := p.app.waitReady(ctx, r, pr.work.Ready()); err != nil || pr.watch == nil {
		return err
	}
	return p.app.waitReady(ctx, r, pr.watch.Ready())
}

// Reload is App.Reload on this pool alone: the other pools keep their
// processes and go on serving.
func (p *Pool) Reload(ctx context.Context) (ReloadReport, error) {
	return p.app.reload(ctx, p.name)
}

// reload recycles the processes of pool only, or of every pool (only ""),
// one pool after the other, stopping at the first failure. A pool whose
// workers cannot recycle (ErrReloadUnsupported) is skipped, its workers
// listed in NotRecyclable, unless every pool reloaded is such a pool.
func (a *App) reload(ctx context.Context, only string) (ReloadReport, error) {
	if !a.running.Load() {
		return ReloadReport{}, ErrNotStarted
	}
	r := a.cur.Load()
	targets := r.pools
	if only != "" {
		pr, err := a.lookup(r, only)
		if err != nil {
			return ReloadReport{}, err
		}
		targets = []*poolRun{pr}
	}
	if err := a.waitRun(ctx, r); err != nil {
		return ReloadReport{}, err
	}
	begun := time.Now()
	var all ReloadReport
	var unsupported error
	reloaded := false // a pool whose workers can recycle was reloaded
	for _, pr := range targets {
		rep, err := pr.work.Reload(ctx)
		all.Recycled = append(all.Recycled, rep.Recycled...)
		all.Skipped = append(all.Skipped, rep.Skipped...)
		all.NotRecyclable = append(all.NotRecyclable, rep.NotRecyclable...)
		if errors.Is(err, ErrReloadUnsupported) {
			unsupported = err
			continue
		}
		if err != nil {
			all.Duration = time.Since(begun)
			return all, a.reloadError(r, err)
		}
		// A pool with no worker (an elastic pool at MinWorkers 0) had
		// nothing to reload: it does not make the others' lack of
		// Recycler a success.
		reloaded = reloaded || len(rep.Recycled)+len(rep.Skipped) > 0
	}
	all.Duration = time.Since(begun)
	if unsupported != nil && !reloaded {
		return all, unsupported
	}
	return all, nil
}

// reloadError turns the workers' "not running" into what the caller can
// act on: the start error, or ErrPoolStopping.
func (a *App) reloadError(r *run, err error) error {
	if errors.Is(err, supervisor.ErrNotRunning) {
		if ferr := r.failure(); ferr != nil {
			return ferr
		}
		return fmt.Errorf("%w: the App began to stop during or before the Reload", ErrPoolStopping)
	}
	return err
}
