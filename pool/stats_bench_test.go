package pool_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/snakepit-go/snakepit/pool"
	"github.com/snakepit-go/snakepit/worker"
	"github.com/snakepit-go/snakepit/worker/fake"
)

// BenchmarkStats is one Stats of a pool of 8 ready workers: what a metrics
// scrape and the status page pay.
func BenchmarkStats(b *testing.B) {
	p, err := pool.New(pool.Options{})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() {
		sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer scancel()
		_ = p.Stop(sctx)
		cancel()
		wg.Wait()
	}()
	for _, id := range []string{"w0", "w1", "w2", "w3", "w4", "w5", "w6", "w7"} {
		w := fake.New(worker.Spec{ID: id, Capacity: 8, Events: p}, fake.WithTool("echo", fake.Echo))
		p.Add(w, 8)
		wg.Go(func() { _ = w.Serve(ctx) })
	}
	rctx, rcancel := context.WithTimeout(ctx, 5*time.Second)
	defer rcancel()
	if err := p.WaitReady(rctx, 8); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		_ = p.Stats()
	}
}
