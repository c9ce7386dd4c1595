package pool

import (
	"context"
	"errors"
	"iter"
	"time"

	"github.com/snakepit-go/snakepit/internal/jsonvalid"
	"github.com/snakepit-go/snakepit/worker"
)

// validate rejects what can never succeed, before any queue or worker.
func validate(ctx context.Context, call *worker.Call, opts CallOptions) error {
	switch {
	case call == nil:
		return &InvalidCallError{Reason: "call is nil"}
	case call.Tool == "":
		return &InvalidCallError{Reason: "tool name is empty"}
	case opts.QueueTimeout < 0:
		return &InvalidCallError{Tool: call.Tool, Reason: "negative QueueTimeout (use 0 for the pool default)"}
	case opts.Affinity > AffinityStrictFailFast:
		return &InvalidCallError{Tool: call.Tool, Reason: "unknown affinity mode " + opts.Affinity.String() + "; use AffinityHint, AffinityStrictQueue or AffinityStrictFailFast"}
	}
	if err := ctx.Err(); err != nil {
		return &InvalidCallError{Tool: call.Tool, Reason: "context already done before the call: " + err.Error(), Err: err}
	}
	if len(call.Args) > 0 && !opts.ArgsChecked {
		i := 0
		for i < len(call.Args) && isSpace(call.Args[i]) {
			i++
		}
		if i == len(call.Args) || call.Args[i] != '{' || !jsonvalid.Valid(call.Args) {
			return &InvalidCallError{Tool: call.Tool, Reason: "Args must be a JSON object (encode them with worker.EncodeArgs)", Err: worker.ErrInvalidArgs}
		}
	}
	return nil
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

// retryable: the worker vanished before running the call (always safe), or
// died under an idempotent one.
func (p *Pool) retryable(ctx context.Context, err error, opts CallOptions, attempt int) bool {
	if err == nil || attempt >= p.opts.RetryAttempts || ctx.Err() != nil {
		return false
	}
	if errors.Is(err, worker.ErrWorkerUnavailable) {
		return true
	}
	return opts.Idempotent && errors.Is(err, worker.ErrWorkerCrashed)
}

// backoff sleeps before retry number attempt+1, doubling each time.
func (p *Pool) backoff(ctx context.Context, attempt int) error {
	d := p.opts.RetryBackoff << min(attempt, maxRetryBackoffScaling)
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// rejectInvalid counts a call refused before it was counted as a request.
func (p *Pool) rejectInvalid(err error) error {
	p.Refused(OutcomeOf(err))
	return err
}

// Refused counts a call that ended with outcome o before it reached the
// pool: the root package refuses some calls itself (arguments that do not
// encode, bad call options, an App not started or failed to start), and
// every call made must count once in Stats.
func (p *Pool) Refused(o Outcome) {
	p.mu.Lock()
	if _, ok := p.st.outcomes[o]; !ok {
		o = OutcomeOther // keep the set, and the metric's labels, fixed
	}
	p.st.requests++
	p.st.outcomes[o]++
	p.mu.Unlock()
}

// recordAbandoned records a call that ends between attempts (its backoff
// was cut short by its context), and returns err.
func (p *Pool) recordAbandoned(err error) error {
	p.mu.Lock()
	p.st.record(err)
	p.mu.Unlock()
	return err
}

// watch starts following the caller's context for the hung-worker watchdog.
// A context that can never end needs no watching: only Stop can cancel the
// call then, and Stop arms the watchdog itself.
func (r *callRec) watch(ctx context.Context) {
	if ctx.Done() != nil {
		r.stopWatch = context.AfterFunc(ctx, r.armFn)
	}
}

// Execute runs one unary call on a worker; see the package documentation
// for queueing, affinity, deadlines, retries and the errors returned.
func (p *Pool) Execute(ctx context.Context, call *worker.Call, opts CallOptions) (*worker.Result, error) {
	if err := validate(ctx, call, opts); err != nil {
		return nil, p.rejectInvalid(err)
	}
	for counted := false; ; counted = true {
		actx, aopts, done, err := p.admit(ctx, call.Tool, opts, counted)
		if err != nil {
			return nil, err
		}
		if done == nil {
			res, err := p.execute(actx, call, aopts, true, !counted)
			if err == errReadmit {
				continue // its tool's limits became known meanwhile
			}
			return res, err
		}
		defer done() // reached once: the loop ends here
		if lim := p.limitFor(call.Tool); lim.batchMax > 1 && call.SessionID == "" {
			return p.executeBatched(actx, call, aopts, lim, !counted)
		}
		return p.execute(actx, call, aopts, false, !counted)
	}
}

// execute is Execute once the call has passed its tool's limits (ungated:
// none were known). first: the call is not yet counted in the stats.
func (p *Pool) execute(ctx context.Context, call *worker.Call, opts CallOptions, ungated, first bool) (*worker.Result, error) {
	start := p.now()
	var avoid *workerState
	for attempt := 0; ; attempt++ {
		r := p.begin(ctx, call.Tool, ungated)
		if attempt == 0 {
			r.sr.at = start // no second clock read when the slot is free
		}
		queued := p.queueStart(opts)
		ws, err := p.acquire(ctx, call, opts, r, avoid, first && attempt == 0)
		if err != nil {
			return nil, err
		}
		p.attempted(opts, ws, attempt, queued)
		r.watch(ctx)
		res, werr := ws.w.Execute(r.ctx, call)
		retry, err := p.finish(r, werr, p.retryable(ctx, werr, opts, attempt), start)
		if !retry {
			if err != nil {
				return nil, err
			}
			return res, nil
		}
		if berr := p.backoff(ctx, attempt); berr != nil {
			return nil, p.recordAbandoned(toolTimeoutErr(ctx, call.Tool, werr))
		}
		avoid = ws
	}
}

// queueStart is when an attempt starts waiting for a worker, read only
// when someone asks (Observer): a clock read per call is not free.
func (p *Pool) queueStart(opts CallOptions) time.Time {
	if opts.Observer == nil {
		return time.Time{}
	}
	return p.now()
}

// attempted reports an attempt that got its worker to opts.Observer.
func (p *Pool) attempted(opts CallOptions, ws *workerState, attempt int, queued time.Time) {
	if opts.Observer != nil {
		opts.Observer.Attempt(Attempt{Worker: ws.id, Number: attempt, QueueWait: p.now().Sub(queued)})
	}
}

var errConsumerStopped = errors.New("snakepit: stream consumer stopped reading")

// ExecuteStream runs one streaming call. Chunks arrive in order, one at a
// time: the worker is held until the loop body has taken each one. The slot
// is held until the stream ends. Breaking out of the loop, or ctx ending,
// cancels the stream on the worker. A failure is yielded last as
// (worker.Chunk{}, err). An idempotent call is retried after a crash only if
// no chunk had been delivered.
func (p *Pool) ExecuteStream(ctx context.Context, call *worker.Call, opts CallOptions) iter.Seq2[worker.Chunk, error] {
	return func(yield func(worker.Chunk, error) bool) {
		if err := validate(ctx, call, opts); err != nil {
			yield(worker.Chunk{}, p.rejectInvalid(err))
			return
		}
		for counted := false; ; counted = true {
			actx, aopts, done, err := p.admit(ctx, call.Tool, opts, counted)
			if err != nil {
				yield(worker.Chunk{}, err)
				return
			}
			if done == nil {
				if p.stream(actx, call, aopts, true, !counted, yield) {
					continue // its tool's limits became known meanwhile
				}
				return
			}
			defer done() // reached once: the loop ends here
			p.stream(actx, call, aopts, false, !counted, yield)
			return
		}
	}
}

// stream is ExecuteStream once the call has passed its tool's limits
// (ungated and first as for execute). It reports readmit when the call
// must go back through admit: nothing was yielded then.
func (p *Pool) stream(ctx context.Context, call *worker.Call, opts CallOptions, ungated, first bool, yield func(worker.Chunk, error) bool) (readmit bool) {
	start := p.now()
	var avoid *workerState
	for attempt := 0; ; attempt++ {
		r := p.begin(ctx, call.Tool, ungated)
		if attempt == 0 {
			r.sr.at = start // no second clock read when the slot is free
		}
		queued := p.queueStart(opts)
		ws, err := p.acquire(ctx, call, opts, r, avoid, first && attempt == 0)
		if err == errReadmit {
			return true
		}
		if err != nil {
			yield(worker.Chunk{}, err)
			return false
		}
		p.attempted(opts, ws, attempt, queued)
		retry, stopped, err, werr := p.streamAttempt(ctx, r, ws, call, opts, attempt, start, yield)
		if stopped {
			return false
		}
		if !retry {
			if err != nil {
				yield(worker.Chunk{}, err)
			}
			return false
		}
		if berr := p.backoff(ctx, attempt); berr != nil {
			yield(worker.Chunk{}, p.recordAbandoned(toolTimeoutErr(ctx, call.Tool, werr)))
			return false
		}
		avoid = ws
	}
}

// streamAttempt runs one attempt. The slot is released by a deferred call
// so that a panic in the consumer's loop body cannot leak it.
func (p *Pool) streamAttempt(ctx context.Context, r *callRec, ws *workerState, call *worker.Call, opts CallOptions, attempt int, start time.Time,
	yield func(worker.Chunk, error) bool) (retry, stopped bool, err, werr error) {
	finished := false
	defer func() {
		if !finished { // panicking out of the consumer
			p.finish(r, errConsumerStopped, false, start)
		}
	}()
	r.delivered, r.stopped = false, false
	r.watch(ctx)
	// The flags live in the (pooled) record and the callback captures only
	// the record and the consumer: one allocation per attempt instead of
	// three. A worker calls yield only before ExecuteStream returns (the
	// worker.Worker contract), so the record is still this attempt's.
	werr = ws.w.ExecuteStream(r.ctx, call, func(c worker.Chunk) error {
		r.delivered = true
		// inYield tells the hung-worker watchdog that the worker is waiting
		// on the consumer (see callRec): two atomic stores per chunk, which
		// no cheaper scheme can replace (docs/BENCHMARKS.md, Pool dispatch).
		r.inYield.Store(true)
		more := yield(c, nil)
		if r.watched.Load() {
			r.yieldEnd.Store(time.Now().UnixNano())
		}
		r.inYield.Store(false)
		if !more {
			r.stopped = true
			return errConsumerStopped
		}
		return nil
	})
	stopped = r.stopped
	if stopped {
		// The consumer ended the stream on purpose: that is a success.
		werr = nil
	}
	retry = !r.delivered && p.retryable(ctx, werr, opts, attempt)
	finished = true
	retry, err = p.finish(r, werr, retry, start)
	return retry, stopped, err, werr
}
