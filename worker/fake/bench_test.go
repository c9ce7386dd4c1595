package fake_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/snakepit-go/snakepit/worker"
	"github.com/snakepit-go/snakepit/worker/fake"
)

// The fake worker's own share of pool's BenchmarkExecute and
// BenchmarkExecuteStream (docs/BENCHMARKS.md, "Pool dispatch"): the same
// tools, called directly with what the pool hands a worker, a fresh
// cancellable context per call. BenchmarkParentContext is that context
// alone, which is the pool's; subtract it to get the fake's share.

var benchResult = &worker.Result{JSON: json.RawMessage(`{"ok":true}`)}

func benchWorker(b *testing.B) *fake.Worker {
	b.Helper()
	chunk := worker.Chunk{JSON: json.RawMessage(`1`)}
	w := fake.New(worker.Spec{ID: "w0", Capacity: 1},
		fake.WithTool("noop", func(context.Context, *worker.Call) (*worker.Result, error) { return benchResult, nil }),
		fake.WithStreamTool("s", func(_ context.Context, _ *worker.Call, yield func(worker.Chunk) error) error {
			for range 10 {
				if err := yield(chunk); err != nil {
					return err
				}
			}
			return nil
		}))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = w.Serve(ctx); close(done) }()
	b.Cleanup(func() { cancel(); <-done })
	deadline := time.Now().Add(10 * time.Second)
	for !w.IsReady() {
		if time.Now().After(deadline) {
			b.Fatal("the fake worker was not ready after 10s")
		}
		time.Sleep(time.Millisecond)
	}
	return w
}

// BenchmarkParentContext: the per-call context the pool derives and hands
// to the worker, made and cancelled.
func BenchmarkParentContext(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		_, cancel := context.WithCancelCause(context.Background())
		cancel(nil)
	}
}

// BenchmarkExecute: one unary call, parent context included.
func BenchmarkExecute(b *testing.B) {
	w := benchWorker(b)
	c := &worker.Call{Tool: "noop"}
	b.ReportAllocs()
	for b.Loop() {
		ctx, cancel := context.WithCancelCause(context.Background())
		if _, err := w.Execute(ctx, c); err != nil {
			b.Fatal(err)
		}
		cancel(nil)
	}
}

func takeChunk(worker.Chunk) error { return nil }

// BenchmarkExecuteStream: one 10-chunk stream, parent context included.
func BenchmarkExecuteStream(b *testing.B) {
	w := benchWorker(b)
	c := &worker.Call{Tool: "s"}
	b.ReportAllocs()
	for b.Loop() {
		ctx, cancel := context.WithCancelCause(context.Background())
		if err := w.ExecuteStream(ctx, c, takeChunk); err != nil {
			b.Fatal(err)
		}
		cancel(nil)
	}
}
