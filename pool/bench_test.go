package pool_test

import (
	"context"
	"encoding/json"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/snakepit-go/snakepit/pool"
	"github.com/snakepit-go/snakepit/worker"
	"github.com/snakepit-go/snakepit/worker/fake"
)

// The tool returns a shared result so the figures are the pool's and the
// fake worker's own overhead, not the tool's.
var benchResult = &worker.Result{JSON: json.RawMessage(`{"ok":true}`)}

func benchTool(context.Context, *worker.Call) (*worker.Result, error) { return benchResult, nil }

func benchHarness(b *testing.B, workers, capacity int) *pool.Pool {
	b.Helper()
	p, err := pool.New(pool.Options{})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{}, workers)
	for i := range workers {
		w := fake.New(worker.Spec{ID: "w" + strconv.Itoa(i), Capacity: capacity, Events: p}, fake.WithTool("noop", benchTool))
		p.Add(w, capacity)
		go func() { _ = w.Serve(ctx); done <- struct{}{} }()
	}
	b.Cleanup(func() {
		sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer scancel()
		_ = p.Stop(sctx)
		cancel()
		for range workers {
			<-done
		}
	})
	wctx, wcancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer wcancel()
	if err := p.WaitReady(wctx, workers); err != nil {
		b.Fatal(err)
	}
	return p
}

// BenchmarkExecute: one caller, one worker, background context.
func BenchmarkExecute(b *testing.B) {
	p := benchHarness(b, 1, 1)
	c := &worker.Call{Tool: "noop", Args: json.RawMessage(`{"x":1}`)}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := p.Execute(ctx, c, pool.CallOptions{}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkExecuteDeadline: as above with a deadline on the context, which
// adds the hung-worker watchdog registration.
func BenchmarkExecuteDeadline(b *testing.B) {
	p := benchHarness(b, 1, 1)
	c := &worker.Call{Tool: "noop", Args: json.RawMessage(`{"x":1}`)}
	ctx, cancel := context.WithTimeout(context.Background(), time.Hour)
	defer cancel()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := p.Execute(ctx, c, pool.CallOptions{}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkExecuteSession: hint affinity with a session id.
func BenchmarkExecuteSession(b *testing.B) {
	p := benchHarness(b, 2, 1)
	c := &worker.Call{Tool: "noop", Args: json.RawMessage(`{"x":1}`), SessionID: "s1"}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := p.Execute(ctx, c, pool.CallOptions{}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkExecuteParallel: GOMAXPROCS callers, GOMAXPROCS workers of
// capacity 2: every call finds a free slot; this measures lock contention.
func BenchmarkExecuteParallel(b *testing.B) {
	n := runtime.GOMAXPROCS(0)
	p := benchHarness(b, n, 2)
	c := &worker.Call{Tool: "noop", Args: json.RawMessage(`{"x":1}`)}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		ctx := context.Background()
		for pb.Next() {
			if _, err := p.Execute(ctx, c, pool.CallOptions{}); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkExecuteParallelQueued: 4×GOMAXPROCS callers on GOMAXPROCS
// workers of capacity 1: most calls queue and are handed a slot.
func BenchmarkExecuteParallelQueued(b *testing.B) {
	n := runtime.GOMAXPROCS(0)
	p := benchHarness(b, n, 1)
	c := &worker.Call{Tool: "noop", Args: json.RawMessage(`{"x":1}`)}
	b.ReportAllocs()
	b.SetParallelism(4)
	b.RunParallel(func(pb *testing.PB) {
		ctx := context.Background()
		for pb.Next() {
			if _, err := p.Execute(ctx, c, pool.CallOptions{}); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkExecuteStream: a 10-chunk stream, per stream.
func BenchmarkExecuteStream(b *testing.B) {
	p, err := pool.New(pool.Options{})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	chunk := worker.Chunk{JSON: json.RawMessage(`1`)}
	w := fake.New(worker.Spec{ID: "w0", Capacity: 1, Events: p}, fake.WithStreamTool("s", func(_ context.Context, _ *worker.Call, yield func(worker.Chunk) error) error {
		for range 10 {
			if err := yield(chunk); err != nil {
				return err
			}
		}
		return nil
	}))
	p.Add(w, 1)
	done := make(chan struct{})
	go func() { _ = w.Serve(ctx); close(done) }()
	b.Cleanup(func() { cancel(); <-done })
	if err := p.WaitReady(ctx, 1); err != nil {
		b.Fatal(err)
	}
	c := &worker.Call{Tool: "s"}
	b.ReportAllocs()
	for b.Loop() {
		for _, err := range p.ExecuteStream(context.Background(), c, pool.CallOptions{}) {
			if err != nil {
				b.Fatal(err)
			}
		}
	}
}
