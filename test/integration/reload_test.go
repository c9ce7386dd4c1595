package integration

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/snakepit-go/snakepit"
	"github.com/snakepit-go/snakepit/internal/testutil"
)

// versionedAdapter writes reload_adapter.py into a fresh directory: the
// healing adapter's tools plus version(), which returns version. Broken
// code fails at import. The test rewrites it in place to change "the
// current code" under a running App.
type versionedAdapter struct{ dir string }

const reloadAdapter = "reload_adapter.ReloadAdapter"

func newVersionedAdapter(t *testing.T, version string) *versionedAdapter {
	a := &versionedAdapter{dir: t.TempDir()}
	a.write(t, version)
	return a
}

func (a *versionedAdapter) write(t *testing.T, version string) {
	t.Helper()
	src := fmt.Sprintf(`from snakepit_bridge import tool
from healing_adapter import HealingAdapter
from memory_tools import MemoryTools

VERSION = %q


class ReloadAdapter(MemoryTools, HealingAdapter):
    @tool(description="The version of the code this process imported")
    def version(self) -> str:
        return VERSION
`, version)
	if version == "broken" {
		src = "raise ImportError('this version of the adapter is broken on purpose')\n"
	}
	// Write-then-rename: a process starting meanwhile reads one version
	// or the other, never half a file.
	tmp := filepath.Join(a.dir, "reload_adapter.py.tmp")
	if err := os.WriteFile(tmp, []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(a.dir, "reload_adapter.py")); err != nil {
		t.Fatal(err)
	}
}

func (a *versionedAdapter) config(cfg snakepit.Config) snakepit.Config {
	cfg.Adapter = reloadAdapter
	cfg.PythonPath = append([]string{a.dir}, healingPathDir())
	if cfg.Env == nil {
		cfg.Env = map[string]string{}
	}
	// Python's bytecode cache is keyed by the source's mtime (seconds) and
	// size; a rewrite within the same second to a file of the same size
	// would import the stale cache. Real deployments replace files more
	// slowly, the test does not.
	cfg.Env["PYTHONDONTWRITEBYTECODE"] = "1"
	return cfg
}

func healingPathDir() string { return healingPath(nil)[0] }

// load runs callers until stop: half make non-idempotent calls (record:
// each success appended its id to a file exactly once), half idempotent
// sleeps of 20 ms; every failure is kept.
type load struct {
	stop     chan struct{}
	wg       sync.WaitGroup
	ok       atomic.Int64
	recorded atomic.Int64
	mu       sync.Mutex
	failures []error
}

func startLoad(t *testing.T, app *snakepit.App, callers int, path string) *load {
	l := &load{stop: make(chan struct{})}
	ctx := ctxT(t)
	for c := range callers {
		l.wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-l.stop:
					return
				default:
				}
				var err error
				if c%2 == 0 {
					_, err = app.Execute(ctx, "record", map[string]any{"id": fmt.Sprintf("c%d-%d", c, i), "path": path})
					if err == nil {
						l.recorded.Add(1)
					}
				} else {
					_, err = app.Execute(ctx, "sleep", map[string]any{"ms": 20}, snakepit.Idempotent())
				}
				if err != nil {
					l.mu.Lock()
					l.failures = append(l.failures, err)
					l.mu.Unlock()
				} else {
					l.ok.Add(1)
				}
			}
		})
	}
	return l
}

func (l *load) finish() (ok int64, failures []error) {
	close(l.stop)
	l.wg.Wait()
	return l.ok.Load(), l.failures
}

// versions asks every worker process for its version: calls until each
// worker pid seen has answered, up to n calls.
func versions(t *testing.T, app *snakepit.App, n int) map[string]int {
	t.Helper()
	out := map[string]int{}
	for range n {
		v, err := snakepit.Decode[string](app.Execute(ctxT(t), "version", nil))
		if err != nil {
			t.Fatalf("version: %v", err)
		}
		out[v]++
	}
	return out
}

func workerPIDs(t *testing.T, app *snakepit.App) map[int]bool {
	m := map[int]bool{}
	for _, p := range workerProcs(t, app, "") {
		m[p.PID] = true
	}
	return m
}

// Guarantee (issue 10, item 1): a reload of 4 workers under steady load of
// idempotent and non-idempotent calls fails no call, replaces every
// process with one running the current code, counts as 4 recycles with
// reason "reload" and no restart; a reload to a broken adapter returns the
// new process's startup error and leaves the 4 processes serving.
func TestReloadUnderLoadFailsNoCallAndABrokenReloadKeepsTheOldWorkers(t *testing.T) {
	const workers = 4
	code := newVersionedAdapter(t, "v1")
	app := newApp(t, code.config(snakepit.Config{Workers: workers, Capacity: 1, QueueTimeout: 20 * time.Second}))
	if v := versions(t, app, 8); v["v1"] != 8 {
		t.Fatalf("before the reload: versions %v", v)
	}
	before := workerPIDs(t, app)
	if len(before) != workers {
		t.Fatalf("want %d worker processes, got %v", workers, before)
	}
	records := filepath.Join(t.TempDir(), "records")
	l := startLoad(t, app, 8, records)
	testutil.Eventually(t, 10*time.Second, "load running", func() bool { return l.ok.Load() > 50 })

	// SNAKEPIT_RELOAD_ROUNDS=N (make reload-soak) reloads N times under
	// the same load; make test runs one.
	rounds := 1
	if n, err := strconv.Atoi(os.Getenv("SNAKEPIT_RELOAD_ROUNDS")); err == nil && n > 1 {
		rounds = n
	}
	version := ""
	var total time.Duration
	sampler := sampleReady(app)
	for r := 1; r <= rounds; r++ {
		version = fmt.Sprintf("v%d", r+1)
		code.write(t, version)
		callsBefore := l.ok.Load()
		rep, err := app.Reload(ctxT(t))
		callsDuring := l.ok.Load() - callsBefore
		if err != nil {
			t.Fatalf("Reload %d: %v", r, err)
		}
		if len(rep.Recycled) != workers || len(rep.Skipped) != 0 {
			t.Fatalf("Reload %d report %+v, want all %d workers replaced", r, rep, workers)
		}
		total += rep.Duration
		t.Logf("reload %d of %d workers under load: %s, %d calls completed during it", r, workers, rep.Duration.Round(time.Millisecond), callsDuring)
		// A little more load on the new processes before the next round.
		after := l.ok.Load()
		testutil.Eventually(t, 10*time.Second, "load on the new processes", func() bool { return l.ok.Load() > after+50 })
	}
	ok, failures := l.finish()
	minReady, samples := sampler.finish()
	t.Logf("%d reload(s) of %d workers under load (8 callers, half non-idempotent): mean %s, %d calls in all, %d failed, fewest ready workers %d in %d samples",
		rounds, workers, (total / time.Duration(rounds)).Round(time.Millisecond), ok, len(failures), minReady, samples)
	if len(failures) > 0 {
		t.Fatalf("%d calls failed across the reloads; first: %v", len(failures), failures[0])
	}
	if minReady != workers {
		t.Fatalf("ready workers dropped to %d of %d during the reloads: not make-before-break", minReady, workers)
	}
	if v := versions(t, app, 16); v[version] != 16 {
		t.Fatalf("after the reload: versions %v, want only %s", v, version)
	}
	afterPIDs := workerPIDs(t, app)
	testutil.Eventually(t, 20*time.Second, "the old processes drained and stopped", func() bool {
		afterPIDs = workerPIDs(t, app)
		for pid := range before {
			if afterPIDs[pid] {
				return false
			}
		}
		return len(afterPIDs) == workers
	})
	s := app.Stats().Pool
	if s.Restarts != 0 || s.Recycles != uint64(rounds*workers) || s.RecycleReasons["reload"] != rounds*workers {
		t.Fatalf("a reload must count as %d recycles (reason reload), no restart: restarts %d %v, recycles %d %v",
			rounds*workers, s.Restarts, s.RestartReasons, s.Recycles, s.RecycleReasons)
	}
	b, err := os.ReadFile(records)
	if err != nil {
		t.Fatal(err)
	}
	if lines := strings.Count(string(b), "\n"); int64(lines) != l.recorded.Load() {
		t.Fatalf("the record file holds %d calls, %d succeeded: a non-idempotent call ran twice or not at all", lines, l.recorded.Load())
	}

	// Now to broken code, under load: the reload stops at the first worker
	// and returns its startup error; the 4 processes keep serving v2.
	code.write(t, "broken")
	l = startLoad(t, app, 8, records)
	_, err = app.Reload(ctxT(t))
	ok, failures = l.finish()
	var re *snakepit.ReloadError
	var se *snakepit.StartupError
	if !errors.As(err, &re) || !errors.As(err, &se) {
		t.Fatalf("Reload to broken code = %v, want a *ReloadError wrapping a *StartupError", err)
	}
	if re.WorkerID != "w0" || len(re.Report.Recycled) != 0 || !strings.Contains(strings.Join(se.Stderr, "\n"), "broken on purpose") {
		t.Fatalf("ReloadError %+v / StartupError stderr %q: want w0, nothing replaced, the ImportError quoted", re, se.Stderr)
	}
	if len(failures) > 0 {
		t.Fatalf("%d of %d calls failed during the broken reload; first: %v", len(failures), ok+int64(len(failures)), failures[0])
	}
	if v := versions(t, app, 16); v[version] != 16 {
		t.Fatalf("after the broken reload: versions %v, want the old %s processes", v, version)
	}
	if now := workerPIDs(t, app); len(now) != workers || fmt.Sprint(now) != fmt.Sprint(afterPIDs) {
		t.Fatalf("after the broken reload the worker processes are %v, want the same %v", now, afterPIDs)
	}
	if s := app.Stats().Pool; s.Restarts != 0 || s.Recycles != uint64(rounds*workers) || s.Workers.Idle+s.Workers.Busy != workers {
		t.Fatalf("a failed reload must leave the pool as it was: %+v", s)
	}
}

// A Reload whose ctx ends while a new process is still starting withdraws
// it: the new process is stopped, the old one keeps serving, nothing is
// counted, and Reload returns the ctx's error.
func TestReloadCancelledWhileTheNewProcessStartsKeepsTheOldOne(t *testing.T) {
	app := newApp(t, snakepit.Config{Workers: 1, Adapter: healingAdapter, PythonPath: healingPath(t),
		Env: map[string]string{"HEALING_SETUP_S": "3"}, StartupTimeout: 30 * time.Second})
	old := workerPID(t, app)
	ctx, cancel := context.WithCancel(ctxT(t))
	done := make(chan error, 1)
	go func() { _, err := app.Reload(ctx); done <- err }()
	testutil.Eventually(t, 10*time.Second, "the new process starting", func() bool { return len(workerProcs(t, app, "w0")) == 2 })
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Reload = %v, want context.Canceled", err)
	}
	testutil.Eventually(t, 10*time.Second, "the withdrawn process gone", func() bool { return len(workerProcs(t, app, "w0")) == 1 })
	if pid := workerPID(t, app); pid != old {
		t.Fatalf("calls go to pid %d, want the old process %d", pid, old)
	}
	if s := app.Stats().Pool; s.Recycles != 0 || s.Restarts != 0 {
		t.Fatalf("a withdrawn reload must leave no trace in the counters: %+v", s)
	}
}
