package integration

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/snakepit-go/snakepit"
	"github.com/snakepit-go/snakepit/worker"
)

// batch_adapter.BatchTestAdapter.work: @tool(batch=Batch(max_size=4,
// max_wait_ms=1000)); each call answers with its id, the size of the batch
// it ran in, the worker's pid and its own request id. A call that finds
// the tool idle goes alone; the tests first keep every worker busy with a
// long call (hold) so that the next four calls form one batch.
type workOut struct {
	ID        string `json:"id"`
	Size      int    `json:"size"`
	PID       int    `json:"pid"`
	RequestID string `json:"request_id"`
}

func batchApp(t *testing.T, workers int) *snakepit.App {
	t.Helper()
	return newApp(t, snakepit.Config{Workers: workers, Capacity: 2, Adapter: "batch_adapter.BatchTestAdapter", PythonPath: healingPath(t)})
}

type workResult struct {
	out workOut
	err error
}

// goWork calls work in the background.
func goWork(ctx context.Context, app *snakepit.App, id string, ms int, opts ...snakepit.CallOption) <-chan workResult {
	ch := make(chan workResult, 1)
	go func() {
		v, err := snakepit.Decode[workOut](app.Execute(ctx, "work", map[string]any{"id": id, "ms": ms}, opts...))
		ch <- workResult{v, err}
	}()
	return ch
}

func recvWork(t *testing.T, ch <-chan workResult) workResult {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(30 * time.Second):
		t.Fatal("call did not return")
		return workResult{}
	}
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func TestBatchToolOverRealWorkers(t *testing.T) {
	app := batchApp(t, 1)
	var spec snakepit.ToolSpec
	for _, s := range app.Tools() {
		if s.Name == "work" {
			spec = s
		}
	}
	if spec.BatchMaxSize != 4 || spec.BatchMaxWait != time.Second {
		t.Fatalf("work spec %+v; want BatchMaxSize 4, BatchMaxWait 1s from @tool(batch=Batch(max_size=4, max_wait_ms=1000))", spec)
	}
	if len(spec.Parameters) != 2 || spec.Parameters[0].Type != "str" || spec.Parameters[1].Type != "int" {
		t.Fatalf("parameters %+v; want the per-call types str and int", spec.Parameters)
	}

	// A lone call goes at once, alone.
	ctx := ctxT(t)
	if r := recvWork(t, goWork(ctx, app, "alone", 0)); r.err != nil || r.out.Size != 1 {
		t.Fatalf("a lone call: %+v, %v", r.out, r.err)
	}

	// Coalescing, splitting, per-call errors and request ids.
	held := hold(t, app, 1, 3000)
	ids := []string{"a", "bad", "c", "d"}
	var chs []<-chan workResult
	for _, id := range ids {
		chs = append(chs, goWork(ctx, app, id, 0))
	}
	reqIDs := map[string]bool{}
	total := 0
	for i, ch := range chs {
		r := recvWork(t, ch)
		if ids[i] == "bad" {
			if !errors.Is(r.err, worker.ErrInvalidArgs) {
				t.Errorf("bad: %v, want ErrInvalidArgs for that call alone", r.err)
			}
			continue
		}
		if r.err != nil || r.out.ID != ids[i] || r.out.RequestID == "" || r.out.Size != 4 {
			t.Fatalf("call %s: %+v, %v", ids[i], r.out, r.err)
		}
		reqIDs[r.out.RequestID] = true
		total++
	}
	if len(reqIDs) != total {
		t.Errorf("request ids %v are not one per call", reqIDs)
	}
	for _, ch := range held {
		if r := recvWork(t, ch); r.err != nil {
			t.Fatal(r.err)
		}
	}
	if b := app.Stats().Pool.Batches; b.Calls != 6 || b.Count != 3 {
		t.Errorf("batches %+v; want 6 calls in 3 batches (1, 1, 4)", b)
	}
}

// hold keeps each of n workers busy with a call of ms, and returns once
// those calls are on the workers.
func hold(t *testing.T, app *snakepit.App, n, ms int) []<-chan workResult {
	t.Helper()
	before := app.Stats().Pool.Batches.Count
	var out []<-chan workResult
	for i := range n {
		out = append(out, goWork(ctxT(t), app, fmt.Sprint("hold", i), ms, snakepit.Idempotent()))
	}
	waitUntil(t, "the long calls on the workers", func() bool {
		s := app.Stats().Pool
		return s.Batches.Count >= before+uint64(n) && s.InFlight >= n
	})
	return out
}

func TestBatchCancellationAndDeadlinePerCall(t *testing.T) {
	app := batchApp(t, 1)
	ctx := ctxT(t)
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	dctx, dcancel := context.WithTimeout(ctx, 30*time.Second)
	defer dcancel()
	held := hold(t, app, 1, 3000)
	before := app.Stats().Pool.Batches.Count
	cancelled := goWork(cctx, app, "x", 1500)
	kept := goWork(ctx, app, "k", 1500)
	kept2 := goWork(ctx, app, "k2", 1500)
	late := goWork(dctx, app, "d", 1500)
	// The batch is on the worker once it was sent (the slot it holds).
	waitUntil(t, "the batch to be sent", func() bool { return app.Stats().Pool.Batches.Count > before })
	cancel()
	if r := recvWork(t, cancelled); !errors.Is(r.err, context.Canceled) {
		t.Fatalf("cancelled call: %v", r.err)
	}
	dcancel() // as its deadline passing would, ending only this call
	if r := recvWork(t, late); !errors.Is(r.err, context.Canceled) {
		t.Fatalf("second caller: %v", r.err)
	}
	select {
	case r := <-kept:
		t.Fatalf("the other calls returned with the cancelled ones: %+v %v", r.out, r.err)
	default:
	}
	for _, ch := range append(held, kept, kept2) {
		if r := recvWork(t, ch); r.err != nil {
			t.Fatalf("kept call: %v", r.err)
		}
	}

	// A call whose own deadline passes in a batch returns DeadlineExceeded.
	short, scancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer scancel()
	var chs []<-chan workResult
	for i := range 3 {
		chs = append(chs, goWork(ctx, app, fmt.Sprint("n", i), 1500))
	}
	if r := recvWork(t, goWork(short, app, "short", 1500)); !errors.Is(r.err, context.DeadlineExceeded) {
		t.Fatalf("call past its deadline: %v", r.err)
	}
	for _, ch := range chs {
		if r := recvWork(t, ch); r.err != nil {
			t.Fatalf("the others: %v", r.err)
		}
	}
	s := app.Stats().Pool
	if s.Outcomes["cancelled"] != 2 || s.Outcomes["deadline"] != 1 || s.Outcomes["success"] != 6 {
		t.Errorf("outcomes %v; want 2 cancelled, 1 deadline, 6 successes", s.Outcomes)
	}
}

func TestBatchWorkerCrashRetriesIdempotentCalls(t *testing.T) {
	app := batchApp(t, 2)
	ctx := ctxT(t)
	held := hold(t, app, 2, 3000) // idempotent: the one under the crash goes again
	idem := []<-chan workResult{
		goWork(ctx, app, "i1", 200, snakepit.Idempotent()),
		goWork(ctx, app, "i2", 200, snakepit.Idempotent()),
	}
	plain := goWork(ctx, app, "p", 200)
	die := goWork(ctx, app, "die", 0)
	for _, ch := range []<-chan workResult{plain, die} {
		if r := recvWork(t, ch); !errors.Is(r.err, worker.ErrWorkerCrashed) {
			t.Fatalf("non-idempotent call under the crash: %+v %v, want ErrWorkerCrashed", r.out, r.err)
		}
	}
	for _, ch := range append(idem, held...) {
		r := recvWork(t, ch)
		if r.err != nil {
			t.Fatalf("idempotent call: %v, want its result from the retry", r.err)
		}
	}
	s := app.Stats().Pool
	if s.Retries < 3 || s.Outcomes["crashed"] != 2 || s.Outcomes["success"] != 4 {
		t.Errorf("retries %d, outcomes %v; want at least 3 retries, 2 crashed, 4 successes", s.Retries, s.Outcomes)
	}
}
