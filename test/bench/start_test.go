package bench

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"sync"
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
// rounds interleaved (docs/BENCHMARKS.md):
//
//	go test -c -o /tmp/bench.test . && /tmp/bench.test -test.run '^$' -test.bench 'Start/' -test.benchtime 3x
func BenchmarkStart(b *testing.B) {
	for _, n := range []int{4, 16, 64} {
		b.Run(fmt.Sprintf("floor/N=%d", n), func(b *testing.B) {
			py := python(b)
			for b.Loop() {
				importGRPC(b, py, n)
			}
			b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N), "ms/start")
		})
		b.Run(fmt.Sprintf("snakepit/N=%d", n), func(b *testing.B) {
			var took time.Duration
			for range b.N {
				took += startStop(b, n)
			}
			b.ReportMetric(float64(took.Milliseconds())/float64(b.N), "ms/start")
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

// startStop returns how long New + Start took to have n workers ready
// (New unpacks the package and checks its bytecode).
func startStop(b *testing.B, n int) time.Duration {
	b.StopTimer()
	defer b.StartTimer()
	t0 := time.Now()
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
	took := time.Since(t0)
	if _, err := app.Stop(context.Background()); err != nil {
		b.Fatal(err)
	}
	return took
}
