package supervisor_test

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/snakepit-go/snakepit/pool"
	"github.com/snakepit-go/snakepit/supervisor"
	"github.com/snakepit-go/snakepit/worker"
	"github.com/snakepit-go/snakepit/worker/fake"
)

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// Workers join and leave a serving pool; removal drains the in-flight call
// first; the fixed workers are untouched; nothing joins once stopping.
func TestWorkersMembership(t *testing.T) {
	p, err := pool.New(pool.Options{})
	if err != nil {
		t.Fatal(err)
	}
	release := make(chan struct{})
	hold := fake.WithTool("hold", func(ctx context.Context, _ *worker.Call) (*worker.Result, error) {
		select {
		case <-release:
			return &worker.Result{JSON: json.RawMessage(`1`)}, nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	})
	base := &fake.Factory{}
	w, err := supervisor.NewWorkers(supervisor.WorkersOptions{Count: 0, Factory: base, Pool: p})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.AddWorker("early", base); !errors.Is(err, supervisor.ErrNotServing) {
		t.Fatalf("AddWorker before Serve = %v, want ErrNotServing", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Serve(ctx) }()
	select {
	case <-w.Ready():
	case <-time.After(5 * time.Second):
		t.Fatal("a pool of no fixed workers did not become ready")
	}
	dyn := &fake.Factory{Options: []fake.Option{hold}}
	for _, id := range []string{"r1", "r2"} {
		if err := w.AddWorker(id, dyn); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.AddWorker("r1", dyn); !errors.Is(err, supervisor.ErrWorkerExists) {
		t.Fatalf("duplicate AddWorker = %v, want ErrWorkerExists", err)
	}
	eventually(t, "two workers idle", func() bool { return p.Stats().Workers.Idle == 2 })

	out := make(chan error, 1)
	go func() {
		_, err := p.Execute(context.Background(), &worker.Call{Tool: "hold"}, pool.CallOptions{})
		out <- err
	}()
	eventually(t, "a call in flight", func() bool { return p.Stats().InFlight == 1 })
	busy := "r1"
	if dyn.Worker("r1").InFlight() == 0 {
		busy = "r2"
	}
	removed := make(chan error, 1)
	go func() { removed <- w.RemoveWorker(context.Background(), busy) }()
	eventually(t, "the busy worker draining", func() bool { return p.Stats().Workers.Draining == 1 })
	select {
	case err := <-removed:
		t.Fatalf("RemoveWorker returned %v before its call finished", err)
	default:
	}
	close(release)
	if err := <-out; err != nil {
		t.Fatalf("the drained call failed: %v", err)
	}
	if err := <-removed; err != nil {
		t.Fatal(err)
	}
	if s := p.Stats(); s.Workers.Total != 1 || s.Workers.Idle != 1 {
		t.Fatalf("workers after removal %+v, want one idle", s.Workers)
	}
	if got := len(w.Starters()); got != 1 {
		t.Fatalf("%d starters after removal, want 1", got)
	}
	if err := w.RemoveWorker(context.Background(), busy); !errors.Is(err, supervisor.ErrNoSuchWorker) {
		t.Fatalf("second RemoveWorker = %v, want ErrNoSuchWorker", err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if err := w.AddWorker("late", dyn); !errors.Is(err, supervisor.ErrNotServing) {
		t.Fatalf("AddWorker after stop = %v, want ErrNotServing", err)
	}
}
