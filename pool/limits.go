package pool

import (
	"context"
	"fmt"
	"time"

	"github.com/snakepit-go/snakepit/worker"
)

// Per-tool limits. A tool may declare (worker.ToolSpec) how many of its
// calls may run at once across the whole pool, and a default deadline.
// Both are enforced here, before a call looks for a worker slot, so they
// hold whatever the number of workers or processes. The limits a worker
// reports when it becomes ready replace the previous ones for its tools:
// after a rolling reload the new code's declarations apply.

// toolLimit is what one tool declared; the zero value is no limit.
type toolLimit struct {
	max     int           // calls at once across the pool; 0: unlimited
	timeout time.Duration // deadline of a call whose context has none
	// A batch tool's (batch.go): calls per request, and how long the
	// first call of a batch waits for more. batchMax 0: not a batch tool.
	batchMax  int
	batchWait time.Duration
}

// toolGate counts one limited tool's calls in flight and queues the rest in
// arrival order. Guarded by Pool.gateMu.
type toolGate struct {
	running int
	waiters []*gateWaiter
}

type gateWaiter struct {
	ch      chan struct{} // buffered: the granter never blocks
	granted bool
	err     error // set instead of granted when the pool stops
}

// limitFor is the fast path of every call: one atomic load and, only when
// some tool declared limits, one map lookup.
func (p *Pool) limitFor(tool string) toolLimit {
	m := p.limits.Load()
	if m == nil {
		return toolLimit{}
	}
	return (*m)[tool]
}

// noteLimitsLocked records the limits of tools a worker reported; the map
// is copied only when something changed (workers of one adapter report the
// same limits, so that is at most once per reload).
func (p *Pool) noteLimitsLocked(tools []worker.ToolSpec) {
	var cur map[string]toolLimit
	if m := p.limits.Load(); m != nil {
		cur = *m
	}
	var next map[string]toolLimit
	for _, t := range tools {
		l := toolLimit{max: max(t.MaxConcurrency, 0), timeout: max(t.Timeout, 0),
			batchMax: max(t.BatchMaxSize, 0), batchWait: max(t.BatchMaxWait, 0)}
		if cur[t.Name] == l {
			continue
		}
		if next == nil {
			next = make(map[string]toolLimit, len(cur)+1)
			for k, v := range cur {
				next[k] = v
			}
		}
		if l == (toolLimit{}) {
			delete(next, t.Name)
		} else {
			next[t.Name] = l
		}
	}
	if next == nil {
		return
	}
	p.limits.Store(&next)
	// A raised or lifted limit frees queued calls at once.
	p.gateMu.Lock()
	for name, g := range p.gates {
		p.grantGateLocked(g, next[name].max)
	}
	p.gateMu.Unlock()
}

// withToolTimeout gives ctx the tool's declared deadline when the caller
// set none. The returned cancel is never nil.
func withToolTimeout(ctx context.Context, lim toolLimit) (context.Context, context.CancelFunc) {
	if lim.timeout <= 0 {
		return ctx, func() {}
	}
	if _, ok := ctx.Deadline(); ok {
		return ctx, func() {}
	}
	return context.WithTimeoutCause(ctx, lim.timeout, &ToolTimeoutError{Timeout: lim.timeout})
}

// toolTimeoutErr names the declared timeout when it, not the caller, ended
// the call; other errors pass unchanged.
func toolTimeoutErr(ctx context.Context, tool string, err error) error {
	if err == nil || ctx.Err() == nil {
		return err
	}
	if te, ok := context.Cause(ctx).(*ToolTimeoutError); ok {
		return &ToolTimeoutError{Tool: tool, Timeout: te.Timeout, Err: err}
	}
	return err
}

// enterTool waits, like a call waits for a worker, until the tool has a free
// concurrency slot; the waiters of all tools together are bounded by
// MaxQueue (ErrPoolSaturated). On success the caller must call leaveTool
// exactly once; waited is how much of the queue timeout the wait used.
func (p *Pool) enterTool(ctx context.Context, tool string, limit int, timeout time.Duration) (waited time.Duration, err error) {
	p.gateMu.Lock()
	if p.gatesClosed {
		p.gateMu.Unlock()
		return 0, ErrPoolStopping
	}
	g := p.gates[tool]
	if g == nil {
		g = &toolGate{}
		p.gates[tool] = g
	}
	if g.running < limit && len(g.waiters) == 0 {
		g.running++
		p.gateMu.Unlock()
		return 0, nil
	}
	if p.gateWaiters >= p.opts.MaxQueue {
		p.gateMu.Unlock()
		return 0, fmt.Errorf("%w (%d calls already wait for the max_concurrency of their tools; tool %q)", ErrPoolSaturated, p.opts.MaxQueue, tool)
	}
	w := &gateWaiter{ch: make(chan struct{}, 1)}
	g.waiters = append(g.waiters, w)
	p.gateWaiters++
	p.gateMu.Unlock()

	began := time.Now()
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-w.ch:
	case <-ctx.Done():
	case <-t.C:
	}

	waited = time.Since(began)
	p.gateMu.Lock()
	defer p.gateMu.Unlock()
	switch {
	case w.granted && ctx.Err() == nil:
		return waited, nil
	case w.granted: // granted and cancelled at once: pass the slot on
		g.running--
		p.grantGateLocked(g, p.limitFor(tool).max)
		return waited, ctx.Err()
	case w.err != nil:
		return waited, w.err
	}
	for i, x := range g.waiters {
		if x == w {
			g.waiters = append(g.waiters[:i], g.waiters[i+1:]...)
			p.gateWaiters--
			break
		}
	}
	if err := ctx.Err(); err != nil {
		return waited, err
	}
	return waited, fmt.Errorf("%w (tool %q waited %s for one of the %d slots its max_concurrency allows)", ErrQueueTimeout, tool, timeout, limit)
}

// leaveTool gives back the slot enterTool took.
func (p *Pool) leaveTool(tool string) {
	p.gateMu.Lock()
	if g := p.gates[tool]; g != nil {
		g.running--
		p.grantGateLocked(g, p.limitFor(tool).max)
	}
	p.gateMu.Unlock()
}

// grantGateLocked hands free slots to the oldest waiters; limit 0 (the
// tool no longer declares one) admits them all.
func (p *Pool) grantGateLocked(g *toolGate, limit int) {
	for len(g.waiters) > 0 && (limit <= 0 || g.running < limit) {
		w := g.waiters[0]
		g.waiters[0] = nil
		g.waiters = g.waiters[1:]
		p.gateWaiters--
		g.running++
		w.granted = true
		w.ch <- struct{}{}
	}
}

// closeGates fails every call waiting on a tool limit; from Stop.
func (p *Pool) closeGates(err error) {
	p.gateMu.Lock()
	defer p.gateMu.Unlock()
	p.gatesClosed = true
	for _, g := range p.gates {
		for _, w := range g.waiters {
			w.err = err
			w.ch <- struct{}{}
		}
		g.waiters = nil
	}
	p.gateWaiters = 0
}

// gateWaiting counts calls waiting on a tool limit, for Stats.
func (p *Pool) gateWaiting() int {
	p.gateMu.Lock()
	defer p.gateMu.Unlock()
	return p.gateWaiters
}

// admit applies a tool's declared limits to a call: its default deadline,
// then its concurrency slot. The queue timeout covers both waits, for the
// tool's slot and then for a worker's: the returned options carry what is
// left of it. done must be called when the call ends; err is the (already
// recorded) reason the call did not get in. counted: the call is already
// in the stats' requests (it comes back because its tool's limits became
// known after it was first admitted).
//
// A nil done means the tool had no known limits. That includes a call made
// before any worker reported its tools: the dispatcher checks again when it
// would hand the call a slot, and sends it back here if limits are known by
// then (see limitsLearnedLocked).
func (p *Pool) admit(ctx context.Context, tool string, opts CallOptions, counted bool) (context.Context, CallOptions, func(), error) {
	lim := p.limitFor(tool)
	if lim == (toolLimit{}) {
		return ctx, opts, nil, nil
	}
	ctx, cancel := withToolTimeout(ctx, lim)
	if lim.max > 0 {
		timeout := opts.QueueTimeout
		if timeout == 0 {
			timeout = p.opts.QueueTimeout
		}
		waited, err := p.enterTool(ctx, tool, lim.max, timeout)
		if err != nil {
			err = toolTimeoutErr(ctx, tool, err)
			cancel()
			if counted {
				return nil, opts, nil, p.recordAbandoned(err)
			}
			return nil, opts, nil, p.rejectInvalid(err)
		}
		if waited > 0 {
			opts.QueueTimeout = max(timeout-waited, time.Millisecond)
		}
		return ctx, opts, func() { p.leaveTool(tool); cancel() }, nil
	}
	return ctx, opts, cancel, nil
}
