package bench

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/snakepit-go/snakepit"
)

// burnN is the loop count of CPUBenchAdapter.burn: about 5 ms of one core
// on the development VM.
const burnN = 100_000

// BenchmarkCPUBound is issue 21's check of the default Capacity on a
// CPU-bound pure-Python tool: at C = 2N callers, the default (Capacity 8;
// the pool learns that burn gains nothing side by side and runs it one
// call per worker, pool/serial.go), the default with that rule off (two
// calls share one process's GIL) and Capacity 1 (the second call queues
// in the pool). Each row is a new App, warmed up with 80 calls per worker
// (the learning takes about 45).
// Reports p50/p99 per-call latency (caller's view, queueing included),
// calls/s and whether burn ended up serial. Rounds interleaved:
//
//	go test -c -o /tmp/bench-gil.test . && for i in 1 2 3; do /tmp/bench-gil.test -test.run '^$' -test.bench CPUBound -test.benchtime 300x; done
func BenchmarkCPUBound(b *testing.B) {
	rows := []struct {
		name     string
		capacity int
		cfg      func(*snakepit.Config)
	}{
		{"default", 0, nil},
		// The default before pool/serial.go: two calls share a GIL.
		{"noserial", 0, func(c *snakepit.Config) { c.DisableSerialTools = true }},
		{"cap=1", 1, nil},
	}
	for _, n := range []int{1, 2} {
		for _, row := range rows {
			b.Run(fmt.Sprintf("N=%d/%s/C=%d", n, row.name, 2*n), func(b *testing.B) {
				var more []func(*snakepit.Config)
				if row.cfg != nil {
					more = append(more, row.cfg)
				}
				t := newSnakepit(b, n, row.capacity, "CPUBenchAdapter", "burn", more...).(*snakepitTarget)
				defer t.close()
				// Warm-up: new processes, and the default's learning (about
				// 45 calls per tool, pool/serial.go) is not in the timed calls.
				burn(b, t, 2*n, 80*n)
				b.ResetTimer()
				lat := burn(b, t, 2*n, b.N)
				b.StopTimer()
				slices.Sort(lat)
				b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "calls/s")
				b.ReportMetric(ms(lat[len(lat)/2]), "p50-ms")
				b.ReportMetric(ms(lat[(len(lat)*99)/100]), "p99-ms")
				// 1: the pool runs burn one call per worker now (pool/serial.go).
				b.ReportMetric(float64(len(t.app.Stats().Pool.SerialTools)), "serial")
			})
		}
	}
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// burn makes total calls of burn(burnN) from c goroutines and returns
// each call's latency.
func burn(tb testing.TB, t *snakepitTarget, c, total int) []time.Duration {
	lat := make([]time.Duration, total)
	var next atomic.Int64
	var wg sync.WaitGroup
	var once sync.Once
	for range c {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1) - 1
				if i >= int64(total) {
					return
				}
				t0 := time.Now()
				if _, err := t.app.Execute(context.Background(), "burn", map[string]int{"n": burnN}); err != nil {
					once.Do(func() { tb.Errorf("burn: %v", err) })
					return
				}
				lat[i] = time.Since(t0)
			}
		}()
	}
	wg.Wait()
	return lat
}
