package pool

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/snakepit-go/snakepit/worker"
)

// waiter is one queued call. Its outcome (ws or err) is written exactly once,
// under Pool.mu, by whoever resolves it first: a hand-off, a pool-side
// failure, or the waiting goroutine itself on timeout or cancellation.
type waiter struct {
	seq        uint64
	prev, next *waiter
	q          *waitQueue
	ch         chan struct{} // buffered: the resolver never blocks
	rec        *callRec
	session    string
	readyWait  bool      // queued while no worker was ready
	since      time.Time // when it queued: the pool's queue wait (load.go)
	ws         *workerState
	err        error
	timer      *time.Timer // the queue timeout; kept for reuse with the waiter
}

// waitQueue is an intrusive FIFO; removal from the middle is O(1) so that a
// waiter giving up leaves at once.
type waitQueue struct{ head, tail *waiter }

func (q *waitQueue) push(w *waiter) {
	w.q, w.prev, w.next = q, q.tail, nil
	if q.tail != nil {
		q.tail.next = w
	} else {
		q.head = w
	}
	q.tail = w
}

func (q *waitQueue) remove(w *waiter) {
	if w.prev != nil {
		w.prev.next = w.next
	} else {
		q.head = w.next
	}
	if w.next != nil {
		w.next.prev = w.prev
	} else {
		q.tail = w.prev
	}
	w.prev, w.next, w.q = nil, nil, nil
}

// callRec is one attempt in flight. Records are pooled; see finish for when
// one may be reused.
type callRec struct {
	p      *Pool
	ws     *workerState
	gen    uint64 // ws.gen when the slot was taken
	tool   string
	ctx    context.Context // the derived context handed to the worker
	cancel context.CancelCauseFunc
	// ungated: the call was admitted while its tool had no known limits
	// (no worker had reported its tools yet). Should limits be known by the
	// time it is dispatched, it goes back through admit (errReadmit).
	ungated bool
	// batch: the attempt carries a batch of calls (batch.go), which count
	// in the stats themselves; the attempt records no outcome.
	batch bool
	// prefetched: the attempt waits in its worker beyond its capacity
	// (prefetch.go) and its measure has not begun; long: its tool may not
	// be prefetched (counted in its worker's long).
	prefetched, long bool

	stopWatch func() bool // from context.AfterFunc on the caller's ctx
	timer     *time.Timer // the hung-worker timer, once armed
	// Streams only: the consumer's loop body is not worker time. inYield is
	// set while a chunk is with the consumer, yieldEnd (unix ns) when it
	// was last given back; the watchdog counts from the later of the
	// deadline and yieldEnd. yieldEnd is only kept once watched (the
	// timer is armed): a chunk given back before that ended more than
	// HungGrace before the timer fires, so it could not move it, and a
	// clock read per chunk was a third of a fast stream's cost.
	inYield  atomic.Bool
	watched  atomic.Bool
	yieldEnd atomic.Int64
	armed    bool // guarded by Pool.mu, as are done and hung
	done     bool
	hung     bool

	// Streams only, written by the attempt's own goroutine (execute.go):
	// a chunk reached the consumer; the consumer stopped reading.
	delivered, stopped bool

	prev, next *callRec

	sr serialRec // serial.go: its share of its worker's time

	armFn, fireFn func() // bound once per record: no per-call closure
}

func newCallRec(p *Pool) *callRec {
	r := &callRec{p: p}
	r.armFn = func() {
		p.mu.Lock()
		p.armLocked(r)
		p.mu.Unlock()
	}
	r.fireFn = r.fire
	return r
}

type callList struct{ head *callRec }

func (l *callList) add(r *callRec) {
	r.prev, r.next = nil, l.head
	if l.head != nil {
		l.head.prev = r
	}
	l.head = r
}

func (l *callList) remove(r *callRec) {
	if r.prev != nil {
		r.prev.next = r.next
	} else {
		l.head = r.next
	}
	if r.next != nil {
		r.next.prev = r.prev
	}
	r.prev, r.next = nil, nil
}

// armLocked starts the hung-worker timer once the call's context has ended.
func (p *Pool) armLocked(r *callRec) {
	if r.done || r.armed {
		return
	}
	r.armed = true
	r.watched.Store(true)
	r.timer = time.AfterFunc(p.opts.HungGrace, r.fireFn)
}

// fire runs HungGrace after the call's context ended with the worker still
// inside the call: the worker is hung, and only ending its lifetime frees
// the caller (the worker then returns an error, which finish turns into a
// *WorkerTimeoutError).
func (r *callRec) fire() {
	p := r.p
	grace := p.opts.HungGrace
	if r.inYield.Load() {
		// The consumer holds the chunk: the worker is waiting on us.
		p.mu.Lock()
		if !r.done {
			r.timer.Reset(grace)
		}
		p.mu.Unlock()
		return
	}
	if since := time.Since(time.Unix(0, r.yieldEnd.Load())); since < grace {
		p.mu.Lock()
		if !r.done {
			r.timer.Reset(grace - since)
		}
		p.mu.Unlock()
		return
	}
	p.mu.Lock()
	if r.done {
		p.mu.Unlock()
		return
	}
	ws, tool := r.ws, r.tool
	if ws.gen != r.gen {
		// The lifetime this call ran on has already ended or been replaced:
		// killing now would hit a new, healthy process. The old one's end
		// fails the call on its own.
		p.mu.Unlock()
		p.log.Warn("snakepit: a call outlived its worker's lifetime; not killing the new one", "worker_id", ws.id, "tool", tool)
		return
	}
	r.hung = true
	p.mu.Unlock()
	reason := fmt.Sprintf("call %s exceeded its deadline by %s; worker considered hung", tool, grace)
	p.log.Warn("snakepit: killing hung worker", "worker_id", ws.id, "tool", tool, "grace", grace)
	ws.w.Kill(reason)
}

// begin prepares an attempt: the derived context lets Stop cancel the call
// after its grace, and the watchdog follows the caller's context.
func (p *Pool) begin(ctx context.Context, tool string, ungated bool) *callRec {
	r := p.recs.Get().(*callRec)
	r.tool, r.ungated = tool, ungated
	r.ctx, r.cancel = context.WithCancelCause(ctx)
	return r
}

// acquire gets a slot for one attempt, queueing if needed. On success the
// record is linked in flight on the returned worker. On failure the outcome
// is recorded in the stats and the record is released.
func (p *Pool) acquire(ctx context.Context, call *worker.Call, opts CallOptions, r *callRec, avoid *workerState, first bool) (*workerState, error) {
	p.mu.Lock()
	if first {
		p.st.requests++
	}
	if p.stopping {
		return nil, p.rejectLocked(r, ErrPoolStopping)
	}
	if p.toolsReported > 0 && p.toolCount[call.Tool] == 0 && p.toolCount[worker.AnyTool] == 0 {
		return nil, p.rejectLocked(r, &worker.UnknownToolError{Tool: call.Tool, Available: p.availableToolsLocked()})
	}
	if p.limitsLearnedLocked(r) {
		return nil, p.readmitLocked(r)
	}

	var pinned *workerState // set when the call may only run there
	if call.SessionID != "" {
		if e, ok := p.sessions[call.SessionID]; ok {
			if p.now().After(e.expires) {
				delete(p.sessions, call.SessionID)
			} else {
				ws := e.ws
				alive := ws.usable() && ws.gen == e.gen
				free := alive && ws.inflight < ws.capacity && !p.blockedLocked(call.Tool, ws)
				switch {
				case free:
					return p.grantNowLocked(r, ws, call.SessionID), nil
				case opts.Affinity == AffinityHint:
				case !alive:
					return nil, p.rejectLocked(r, ErrSessionWorkerUnavailable)
				case opts.Affinity == AffinityStrictFailFast:
					return nil, p.rejectLocked(r, ErrSessionWorkerBusy)
				default:
					pinned = ws
				}
			}
		}
	}

	if pinned == nil {
		if ws := p.pickLocked(call.Tool, avoid, r.batch); ws != nil {
			return p.grantNowLocked(r, ws, call.SessionID), nil
		}
	}

	if p.queued >= p.opts.MaxQueue {
		return nil, p.rejectLocked(r, ErrPoolSaturated)
	}
	if p.hopelessLocked() {
		return nil, p.rejectLocked(r, p.notReadyLocked(1, nil))
	}
	p.seq++
	w := p.waiters.Get().(*waiter)
	w.seq, w.rec, w.session, w.readyWait = p.seq, r, call.SessionID, p.ready == 0 && !p.opts.ScaleFromZero
	w.since = p.now()
	if pinned != nil {
		pinned.strict.push(w)
	} else {
		p.general.push(w)
	}
	p.queued++
	p.qhist.note(w.since, p.queued)
	p.mu.Unlock()

	timeout := opts.QueueTimeout
	if timeout == 0 {
		timeout = p.opts.QueueTimeout
	}
	if w.readyWait {
		timeout = p.opts.ReadyTimeout
	}
	return p.wait(ctx, w, call.Tool, timeout)
}

// testHookWoke lets a test run code between a waiter waking up and it
// taking the lock: the window in which the original Snakepit answered a
// call that had already been handed a worker with a queue timeout.
var testHookWoke func(timedOut bool)

func (p *Pool) wait(ctx context.Context, w *waiter, tool string, timeout time.Duration) (*workerState, error) {
	if w.timer == nil {
		w.timer = time.NewTimer(timeout)
	} else {
		w.timer.Reset(timeout)
	}
	timedOut := false
	select {
	case <-w.ch:
	case <-ctx.Done():
	case <-w.timer.C:
		timedOut = true
	}
	if testHookWoke != nil {
		testHookWoke(timedOut)
	}
	ws, err := p.settle(ctx, w, tool, timeout)

	// Nobody else refers to w now: it left the queue under the lock. Reuse
	// it, emptied of a signal that lost the race against the timer or ctx.
	w.timer.Stop()
	select {
	case <-w.ch:
	default:
	}
	ch, t := w.ch, w.timer
	*w = waiter{ch: ch, timer: t}
	p.waiters.Put(w)
	return ws, err
}

// settle decides, under the lock, how a woken waiter's wait ended.
func (p *Pool) settle(ctx context.Context, w *waiter, tool string, timeout time.Duration) (*workerState, error) {
	p.mu.Lock()
	if ws := w.ws; ws != nil {
		// The hand-off won, whatever else fired meanwhile: the slot is ours.
		if err := ctx.Err(); err != nil {
			p.unlinkReleaseLocked(w.rec, p.now(), false)
			return nil, p.rejectLocked(w.rec, err)
		}
		if w.readyWait && p.toolsReported > 0 && p.toolCount[tool] == 0 && p.toolCount[worker.AnyTool] == 0 {
			// Tools were unknown when this call queued; now they are not.
			p.unlinkReleaseLocked(w.rec, p.now(), false)
			return nil, p.rejectLocked(w.rec, &worker.UnknownToolError{Tool: tool, Available: p.availableToolsLocked()})
		}
		p.mu.Unlock()
		return ws, nil
	}
	if w.err == errReadmit {
		if err := ctx.Err(); err != nil {
			return nil, p.rejectLocked(w.rec, err)
		}
		return nil, p.readmitLocked(w.rec)
	}
	if w.err != nil {
		return nil, p.rejectLocked(w.rec, w.err)
	}
	// Still queued, so nobody else can resolve it now: leave the queue.
	w.q.remove(w)
	p.queued--
	p.qhist.note(p.now(), p.queued)
	var err error
	switch {
	case ctx.Err() != nil:
		err = ctx.Err()
	case w.readyWait && p.ready == 0:
		err = p.notReadyLocked(1, fmt.Errorf("no worker became ready within ReadyTimeout (%s)", timeout))
	default:
		err = fmt.Errorf("%w (tool %q waited %s%s)", ErrQueueTimeout, tool, timeout, p.serialHintLocked(tool))
	}
	return nil, p.rejectLocked(w.rec, err)
}

// rejectLocked records a call that ends without (another) worker attempt,
// unlocks, and drops the record.
func (p *Pool) rejectLocked(r *callRec, err error) error {
	err = toolTimeoutErr(r.ctx, r.tool, err) // named where it is counted
	if !r.batch {
		p.st.record(err)
	}
	p.dropLocked(r)
	return err
}

// errReadmit sends a call back through admit; it never leaves the package.
var errReadmit = errors.New("snakepit: internal: the call must pass its tool's limits first")

// limitsLearnedLocked: r was admitted before its tool's limits were known,
// and now they are (the first ready worker reported them).
func (p *Pool) limitsLearnedLocked(r *callRec) bool {
	return r.ungated && p.limitFor(r.tool) != (toolLimit{})
}

// readmitLocked drops the attempt without recording an outcome (the call
// goes on: admit, then a new attempt) and unlocks.
func (p *Pool) readmitLocked(r *callRec) error {
	p.dropLocked(r)
	return errReadmit
}

// dropLocked ends an attempt that holds no slot, unlocks, and recycles the
// record when nothing can touch it any more.
func (p *Pool) dropLocked(r *callRec) {
	// Stop may have armed the watchdog while a handed-over slot was unclaimed.
	reusable := !r.armed
	if r.timer != nil {
		r.timer.Stop()
	}
	r.done = true
	p.mu.Unlock()
	r.cancel(nil)
	if reusable {
		p.recycle(r)
	}
}

// grantNowLocked gives a free slot of ws to the caller holding the lock and
// unlocks.
func (p *Pool) grantNowLocked(r *callRec, ws *workerState, session string) *workerState {
	p.takeLocked(r, ws, session)
	p.mu.Unlock()
	return ws
}

func (p *Pool) takeLocked(r *callRec, ws *workerState, session string) {
	p.serialTakeLocked(r, ws)
	p.prefetchTakeLocked(r, ws)
	ws.inflight++
	ws.calls++
	p.inflight++
	if !ws.room() {
		p.free.remove(ws)
	} else if ws.inFree {
		p.free.place(ws, p.opts.PackIdle) // behind the workers now less or as loaded
	}
	r.ws, r.gen = ws, ws.gen
	p.calls.add(r)
	if session != "" {
		p.pinLocked(session, ws)
	}
}

func (p *Pool) pinLocked(session string, ws *workerState) {
	_, had := p.sessions[session]
	exp := p.now().Add(p.opts.AffinityTTL)
	p.sessions[session] = sessionEntry{ws: ws, gen: ws.gen, expires: exp}
	ws.pinnedUntil = exp
	if !had && len(p.sessions) >= p.sweepAt {
		// Amortised O(1): a full sweep at most once per doubling.
		now := p.now()
		for k, e := range p.sessions {
			if now.After(e.expires) {
				delete(p.sessions, k)
			}
		}
		p.sweepAt = max(2*len(p.sessions), sessionSweepMin)
	}
}

// offerLocked hands free slots of ws to the oldest waiters that can use
// them, then lists ws as free if slots remain. One waiter is woken per slot.
func (p *Pool) offerLocked(ws *workerState) {
	if !ws.usable() {
		return
	}
	for ws.room() {
		w := p.fitLocked(ws.strict.head, ws)
		if g := p.fitLocked(p.general.head, ws); g != nil && (w == nil || g.seq < w.seq) {
			w = g
		}
		if w == nil {
			break
		}
		if ws.inflight >= ws.capacity && !p.prefetchRoomLocked(ws, w.rec.tool, w.rec.batch) {
			// The oldest waiter that fits needs a running slot (prefetch.go):
			// no prefetching passes it; ws serves it once below capacity.
			break
		}
		if p.limitsLearnedLocked(w.rec) {
			// It queued before its tool's limits were known (the worker
			// whose readiness brings this offer declared them): it passes
			// the limit first, and the slot goes to the next waiter.
			p.failWaiterLocked(w, errReadmit)
			continue
		}
		w.q.remove(w)
		p.queued--
		now := p.now()
		p.qhist.note(now, p.queued)
		w.rec.sr.at = now
		p.takeLocked(w.rec, ws, w.session)
		w.ws = ws
		w.ch <- struct{}{}
	}
	if ws.room() {
		// Listed or not, its load changed: ahead of the busier workers.
		p.free.place(ws, p.opts.PackIdle)
	}
}

func (p *Pool) failWaiterLocked(w *waiter, err error) {
	w.q.remove(w)
	p.queued--
	p.qhist.note(p.now(), p.queued)
	w.err = err
	w.ch <- struct{}{}
}

func (p *Pool) failWaitersLocked(q *waitQueue, err error) {
	for w := q.head; w != nil; w = q.head {
		p.failWaiterLocked(w, err)
	}
}

// unlinkReleaseLocked ends an attempt's hold on its slot at now and passes
// the slot on; learn: the attempt ran and succeeded (serial.go learns from it).
func (p *Pool) unlinkReleaseLocked(r *callRec, now time.Time, learn bool) {
	r.done = true
	p.calls.remove(r)
	ws := r.ws
	p.serialReleaseLocked(r, ws, now, learn && !r.batch && !r.prefetched)
	p.prefetchReleaseLocked(r, ws, now)
	ws.inflight--
	p.inflight--
	if !ws.removed {
		p.offerLocked(ws)
	}
	ws.closeDrainedLocked(false)
	p.checkIdleLocked()
}

// finish ends an attempt that reached the worker: it converts a hung kill
// into a *WorkerTimeoutError, gives the slot back and, unless the call will
// be retried, records the outcome. It reports whether to retry.
func (p *Pool) finish(r *callRec, werr error, retry bool, start time.Time) (bool, error) {
	reusable := true
	if r.stopWatch != nil {
		reusable = r.stopWatch() // false: the watchdog may still touch r
		r.stopWatch = nil
	}
	end := p.now() // the serial rule's share clock needs the instant, not only the latency
	lat := end.Sub(start)
	err := werr
	gone := werr != nil && (errors.Is(werr, worker.ErrWorkerCrashed) || errors.Is(werr, worker.ErrWorkerUnavailable)) && !worker.CrashedBehind(werr)

	p.mu.Lock()
	if r.timer != nil {
		r.timer.Stop()
	}
	if gone && r.ws.gen == r.gen && !r.ws.removed {
		// The call saw the lifetime end before the worker's Exited reached
		// us. Act on it now, so the slot is not handed to a waiter for a
		// dead lifetime (a strict-affinity waiter would otherwise land on
		// the next lifetime, which lost the session's state).
		p.lifetimeEndedLocked(r.ws)
	}
	if r.hung && werr != nil {
		err = &WorkerTimeoutError{WorkerID: r.ws.id, Tool: r.tool, Grace: p.opts.HungGrace, Err: context.Cause(r.ctx), WorkerErr: werr}
		retry = false
	}
	if p.stopping {
		retry = false
	}
	err = toolTimeoutErr(r.ctx, r.tool, err) // named where it is counted
	reusable = reusable && !r.armed
	p.unlinkReleaseLocked(r, end, err == nil)
	switch {
	case r.batch: // its calls count themselves
	case retry:
		p.st.retries++
	default:
		p.st.record(err)
		p.sampleLocked(lat)
	}
	p.mu.Unlock()

	r.cancel(nil)
	if reusable {
		p.recycle(r)
	}
	return retry, err
}

func (p *Pool) recycle(r *callRec) {
	r.inYield.Store(false)
	r.watched.Store(false)
	r.yieldEnd.Store(0)
	r.p, r.ws, r.gen, r.tool, r.ctx, r.cancel, r.ungated, r.batch, r.prefetched, r.long = p, nil, 0, "", nil, nil, false, false, false, false
	r.stopWatch, r.timer, r.armed, r.done, r.hung = nil, nil, false, false, false
	r.prev, r.next = nil, nil
	r.sr = serialRec{}
	p.recs.Put(r)
}

func (p *Pool) sampleLocked(d time.Duration) {
	p.lat[p.latN%latencyWindow] = d
	p.latN++
	p.latSum += d
	if d > p.latMax {
		p.latMax = d
	}
	i := 0
	for i < len(latencyBounds) && d > latencyBounds[i] {
		i++
	}
	p.latBuckets[i]++ // the last slot is +Inf
}
