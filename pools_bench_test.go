package snakepit_test

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/snakepit-go/snakepit"
	"github.com/snakepit-go/snakepit/internal/testutil"
	"github.com/snakepit-go/snakepit/worker/fake"
)

// The App's own cost per call (fake workers: no process, no gRPC) on the
// default pool of a single-pool App ("default", comparable with a version
// without named pools), and through a named pool's handle.
func BenchmarkExecuteFake(b *testing.B) {
	echo := []fake.Option{fake.WithTool("echo", fake.Echo)}
	start := func(b *testing.B, pools []snakepit.PoolConfig) *snakepit.App {
		cfg := snakepit.Config{Workers: 2, WorkerFactory: &fake.Factory{Options: echo}, Pools: pools,
			RegistryPath: filepath.Join(b.TempDir(), "r.db"), Logger: testutil.Logger()}
		app, err := snakepit.New(cfg)
		if err != nil {
			b.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := app.Start(ctx); err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			_, _ = app.Stop(ctx)
		})
		return app
	}
	run := func(b *testing.B, exec func(context.Context) error) {
		ctx := context.Background()
		b.ReportAllocs()
		for b.Loop() {
			if err := exec(ctx); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.Run("default", func(b *testing.B) {
		app := start(b, nil)
		run(b, func(ctx context.Context) error { _, err := app.Execute(ctx, "echo", nil); return err })
	})
	b.Run("named", func(b *testing.B) {
		app := start(b, []snakepit.PoolConfig{{Name: "embed", Workers: 2, WorkerFactory: &fake.Factory{Options: echo}}})
		embed := app.Pool("embed")
		run(b, func(ctx context.Context) error { _, err := embed.Execute(ctx, "echo", nil); return err })
	})
}
