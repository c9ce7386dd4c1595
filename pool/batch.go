package pool

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/snakepit-go/snakepit/worker"
)

// Dynamic batching. A tool that declares worker.ToolSpec.BatchMaxSize takes
// several calls in one request. Its calls, once past the tool's limits,
// join the tool's open batch instead of looking for a slot each. The batch
// closes, and is sent, at the first of:
//   - it holds BatchMaxSize calls;
//   - the tool is idle: fewer of its batches are in flight than workers are
//     ready (a call that finds a worker with nothing of this tool to do goes
//     at once: waiting would only add latency), checked when a call joins
//     and when one of its batches ends;
//   - BatchMaxWait has passed since its first call joined.
//
// So batches form from the calls that arrive while the workers are busy
// with earlier batches (as Triton's dynamic batcher forms them while its
// model instances are busy), and a lone caller pays no max_wait. A goroutine
// of its own (the runner) then takes ONE slot for the whole batch, sends it
// (worker.BatchExecutor) and hands each call its share of the answer.
//
// Each call stays its caller's:
//   - it counts once in Stats: a request when it joins, its outcome when its
//     caller returns (the runner's slot is not a call and counts nothing);
//   - its caller waits on its own context: ending before the batch is sent,
//     the call leaves the batch; after, its result is dropped. Either way
//     the caller returns at once with its context's error. The request's
//     own context ends when every call in it has gone, or at the latest of
//     their deadlines: that is what the worker sees and what arms the
//     hung-worker watchdog, as a single call's context does;
//   - its error is its own: the tool's failure for that call, or the
//     request's failure (a crash) which every call in it shares;
//   - its request id and metadata (trace context) travel with it;
//   - a crash under the batch is handled per call as for a single call: the
//     idempotent calls (every call when nothing was sent) go again, as a
//     smaller batch on another worker after the retry backoff; the others
//     fail with the crash error.
//
// Calls with a SessionID are not batched (a batch runs on no one session's
// worker), nor are calls in a pool with a worker that is not a
// worker.BatchExecutor (a remote agent: its own pool batches them).

// batchItem is one call in a batch.
type batchItem struct {
	call *worker.Call
	ctx  context.Context
	opts CallOptions
	done chan struct{} // closed once res and err are set

	// Guarded by batcher.mu.
	state itemState
	run   *batchRun
	res   *worker.Result
	err   error
}

type itemState uint8

const (
	itemOpen      itemState = iota // in the open batch
	itemClosed                     // with a runner
	itemLeft                       // its caller returned first
	itemDelivered                  // res and err are set
)

// batchRun is one attempt of a batch: its context ends when every call in
// it has left.
type batchRun struct {
	live   int
	cancel context.CancelFunc
}

// batcher holds the open batch of one tool.
type batcher struct {
	p     *Pool
	tool  string
	mu    sync.Mutex
	open  []*batchItem
	timer *time.Timer
	epoch uint64 // counts closed batches: a timer armed for an earlier one does nothing
	// running counts the tool's closed batches not yet answered (their
	// runners, retries included).
	running int
}

// batching is the pool's batching state.
type batching struct {
	mu     sync.Mutex
	byTool map[string]*batcher
	// Guarded by Pool.mu: the workers that are not BatchExecutors (while
	// there is one, batch tools run call by call), and the histogram of
	// the sizes of the batches sent.
	plain int
	sizes [len(batchBounds) + 1]uint64
	count uint64
	calls uint64
}

// batchBounds are the upper bounds of the batch size histogram.
var batchBounds = [...]int{1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024}

func (p *Pool) batcherFor(tool string) *batcher {
	p.bt.mu.Lock()
	defer p.bt.mu.Unlock()
	b := p.bt.byTool[tool]
	if b == nil {
		if p.bt.byTool == nil {
			p.bt.byTool = map[string]*batcher{}
		}
		b = &batcher{p: p, tool: tool}
		p.bt.byTool[tool] = b
	}
	return b
}

// noteWorkerLocked counts a worker added (+1) or removed (-1) that cannot
// take batches.
func (p *Pool) noteWorkerLocked(w worker.Worker, delta int) {
	if _, ok := w.(worker.BatchExecutor); !ok {
		p.bt.plain += delta
	}
}

// executeBatched is Execute for a call of a batch tool that passed its
// limits. first: the call is not yet counted in the stats.
func (p *Pool) executeBatched(ctx context.Context, call *worker.Call, opts CallOptions, lim toolLimit, first bool) (*worker.Result, error) {
	start := p.now()
	p.mu.Lock()
	if first {
		p.st.requests++
	}
	stopping, plain, ready := p.stopping, p.bt.plain > 0, p.ready
	p.mu.Unlock()
	switch {
	case stopping:
		return nil, p.recordAbandoned(ErrPoolStopping)
	case plain:
		return p.execute(ctx, call, opts, false, false)
	}
	it := &batchItem{call: call, ctx: ctx, opts: opts, done: make(chan struct{})}
	b := p.batcherFor(call.Tool)
	b.join(it, lim, ready)
	var res *worker.Result
	var err error
	sent := true
	select {
	case <-it.done:
		res, err = it.res, it.err
	case <-ctx.Done():
		res, err, sent = b.leave(it)
	}
	err = toolTimeoutErr(ctx, call.Tool, err)
	p.mu.Lock()
	p.st.record(err)
	if sent {
		p.sampleLocked(p.now().Sub(start))
	}
	p.mu.Unlock()
	return res, err
}

// join adds it to the open batch, closing the batch when it is full or
// the tool is idle (ready: the workers ready).
func (b *batcher) join(it *batchItem, lim toolLimit, ready int) {
	b.mu.Lock()
	b.open = append(b.open, it)
	if len(b.open) >= lim.batchMax || b.running < ready {
		items := b.closeLocked()
		b.mu.Unlock()
		go b.p.runBatch(b, items)
		return
	}
	if len(b.open) == 1 {
		epoch := b.epoch
		b.timer = time.AfterFunc(lim.batchWait, func() { b.expire(epoch) })
	}
	b.mu.Unlock()
}

// next is a runner done with its batch: it returns the open batch, closed,
// when the tool is now idle (the runner sends it), else nil.
func (b *batcher) next() []*batchItem {
	b.p.mu.Lock()
	ready := b.p.ready
	b.p.mu.Unlock()
	b.mu.Lock()
	defer b.mu.Unlock()
	b.running--
	if len(b.open) == 0 || b.running >= ready {
		return nil
	}
	return b.closeLocked()
}

// expire closes the batch the timer was armed for, if it is still open.
func (b *batcher) expire(epoch uint64) {
	b.mu.Lock()
	if b.epoch != epoch || len(b.open) == 0 {
		b.mu.Unlock()
		return
	}
	items := b.closeLocked()
	b.mu.Unlock()
	b.p.runBatch(b, items) // on the timer's own goroutine
}

func (b *batcher) closeLocked() []*batchItem {
	items := b.open
	b.open = nil
	b.epoch++
	b.running++
	if b.timer != nil {
		b.timer.Stop()
		b.timer = nil
	}
	for _, it := range items {
		it.state = itemClosed
	}
	return items
}

// leave is a caller whose context ended: its call leaves the open batch or
// drops its result, unless the result is already there (then it is kept).
// sent reports whether the call had gone to a runner.
func (b *batcher) leave(it *batchItem) (*worker.Result, error, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch it.state {
	case itemDelivered:
		return it.res, it.err, true
	case itemOpen:
		for i, x := range b.open {
			if x == it {
				b.open = append(b.open[:i], b.open[i+1:]...)
				break
			}
		}
		if len(b.open) == 0 && b.timer != nil {
			b.timer.Stop()
			b.timer = nil
		}
		it.state = itemLeft
		return nil, it.ctx.Err(), false
	}
	it.state = itemLeft
	if r := it.run; r != nil {
		if r.live--; r.live == 0 {
			r.cancel()
		}
	}
	return nil, it.ctx.Err(), true
}

// attach gives the calls still waiting a new run; nil when none is.
func (b *batcher) attach(items []*batchItem, run *batchRun) []*batchItem {
	b.mu.Lock()
	defer b.mu.Unlock()
	live := items[:0]
	for _, it := range items {
		if it.state == itemClosed {
			it.run = run
			live = append(live, it)
		}
	}
	run.live = len(live)
	return live
}

// stillWaiting drops the calls that left while the batch waited for a slot.
func (b *batcher) stillWaiting(items []*batchItem) []*batchItem {
	b.mu.Lock()
	defer b.mu.Unlock()
	live := items[:0]
	for _, it := range items {
		if it.state == itemClosed {
			live = append(live, it)
		}
	}
	return live
}

func (b *batcher) deliver(it *batchItem, res *worker.Result, err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if it.state != itemClosed {
		return // its caller has gone
	}
	it.res, it.err, it.state = res, err, itemDelivered
	close(it.done)
}

// runBatch sends a closed batch, again for the calls a crash lets retry;
// then the open batch if the tool is idle by then.
func (p *Pool) runBatch(b *batcher, items []*batchItem) {
	for items != nil {
		var avoid *workerState
		for attempt := 0; len(items) > 0; attempt++ {
			if attempt > 0 {
				_ = p.backoff(context.Background(), attempt-1) // bounded; calls may leave meanwhile
			}
			items, avoid = p.batchAttempt(b, items, avoid, attempt)
		}
		items = b.next()
	}
}

// batchContext is the request's context: it ends at the latest of the
// calls' deadlines (none if one has none), or when they have all left.
func batchContext(items []*batchItem) (context.Context, context.CancelFunc) {
	var latest time.Time
	for _, it := range items {
		d, ok := it.ctx.Deadline()
		if !ok {
			return context.WithCancel(context.Background())
		}
		if d.After(latest) {
			latest = d
		}
	}
	return context.WithDeadline(context.Background(), latest)
}

// batchQueueTimeout is the shortest queue timeout a call of the batch set;
// 0 (the pool's default) when none set one.
func batchQueueTimeout(items []*batchItem) time.Duration {
	var t time.Duration
	for _, it := range items {
		if q := it.opts.QueueTimeout; q > 0 && (t == 0 || q < t) {
			t = q
		}
	}
	return t
}

// batchAttempt sends the calls still waiting as one request and delivers
// each its result; it returns the calls to send again, and the worker to
// avoid then.
func (p *Pool) batchAttempt(b *batcher, items []*batchItem, avoid *workerState, attempt int) ([]*batchItem, *workerState) {
	bctx, cancel := batchContext(items)
	defer cancel()
	run := &batchRun{cancel: cancel}
	if items = b.attach(items, run); len(items) == 0 {
		return nil, nil
	}
	r := p.begin(bctx, b.tool, false)
	r.batch = true
	ws, err := p.acquire(bctx, &worker.Call{Tool: b.tool}, CallOptions{QueueTimeout: batchQueueTimeout(items)}, r, avoid, false)
	if err != nil {
		for _, it := range items {
			b.deliver(it, nil, err)
		}
		return nil, nil
	}
	if items = b.stillWaiting(items); len(items) == 0 {
		p.finish(r, nil, false, time.Time{})
		return nil, nil
	}
	r.watch(bctx)
	calls := make([]*worker.Call, len(items))
	for i, it := range items {
		calls[i] = it.call
	}
	p.noteBatch(len(calls))
	results, werr := executeBatch(r.ctx, ws.w, b.tool, calls)
	want := false
	for _, it := range items {
		want = want || p.retryable(it.ctx, werr, it.opts, attempt)
	}
	retryOK, err := p.finish(r, werr, want, time.Time{})
	var again []*batchItem
	for i, it := range items {
		if werr != nil {
			if retryOK && p.retryable(it.ctx, werr, it.opts, attempt) {
				again = append(again, it)
				continue
			}
			b.deliver(it, nil, err)
			continue
		}
		b.deliver(it, results[i].Result, results[i].Err)
	}
	if len(again) > 0 {
		p.mu.Lock()
		p.st.retries += uint64(len(again))
		p.mu.Unlock()
	}
	return again, ws
}

// executeBatch sends calls to w as one request, or one by one when w
// cannot take batches (a worker added after the call chose to batch).
func executeBatch(ctx context.Context, w worker.Worker, tool string, calls []*worker.Call) ([]worker.BatchResult, error) {
	if bw, ok := w.(worker.BatchExecutor); ok {
		res, err := bw.ExecuteBatch(ctx, tool, calls)
		if err == nil && len(res) != len(calls) {
			err = fmt.Errorf("snakepit: worker %s answered %d calls of %q with %d results; it breaks the worker.BatchExecutor contract", w.ID(), len(calls), tool, len(res))
		}
		return res, err
	}
	out := make([]worker.BatchResult, len(calls))
	for i, c := range calls {
		res, err := w.Execute(ctx, c)
		if err != nil && i == 0 {
			return nil, err // the whole request's failure: the retry rules apply
		}
		out[i] = worker.BatchResult{Result: res, Err: err}
	}
	return out, nil
}

// closeBatches sends every open batch now, from Stop: their calls then
// fail with ErrPoolStopping at once instead of after their max_wait.
func (p *Pool) closeBatches() {
	p.bt.mu.Lock()
	bs := make([]*batcher, 0, len(p.bt.byTool))
	for _, b := range p.bt.byTool {
		bs = append(bs, b)
	}
	p.bt.mu.Unlock()
	for _, b := range bs {
		b.mu.Lock()
		if len(b.open) == 0 {
			b.mu.Unlock()
			continue
		}
		items := b.closeLocked()
		b.mu.Unlock()
		go p.runBatch(b, items)
	}
}

// noteBatch counts a batch sent in the size histogram.
func (p *Pool) noteBatch(n int) {
	i := 0
	for i < len(batchBounds) && n > batchBounds[i] {
		i++
	}
	p.mu.Lock()
	p.bt.sizes[i]++
	p.bt.count++
	p.bt.calls += uint64(n)
	p.mu.Unlock()
}

func (p *Pool) batchStatsLocked() BatchStats {
	s := BatchStats{Count: p.bt.count, Calls: p.bt.calls, Buckets: make([]BatchBucket, len(batchBounds))}
	var cum uint64
	for i, b := range batchBounds {
		cum += p.bt.sizes[i]
		s.Buckets[i] = BatchBucket{UpperBound: b, Count: cum}
	}
	return s
}
