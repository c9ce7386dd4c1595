package bench

import (
	"context"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/snakepit-go/snakepit"
)

// TestInterleave compares targets of the side-by-side benchmark (setups'
// names, plus interleaveTargets) by driving them in turn, a short slice
// each, over and over, all started at once: a change of the shared
// machine's speed, which moves 10-30 % between the rounds of a
// BenchmarkSideBySide run, then hits every target within the same second,
// and the ratios settle to within a few per cent. It runs only when
// INTERLEAVE names the targets (make bench-interleave):
//
//	INTERLEAVE=grpc-sync-wide/N=1,snakepit-default/N=1 IL_C=32 IL_SLICE=2s IL_TOTAL=60s
//
// The first target is the reference. Per target it prints calls, the ratio
// of its calls to the reference's over the run and the median, p25 and p75
// of the per-round ratios, and its Python and Go CPU per call. Slices of
// 2 s leave the worker's tool-thread controller (python/snakepit_bridge/
// _threads.py) time to settle; a slice of 250 ms shows a first second.
func TestInterleave(t *testing.T) {
	spec := os.Getenv("INTERLEAVE")
	if spec == "" {
		t.Skip("set INTERLEAVE (make bench-interleave)")
	}
	c, err := strconv.Atoi(envOr("IL_C", "32"))
	if err != nil || c < 1 {
		t.Fatalf("IL_C=%q: want a positive number of callers", os.Getenv("IL_C"))
	}
	slice, err1 := time.ParseDuration(envOr("IL_SLICE", "2s"))
	total, err2 := time.ParseDuration(envOr("IL_TOTAL", "60s"))
	if err1 != nil || err2 != nil || slice <= 0 || total < slice {
		t.Fatalf("IL_SLICE=%q IL_TOTAL=%q: want durations, the total at least one slice", os.Getenv("IL_SLICE"), os.Getenv("IL_TOTAL"))
	}
	names := strings.Split(spec, ",")
	ts := make([]target, len(names))
	for i, n := range names {
		start := interleaveTargets()[n]
		if start == nil {
			for _, s := range setups() {
				if s.name == n {
					start = s.start
				}
			}
		}
		if start == nil {
			t.Fatalf("no target %q: use a setup of BenchmarkSideBySide (e.g. snakepit-default/N=1) or one of interleaveTargets", n)
		}
		ts[i] = start(t)
		defer ts[i].close()
		drive(t, ts[i], 8, 300) // warm up
	}
	calls := make([]int64, len(ts))
	py := make([]int64, len(ts))
	goCPU := make([]time.Duration, len(ts))
	ratios := make([][]float64, len(ts))
	rounds := max(1, int(total/(slice*time.Duration(len(ts)))))
	for r := 0; r < rounds; r++ {
		per := make([]int64, len(ts))
		for k := range ts {
			i := (k + r) % len(ts) // each target in every position of the round
			p0, g0 := cpuTicks(t, ts[i].pids()), selfCPU()
			per[i] = driveFor(t, ts[i], c, slice)
			py[i] += cpuTicks(t, ts[i].pids()) - p0
			goCPU[i] += selfCPU() - g0
			calls[i] += per[i]
		}
		for i := range ts {
			ratios[i] = append(ratios[i], float64(per[i])/float64(max(per[0], 1)))
		}
	}
	for i, n := range names {
		xs := ratios[i]
		sort.Float64s(xs)
		fmt.Printf("IL %-28s C=%-3d calls %8d  ratio %.3f  median %.3f (p25 %.3f, p75 %.3f)  py %.1f go %.1f µs/call\n",
			n, c, calls[i], float64(calls[i])/float64(max(calls[0], 1)), xs[len(xs)/2], xs[len(xs)/4], xs[3*len(xs)/4],
			float64(py[i])*1e6/clockTicks/float64(max(calls[i], 1)), float64(goCPU[i].Microseconds())/float64(max(calls[i], 1)))
	}
}

// interleaveTargets are targets only TestInterleave compares: the default
// Config with the worker's tool threads at their full width
// (SNAKEPIT_ADAPTIVE_THREADS=0), and a tool that waits instead of
// computing (IOBenchAdapter) with and without the adaptive width.
func interleaveTargets() map[string]func(testing.TB) target {
	fixed := func(c *snakepit.Config) { c.Env = map[string]string{"SNAKEPIT_ADAPTIVE_THREADS": "0"} }
	out := map[string]func(testing.TB) target{
		"snakepit-io/N=1":       func(tb testing.TB) target { return newSnakepit(tb, 1, 0, "IOBenchAdapter", "add") },
		"snakepit-io-fixed/N=1": func(tb testing.TB) target { return newSnakepit(tb, 1, 0, "IOBenchAdapter", "add", fixed) },
	}
	for _, n := range []int{1, 2, 4} {
		out[fmt.Sprintf("snakepit-fixed/N=%d", n)] = func(tb testing.TB) target { return newSnakepit(tb, n, 0, "BenchAdapter", "add", fixed) }
	}
	return out
}

// driveFor calls t from c goroutines until d has passed; the calls made.
func driveFor(tb testing.TB, t target, c int, d time.Duration) int64 {
	var n atomic.Int64
	var wg sync.WaitGroup
	var once sync.Once
	end := time.Now().Add(d)
	for g := 0; g < c; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(end) {
				if err := t.call(context.Background()); err != nil {
					once.Do(func() { tb.Errorf("call: %v", err) })
					return
				}
				n.Add(1)
			}
		}()
	}
	wg.Wait()
	return n.Load()
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}
