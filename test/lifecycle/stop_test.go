package lifecycle

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/snakepit-go/snakepit"
	"github.com/snakepit-go/snakepit/internal/proc"
)

// Guarantee: after a clean Stop no process of the run is alive — neither
// the workers nor what they spawned — at the moment Stop returns, and the
// last-resort cleanup had nothing to do. Half the grandchildren left their
// worker's process group (setsid), where the group kill cannot reach them:
// the worker's own descendant kill (python/snakepit_bridge/_procs.py) must
// have stopped them, or the cleanup would have found them.
func TestStopLeavesNoProcessOfTheRun(t *testing.T) {
	for _, n := range []int{4, 16} {
		t.Run(fmt.Sprintf("workers=%d", n), func(t *testing.T) {
			in := startInstance(t, withLifecycleAdapter(t, snakepit.Config{Workers: n}))
			workers := workerProcs(t, in.RunID())
			if len(workers) != n {
				t.Fatalf("%d worker processes carry the run id, want %d", len(workers), n)
			}
			kids := append(spawnGrandchildren(t, in, n, inGroup), spawnGrandchildren(t, in, n, ownGroup)...)
			parents := map[int]bool{}
			for _, g := range kids {
				parents[g.Parent] = true
			}
			if len(parents) < 2 {
				t.Fatalf("all %d grandchildren came from one worker; want them spread", len(kids))
			}
			if all := len(testRunProcs(t, in)); all != n+len(kids) {
				t.Fatalf("%d processes carry the run id, want %d workers + %d grandchildren", all, n, len(kids))
			}

			rep := in.stop(t) // asserts: no error, Found empty, FindByRunID empty right after Stop

			if len(rep.Cleanup.Found) != 0 {
				t.Errorf("StopReport.Cleanup.Found = %+v, want empty", rep.Cleanup.Found)
			}
			for _, w := range workers {
				if (pidStart{w.PID, w.StartTime}).alive() {
					t.Errorf("worker %d alive after Stop", w.PID)
				}
			}
			for _, g := range kids {
				if g.alive() && proc.CarriesRunID(g.PID, in.RunID()) {
					t.Errorf("grandchild %d (of worker %d) alive after Stop", g.PID, g.Parent)
				}
			}
		})
	}
}

func testRunProcs(t *testing.T, in *instance) []proc.Process {
	t.Helper()
	ps, err := proc.FindByRunID(in.RunID())
	if err != nil {
		t.Fatal(err)
	}
	return ps
}

// Guarantee: in normal operation the pool runs exactly its N worker
// processes — the same ones — and restarts nothing. Sampled every 50 ms for
// more than 2 s while calls are being made.
func TestWorkerCountIsStableDuringNormalOperation(t *testing.T) {
	const n = 4
	in := startInstance(t, snakepit.Config{Workers: n})
	initial := pidSet(workerProcs(t, in.RunID()))
	if len(initial) != n {
		t.Fatalf("%d worker processes, want %d", len(initial), n)
	}

	ctx, cancel := context.WithCancel(context.Background())
	var calls, failures atomic.Int64
	var wg sync.WaitGroup
	for i := range 3 {
		wg.Go(func() {
			for ctx.Err() == nil {
				var err error
				if i == 0 {
					_, err = in.Execute(ctx, "ping", nil)
				} else {
					_, err = in.Execute(ctx, "sleep", map[string]any{"ms": 5 * i})
				}
				if err != nil && ctx.Err() == nil {
					failures.Add(1)
					t.Errorf("call failed during normal operation: %v", err)
				}
				calls.Add(1)
			}
		})
	}
	defer func() { cancel(); wg.Wait() }()

	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	// A fixed number of samples, at least 50 ms apart, rather than a fixed
	// duration: a loaded machine stretches the run instead of thinning it.
	const wantSamples = 44
	began := time.Now()
	samples := 0
	for samples < wantSamples {
		if time.Since(began) > time.Minute {
			t.Fatalf("only %d of %d samples in a minute", samples, wantSamples)
		}
		<-tick.C
		samples++
		now := pidSet(workerProcs(t, in.RunID()))
		if len(now) != n {
			t.Fatalf("sample %d at %s: %d worker processes, want %d", samples, time.Since(began).Round(time.Millisecond), len(now), n)
		}
		for p := range now {
			if !initial[p] {
				t.Fatalf("sample %d: worker process %d is new; the set of workers changed", samples, p.PID)
			}
		}
		if all := testRunProcs(t, in); len(all) != n {
			t.Fatalf("sample %d: %d processes carry the run id, want exactly the %d workers: %+v", samples, len(all), n, all)
		}
		st := in.Stats().Pool
		w := st.Workers
		if w.Total != n || w.Idle+w.Busy != n || w.Starting+w.Exited+w.Failed != 0 {
			t.Fatalf("sample %d: Stats().Pool.Workers = %+v, want %d ready", samples, w, n)
		}
		if st.Restarts != 0 {
			t.Fatalf("sample %d: Stats().Pool.Restarts = %d (%v), want 0", samples, st.Restarts, st.RestartReasons)
		}
	}
	cancel()
	wg.Wait()
	if calls.Load() < 100 || failures.Load() != 0 {
		t.Errorf("%d calls, %d failures during the sampling", calls.Load(), failures.Load())
	}
	t.Logf("%d samples over %s, %d calls", samples, time.Since(began).Round(time.Millisecond), calls.Load())
}

// Guarantee: start/stop cycles on one registry leave nothing behind: each
// run has a fresh run id, no process survives any stop, and a clean stop
// leaves nothing in the registry for the next start to reap.
func TestRepeatedStartStopCyclesLeaveNoSurvivors(t *testing.T) {
	path := filepath.Join(t.TempDir(), "registry.db")
	seen := map[string]bool{}
	for cycle := range 5 {
		in := startInstance(t, snakepit.Config{Workers: 2, RegistryPath: path})
		if seen[in.RunID()] {
			t.Fatalf("cycle %d: run id %s was already used", cycle, in.RunID())
		}
		seen[in.RunID()] = true
		if r := in.Stats().Reap; r.Runs != 0 || r.Reaped+r.Descendants+r.SkippedReused+r.AlreadyGone != 0 {
			t.Errorf("cycle %d: the previous clean stop left work for the reaper: %+v", cycle, r)
		}
		spawnGrandchildren(t, in, 1, inGroup)
		if got := len(testRunProcs(t, in)); got != 3 {
			t.Fatalf("cycle %d: %d processes carry the run id, want 2 workers + 1 grandchild", cycle, got)
		}
		in.stop(t) // zero survivors right after Stop
		if t.Failed() {
			t.FailNow()
		}
	}
	runs, recs := registryContents(t, path)
	if len(runs) != 0 || len(recs) != 0 {
		t.Errorf("registry after 5 clean cycles holds runs %+v and records %+v, want none", runs, recs)
	}
}

// Guarantee: ApplicationCleanup runs only after the pool has stopped and
// reaped its workers (the original ran it first and SIGKILLed live workers),
// before the registry closes, and on a correct stop finds nothing.
func TestCleanupRunsAfterWorkersStoppedAndFindsNothing(t *testing.T) {
	const n = 4
	in := startInstance(t, snakepit.Config{Workers: n})
	// Calls in flight at Stop: the pool drains them before its workers go.
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for range n {
		wg.Go(func() {
			_, err := in.Execute(context.Background(), "sleep", map[string]any{"ms": 300})
			errs <- err
		})
	}
	waitFor(t, 10*time.Second, "all workers busy", func() bool { return in.Stats().Pool.InFlight == n })

	rep := in.stop(t)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("in-flight call at Stop failed: %v (the pool should drain it within the grace)", err)
		}
	}

	index := map[string]int{}
	for i, c := range rep.Children {
		index[c.Child] = i
		if c.Err != nil {
			t.Errorf("child %s stopped with %v", c.Child, c.Err)
		}
		if c.Finished.Before(c.Started) {
			t.Errorf("child %s finished before it started stopping: %+v", c.Child, c)
		}
	}
	for _, name := range []string{"workers", "bridge", "cleanup", "registry"} {
		if _, ok := index[name]; !ok {
			t.Fatalf("StopReport.Children lacks %q: %+v", name, rep.Children)
		}
	}
	w, c, r := rep.Children[index["workers"]], rep.Children[index["cleanup"]], rep.Children[index["registry"]]
	if !(index["workers"] < index["cleanup"] && index["cleanup"] < index["registry"]) {
		t.Errorf("stop order %v: want workers before cleanup before registry", names(rep))
	}
	if c.Started.Before(w.Finished) {
		t.Errorf("cleanup started stopping at %s, before the workers child finished at %s", c.Started.Format(time.StampMicro), w.Finished.Format(time.StampMicro))
	}
	if r.Started.Before(c.Finished) {
		t.Errorf("registry closed (from %s) before the cleanup finished (%s)", r.Started.Format(time.StampMicro), c.Finished.Format(time.StampMicro))
	}
	if rep.WorkersStoppedAt.IsZero() {
		t.Fatal("StopReport.WorkersStoppedAt is zero")
	}
	if rep.WorkersStoppedAt.After(w.Finished) {
		t.Errorf("WorkersStoppedAt %s is after the workers child finished %s", rep.WorkersStoppedAt.Format(time.StampMicro), w.Finished.Format(time.StampMicro))
	}
	if rep.Cleanup.RanAt.Before(rep.WorkersStoppedAt) {
		t.Errorf("Cleanup.RanAt %s is before WorkersStoppedAt %s", rep.Cleanup.RanAt.Format(time.StampMicro), rep.WorkersStoppedAt.Format(time.StampMicro))
	}
	if rep.Cleanup.RunID != in.RunID() {
		t.Errorf("Cleanup.RunID = %q, want %q", rep.Cleanup.RunID, in.RunID())
	}
	if len(rep.Cleanup.Found) != 0 || rep.Cleanup.Killed != 0 || rep.Cleanup.Err() != nil {
		t.Errorf("cleanup report %+v, want nothing found", rep.Cleanup)
	}
	// The cleanup logs every survivor at Error level as a bug.
	if bad := in.logs.find(func(r logRecord) bool { return r.Attrs["component"] == "cleanup" && r.Level >= slog.LevelError }); len(bad) > 0 {
		t.Errorf("cleanup logged errors: %v", bad)
	}
}

func names(rep snakepit.StopReport) []string {
	var out []string
	for _, c := range rep.Children {
		out = append(out, c.Child)
	}
	return out
}
