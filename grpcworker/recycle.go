package grpcworker

import (
	"context"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/snakepit-go/snakepit/worker"
)

// recycleReq is one Recycle call waiting for its answer.
type recycleReq struct {
	reason string
	reply  chan error // buffered 1; answered exactly once by the loop
}

// Why a lifetime is recycled by plan: label values from the fixed set in
// package worker, never free text.
const (
	reasonRequests = worker.RecycleRequests
	reasonAge      = worker.RecycleAge
	reasonIgnored  = worker.RecycleAbandoned
	reasonMemory   = worker.RecycleMemory
)

var _ worker.Recycler = (*Worker)(nil)

// Recycle implements worker.Recycler: a new process is started (running the
// adapter's current code: it imports the module afresh) while the current
// one keeps serving; once it is ready it takes every new call and the old
// one drains and stops. It holds a slot of the Spec's RecycleGate while the
// new process starts. Recycle returns nil once the new process took over;
// the new process's *worker.StartupError if it failed to start (the current
// process keeps serving; nothing is retried); an error matching
// worker.ErrWorkerUnavailable if there is no running process, or the
// lifetime ended before the new process took over; ctx.Err() if ctx ended
// first — the request is withdrawn and a new process still starting for
// it alone is stopped.
func (w *Worker) Recycle(ctx context.Context, reason string) error {
	w.mu.Lock()
	cur, done := w.cur.Load(), w.loopDone
	w.mu.Unlock()
	notRunning := fmt.Errorf("%w: worker %s has no running process to recycle", worker.ErrWorkerUnavailable, w.spec.ID)
	if cur == nil || done == nil {
		return notRunning
	}
	r := &recycleReq{reason: reason, reply: make(chan error, 1)}
	select {
	case w.reqs <- r:
	case <-done:
		return notRunning
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-r.reply:
		return err
	case <-ctx.Done():
	}
	select {
	case w.withdraw <- r:
	case err := <-r.reply:
		return err
	case <-done:
	}
	return ctx.Err()
}

// without returns rs without r (rs is modified).
func without(rs []*recycleReq, r *recycleReq) []*recycleReq {
	for i, x := range rs {
		if x == r {
			return append(rs[:i], rs[i+1:]...)
		}
	}
	return rs
}

// Bounds of the pause before a failed planned recycle is tried again.
const (
	recycleRetryMin = time.Second
	recycleRetryMax = 30 * time.Second
)

// retire drains a recycled lifetime: it takes no new calls, its in-flight
// calls finish (they have their own deadlines), then it stops gracefully.
// Health checks and Kill keep working meanwhile, so a process that wedges
// while draining (SIGSTOP, a deadlock) fails its calls instead of holding
// them until the App stops.
func (w *Worker) retire(ctx context.Context, lt *lifetime) {
	o := &w.f.opts
	defer w.finish(lt)
	tick := w.healthTicker()
	if tick != nil {
		defer tick.Stop()
	}
	drained := lt.drain()
	misses := 0
	for {
		select {
		case <-drained:
			lt.p.Stop(o.StopGrace)
			return
		case <-ctx.Done():
			lt.p.Stop(o.StopGrace)
			return
		case <-lt.p.Exited():
			return
		case reason := <-lt.kill:
			lt.setReason(reason)
			w.log.Warn("killing the retiring worker process", "pid", lt.p.PID(), "reason", reason)
			lt.p.Kill()
			return
		case <-tickC(tick):
			if !w.healthCheck(ctx, lt, &misses) {
				lt.setReason(fmt.Sprintf("health check failed %d times in a row while draining", misses))
				w.log.Warn("killing the retiring worker process", "pid", lt.p.PID(), "reason", "health check failed while draining")
				lt.p.Kill()
				return
			}
		}
	}
}

// successor is a recycle's new process being started in the background.
type successor struct {
	cancel context.CancelFunc
	done   chan struct{}
	lt     *lifetime
	err    error
}

func (w *Worker) startSuccessor(ctx context.Context) *successor {
	w.mu.Lock()
	w.seq++
	key := fmt.Sprintf("%s.%d", w.spec.ID, w.seq)
	w.mu.Unlock()
	sctx, cancel := context.WithCancel(ctx)
	s := &successor{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(s.done)
		s.lt, s.err = w.start(sctx, key)
	}()
	return s
}

// abort stops a successor that has not taken over; one that became ready
// meanwhile is stopped like any other process.
func (s *successor) abort(w *Worker) {
	s.cancel()
	<-s.done
	if s.lt != nil {
		s.lt.p.Stop(w.f.opts.StopGrace)
		w.finish(s.lt)
	}
}

// ageTimer is RecycleAfter, jittered anew for each process.
type ageTimer struct{ t *time.Timer }

func newAgeTimer(d time.Duration) *ageTimer {
	a := &ageTimer{}
	a.reset(d)
	return a
}

func (a *ageTimer) reset(d time.Duration) {
	a.stop()
	if d > 0 {
		a.t = time.NewTimer(jittered(d))
	}
}

func (a *ageTimer) stop() {
	if a.t != nil {
		a.t.Stop()
		a.t = nil
	}
}

func (a *ageTimer) c() <-chan time.Time {
	if a.t == nil {
		return nil
	}
	return a.t.C
}

// jittered spreads a recycle point over [n, 1.2n], so that workers started
// together (or fed round-robin) do not all reach it at the same moment.
func jittered[T int | time.Duration](n T) T {
	if n <= 0 {
		return n
	}
	return n + T(rand.Int64N(int64(n)/5+1))
}
