package pool_test

import (
	"context"
	"errors"
	"syscall"
	"testing"
	"time"

	"github.com/snakepit-go/snakepit/pool"
	"github.com/snakepit-go/snakepit/worker"
)

// Retire drains: the retired worker takes no new call, its in-flight call
// finishes, and Retire returns only then; the pool keeps serving on the rest.
func TestRetireDrainsThenReleases(t *testing.T) {
	h := newHarness(t, pool.Options{})
	g := newGate()
	h.add("a", 1, g.tool("hold"), whoami("a"))
	h.add("b", 1, g.tool("hold"), whoami("b"))
	h.ready(2)

	held := h.goExecute(context.Background(), call("hold", ""), pool.CallOptions{})
	g.waitEntered(t)
	heldBy := busyWorker(t, h)
	retired := make(chan error, 1)
	go func() { retired <- h.p.Retire(context.Background(), heldBy) }()
	h.waitStats("one worker draining", func(s pool.Stats) bool { return s.Workers.Draining == 1 })
	for range 5 {
		res, err := h.p.Execute(context.Background(), call("whoami", ""), pool.CallOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if got := resultString(t, res); got == heldBy {
			t.Fatalf("retired worker %s took a new call", got)
		}
	}
	select {
	case err := <-retired:
		t.Fatalf("Retire returned %v with a call in flight", err)
	default:
	}
	g.release <- struct{}{}
	if o := recv(t, held); o.err != nil {
		t.Fatalf("in-flight call on the retired worker failed: %v", o.err)
	}
	select {
	case err := <-retired:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Retire did not return after the last call finished")
	}
	h.p.Remove(heldBy)
	s := h.waitStats("one worker left", func(s pool.Stats) bool { return s.Workers.Total == 1 })
	checkBalanced(t, s)
}

// busyWorker finds the worker holding the gate by asking the other one.
func busyWorker(t *testing.T, h *harness) string {
	t.Helper()
	res, err := h.p.Execute(context.Background(), call("whoami", ""), pool.CallOptions{})
	if err != nil {
		t.Fatal(err)
	}
	free := resultString(t, res)
	return map[string]string{"a": "b", "b": "a"}[free]
}

// A Retire whose grace ends with calls in flight says how many.
func TestRetireGraceEnds(t *testing.T) {
	h := newHarness(t, pool.Options{})
	g := newGate()
	h.add("a", 1, g.tool("hold"))
	h.ready(1)
	held := h.goExecute(context.Background(), call("hold", ""), pool.CallOptions{})
	g.waitEntered(t)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	err := h.p.Retire(ctx, "a")
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Retire = %v, want DeadlineExceeded", err)
	}
	g.release <- struct{}{}
	recv(t, held)
	if err := h.p.Retire(context.Background(), "nobody"); err != nil {
		t.Fatalf("Retire of an unknown id = %v, want nil", err)
	}
}

// A worker may advertise its capacity when it becomes ready (a remote agent
// fronting several processes).
func TestReadyAdvertisesCapacity(t *testing.T) {
	h := newHarness(t, pool.Options{})
	p := h.p
	w := &infoWorker{id: "r"}
	p.Add(w, 1)
	p.Ready("r", worker.Info{Capacity: 3})
	g := make(chan struct{})
	w.block = g
	var outs []<-chan outcome
	for range 3 {
		outs = append(outs, h.goExecute(context.Background(), call("x", ""), pool.CallOptions{}))
	}
	h.waitStats("three calls in flight on one worker", func(s pool.Stats) bool { return s.InFlight == 3 && s.Queued == 0 })
	close(g)
	for _, o := range outs {
		if r := recv(t, o); r.err != nil {
			t.Fatal(r.err)
		}
	}
}

// A crash behind a worker (on a remote agent) fails the call but leaves the
// worker in rotation: no Ready will follow, since its lifetime did not end.
func TestCrashBehindKeepsWorker(t *testing.T) {
	h := newHarness(t, pool.Options{})
	p := h.p
	w := &infoWorker{id: "r", err: &worker.CrashError{WorkerID: "w0", PID: 7, Signal: syscall.SIGKILL, Agent: "10.0.0.1:7070"}}
	p.Add(w, 1)
	p.Ready("r", worker.Info{})
	_, err := p.Execute(context.Background(), call("x", ""), pool.CallOptions{})
	if !errors.Is(err, worker.ErrWorkerCrashed) {
		t.Fatalf("err = %v, want ErrWorkerCrashed", err)
	}
	if s := p.Stats(); s.Workers.Idle != 1 {
		t.Fatalf("workers %+v, want the worker still idle", s.Workers)
	}
}

// infoWorker is driven by the test directly through the pool's events.
type infoWorker struct {
	id    string
	block chan struct{}
	err   error
}

func (w *infoWorker) ID() string                      { return w.id }
func (w *infoWorker) Serve(ctx context.Context) error { <-ctx.Done(); return nil }
func (w *infoWorker) Kill(string)                     {}
func (w *infoWorker) Execute(ctx context.Context, _ *worker.Call) (*worker.Result, error) {
	if w.block != nil {
		<-w.block
	}
	if w.err != nil {
		return nil, w.err
	}
	return &worker.Result{JSON: []byte("1")}, nil
}
func (w *infoWorker) ExecuteStream(context.Context, *worker.Call, func(worker.Chunk) error) error {
	return nil
}
