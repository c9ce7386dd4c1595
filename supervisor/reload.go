package supervisor

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/snakepit-go/snakepit/worker"
)

// ReloadReason is the reason a reload gives each recycle: the key of
// Stats.RecycleReasons it counts under.
const ReloadReason = worker.RecycleReload

// ReloadReport says what a Reload did.
type ReloadReport struct {
	// Recycled lists the workers whose new process took over, in order.
	Recycled []string
	// Skipped lists workers that had no running process (starting,
	// restarting, given up): their next start runs the current code.
	Skipped []string
	// NotRecyclable lists workers whose type cannot recycle a process on
	// request (not a worker.Recycler), e.g. remote workers: their code is
	// reloaded where it runs (the agent's own Reload, or a rollout).
	NotRecyclable []string
	// Duration is the whole reload's.
	Duration time.Duration
}

// ReloadError: a reload stopped because a worker's new process failed to
// start. That worker and every worker not yet recycled keep their old
// processes, which go on serving. Err is the new process's error (a
// *worker.StartupError: errors.As finds it).
type ReloadError struct {
	WorkerID string
	Report   ReloadReport // what the reload did before it stopped
	Total    int          // workers in the pool
	Err      error
}

func (e *ReloadError) Error() string {
	return fmt.Sprintf("snakepit: reload stopped at worker %s (%d of %d workers recycled; the others keep serving on their old processes): %v",
		e.WorkerID, len(e.Report.Recycled), e.Total, e.Err)
}

func (e *ReloadError) Unwrap() error { return e.Err }

// ErrReloadUnsupported: no worker of the pool can recycle its process on
// request (none implements worker.Recycler); nothing was recycled. Workers
// that cannot, beside ones that can, are listed in
// ReloadReport.NotRecyclable instead.
var ErrReloadUnsupported = errors.New("snakepit: the worker type cannot recycle its process on request (it does not implement worker.Recycler)")

// ErrNotRunning: the workers are not running (not started, or stopped).
var ErrNotRunning = errors.New("snakepit: the workers are not running")

// Reload recycles every worker's process, make-before-break, at most
// RecycleConcurrency workers at once, in worker order, and returns once
// each new process has taken over (the old ones drain in the background).
// The first failure stops it: no further worker is started, recycles
// already under way finish, and it returns a *ReloadError. A ctx that ends
// stops it the same way, withdrawing the recycles still waiting or
// starting, and returns ctx's error. One Reload runs at a time; a second
// waits for the first.
func (w *Workers) Reload(ctx context.Context) (ReloadReport, error) {
	begun := time.Now()
	select {
	case w.reloading <- struct{}{}:
		defer func() { <-w.reloading }()
	case <-ctx.Done():
		return ReloadReport{}, ctx.Err()
	}
	starters := w.Starters()
	w.mu.Lock()
	// A serving pool may have no workers (an elastic pool at MinWorkers 0,
	// a discovery pool with no agent yet): that is running, with nothing
	// to reload.
	running := w.serving && !w.closed && !w.stopping.Load()
	w.mu.Unlock()
	if !running {
		return ReloadReport{}, ErrNotRunning
	}
	if len(starters) == 0 {
		return ReloadReport{Duration: time.Since(begun)}, nil
	}
	var notRecyclable []string
	var unsupported error
	reps := make([]worker.Recycler, 0, len(starters))
	ids := make([]string, 0, len(starters))
	for _, s := range starters {
		r, ok := s.Worker().(worker.Recycler)
		if !ok {
			notRecyclable = append(notRecyclable, s.Worker().ID())
			unsupported = fmt.Errorf("%w: worker %s is a %T", ErrReloadUnsupported, s.Worker().ID(), s.Worker())
			continue
		}
		reps = append(reps, r)
		ids = append(ids, s.Worker().ID())
	}
	if len(reps) == 0 && unsupported != nil {
		return ReloadReport{NotRecyclable: notRecyclable}, unsupported
	}
	recycled, skipped, failed := w.recycleAll(ctx, reps, ids)
	rep := ReloadReport{NotRecyclable: notRecyclable}
	for i, id := range ids {
		if recycled[i] {
			rep.Recycled = append(rep.Recycled, id)
		}
		if skipped[i] {
			rep.Skipped = append(rep.Skipped, id)
		}
	}
	rep.Duration = time.Since(begun)
	if w.stopping.Load() {
		// Recycles refused because the pool began to stop look like
		// "no running process"; that is not a reload that succeeded.
		return rep, fmt.Errorf("%w: the pool began to stop during the reload (%d of %d workers recycled)", ErrNotRunning, len(rep.Recycled), len(reps))
	}
	if failed != nil {
		failed.Report = rep
		w.log.Error("reload stopped: a new worker process failed to start; the remaining workers keep their old processes",
			"worker_id", failed.WorkerID, "recycled", len(rep.Recycled), "of", len(reps), "err", failed.Err)
		return rep, failed
	}
	if err := ctx.Err(); err != nil {
		return rep, fmt.Errorf("snakepit: reload interrupted after %d of %d workers: %w", len(rep.Recycled), len(reps), err)
	}
	w.log.Info("reload complete", "recycled", len(rep.Recycled), "skipped", len(rep.Skipped), "duration", rep.Duration.Round(time.Millisecond))
	return rep, nil
}

// recycleAll recycles reps (the workers ids names) with at most
// RecycleConcurrency at once, in order, until one fails, ctx ends or the
// pool begins to stop; it reports which were recycled, which had no
// running process (skipped), and the first failure.
func (w *Workers) recycleAll(ctx context.Context, reps []worker.Recycler, ids []string) (recycled, skipped []bool, failed *ReloadError) {
	var (
		mu   sync.Mutex
		next int
		wg   sync.WaitGroup
	)
	recycled, skipped = make([]bool, len(reps)), make([]bool, len(reps))
	take := func() int {
		mu.Lock()
		defer mu.Unlock()
		if failed != nil || ctx.Err() != nil || w.stopping.Load() || next == len(reps) {
			return -1
		}
		next++
		return next - 1
	}
	for range w.opts.RecycleConcurrency {
		wg.Go(func() {
			for i := take(); i >= 0; i = take() {
				id := ids[i]
				err := reps[i].Recycle(ctx, ReloadReason)
				mu.Lock()
				switch {
				case err == nil:
					recycled[i] = true
				case errors.Is(err, worker.ErrWorkerUnavailable):
					skipped[i] = true
					w.log.Info("reload: worker has no running process; its next start runs the current code", "worker_id", id, "err", err)
				case ctx.Err() != nil:
				default:
					if failed == nil {
						failed = &ReloadError{WorkerID: id, Total: len(reps), Err: err}
					}
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return recycled, skipped, failed
}
