package pool

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/snakepit-go/snakepit/worker"
)

type wstate uint8

const (
	stStarting wstate = iota // added, or a lifetime is starting
	stReady
	stExited // between lifetimes: its restarter decides what next
	stFailed // the supervisor gave up on it
)

// workerState is the pool's view of one worker. All fields are guarded by
// Pool.mu.
type workerState struct {
	id       string
	w        worker.Worker
	capacity int
	prefetch int        // calls it holds beyond capacity (prefetch.go)
	long     int        // its calls in flight of tools that may not be prefetched
	pf       []*callRec // its prefetched calls, oldest first
	inflight int
	state    wstate
	removed  bool
	// draining: Retire took it out of rotation for good; drained is closed
	// once its last in-flight call has returned (or it was removed).
	draining      bool
	drained       chan struct{}
	drainedClosed bool
	// gen counts ended lifetimes; a session pinned under an older gen lost
	// its worker-side state.
	gen          uint64
	tools        []worker.ToolSpec
	toolsCounted bool
	lastErr      error     // last Exited error, or the WorkerFailed error
	retryAt      time.Time // when a failed worker is tried again
	// For Stats' per-worker list: the current process, when the worker
	// entered its state, ended lifetimes and recycles. calls counts the
	// slots ever taken on it and pinnedUntil is when the last session pinned
	// to it expires: Stats lists the first, and an autoscaler reads both to
	// tell an idle worker it may remove (load.go).
	pid                int
	since              time.Time
	calls              uint64
	restarts, recycles int
	pinnedUntil        time.Time

	// Intrusive free-list links, kept in order of load (freeList.place).
	fprev, fnext *workerState
	inFree       bool

	strict waitQueue // strict-affinity waiters for this worker only

	sc shareClock // serial.go
}

func (ws *workerState) usable() bool { return ws.state == stReady && !ws.removed && !ws.draining }

// closeDrainedLocked releases Retire once nothing of ws is in flight.
func (ws *workerState) closeDrainedLocked(force bool) {
	if ws.drained != nil && !ws.drainedClosed && (force || ws.inflight == 0) {
		ws.drainedClosed = true
		close(ws.drained)
	}
}

type freeList struct{ head, tail *workerState }

// place (re)lists ws in ascending order of load (rank), after the
// workers with as much: dispatch takes the head, so a call goes to the
// least-loaded worker (never queued behind a busy one while another is
// idle), and equally loaded workers take turns. It walks from the tail,
// O(workers) at worst: pools are small and the walk stops at the first
// worker no busier than ws. With pack set (Options.PackIdle), ws goes
// ahead of the workers with as many calls instead: ties go to the most
// recently used worker, so light load stays on few workers and the others
// become idle for an autoscaler to remove.
func (l *freeList) place(ws *workerState, pack bool) {
	l.remove(ws)
	at := l.tail
	r := ws.rank()
	for at != nil && (at.rank() > r || (pack && at.rank() == r)) {
		at = at.fprev
	}
	if at == nil {
		ws.fprev, ws.fnext = nil, l.head
		if l.head != nil {
			l.head.fprev = ws
		} else {
			l.tail = ws
		}
		l.head = ws
	} else {
		ws.fprev, ws.fnext = at, at.fnext
		if at.fnext != nil {
			at.fnext.fprev = ws
		} else {
			l.tail = ws
		}
		at.fnext = ws
	}
	ws.inFree = true
}

func (l *freeList) remove(ws *workerState) {
	if !ws.inFree {
		return
	}
	if ws.fprev != nil {
		ws.fprev.fnext = ws.fnext
	} else {
		l.head = ws.fnext
	}
	if ws.fnext != nil {
		ws.fnext.fprev = ws.fprev
	} else {
		l.tail = ws.fprev
	}
	ws.fprev, ws.fnext, ws.inFree = nil, nil, false
}

type sessionEntry struct {
	ws      *workerState
	gen     uint64
	expires time.Time
}

type earlyEvent struct {
	ready bool
	info  worker.Info
}

// Pool dispatches calls to workers. Create it with New; it is safe for
// concurrent use and implements worker.Events.
type Pool struct {
	opts Options
	log  *slog.Logger
	now  func() time.Time

	// mu guards everything below. It is held for O(1) bookkeeping only (and
	// O(workers) in Stats/Tools/lifecycle events), never across a worker call.
	mu            sync.Mutex
	workers       map[string]*workerState
	early         map[string]earlyEvent
	free          freeList
	general       waitQueue
	queued        int
	qhist         queueHistory
	seq           uint64
	ready         int
	failed        int
	toolCount     map[string]int
	toolsReported int
	sessions      map[string]sessionEntry
	sweepAt       int
	stopping      bool
	idle          chan struct{} // made by Stop, closed when nothing is in flight
	idleClosed    bool
	changed       chan struct{} // closed and replaced when readiness changes
	calls         callList
	inflight      int
	st            counters
	lat           [latencyWindow]time.Duration
	latN          uint64
	latMax        time.Duration
	latSum        time.Duration
	latBuckets    [len(latencyBounds) + 1]uint64 // per bound, not cumulative; the last is +Inf

	recs    sync.Pool // *callRec
	waiters sync.Pool // *waiter

	// Per-tool limits (limits.go). limits is replaced whole under mu; the
	// gates have their own lock, taken after mu when both are needed.
	limits      atomic.Pointer[map[string]toolLimit]
	gateMu      sync.Mutex
	gates       map[string]*toolGate
	gateWaiters int // across all gates; bounded by MaxQueue
	gatesClosed bool

	bt  batching    // dynamic batching (batch.go)
	ser serialState // tools that run one call per worker (serial.go)
	// longTools: the EWMA of the share of the calls of each tool that
	// had a call take serialMinSolo or more of a worker's time (prefetch.go).
	longTools map[string]float64
}

var _ worker.Events = (*Pool)(nil)

// New builds an empty pool.
func New(opts Options) (*Pool, error) {
	o, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	p := &Pool{
		opts:      o,
		log:       o.Logger,
		now:       o.Now,
		workers:   map[string]*workerState{},
		early:     map[string]earlyEvent{},
		toolCount: map[string]int{},
		sessions:  map[string]sessionEntry{},
		gates:     map[string]*toolGate{},
		sweepAt:   sessionSweepMin,
		changed:   make(chan struct{}),
		st:        newCounters(),
	}
	p.recs.New = func() any { return newCallRec(p) }
	p.waiters.New = func() any { return &waiter{ch: make(chan struct{}, 1)} }
	return p, nil
}

// Add makes w part of the pool with room for capacity concurrent calls
// (<= 0: Options.DefaultCapacity). It takes calls once it reports Ready.
// Adding an id that is already present replaces that worker.
func (p *Pool) Add(w worker.Worker, capacity int) {
	if capacity <= 0 {
		capacity = p.opts.DefaultCapacity
	}
	id := w.ID()
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, dup := p.workers[id]; dup {
		p.log.Warn("snakepit: worker added twice; replacing the earlier one", "worker_id", id)
		p.removeLocked(id)
	}
	ws := &workerState{id: id, w: w, capacity: capacity, state: stStarting, since: p.now()}
	p.workers[id] = ws
	p.noteWorkerLocked(w, 1)
	if e, ok := p.early[id]; ok {
		delete(p.early, id)
		if e.ready {
			p.becomeReadyLocked(ws, e.info)
		}
	}
	p.notifyLocked()
}

// Remove takes the worker out of the pool. Its in-flight calls finish or fail
// on their own; strict waiters for it fail with ErrSessionWorkerUnavailable.
func (p *Pool) Remove(id string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.removeLocked(id)
	delete(p.early, id)
	p.notifyLocked()
}

func (p *Pool) removeLocked(id string) {
	ws := p.workers[id]
	if ws == nil {
		return
	}
	p.leaveReadyLocked(ws)
	if ws.state == stFailed {
		p.failed--
	}
	ws.removed = true
	ws.closeDrainedLocked(true)
	delete(p.workers, id)
	p.noteWorkerLocked(ws.w, -1)
	p.failStrictLocked(ws, ErrSessionWorkerUnavailable)
	p.failIfHopelessLocked()
}

// Starting implements worker.Events.
func (p *Pool) Starting(id string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	ws := p.workers[id]
	if ws == nil {
		p.early[id] = earlyEvent{}
		return
	}
	p.leaveReadyLocked(ws)
	if ws.state == stFailed {
		// The supervisor tries again after giving up; let it.
		p.failed--
	}
	ws.state, ws.since, ws.pid = stStarting, p.now(), 0
	p.notifyLocked()
}

// Ready implements worker.Events.
func (p *Pool) Ready(id string, info worker.Info) {
	p.mu.Lock()
	defer p.mu.Unlock()
	ws := p.workers[id]
	if ws == nil {
		p.early[id] = earlyEvent{ready: true, info: info}
		return
	}
	p.becomeReadyLocked(ws, info)
	p.notifyLocked()
}

// Exited implements worker.Events. A non-nil err counts as a restart,
// except a planned recycle (worker.ErrRecycled), which counts as a recycle.
func (p *Pool) Exited(id string, err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	var re *worker.RecycledError
	recycled := errors.As(err, &re)
	switch {
	case recycled:
		p.countRecycleLocked(re.Reason)
	case err != nil:
		r := restartReason(err)
		p.st.restarts++
		p.st.restartReasons[r]++
		p.st.restartDetail[r] = err.Error()
	}
	ws := p.workers[id]
	if ws == nil {
		delete(p.early, id)
		return
	}
	if err != nil {
		ws.lastErr = err
		if recycled {
			ws.recycles++
		} else {
			ws.restarts++
		}
	}
	p.lifetimeEndedLocked(ws)
}

// Recycled implements worker.Events: a new process took over without a gap.
// The worker stays in rotation; its sessions lost their state, exactly as
// after a restart, and calls still running on the old process finish there.
func (p *Pool) Recycled(id string, info worker.Info, reason string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.countRecycleLocked(reason)
	ws := p.workers[id]
	if ws == nil {
		p.early[id] = earlyEvent{ready: true, info: info}
		return
	}
	ws.gen++
	ws.recycles++
	p.failStrictLocked(ws, ErrSessionWorkerUnavailable)
	p.becomeReadyLocked(ws, info)
	p.notifyLocked()
}

// lifetimeEndedLocked takes ws out of rotation until its next Ready and
// invalidates the sessions it served.
func (p *Pool) lifetimeEndedLocked(ws *workerState) {
	p.leaveReadyLocked(ws)
	ws.gen++
	if ws.state != stFailed {
		ws.state, ws.since = stExited, p.now()
	}
	ws.pid = 0
	p.failStrictLocked(ws, ErrSessionWorkerUnavailable)
	p.notifyLocked()
}

// WorkerFailed records that the supervisor gave worker id up (it failed to
// start too often) until retryAt (zero: for good); err is kept for
// WaitReady, ErrNotReady and Stats. The worker is out of rotation until it
// reports Starting again.
func (p *Pool) WorkerFailed(id string, err error, retryAt time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	ws := p.workers[id]
	if ws == nil {
		return
	}
	p.leaveReadyLocked(ws)
	if ws.state != stFailed {
		p.failed++
	}
	if ws.state != stFailed {
		ws.since = p.now()
	}
	ws.state = stFailed
	ws.retryAt = retryAt
	if err != nil {
		ws.lastErr = err
	}
	p.failStrictLocked(ws, ErrSessionWorkerUnavailable)
	p.failIfHopelessLocked()
	p.notifyLocked()
}

func (p *Pool) becomeReadyLocked(ws *workerState, info worker.Info) {
	if ws.state == stReady {
		p.leaveReadyLocked(ws)
	}
	if ws.state == stFailed {
		p.failed--
	}
	if info.Capacity > 0 {
		ws.capacity = info.Capacity
	}
	ws.prefetch = min(max(info.Prefetch, 0), maxPrefetchPerSlot*ws.capacity)
	ws.pid, ws.since = info.PID, p.now()
	if ws.draining {
		// Retired workers never return to rotation, whatever they report.
		ws.state = stExited
		return
	}
	ws.state = stReady
	ws.tools = slices.Clone(info.Tools)
	p.noteLimitsLocked(ws.tools)
	p.ready++
	if len(ws.tools) > 0 {
		p.toolsReported++
		for _, t := range ws.tools {
			p.toolCount[t.Name]++
		}
		ws.toolsCounted = true
	}
	p.offerLocked(ws)
}

// leaveReadyLocked takes a ready worker out of rotation.
func (p *Pool) leaveReadyLocked(ws *workerState) {
	if ws.state != stReady {
		return
	}
	ws.state = stExited
	p.ready--
	p.free.remove(ws)
	if ws.toolsCounted {
		p.toolsReported--
		for _, t := range ws.tools {
			if p.toolCount[t.Name]--; p.toolCount[t.Name] <= 0 {
				delete(p.toolCount, t.Name)
			}
		}
		ws.toolsCounted = false
	}
}

func (p *Pool) failStrictLocked(ws *workerState, err error) {
	for w := ws.strict.head; w != nil; w = ws.strict.head {
		p.failWaiterLocked(w, err)
	}
}

// hopelessLocked: workers exist and the supervisor gave up on every one, so
// waiting for readiness cannot succeed.
func (p *Pool) hopelessLocked() bool {
	return p.ready == 0 && len(p.workers) > 0 && p.failed == len(p.workers)
}

func (p *Pool) failIfHopelessLocked() {
	if !p.hopelessLocked() {
		return
	}
	err := p.notReadyLocked(1, nil)
	for w := p.general.head; w != nil; w = p.general.head {
		p.failWaiterLocked(w, err)
	}
}

// notReadyLocked builds the error for "fewer than wanted workers ready",
// carrying the startup errors a user needs to fix the cause.
func (p *Pool) notReadyLocked(wanted int, cause error) *NotReadyError {
	var errs []error
	if cause != nil {
		errs = append(errs, cause)
	}
	ids := make([]string, 0, len(p.workers))
	for id := range p.workers {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		ws := p.workers[id]
		if ws.lastErr != nil && (ws.state == stFailed || (cause != nil && ws.state != stReady)) {
			errs = append(errs, ws.lastErr)
		}
	}
	return &NotReadyError{Wanted: wanted, Ready: p.ready, Failed: p.failed, Cause: errors.Join(errs...)}
}

func (p *Pool) notifyLocked() {
	close(p.changed)
	p.changed = make(chan struct{})
}

// WaitReady waits until at least n workers are ready (n <= 0: every added
// worker). It fails early, with a *NotReadyError wrapping their startup
// errors, once so many workers have failed for good that n is out of reach;
// when ctx ends first, the *NotReadyError wraps ctx's error and the last
// startup errors of the workers still trying. Add the workers before calling.
func (p *Pool) WaitReady(ctx context.Context, n int) error {
	for {
		p.mu.Lock()
		want := n
		if want <= 0 {
			want = max(len(p.workers), 1)
		}
		switch {
		case p.stopping:
			p.mu.Unlock()
			return ErrPoolStopping
		case p.ready >= want:
			p.mu.Unlock()
			return nil
		case p.failed > 0 && len(p.workers)-p.failed < want:
			err := p.notReadyLocked(want, nil)
			p.mu.Unlock()
			return err
		}
		ch := p.changed
		p.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			p.mu.Lock()
			err := p.notReadyLocked(want, ctx.Err())
			p.mu.Unlock()
			return err
		}
	}
}

// Tools returns the union, by name, of the tools ready workers reported,
// sorted by name.
func (p *Pool) Tools() []worker.ToolSpec {
	p.mu.Lock()
	defer p.mu.Unlock()
	seen := map[string]bool{}
	var out []worker.ToolSpec
	for _, ws := range p.workers {
		if ws.state != stReady {
			continue
		}
		for _, t := range ws.tools {
			if !seen[t.Name] {
				seen[t.Name] = true
				out = append(out, t)
			}
		}
	}
	slices.SortFunc(out, func(a, b worker.ToolSpec) int { return strings.Compare(a.Name, b.Name) })
	return out
}

func (p *Pool) availableToolsLocked() []string {
	names := make([]string, 0, len(p.toolCount))
	for n := range p.toolCount {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// Retire takes worker id out of rotation for good while the pool serves:
// it gets no new calls, strict-affinity waiters for it fail with
// ErrSessionWorkerUnavailable and its sessions move elsewhere (hint), and
// Retire waits until its in-flight calls have returned or ctx ends. The
// caller then stops the worker and calls Remove. An unknown id is not an
// error (it is already gone). When ctx ends first, the error says how many
// calls were still running; they end when the worker stops (a crash error,
// retried elsewhere for idempotent calls).
func (p *Pool) Retire(ctx context.Context, id string) error {
	p.mu.Lock()
	ws := p.workers[id]
	if ws == nil {
		p.mu.Unlock()
		return nil
	}
	p.retireLocked(ws)
	drained := ws.drained
	p.mu.Unlock()
	select {
	case <-drained:
		return nil
	case <-ctx.Done():
		p.mu.Lock()
		n := ws.inflight
		p.mu.Unlock()
		return fmt.Errorf("snakepit: worker %s still had %d call(s) in flight when its drain ended: %w", id, n, ctx.Err())
	}
}

// retireLocked takes ws out of rotation for good (once).
func (p *Pool) retireLocked(ws *workerState) {
	if ws.draining {
		return
	}
	ws.draining = true
	ws.drained = make(chan struct{})
	p.leaveReadyLocked(ws)
	p.failStrictLocked(ws, ErrSessionWorkerUnavailable)
	ws.closeDrainedLocked(false)
	p.notifyLocked()
}

// Drain is Stop.
func (p *Pool) Drain(ctx context.Context) error { return p.Stop(ctx) }

// Stop stops the pool for good: new calls and queued waiters get
// ErrPoolStopping at once; in-flight calls may finish until ctx ends (pass a
// deadline: the grace period), then their contexts are cancelled. It returns
// when no call is in flight: nil if they all finished within the grace,
// otherwise an error saying how many were cancelled. Workers that ignore the
// cancellation are killed after HungGrace; if that has not freed them within
// StopWait, Stop returns a *StopError rather than wait forever. Safe to call again.
func (p *Pool) Stop(ctx context.Context) error {
	p.mu.Lock()
	if !p.stopping {
		p.stopping = true
		p.failWaitersLocked(&p.general, ErrPoolStopping)
		for _, ws := range p.workers {
			p.failStrictLocked(ws, ErrPoolStopping)
		}
		p.idle = make(chan struct{})
		p.checkIdleLocked()
		p.notifyLocked()
	}
	idle := p.idle
	p.mu.Unlock()
	p.closeGates(ErrPoolStopping)
	p.closeBatches()

	select {
	case <-idle:
		return nil
	case <-ctx.Done():
	}

	p.mu.Lock()
	n := 0
	for rec := p.calls.head; rec != nil; rec = rec.next {
		rec.cancel(ErrPoolStopping)
		p.armLocked(rec)
		n++
	}
	p.mu.Unlock()

	bound := time.NewTimer(p.opts.StopWait)
	defer bound.Stop()
	select {
	case <-idle:
		if n == 0 {
			return nil
		}
		return errors.Join(errors.New("snakepit: the stop grace period ended with "+itoa(n)+" call(s) in flight; they were cancelled"), ctx.Err())
	case <-bound.C:
		p.mu.Lock()
		left := p.inflight
		p.mu.Unlock()
		return &StopError{InFlight: left, Err: ctx.Err()}
	}
}

func (p *Pool) checkIdleLocked() {
	if p.stopping && p.inflight == 0 && !p.idleClosed {
		p.idleClosed = true
		close(p.idle)
	}
}

// countRecycleLocked counts a recycle under its bounded reason, keeping the
// text given for it as the detail.
func (p *Pool) countRecycleLocked(reason string) {
	r := recycleReason(reason)
	p.st.recycles++
	p.st.recycleReasons[r]++
	p.st.recycleDetail[r] = reason
}
