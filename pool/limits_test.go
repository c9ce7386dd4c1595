package pool_test

import (
	"context"
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/snakepit-go/snakepit/pool"
	"github.com/snakepit-go/snakepit/worker"
	"github.com/snakepit-go/snakepit/worker/fake"
)

// limitedTool is a gated tool declaring MaxConcurrency; it counts how many
// of its calls ran at once, over every worker.
func limitedTool(g *gate, limit int, running, most *atomic.Int32) fake.Option {
	return fake.WithToolSpec(worker.ToolSpec{Name: "limited", MaxConcurrency: limit}, func(ctx context.Context, c *worker.Call) (*worker.Result, error) {
		n := running.Add(1)
		defer running.Add(-1)
		for {
			m := most.Load()
			if n <= m || most.CompareAndSwap(m, n) {
				break
			}
		}
		g.entered <- c.RequestID
		select {
		case <-g.release:
			return &worker.Result{JSON: json.RawMessage(`"ok"`)}, nil
		case <-ctx.Done():
			return nil, context.Cause(ctx)
		}
	})
}

func TestToolMaxConcurrencyHoldsAcrossThePool(t *testing.T) {
	h := newHarness(t, pool.Options{})
	g := newGate()
	var running, most atomic.Int32
	for i := range 3 { // 6 slots in all, the tool allows 2
		h.add("w"+strconv.Itoa(i), 2, limitedTool(g, 2, &running, &most), fake.WithTool("free", fake.Echo))
	}
	h.ready(3)

	var outs []<-chan outcome
	for i := range 8 {
		outs = append(outs, h.goExecute(context.Background(), &worker.Call{Tool: "limited", RequestID: strconv.Itoa(i)}, pool.CallOptions{}))
	}
	g.waitEntered(t)
	g.waitEntered(t)
	h.waitStats("6 calls waiting on the tool's limit", func(s pool.Stats) bool { return s.LimitQueued == 6 && s.InFlight == 2 })
	if n := len(g.entered); n != 0 {
		t.Fatalf("%d more calls entered the tool; max_concurrency 2 allows none", n)
	}
	// The limit is the tool's, not the pool's: other tools still run.
	if _, err := h.p.Execute(context.Background(), call("free", `{"x":1}`), pool.CallOptions{}); err != nil {
		t.Fatalf("an unlimited tool must run while a limited one queues: %v", err)
	}
	for range 8 {
		g.release <- struct{}{}
	}
	for _, ch := range outs {
		if o := recv(t, ch); o.err != nil {
			t.Fatal(o.err)
		}
	}
	if m := most.Load(); m != 2 {
		t.Fatalf("at most %d calls of the tool ran at once; want exactly 2", m)
	}
	s := h.waitStats("all done", func(s pool.Stats) bool { return s.InFlight == 0 && s.LimitQueued == 0 })
	if s.Outcomes[pool.OutcomeSuccess] != 9 {
		t.Fatalf("succeeded %d, want 9", s.Outcomes[pool.OutcomeSuccess])
	}
}

func TestToolLimitWaitEndsWithTheQueueTimeout(t *testing.T) {
	h := newHarness(t, pool.Options{})
	g := newGate()
	var running, most atomic.Int32
	h.add("w1", 4, limitedTool(g, 1, &running, &most))
	h.ready(1)
	first := h.goExecute(context.Background(), &worker.Call{Tool: "limited", RequestID: "a"}, pool.CallOptions{})
	g.waitEntered(t)

	_, err := h.p.Execute(context.Background(), &worker.Call{Tool: "limited"}, pool.CallOptions{QueueTimeout: 20 * time.Millisecond})
	if !errors.Is(err, pool.ErrQueueTimeout) || !strings.Contains(err.Error(), "max_concurrency") {
		t.Fatalf("err = %v; want ErrQueueTimeout naming max_concurrency", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancelled := h.goExecute(ctx, &worker.Call{Tool: "limited"}, pool.CallOptions{})
	h.waitStats("a call waiting on the limit", func(s pool.Stats) bool { return s.LimitQueued == 1 })
	cancel()
	if o := recv(t, cancelled); !errors.Is(o.err, context.Canceled) {
		t.Fatalf("cancelled waiter: %v", o.err)
	}
	g.release <- struct{}{}
	if o := recv(t, first); o.err != nil {
		t.Fatal(o.err)
	}
	s := h.waitStats("idle", func(s pool.Stats) bool { return s.InFlight == 0 && s.LimitQueued == 0 })
	if s.Outcomes[pool.OutcomeQueueTimeout] != 1 || s.Outcomes[pool.OutcomeCancelled] != 1 || s.Requests != 3 {
		t.Fatalf("stats %+v; want 3 requests, 1 queue timeout and 1 cancelled", s)
	}
	// The slot given back is usable again.
	g.release <- struct{}{}
	if _, err := h.p.Execute(context.Background(), &worker.Call{Tool: "limited"}, pool.CallOptions{}); err != nil {
		t.Fatal(err)
	}
}

func TestToolTimeoutIsTheDefaultDeadline(t *testing.T) {
	h := newHarness(t, pool.Options{})
	left := func(ctx context.Context, _ *worker.Call) (*worker.Result, error) {
		d, ok := ctx.Deadline()
		if !ok {
			return &worker.Result{JSON: json.RawMessage(`-1`)}, nil
		}
		return &worker.Result{JSON: json.RawMessage(strconv.FormatInt(int64(time.Until(d)), 10))}, nil
	}
	block := func(ctx context.Context, _ *worker.Call) (*worker.Result, error) {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	h.add("w1", 2,
		fake.WithToolSpec(worker.ToolSpec{Name: "left", Timeout: 50 * time.Millisecond}, left),
		fake.WithToolSpec(worker.ToolSpec{Name: "block", Timeout: 20 * time.Millisecond}, block),
		fake.WithTool("plain", left))
	h.ready(1)

	remaining := func(ctx context.Context, tool string) time.Duration {
		t.Helper()
		r, err := h.p.Execute(ctx, &worker.Call{Tool: tool}, pool.CallOptions{})
		if err != nil {
			t.Fatal(err)
		}
		var ns int64
		if err := r.Decode(&ns); err != nil {
			t.Fatal(err)
		}
		return time.Duration(ns)
	}
	if d := remaining(context.Background(), "left"); d <= 0 || d > 50*time.Millisecond {
		t.Fatalf("without a caller deadline the tool saw %s left; want its declared 50ms", d)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Hour)
	defer cancel()
	if d := remaining(ctx, "left"); d < 30*time.Minute {
		t.Fatalf("with a caller deadline of 1h the tool saw %s left; the caller's deadline must win", d)
	}
	if d := remaining(context.Background(), "plain"); d != -1 {
		t.Fatalf("a tool without a declared timeout got a deadline (%s left)", d)
	}

	_, err := h.p.Execute(context.Background(), &worker.Call{Tool: "block"}, pool.CallOptions{})
	var te *pool.ToolTimeoutError
	if !errors.As(err, &te) || te.Tool != "block" || te.Timeout != 20*time.Millisecond || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v; want a *ToolTimeoutError for block (20ms) matching context.DeadlineExceeded", err)
	}
	if !strings.Contains(err.Error(), "@tool(timeout=") {
		t.Fatalf("the message should say where the timeout comes from: %v", err)
	}
}

func TestLimitsFollowTheWorkersLatestDeclaration(t *testing.T) {
	h := newHarness(t, pool.Options{})
	g := newGate()
	var running, most atomic.Int32
	h.add("w1", 4, limitedTool(g, 1, &running, &most))
	h.ready(1)
	a := h.goExecute(context.Background(), &worker.Call{Tool: "limited", RequestID: "a"}, pool.CallOptions{})
	g.waitEntered(t)
	b := h.goExecute(context.Background(), &worker.Call{Tool: "limited", RequestID: "b"}, pool.CallOptions{})
	h.waitStats("b waits on the limit", func(s pool.Stats) bool { return s.LimitQueued == 1 })

	// New code (a reload) declares a higher limit: the waiter gets in at once.
	h.p.Recycled("w1", worker.Info{Tools: []worker.ToolSpec{{Name: "limited", MaxConcurrency: 3}}}, "reload")
	g.waitEntered(t)
	g.release <- struct{}{}
	g.release <- struct{}{}
	for _, ch := range []<-chan outcome{a, b} {
		if o := recv(t, ch); o.err != nil {
			t.Fatal(o.err)
		}
	}
}

func TestStopFailsCallsWaitingOnAToolLimit(t *testing.T) {
	h := newHarness(t, pool.Options{})
	g := newGate()
	var running, most atomic.Int32
	h.add("w1", 2, limitedTool(g, 1, &running, &most))
	h.ready(1)
	a := h.goExecute(context.Background(), &worker.Call{Tool: "limited", RequestID: "a"}, pool.CallOptions{})
	g.waitEntered(t)
	b := h.goExecute(context.Background(), &worker.Call{Tool: "limited", RequestID: "b"}, pool.CallOptions{})
	h.waitStats("b waits on the limit", func(s pool.Stats) bool { return s.LimitQueued == 1 })

	stopped := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		stopped <- h.p.Stop(ctx)
	}()
	if o := recv(t, b); !errors.Is(o.err, pool.ErrPoolStopping) {
		t.Fatalf("waiter: %v; want ErrPoolStopping", o.err)
	}
	g.release <- struct{}{}
	if o := recv(t, a); o.err != nil {
		t.Fatalf("the call in flight should finish within the grace: %v", o.err)
	}
	if err := <-stopped; err != nil {
		t.Fatal(err)
	}
	if _, err := h.p.Execute(context.Background(), &worker.Call{Tool: "limited"}, pool.CallOptions{}); !errors.Is(err, pool.ErrPoolStopping) {
		t.Fatalf("after Stop: %v", err)
	}
}

func TestLatencyHistogramCountsEveryCallOnce(t *testing.T) {
	h := newHarness(t, pool.Options{})
	h.add("w1", 1, fake.WithTool("echo", fake.Echo))
	h.ready(1)
	for range 5 {
		if _, err := h.p.Execute(context.Background(), call("echo", ""), pool.CallOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	l := h.p.Stats().Latency
	if l.Count != 5 || l.Sum <= 0 || len(l.Buckets) != 16 {
		t.Fatalf("latency %+v; want 5 calls in 16 buckets", l)
	}
	for i := 1; i < len(l.Buckets); i++ {
		if l.Buckets[i].Count < l.Buckets[i-1].Count || l.Buckets[i].UpperBound <= l.Buckets[i-1].UpperBound {
			t.Fatalf("buckets not cumulative and ascending: %+v", l.Buckets)
		}
	}
	if last := l.Buckets[len(l.Buckets)-1]; last.Count != 5 || last.UpperBound != time.Minute {
		t.Fatalf("last bucket %+v; want all 5 calls under 60s", last)
	}
}

func TestCallsWaitingOnToolLimitsAreBoundedByMaxQueue(t *testing.T) {
	h := newHarness(t, pool.Options{MaxQueue: 2})
	g := newGate()
	var running, most atomic.Int32
	h.add("w1", 4, limitedTool(g, 1, &running, &most))
	h.ready(1)
	held := h.goExecute(context.Background(), &worker.Call{Tool: "limited", RequestID: "held"}, pool.CallOptions{})
	g.waitEntered(t)
	var waiting []<-chan outcome
	for i := range 2 {
		waiting = append(waiting, h.goExecute(context.Background(), &worker.Call{Tool: "limited", RequestID: strconv.Itoa(i)}, pool.CallOptions{}))
	}
	h.waitStats("2 calls waiting on the limit", func(s pool.Stats) bool { return s.LimitQueued == 2 })
	if _, err := h.p.Execute(context.Background(), &worker.Call{Tool: "limited"}, pool.CallOptions{}); !errors.Is(err, pool.ErrPoolSaturated) {
		t.Fatalf("a third waiter with MaxQueue 2: %v; want ErrPoolSaturated", err)
	}
	for range 3 {
		g.release <- struct{}{}
	}
	for _, ch := range append(waiting, held) {
		if o := recv(t, ch); o.err != nil {
			t.Fatal(o.err)
		}
	}
	if s := h.waitStats("idle", func(s pool.Stats) bool { return s.LimitQueued == 0 && s.InFlight == 0 }); s.Outcomes[pool.OutcomeSaturated] != 1 {
		t.Fatalf("outcomes %v; want 1 saturated", s.Outcomes)
	}
}

// Calls queued before any worker is ready could not know the tool's limit:
// it arrives with the first worker's tools. They must still respect it.
func TestToolLimitHoldsForCallsQueuedBeforeAnyWorkerIsReady(t *testing.T) {
	h := newHarness(t, pool.Options{})
	g := newGate()
	var running, most atomic.Int32
	var outs []<-chan outcome
	for i := range 5 {
		outs = append(outs, h.goExecute(context.Background(), &worker.Call{Tool: "limited", RequestID: strconv.Itoa(i)}, pool.CallOptions{}))
	}
	h.waitStats("5 calls queued for a worker to become ready", func(s pool.Stats) bool { return s.Queued == 5 })
	h.add("w1", 5, limitedTool(g, 1, &running, &most))
	g.waitEntered(t)
	h.waitStats("the other 4 calls waiting on the tool's limit", func(s pool.Stats) bool {
		return s.Queued == 0 && s.LimitQueued == 4 && s.InFlight == 1
	})
	for i := range 5 {
		if i > 0 {
			g.waitEntered(t)
		}
		g.release <- struct{}{}
	}
	for _, ch := range outs {
		if o := recv(t, ch); o.err != nil {
			t.Fatal(o.err)
		}
	}
	if m := most.Load(); m != 1 {
		t.Fatalf("%d calls of a max_concurrency=1 tool ran at once", m)
	}
	checkBalanced(t, h.waitStats("idle", func(s pool.Stats) bool { return s.InFlight == 0 && s.LimitQueued == 0 }))
	if s := h.p.Stats(); s.Requests != 5 || s.Outcomes[pool.OutcomeSuccess] != 5 {
		t.Fatalf("stats %+v; want 5 requests, 5 succeeded (a call re-admitted once counts once)", s)
	}
}

// The same for streams: the limit is the tool's, whichever way it is called.
func TestToolLimitHoldsForStreamsQueuedBeforeAnyWorkerIsReady(t *testing.T) {
	h := newHarness(t, pool.Options{})
	g := newGate()
	var running, most atomic.Int32
	stream := fake.WithStreamTool("limited", func(ctx context.Context, c *worker.Call, yield func(worker.Chunk) error) error {
		n := running.Add(1)
		defer running.Add(-1)
		for {
			m := most.Load()
			if n <= m || most.CompareAndSwap(m, n) {
				break
			}
		}
		g.entered <- c.RequestID
		select {
		case <-g.release:
			return yield(worker.Chunk{JSON: json.RawMessage(`"ok"`)})
		case <-ctx.Done():
			return context.Cause(ctx)
		}
	})
	// The spec (max_concurrency=1) is reported for the name; the stream serves it.
	spec := fake.WithToolSpec(worker.ToolSpec{Name: "limited", MaxConcurrency: 1}, fake.Echo)
	outs := make([]chan error, 3)
	for i := range outs {
		outs[i] = make(chan error, 1)
		go func() {
			var last error
			for _, err := range h.p.ExecuteStream(context.Background(), &worker.Call{Tool: "limited", RequestID: strconv.Itoa(i)}, pool.CallOptions{}) {
				last = err
			}
			outs[i] <- last
		}()
	}
	h.waitStats("3 streams queued for a worker to become ready", func(s pool.Stats) bool { return s.Queued == 3 })
	h.add("w1", 3, spec, stream)
	g.waitEntered(t)
	h.waitStats("the other 2 streams waiting on the tool's limit", func(s pool.Stats) bool {
		return s.Queued == 0 && s.LimitQueued == 2 && s.InFlight == 1
	})
	for i := range 3 {
		if i > 0 {
			g.waitEntered(t)
		}
		g.release <- struct{}{}
	}
	for _, ch := range outs {
		select {
		case err := <-ch:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("a stream did not end")
		}
	}
	if m := most.Load(); m != 1 {
		t.Fatalf("%d streams of a max_concurrency=1 tool ran at once", m)
	}
	checkBalanced(t, h.waitStats("idle", func(s pool.Stats) bool { return s.InFlight == 0 && s.LimitQueued == 0 }))
}
