package grpcworker

import (
	"context"
	"fmt"
	"sync"
	"time"

	"google.golang.org/grpc"

	"github.com/snakepit-go/snakepit/bridge/pb"
	"github.com/snakepit-go/snakepit/childproc"
	"github.com/snakepit-go/snakepit/worker"
)

// lifetime is one process incarnation after its handshake.
type lifetime struct {
	p      *childproc.Process
	target string // the worker's gRPC address
	conn   *grpc.ClientConn
	client pb.WorkerServiceClient
	tools  []worker.ToolSpec
	quota  int         // calls after which a replacement is asked for; 0: never
	kill   chan string // Kill requests; buffered 1

	replace chan string // planned replacement requested; buffered 1

	mu       sync.Mutex
	reason   string // why the host ended it, if it did
	inflight int
	served   int
	draining bool
	drained  chan struct{} // closed once draining with no call in flight
	over     bool          // finished: conn closed, record removed
}

// begin admits a call to this lifetime; false once it is draining (the
// caller answers ErrWorkerUnavailable: nothing was sent).
func (lt *lifetime) begin() bool {
	lt.mu.Lock()
	defer lt.mu.Unlock()
	if lt.draining {
		return false
	}
	lt.inflight++
	return true
}

// end finishes an admitted call. Reaching the quota asks for a replacement;
// the lifetime keeps serving until its successor is ready, so the quota is
// a point at which replacing starts, not a hard cap.
func (lt *lifetime) end() {
	lt.mu.Lock()
	defer lt.mu.Unlock()
	lt.inflight--
	lt.served++
	if lt.quota > 0 && lt.served == lt.quota {
		lt.requestReplace(reasonRequests)
	}
	if lt.draining && lt.inflight == 0 {
		close(lt.drained)
	}
}

func (lt *lifetime) requestReplace(reason string) {
	select {
	case lt.replace <- reason:
	default:
	}
}

func (lt *lifetime) requestKill(reason string) {
	select {
	case lt.kill <- reason:
	default:
	}
}

// drain stops admitting calls; the channel closes when none is in flight.
func (lt *lifetime) drain() <-chan struct{} {
	lt.mu.Lock()
	defer lt.mu.Unlock()
	if !lt.draining {
		lt.draining = true
		if lt.inflight == 0 {
			close(lt.drained)
		}
	}
	return lt.drained
}

func (lt *lifetime) setReason(r string) {
	lt.mu.Lock()
	lt.reason = r
	lt.mu.Unlock()
}

// crashError describes the ended process; valid once p.exited is closed.
func (lt *lifetime) crashError(id string) *worker.CrashError {
	lt.mu.Lock()
	reason := lt.reason
	lt.mu.Unlock()
	code, sig := lt.p.ExitStatus()
	return &worker.CrashError{WorkerID: id, PID: lt.p.PID(), ExitCode: code, Signal: sig, Reason: reason}
}

// run serves lifetime lt and its planned successors until the App stops
// (nil) or the current process dies or is killed (its *worker.CrashError).
//
// A planned replacement is make-before-break: the successor process starts
// while lt keeps serving, and only once it is ready does it take new calls;
// lt then drains on its own (see retire). At most ReplaceGate's capacity of
// workers in the pool are starting a successor at once.
func (w *Worker) run(ctx context.Context, lt *lifetime) error {
	o := &w.f.opts
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
	aged := newAgeTimer(o.RecycleAfter)
	defer aged.stop()
	mem := w.newMemoryWatch(lt)
	defer mem.stop()
	var (
		succ       *successor
		succReason string        // why succ was started
		planned    string        // a replacement by plan (quota, age, memory, ...) is wanted
		queued     []*replaceReq // Replace calls not yet covered by a successor
		covering   []*replaceReq // Replace calls the running successor answers
		held       bool          // we hold a slot of the replace gate
		retry      *time.Timer
		backoff    = replaceRetryMin
		misses     int
	)
	release := func() {
		if held {
			<-w.gate
			held = false
		}
	}
	answer := func(rs []*replaceReq, err error) {
		for _, r := range rs {
			r.reply <- err
		}
	}
	var ended error // why the lifetime ended, for requests still waiting
	defer func() {
		if succ != nil {
			succ.abort(w)
		}
		if retry != nil {
			retry.Stop()
		}
		release()
		why := "the worker is stopping"
		if ended != nil {
			why = ended.Error()
		}
		answer(append(covering, queued...), fmt.Errorf("%w: worker %s: the lifetime ended before its replacement took over: %s", worker.ErrWorkerUnavailable, w.spec.ID, why))
	}()
	for {
		var acquire chan<- struct{}
		if (planned != "" && retry == nil || len(queued) > 0) && succ == nil && !held {
			acquire = w.gate
		}
		var succDone <-chan struct{}
		if succ != nil {
			succDone = succ.done
		}
		var retryC <-chan time.Time
		if retry != nil {
			retryC = retry.C
		}
		select {
		case <-ctx.Done():
			w.clearCurrent(lt)
			lt.p.Stop(o.StopGrace)
			w.finish(lt)
			return nil
		case why := <-lt.replace:
			if planned == "" {
				planned = why
				w.log.Info("replacing the worker process (the current one keeps serving until its successor is ready)", "pid", lt.p.PID(), "reason", why)
			}
		case r := <-w.reqs:
			queued = append(queued, r)
			w.log.Info("replacing the worker process on request (the current one keeps serving until its successor is ready)", "pid", lt.p.PID(), "reason", r.reason)
		case r := <-w.withdraw:
			// Its caller gave up. A successor started for requests alone
			// is stopped once none of them is left.
			queued = without(queued, r)
			wasCovering := len(covering) > 0
			covering = without(covering, r)
			if wasCovering && len(covering) == 0 && planned == "" && succ != nil {
				succ.abort(w)
				succ = nil
				release()
				w.log.Info("replacement withdrawn; the current process keeps serving", "pid", lt.p.PID())
			}
		case <-aged.c():
			lt.requestReplace(reasonAge)
		case <-mem.c():
			if planned == "" && succ == nil && mem.over(w, lt) {
				lt.requestReplace(reasonMemory)
			}
			mem.reset()
		case acquire <- struct{}{}:
			held = true
			covering, queued = queued, nil
			succReason = planned
			if len(covering) > 0 {
				succReason = covering[0].reason
			}
			succ = w.startSuccessor(ctx)
		case <-succDone:
			next, err := succ.lt, succ.err
			// Its context only bounded the start; left uncancelled it
			// would stay among ctx's children for the whole lifetime, one
			// per replacement (a slow leak of ~0.5 KiB each).
			succ.cancel()
			succ = nil
			release()
			if err != nil {
				if len(covering) > 0 {
					w.log.Warn("the requested replacement process failed to start; the current one keeps serving", "reason", succReason, "err", err)
					answer(covering, err)
					covering = nil
				}
				if planned != "" {
					w.log.Warn("the replacement process failed to start; the current one keeps serving", "retry_after", backoff, "err", err)
					retry = time.NewTimer(backoff)
					backoff = min(2*backoff, replaceRetryMax)
				}
				continue
			}
			backoff = replaceRetryMin
			if retry != nil {
				retry.Stop()
				retry = nil
			}
			old := lt
			lt = next
			w.setCurrent(lt)
			misses = 0
			aged.reset(o.RecycleAfter)
			mem.restart(w, lt)
			w.log.Info("worker process replaced", "old_pid", old.p.PID(), "pid", lt.p.PID(), "reason", succReason)
			w.spec.Events.Replaced(w.spec.ID, worker.Info{PID: lt.p.PID(), Tools: lt.tools}, succReason)
			planned = ""
			answer(covering, nil)
			covering = nil
			w.retiring.Add(1)
			go func() {
				defer w.retiring.Done()
				w.retire(retireCtx, old)
			}()
		case <-retryC:
			retry = nil
		case <-lt.p.Exited():
			w.finish(lt)
			err := lt.crashError(w.spec.ID)
			ended = err
			return err
		case reason := <-lt.kill:
			w.clearCurrent(lt)
			lt.setReason(reason)
			w.log.Warn("killing worker", "pid", lt.p.PID(), "reason", reason)
			lt.p.Kill()
			w.finish(lt)
			err := lt.crashError(w.spec.ID)
			ended = err
			return err
		case <-tickC(tick):
			if w.healthCheck(ctx, lt, &misses) {
				continue
			}
			w.clearCurrent(lt)
			lt.setReason(fmt.Sprintf("health check failed %d times in a row", misses))
			lt.p.Kill()
			w.finish(lt)
			err := lt.crashError(w.spec.ID)
			ended = err
			return err
		}
	}
}
