// Package integration runs the public API against real Python workers: real
// processes, real gRPC, real signals. The suite fails if any process it
// started survives it (see internal/testutil).
package integration

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/snakepit-go/snakepit"
	"github.com/snakepit-go/snakepit/internal/testutil"
)

func TestMain(m *testing.M) { testutil.Main(m) }

// newApp builds and starts an App with an isolated registry; the test's
// cleanup stops it and asserts that no process of its run is left.
func newApp(t *testing.T, cfg snakepit.Config) *snakepit.App {
	t.Helper()
	app := buildApp(t, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := app.Start(ctx); err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() { stopApp(t, app) })
	return app
}

func buildApp(t *testing.T, cfg snakepit.Config) *snakepit.App {
	t.Helper()
	if cfg.RegistryPath == "" {
		cfg.RegistryPath = filepath.Join(t.TempDir(), "registry.db")
	}
	if cfg.Logger == nil {
		cfg.Logger = testutil.Logger()
	}
	app, err := snakepit.New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return app
}

func stopApp(t *testing.T, app *snakepit.App) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	rep, err := app.Stop(ctx)
	if err != nil {
		t.Errorf("Stop: %v", err)
	}
	if n := len(rep.Cleanup.Found); n > 0 {
		t.Errorf("cleanup found %d survivors after the ordered stop", n)
	}
	if left := testutil.RunIDProcesses(t, app.RunID()); len(left) > 0 {
		t.Errorf("%d processes of run %s alive after Stop: %+v", len(left), app.RunID(), left)
	}
}
