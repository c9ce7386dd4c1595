package integration

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/snakepit-go/snakepit"
	"github.com/snakepit-go/snakepit/internal/testutil"
)

// Benchmarks of real round trips: Go → pool → gRPC → Python → back.
// Results are recorded in docs/BENCHMARKS.md; run with `make bench-python`.

func benchApp(b *testing.B, workers int) *snakepit.App {
	b.Helper()
	app, err := snakepit.New(snakepit.Config{Workers: workers, RegistryPath: filepath.Join(b.TempDir(), "r.db"), Logger: testutil.Logger()})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := app.Start(ctx); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		if _, err := app.Stop(context.Background()); err != nil {
			b.Errorf("Stop: %v", err)
		}
	})
	return app
}

func BenchmarkPythonAddSequential(b *testing.B) {
	app := benchApp(b, 1)
	ctx := context.Background()
	args := map[string]any{"a": 1, "b": 2}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if _, err := app.Execute(ctx, "add", args); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkPythonAddParallel4Workers(b *testing.B) {
	app := benchApp(b, 4)
	ctx := context.Background()
	args := map[string]any{"a": 1, "b": 2}
	b.SetParallelism(4)
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := app.Execute(ctx, "add", args); err != nil {
				b.Error(err)
				return
			}
		}
	})
	st := app.Stats().Pool.Latency
	b.ReportMetric(float64(st.P50.Microseconds()), "p50-µs")
	b.ReportMetric(float64(st.P99.Microseconds()), "p99-µs")
}

func BenchmarkStartStop4Workers(b *testing.B) {
	for b.Loop() {
		app, err := snakepit.New(snakepit.Config{Workers: 4, RegistryPath: filepath.Join(b.TempDir(), "r.db"), Logger: testutil.Logger()})
		if err != nil {
			b.Fatal(err)
		}
		if err := app.Start(context.Background()); err != nil {
			b.Fatal(err)
		}
		if _, err := app.Stop(context.Background()); err != nil {
			b.Fatal(err)
		}
	}
}
