package pool_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/snakepit-go/snakepit/pool"
	"github.com/snakepit-go/snakepit/worker"
	"github.com/snakepit-go/snakepit/worker/fake"
)

// batchTool is a batch tool for the fake worker: it echoes each call's
// request id (or fails the calls whose id starts with "bad"), records the
// batches it got, and holds each batch until released when gated.
type batchTool struct {
	mu      sync.Mutex
	batches [][]string // request ids per batch, in order
	gated   bool
	entered chan []string
	release chan struct{}
	ctxs    []context.Context
}

func newBatchTool(gated bool) *batchTool {
	return &batchTool{gated: gated, entered: make(chan []string, 64), release: make(chan struct{}, 64)}
}

func (bt *batchTool) option(max int, wait time.Duration) fake.Option {
	spec := worker.ToolSpec{Name: "twice", BatchMaxSize: max, BatchMaxWait: wait}
	return fake.WithBatchTool(spec, func(ctx context.Context, calls []*worker.Call) ([]worker.BatchResult, error) {
		ids := make([]string, len(calls))
		for i, c := range calls {
			ids[i] = c.RequestID
		}
		bt.mu.Lock()
		bt.batches = append(bt.batches, ids)
		bt.ctxs = append(bt.ctxs, ctx)
		bt.mu.Unlock()
		if bt.gated {
			bt.entered <- ids
			select {
			case <-bt.release:
			case <-ctx.Done():
				return nil, context.Cause(ctx)
			}
		}
		out := make([]worker.BatchResult, len(calls))
		for i, c := range calls {
			if len(c.RequestID) >= 3 && c.RequestID[:3] == "bad" {
				out[i].Err = &worker.ToolError{Tool: "twice", Type: "ValueError", Message: "bad item " + c.RequestID}
				continue
			}
			out[i].Result = &worker.Result{JSON: json.RawMessage(`"` + c.RequestID + c.RequestID + `"`)}
		}
		return out, nil
	})
}

func (bt *batchTool) sent() [][]string {
	bt.mu.Lock()
	defer bt.mu.Unlock()
	return append([][]string(nil), bt.batches...)
}

func (bt *batchTool) waitEntered(t *testing.T) []string {
	t.Helper()
	select {
	case ids := <-bt.entered:
		return ids
	case <-time.After(10 * time.Second):
		t.Fatal("no batch reached the tool")
		return nil
	}
}

func batchCall(id string) *worker.Call { return &worker.Call{Tool: "twice", RequestID: id} }

const forever = time.Hour // a max_wait that never closes a batch within a test

// hold sends a call that the gated tool holds, alone (the tool is idle),
// so that the next calls wait in the open batch.
func (h *harness) hold(bt *batchTool, id string, o pool.CallOptions) <-chan outcome {
	h.t.Helper()
	ch := h.goExecute(context.Background(), batchCall(id), o)
	if got := bt.waitEntered(h.t); len(got) != 1 || got[0] != id {
		h.t.Fatalf("the first call went out as %v, want alone", got)
	}
	return ch
}

// TestBatchCoalescesAndSplits: while a batch is on the worker, calls wait
// in the open batch until it is full, go out as one request, and each
// caller gets its own result.
func TestBatchCoalescesAndSplits(t *testing.T) {
	h := newHarness(t, pool.Options{})
	bt := newBatchTool(true)
	h.add("w0", 2, bt.option(4, forever))
	h.ready(1)
	held := h.hold(bt, "h", pool.CallOptions{})
	var chs []<-chan outcome
	for i := range 3 {
		chs = append(chs, h.goExecute(context.Background(), batchCall(fmt.Sprint("c", i)), pool.CallOptions{}))
	}
	waitFor(t, "3 calls in the open batch", func() bool { return pool.OpenBatchLen(h.p, "twice") == 3 })
	if got := bt.sent(); len(got) != 1 {
		t.Fatalf("a batch was sent before it was full or its max_wait passed: %v", got)
	}
	chs = append(chs, h.goExecute(context.Background(), batchCall("c3"), pool.CallOptions{}))
	if got := bt.waitEntered(t); len(got) != 4 {
		t.Fatalf("batch %v, want the 4 calls", got)
	}
	bt.release <- struct{}{}
	bt.release <- struct{}{}
	for i, ch := range chs {
		o := recv(t, ch)
		if o.err != nil {
			t.Fatalf("call %d: %v", i, o.err)
		}
		id := fmt.Sprint("c", i)
		if got := resultString(t, o.res); got != id+id {
			t.Errorf("call %d got %q, want %q", i, got, id+id)
		}
	}
	if o := recv(t, held); o.err != nil {
		t.Fatal(o.err)
	}
	s := h.p.Stats()
	checkBalanced(t, s)
	if s.Outcomes[pool.OutcomeSuccess] != 5 || s.Batches.Count != 2 || s.Batches.Calls != 5 {
		t.Errorf("outcomes %v, batches %+v; want 5 successes in batches of 1 and 4", s.Outcomes, s.Batches)
	}
	for _, b := range s.Batches.Buckets {
		want := uint64(0)
		switch {
		case b.UpperBound >= 4:
			want = 2
		case b.UpperBound >= 1:
			want = 1
		}
		if b.Count != want {
			t.Errorf("bucket ≤%d = %d, want %d", b.UpperBound, b.Count, want)
		}
	}
}

// TestBatchIdleToolSendsAtOnce: a lone call does not wait for max_wait,
// and calls waiting in the open batch go out as soon as the batch ahead
// of them is answered.
func TestBatchIdleToolSendsAtOnce(t *testing.T) {
	h := newHarness(t, pool.Options{})
	bt := newBatchTool(true)
	h.add("w0", 2, bt.option(8, forever))
	h.ready(1)
	held := h.hold(bt, "h", pool.CallOptions{})
	a := h.goExecute(context.Background(), batchCall("a"), pool.CallOptions{})
	b := h.goExecute(context.Background(), batchCall("b"), pool.CallOptions{})
	waitFor(t, "2 calls in the open batch", func() bool { return pool.OpenBatchLen(h.p, "twice") == 2 })
	bt.release <- struct{}{}
	if o := recv(t, held); o.err != nil {
		t.Fatal(o.err)
	}
	if got := bt.waitEntered(t); len(got) != 2 {
		t.Fatalf("batch %v, want a and b", got)
	}
	bt.release <- struct{}{}
	for _, ch := range []<-chan outcome{a, b} {
		if o := recv(t, ch); o.err != nil {
			t.Fatal(o.err)
		}
	}
	checkBalanced(t, h.p.Stats())
}

// TestBatchMaxWaitClosesPartialBatch: a batch that does not fill goes out
// once its max_wait has passed, while the batch ahead is still running.
func TestBatchMaxWaitClosesPartialBatch(t *testing.T) {
	h := newHarness(t, pool.Options{})
	bt := newBatchTool(true)
	h.add("w0", 4, bt.option(64, 5*time.Millisecond))
	h.ready(1)
	held := h.hold(bt, "h", pool.CallOptions{})
	var chs []<-chan outcome
	for i := range 3 {
		chs = append(chs, h.goExecute(context.Background(), batchCall(fmt.Sprint("c", i)), pool.CallOptions{}))
	}
	for n := 0; n < 3; {
		n += len(bt.waitEntered(t)) // the first batch still holds its slot
	}
	for range 4 {
		bt.release <- struct{}{}
	}
	for i, ch := range append(chs, held) {
		if o := recv(t, ch); o.err != nil {
			t.Fatalf("call %d: %v", i, o.err)
		}
	}
	checkBalanced(t, h.p.Stats())
}

// TestBatchPerItemErrors: one bad item fails only its own call.
func TestBatchPerItemErrors(t *testing.T) {
	h := newHarness(t, pool.Options{})
	bt := newBatchTool(true)
	h.add("w0", 2, bt.option(3, forever))
	h.ready(1)
	held := h.hold(bt, "h", pool.CallOptions{})
	ids := []string{"ok1", "bad", "ok2"}
	var chs []<-chan outcome
	for _, id := range ids {
		chs = append(chs, h.goExecute(context.Background(), batchCall(id), pool.CallOptions{}))
	}
	if got := bt.waitEntered(t); len(got) != 3 {
		t.Fatalf("batch %v, want the 3 calls", got)
	}
	bt.release <- struct{}{}
	bt.release <- struct{}{}
	for i, ch := range chs {
		o := recv(t, ch)
		var te *worker.ToolError
		switch {
		case ids[i] == "bad" && !errors.As(o.err, &te):
			t.Errorf("bad item: err %v, want a *worker.ToolError", o.err)
		case ids[i] != "bad" && o.err != nil:
			t.Errorf("item %s failed with its neighbour: %v", ids[i], o.err)
		}
	}
	recv(t, held)
	s := h.p.Stats()
	checkBalanced(t, s)
	if s.Outcomes[pool.OutcomeSuccess] != 3 || s.Outcomes[pool.OutcomeToolError] != 1 {
		t.Errorf("outcomes %v, want 3 successes and 1 tool error", s.Outcomes)
	}
}

// TestBatchCancelBeforeSend: a caller that gives up while its call waits
// in the open batch leaves it; the batch goes out without it.
func TestBatchCancelBeforeSend(t *testing.T) {
	h := newHarness(t, pool.Options{})
	bt := newBatchTool(true)
	h.add("w0", 2, bt.option(3, forever))
	h.ready(1)
	held := h.hold(bt, "h", pool.CallOptions{})
	ctx, cancel := context.WithCancel(context.Background())
	gone := h.goExecute(ctx, batchCall("gone"), pool.CallOptions{})
	a := h.goExecute(context.Background(), batchCall("a"), pool.CallOptions{})
	waitFor(t, "2 calls in the open batch", func() bool { return pool.OpenBatchLen(h.p, "twice") == 2 })
	cancel()
	if o := recv(t, gone); !errors.Is(o.err, context.Canceled) {
		t.Fatalf("cancelled call: %v, want context.Canceled", o.err)
	}
	waitFor(t, "the call to leave", func() bool { return pool.OpenBatchLen(h.p, "twice") == 1 })
	b := h.goExecute(context.Background(), batchCall("b"), pool.CallOptions{})
	c := h.goExecute(context.Background(), batchCall("c"), pool.CallOptions{})
	if got := bt.waitEntered(t); len(got) != 3 || slicesContain(got, "gone") {
		t.Fatalf("batch %v, want a, b, c", got)
	}
	bt.release <- struct{}{}
	bt.release <- struct{}{}
	for _, ch := range []<-chan outcome{a, b, c, held} {
		if o := recv(t, ch); o.err != nil {
			t.Fatal(o.err)
		}
	}
	s := h.p.Stats()
	checkBalanced(t, s)
	if s.Outcomes[pool.OutcomeCancelled] != 1 || s.Outcomes[pool.OutcomeSuccess] != 4 {
		t.Errorf("outcomes %v", s.Outcomes)
	}
}

// TestBatchCancelAndDeadlineAfterSend: once sent, a caller that gives up
// (cancelled, or its own deadline passed) returns at once with its
// context's error; the others get their results; and the request's
// context ends when every caller has gone.
func TestBatchCancelAndDeadlineAfterSend(t *testing.T) {
	h := newHarness(t, pool.Options{})
	bt := newBatchTool(true)
	h.add("w0", 2, bt.option(3, forever))
	h.ready(1)
	held := h.hold(bt, "h", pool.CallOptions{})
	cctx, cancel := context.WithCancel(context.Background())
	cancelled := h.goExecute(cctx, batchCall("x"), pool.CallOptions{})
	kept := h.goExecute(context.Background(), batchCall("k"), pool.CallOptions{})
	waitFor(t, "2 calls in the open batch", func() bool { return pool.OpenBatchLen(h.p, "twice") == 2 })
	// The third call fills the batch, so its short deadline passes after
	// the batch was sent.
	dctx, dcancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer dcancel()
	late := h.goExecute(dctx, batchCall("d"), pool.CallOptions{})
	if got := bt.waitEntered(t); len(got) != 3 {
		t.Fatalf("batch %v, want x, k, d", got)
	}
	cancel()
	if o := recv(t, cancelled); !errors.Is(o.err, context.Canceled) {
		t.Fatalf("cancelled call: %v", o.err)
	}
	if o := recv(t, late); !errors.Is(o.err, context.DeadlineExceeded) {
		t.Fatalf("call past its deadline: %v", o.err)
	}
	select {
	case o := <-kept:
		t.Fatalf("the call that stayed returned with the others: %v %v", o.res, o.err)
	default:
	}
	bt.release <- struct{}{}
	bt.release <- struct{}{}
	o := recv(t, kept)
	if o.err != nil || resultString(t, o.res) != "kk" {
		t.Fatalf("the call that stayed: %v %v", o.res, o.err)
	}
	recv(t, held)
	s := h.p.Stats()
	checkBalanced(t, s)
	if s.Outcomes[pool.OutcomeCancelled] != 1 || s.Outcomes[pool.OutcomeDeadline] != 1 || s.Outcomes[pool.OutcomeSuccess] != 2 {
		t.Errorf("outcomes %v", s.Outcomes)
	}

	// Every caller gone: the request is cancelled on the worker.
	ctx2, cancel2 := context.WithCancel(context.Background())
	lone := h.goExecute(ctx2, batchCall("y"), pool.CallOptions{})
	bt.waitEntered(t)
	cancel2()
	if o := recv(t, lone); !errors.Is(o.err, context.Canceled) {
		t.Fatalf("got %v, want context.Canceled", o.err)
	}
	bt.mu.Lock()
	wctx := bt.ctxs[len(bt.ctxs)-1]
	bt.mu.Unlock()
	waitFor(t, "the batch's context to end", func() bool { return wctx.Err() != nil })
	h.waitStats("the slot back", func(s pool.Stats) bool { return s.InFlight == 0 })
	checkBalanced(t, h.p.Stats())
}

// TestBatchCrashRetriesIdempotentCalls: a worker dying under a batch fails
// each call as a crash fails a single call: the idempotent one is retried
// on another worker, the others fail with the crash error.
func TestBatchCrashRetriesIdempotentCalls(t *testing.T) {
	h := newHarness(t, pool.Options{RetryBackoff: time.Millisecond})
	bt0, bt1 := newBatchTool(true), newBatchTool(false)
	w0 := h.add("w0", 2, bt0.option(2, forever))
	h.ready(1)
	held := h.hold(bt0, "h", pool.CallOptions{})
	idem := h.goExecute(context.Background(), batchCall("i"), pool.CallOptions{Idempotent: true})
	plain := h.goExecute(context.Background(), batchCall("p"), pool.CallOptions{})
	if got := bt0.waitEntered(t); len(got) != 2 {
		t.Fatalf("batch %v, want i and p", got)
	}
	h.add("w1", 1, bt1.option(2, forever))
	h.ready(2)
	w0.Crash()
	for _, ch := range []<-chan outcome{plain, held} {
		if o := recv(t, ch); !errors.Is(o.err, worker.ErrWorkerCrashed) {
			t.Fatalf("non-idempotent call: %v, want a crash error", o.err)
		}
	}
	o := recv(t, idem)
	if o.err != nil || resultString(t, o.res) != "ii" {
		t.Fatalf("idempotent call: %v %v, want its result from the retry", o.res, o.err)
	}
	if got := bt1.sent(); len(got) != 1 || len(got[0]) != 1 || got[0][0] != "i" {
		t.Errorf("retried batches %v, want one of the idempotent call", got)
	}
	s := h.p.Stats()
	checkBalanced(t, s)
	if s.Outcomes[pool.OutcomeCrashed] != 2 || s.Outcomes[pool.OutcomeSuccess] != 1 || s.Retries != 1 {
		t.Errorf("outcomes %v, retries %d", s.Outcomes, s.Retries)
	}
}

// TestBatchSessionCallsRunAlone: a call with a session is not batched.
func TestBatchSessionCallsRunAlone(t *testing.T) {
	h := newHarness(t, pool.Options{})
	bt := newBatchTool(false)
	h.add("w0", 1, bt.option(8, forever))
	h.ready(1)
	c := batchCall("s")
	c.SessionID = "sess"
	res, err := h.p.Execute(context.Background(), c, pool.CallOptions{})
	if err != nil || resultString(t, res) != "ss" {
		t.Fatalf("%v %v", res, err)
	}
	if s := h.p.Stats(); s.Batches.Count != 0 {
		t.Errorf("a session call was batched: %+v", s.Batches)
	}
}

func slicesContain(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// TestBatchStopFailsTheOpenBatch: Stop does not leave calls waiting in an
// open batch for their max_wait.
func TestBatchStopFailsTheOpenBatch(t *testing.T) {
	h := newHarness(t, pool.Options{})
	bt := newBatchTool(true)
	h.add("w0", 2, bt.option(8, forever))
	h.ready(1)
	held := h.hold(bt, "h", pool.CallOptions{})
	waiting := h.goExecute(context.Background(), batchCall("w"), pool.CallOptions{})
	waitFor(t, "a call in the open batch", func() bool { return pool.OpenBatchLen(h.p, "twice") == 1 })
	stopped := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		stopped <- h.p.Stop(ctx)
	}()
	if o := recv(t, waiting); !errors.Is(o.err, pool.ErrPoolStopping) {
		t.Fatalf("the waiting call: %v, want ErrPoolStopping", o.err)
	}
	bt.release <- struct{}{}
	if o := recv(t, held); o.err != nil {
		t.Fatalf("the call in flight: %v", o.err)
	}
	if err := <-stopped; err != nil {
		t.Fatal(err)
	}
	checkBalanced(t, h.p.Stats())
}
