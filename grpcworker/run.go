package grpcworker

import (
	"context"
	"fmt"
	"time"

	"github.com/snakepit-go/snakepit/worker"
)

// run serves lifetime lt and its planned successors until the App stops
// (nil) or the current process dies or is killed (its *worker.CrashError).
//
// A recycle is make-before-break: the successor process starts
// while lt keeps serving, and only once it is ready does it take new calls;
// lt then drains on its own (see retire). At most RecycleGate's capacity of
// workers in the pool are starting a successor at once.
//
// Every decision is a runState method; run only waits for the next event.
func (w *Worker) run(ctx context.Context, lt *lifetime) error {
	w.mu.Lock()
	loopDone := w.loopDone
	w.mu.Unlock()
	defer close(loopDone)
	// Retiring processes drain until this ends: at stop, or when the
	// current process dies — then the Starter must be able to restart the
	// worker without waiting for an old process's calls, which get the
	// graceful stop (SIGTERM; Python lets in-flight calls finish within its
	// grace) instead.
	retireCtx, endRetirees := context.WithCancel(ctx)
	defer endRetirees()
	tick := w.healthTicker()
	if tick != nil {
		defer tick.Stop()
	}
	r := &runState{w: w, ctx: ctx, retireCtx: retireCtx, lt: lt, backoff: recycleRetryMin,
		aged: newAgeTimer(w.f.opts.RecycleAfter), mem: w.newMemoryWatch(lt)}
	defer r.close()
	for {
		select {
		case <-ctx.Done():
			return r.stop()
		case why := <-r.lt.recycle:
			r.plan(why)
		case req := <-w.reqs:
			r.queue(req)
		case req := <-w.withdraw:
			r.withdraw(req)
		case <-r.aged.c():
			r.lt.requestRecycle(reasonAge)
		case <-r.mem.c():
			r.checkMemory()
		case r.gate() <- struct{}{}:
			r.startSuccessor()
		case <-r.successorDone():
			r.successorStarted()
		case <-r.retryC():
			r.retry = nil
		case <-r.lt.p.Exited():
			return r.exited()
		case reason := <-r.lt.kill:
			w.log.Warn("killing worker", "pid", r.lt.p.PID(), "reason", reason)
			return r.kill(reason)
		case <-tickC(tick):
			if !w.healthCheck(ctx, r.lt, &r.misses) {
				return r.kill(fmt.Sprintf("health check failed %d times in a row", r.misses))
			}
		}
	}
}

// runState is what run decides with: the lifetime serving calls and the
// recycle under way. Only run's goroutine touches it.
type runState struct {
	w         *Worker
	ctx       context.Context // the run's; successors start under it
	retireCtx context.Context // bounds how long recycled processes drain
	lt        *lifetime       // the current lifetime

	succ       *successor
	succReason string        // why succ was started
	planned    string        // a recycle by plan (quota, age, memory, ...) is wanted
	queued     []*recycleReq // Recycle calls not yet covered by a successor
	covering   []*recycleReq // Recycle calls the running successor answers
	held       bool          // we hold a slot of the recycle gate
	retry      *time.Timer   // a failed planned recycle waits for it before the next try
	backoff    time.Duration
	misses     int // health pings failed in a row
	aged       *ageTimer
	mem        *memoryWatch
	ended      error // why the lifetime ended, for requests still waiting
}

// gate is the recycle gate while a successor is wanted and none is
// starting, nil (never ready) otherwise.
func (r *runState) gate() chan<- struct{} {
	if (r.planned != "" && r.retry == nil || len(r.queued) > 0) && r.succ == nil && !r.held {
		return r.w.gate
	}
	return nil
}

func (r *runState) successorDone() <-chan struct{} {
	if r.succ == nil {
		return nil
	}
	return r.succ.done
}

func (r *runState) retryC() <-chan time.Time {
	if r.retry == nil {
		return nil
	}
	return r.retry.C
}

func (r *runState) release() {
	if r.held {
		<-r.w.gate
		r.held = false
	}
}

func answer(rs []*recycleReq, err error) {
	for _, req := range rs {
		req.reply <- err
	}
}

// close ends what the run still holds: a successor not yet in service,
// the gate slot, and Recycle calls still waiting, which learn why.
func (r *runState) close() {
	if r.succ != nil {
		r.succ.abort(r.w)
	}
	if r.retry != nil {
		r.retry.Stop()
	}
	r.release()
	why := "the worker is stopping"
	if r.ended != nil {
		why = r.ended.Error()
	}
	answer(append(r.covering, r.queued...), fmt.Errorf("%w: worker %s: the lifetime ended before its recycle's new process took over: %s", worker.ErrWorkerUnavailable, r.w.spec.ID, why))
	r.mem.stop()
	r.aged.stop()
}

// stop ends the lifetime because the App stops: gracefully, not a failure.
func (r *runState) stop() error {
	r.w.clearCurrent(r.lt)
	r.lt.p.Stop(r.w.f.opts.StopGrace)
	r.w.finish(r.lt)
	return nil
}

// exited ends the lifetime whose process died on its own.
func (r *runState) exited() error {
	r.w.finish(r.lt)
	err := r.lt.crashError(r.w.spec.ID)
	r.ended = err
	return err
}

// kill ends the lifetime by killing its process, for reason.
func (r *runState) kill(reason string) error {
	r.w.clearCurrent(r.lt)
	r.lt.setReason(reason)
	r.lt.p.Kill()
	return r.exited()
}

// plan records why a recycle by plan is wanted; while one is
// pending, further reasons change nothing.
func (r *runState) plan(why string) {
	if r.planned == "" {
		r.planned = why
		r.w.log.Info("recycling the worker process (the current one keeps serving until its successor is ready)", "pid", r.lt.p.PID(), "reason", why)
	}
}

func (r *runState) queue(req *recycleReq) {
	r.queued = append(r.queued, req)
	r.w.log.Info("recycling the worker process on request (the current one keeps serving until its successor is ready)", "pid", r.lt.p.PID(), "reason", req.reason)
}

// withdraw forgets a Recycle call whose caller gave up. A successor
// started for requests alone is stopped once none of them is left.
func (r *runState) withdraw(req *recycleReq) {
	r.queued = without(r.queued, req)
	wasCovering := len(r.covering) > 0
	r.covering = without(r.covering, req)
	if wasCovering && len(r.covering) == 0 && r.planned == "" && r.succ != nil {
		r.succ.abort(r.w)
		r.succ = nil
		r.release()
		r.w.log.Info("recycle withdrawn; the current process keeps serving", "pid", r.lt.p.PID())
	}
}

// checkMemory asks for a recycle when the process tree is above
// RecycleAboveRSS; not measured while a recycle is already under way.
func (r *runState) checkMemory() {
	if r.planned == "" && r.succ == nil && r.mem.over(r.w, r.lt) {
		r.lt.requestRecycle(reasonMemory)
	}
	r.mem.reset()
}

// startSuccessor runs once a gate slot is ours: the successor starts for
// the plan and for every request queued so far.
func (r *runState) startSuccessor() {
	r.held = true
	r.covering, r.queued = r.queued, nil
	r.succReason = r.planned
	if len(r.covering) > 0 {
		r.succReason = r.covering[0].reason
	}
	r.succ = r.w.startSuccessor(r.ctx)
}

// successorStarted handles the end of a successor's start: it takes over,
// or its failure is answered (requests) or retried later (plan).
func (r *runState) successorStarted() {
	next, err := r.succ.lt, r.succ.err
	// Its context only bounded the start; left uncancelled it would stay
	// among ctx's children for the whole lifetime, one per recycle (a
	// slow leak of ~0.5 KiB each).
	r.succ.cancel()
	r.succ = nil
	r.release()
	if err != nil {
		r.successorFailed(err)
		return
	}
	r.takeOver(next)
}

func (r *runState) successorFailed(err error) {
	if len(r.covering) > 0 {
		r.w.log.Warn("the requested recycle's new process failed to start; the current one keeps serving", "reason", r.succReason, "err", err)
		answer(r.covering, err)
		r.covering = nil
	}
	if r.planned != "" {
		r.w.log.Warn("the planned recycle's new process failed to start; the current one keeps serving", "retry_after", r.backoff, "err", err)
		r.retry = time.NewTimer(r.backoff)
		r.backoff = min(2*r.backoff, recycleRetryMax)
	}
}

// takeOver makes next the current lifetime and retires the old one.
func (r *runState) takeOver(next *lifetime) {
	w := r.w
	r.backoff = recycleRetryMin
	if r.retry != nil {
		r.retry.Stop()
		r.retry = nil
	}
	old := r.lt
	r.lt = next
	w.setCurrent(next)
	r.misses = 0
	r.aged.reset(w.f.opts.RecycleAfter)
	r.mem.restart(w, next)
	w.log.Info("worker process recycled", "old_pid", old.p.PID(), "pid", next.p.PID(), "reason", r.succReason)
	w.spec.Events.Recycled(w.spec.ID, next.info(), r.succReason)
	r.planned = ""
	answer(r.covering, nil)
	r.covering = nil
	w.retiring.Add(1)
	go func() {
		defer w.retiring.Done()
		w.retire(r.retireCtx, old)
	}()
}
