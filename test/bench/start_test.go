package bench

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/snakepit-go/snakepit"
	"github.com/snakepit-go/snakepit/internal/testutil"
)

// BenchmarkStart is issue 21's lean-start measure: the time from snakepit.New
// to N workers ready (Start returned) (default Config: the showcase adapter, the sync
// server) against its floor, N concurrent `python -c 'import grpc'` run to
// their exit. Stop is outside the timed region. The environment decides the
// bytecode question, so run it with and without PYTHONDONTWRITEBYTECODE=1,
// rounds interleaved (docs/BENCHMARKS.md). On a shared machine the wall
// time (ms/start) follows the machine's load; cpu-ms/start is steadier: the
// CPU the floor's processes used, against the CPU the workers used up to
// ready (/proc) plus this process's during New + Start; the two parts are
// reported too (worker-cpu-ms/start, host-cpu-ms/start: the host's share
// includes the bytecode check's interpreter, a reaped child).
//
//	go test -c -o /tmp/bench.test . && /tmp/bench.test -test.run '^$' -test.bench 'Start/' -test.benchtime 3x
func BenchmarkStart(b *testing.B) {
	for _, n := range []int{4, 16, 64} {
		b.Run(fmt.Sprintf("floor/N=%d", n), func(b *testing.B) {
			py := python(b)
			c0 := childCPU()
			for b.Loop() {
				importGRPC(b, py, n)
			}
			b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N), "ms/start")
			b.ReportMetric(float64((childCPU()-c0).Milliseconds())/float64(b.N), "cpu-ms/start")
		})
		b.Run(fmt.Sprintf("snakepit/N=%d", n), func(b *testing.B) {
			var took, workers, host time.Duration
			for range b.N {
				t, w, h := startStop(b, n)
				took += t
				workers += w
				host += h
			}
			b.ReportMetric(float64(took.Milliseconds())/float64(b.N), "ms/start")
			b.ReportMetric(float64((workers+host).Milliseconds())/float64(b.N), "cpu-ms/start")
			b.ReportMetric(float64(workers.Milliseconds())/float64(b.N), "worker-cpu-ms/start")
			b.ReportMetric(float64(host.Milliseconds())/float64(b.N), "host-cpu-ms/start")
		})
	}
}

func importGRPC(tb testing.TB, py string, n int) {
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if out, err := exec.Command(py, "-c", "import grpc").CombinedOutput(); err != nil {
				errs <- fmt.Errorf("%v: %s", err, out)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		tb.Fatal(err)
	}
}

func childCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_CHILDREN, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// startStop returns how long New + Start took to have n workers ready
// (New unpacks the package and checks its bytecode) and the CPU it took:
// the workers' up to ready, and the host's: this process's and the
// bytecode check's interpreter (a reaped child, so RUSAGE_CHILDREN has it).
func startStop(b *testing.B, n int) (took, workers, host time.Duration) {
	b.StopTimer()
	defer b.StartTimer()
	t0, self0, child0 := time.Now(), selfCPU(), childCPU()
	app, err := snakepit.New(snakepit.Config{
		Workers:      n,
		Python:       python(b),
		RegistryPath: filepath.Join(b.TempDir(), "r.db"),
		Logger:       testutil.Logger(),
	})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := app.Start(ctx); err != nil {
		b.Fatal(err)
	}
	took = time.Since(t0)
	host = selfCPU() - self0 + childCPU() - child0
	var pids []int
	for _, p := range testutil.RunIDProcesses(b, app.RunID()) {
		if strings.Contains(p.Cmdline, "snakepit_bridge.server") {
			pids = append(pids, p.PID)
		}
	}
	workers = time.Duration(cpuTicks(b, pids)) * time.Second / clockTicks
	if _, err := app.Stop(context.Background()); err != nil {
		b.Fatal(err)
	}
	return took, workers, host
}
