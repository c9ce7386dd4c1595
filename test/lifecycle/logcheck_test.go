package lifecycle

import (
	"context"
	"fmt"
	"github.com/snakepit-go/snakepit/internal/testutil"
	"path/filepath"
	"testing"
	"time"

	"github.com/snakepit-go/snakepit"
)

// errorsTB is a testing.TB that collects Errorf instead of failing.
type errorsTB struct {
	testing.TB
	errs []string
}

func (e *errorsTB) Helper() {}
func (e *errorsTB) Errorf(format string, a ...any) {
	e.errs = append(e.errs, fmt.Sprintf(format, a...))
}

// Guarantee 10 rests on the log check every test runs at its end: this
// proves the check is not vacuous. A worker that cannot start (a missing
// adapter module) is logged through the App's logger, and the check
// reports it.
func TestStartFailureCheckCatchesAWorkerThatFailedToStart(t *testing.T) {
	log, logs := newQuietRecordingLogger()
	app, err := snakepit.New(snakepit.Config{
		Workers: 1, Adapter: "no_such_module.Adapter", StartupFailures: 1,
		RegistryPath: filepath.Join(t.TempDir(), "registry.db"), Logger: log,
	})
	must(t, err)
	t.Cleanup(func() { testutil.KillRunSurvivors(t, app.RunID()) })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := app.Start(ctx); err == nil {
		_, _ = app.Stop(ctx)
		t.Fatal("an App whose adapter does not exist started")
	}
	if left := testRunProcs(t, &instance{App: app}); len(left) > 0 {
		t.Errorf("processes left by the failed start: %+v", left)
	}
	fake := &errorsTB{TB: t}
	assertNoStartFailures(fake, logs)
	if len(fake.errs) == 0 {
		t.Fatalf("the start-failure check found nothing in a log of a failed start:\n%v", logs.all())
	}
	t.Logf("the check reports: %s", fake.errs[0])
}
