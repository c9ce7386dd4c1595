// Package grpcworker is the Python gRPC worker type: it spawns Python
// processes through childproc, waits for their handshake, calls their tools
// over gRPC, watches their health, and stops and reaps them.
//
// Contract (the host side of the one at the top of python/snakepit_bridge/server.py): argv never goes through a shell and carries the
// run id; the auth token travels only in the environment; every process is
// started by the worker's childproc.Launcher (registry record, own process
// group, parent-death signal, group-pinned reap). One Serve is one lifetime:
// it ends when the App stops, or when the current process dies, misses its
// health pings, or cannot answer after a call's deadline (hung). Within a
// lifetime the process is recycled by plan — request quota, age, memory
// (RecycleAboveRSS), a sync tool that kept running after its call was
// cancelled, or on request (Recycle: a reload) — make-before-break: the
// successor (the new process) starts while the current one serves and
// takes over once ready; the old one retires: it drains with its own
// health checks, then stops. Serve
// returns only after every process it started is reaped.
//
// # What the Python side imports
//
// The process runs a small -c bootstrap (see bootstrap) rather than
// `python -m snakepit_bridge.server`, so that the host's working directory
// is not on sys.path. sys.path is: the embedded package (Factory's
// unpacked copy of package python), Options.PythonPath, the inherited
// PYTHONPATH, then the interpreter's standard library and site-packages.
//
// # Who imports it
//
// Applications reach this package through the root package snakepit, which
// wraps it and re-exports the types its API returns; the names exported
// here beyond that are seams between snakepit's own packages.
package grpcworker

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/snakepit-go/snakepit/childproc"
	"github.com/snakepit-go/snakepit/worker"
)

// Worker is one supervised Python process slot. It implements worker.Worker.
type Worker struct {
	spec worker.Spec
	f    *Factory
	log  *slog.Logger
	gate chan struct{} // spec.RecycleGate, or a private one

	// cur is the lifetime new calls go to; nil when none is ready. Written
	// under mu (with what goes with it), read without: every call reads it.
	cur atomic.Pointer[lifetime]

	mu       sync.Mutex
	spawning *childproc.Process // the process starting while there is no current one
	seq      int                // lifetimes started, for registry keys of successors

	loopDone chan struct{} // closed when the running lifetime's loop ends; nil before the first
	reqs     chan *recycleReq
	withdraw chan *recycleReq

	retiring sync.WaitGroup // recycled lifetimes still draining (retiring)
}

var _ worker.Worker = (*Worker)(nil)

// ID implements worker.Worker.
func (w *Worker) ID() string { return w.spec.ID }

func (w *Worker) String() string { return "grpcworker " + w.spec.ID }

// PID is the current process id, 0 when none is ready.
func (w *Worker) PID() int {
	if lt := w.current(); lt != nil {
		return lt.p.PID()
	}
	return 0
}

// target is the current process's gRPC address ("" when none is ready);
// for diagnostics and tests, calls need the run's token.
func (w *Worker) target() string {
	if lt := w.current(); lt != nil {
		return lt.target
	}
	return ""
}

func (w *Worker) current() *lifetime { return w.cur.Load() }

func (w *Worker) setCurrent(lt *lifetime) {
	w.mu.Lock()
	w.cur.Store(lt)
	w.mu.Unlock()
}

// clearCurrent takes lt out of rotation if it still is the current one.
func (w *Worker) clearCurrent(lt *lifetime) {
	w.mu.Lock()
	w.cur.CompareAndSwap(lt, nil)
	w.mu.Unlock()
}

// Kill implements worker.Worker: the current process group is killed at once
// and the reason is recorded in the lifetime's CrashError; with no current
// process, the one starting is killed. A recycled process still draining is
// watched by its own health checks.
func (w *Worker) Kill(reason string) {
	w.mu.Lock()
	lt, p := w.cur.Load(), w.spawning
	w.mu.Unlock()
	switch {
	case lt != nil:
		lt.requestKill(reason)
	case p != nil:
		w.log.Warn("killing the starting worker process", "pid", p.PID(), "reason", reason)
		p.Signal(syscall.SIGKILL)
	}
}

// Serve implements suture.Service: one call is one worker lifetime, which
// may span several processes when they are recycled. It returns
// after every process it started is reaped.
func (w *Worker) Serve(ctx context.Context) error {
	defer w.retiring.Wait()
	w.spec.Events.Starting(w.spec.ID)
	lt, err := w.start(ctx, w.spec.ID)
	if err != nil {
		if ctx.Err() != nil {
			// Stopped while starting: a requested stop, not a failure.
			w.spec.Events.Exited(w.spec.ID, nil)
			return nil
		}
		w.log.Error("worker failed to start", "err", err)
		w.spec.Events.Exited(w.spec.ID, err)
		return err
	}
	w.mu.Lock()
	w.cur.Store(lt)
	w.loopDone = make(chan struct{}) // Recycle requests go to this run
	w.mu.Unlock()
	w.log.Info("worker ready", "pid", lt.p.PID(), "tools", len(lt.tools))
	w.spec.Events.Ready(w.spec.ID, lt.info())
	err = w.run(ctx, lt)
	w.spec.Events.Exited(w.spec.ID, err)
	if err != nil {
		w.log.Warn("worker exited", "err", err)
	}
	return err
}

// finish releases what a lifetime holds once its process is reaped.
func (w *Worker) finish(lt *lifetime) {
	w.clearCurrent(lt)
	lt.mu.Lock()
	over := lt.over
	lt.over = true
	lt.mu.Unlock()
	if !over {
		_ = lt.conn.Close()
	}
}
