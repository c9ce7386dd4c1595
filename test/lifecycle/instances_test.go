package lifecycle

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/snakepit-go/snakepit"
	"github.com/snakepit-go/snakepit/registry"
)

// Guarantee: two instances with different registries share a machine
// without touching each other. Starting, stopping and reaping instance A —
// even when A's registry holds dead-run records that name B's live workers,
// as a recycled pid would — leaves every process of B alive with the same
// start time, and B restarts nothing. (The original's "rogue cleanup"
// killed every worker-looking process without the current run id.)
func TestTwoInstancesNeverTouchEachOther(t *testing.T) {
	pathA := filepath.Join(t.TempDir(), "a.db")
	b := startInstance(t, snakepit.Config{Workers: 2})
	spawnGrandchildren(t, b, 2, inGroup)
	bProcs := testRunProcs(t, b)
	if len(bProcs) != 4 {
		t.Fatalf("B has %d processes, want 2 workers + 2 grandchildren", len(bProcs))
	}
	bWorkers := workerProcs(t, b.RunID())
	bSet := pidSet(bProcs)
	assertBUntouched := func(phase string) {
		t.Helper()
		for p := range bSet {
			if !p.alive() {
				t.Fatalf("%s: process %d of instance B (same start time) is gone", phase, p.PID)
			}
		}
		now := pidSet(testRunProcs(t, b))
		if len(now) != len(bSet) {
			t.Fatalf("%s: B has %d processes, had %d", phase, len(now), len(bSet))
		}
		st := b.Stats().Pool
		if st.Restarts != 0 || st.Workers.Idle != 2 {
			t.Fatalf("%s: B's pool: restarts %d, workers %+v", phase, st.Restarts, st.Workers)
		}
		if _, err := b.Execute(context.Background(), "ping", nil); err != nil {
			t.Fatalf("%s: B's ping: %v", phase, err)
		}
	}

	// A dead run in A's file whose records point at B's workers, with their
	// true start times: only the run id tells them apart.
	plantDeadRunNaming := func() string {
		dead := registry.NewRunID()
		plantDeadRun(t, pathA, dead, func(r *registry.Registry) {
			for i, w := range bWorkers {
				id := "b" + string(rune('0'+i))
				must(t, r.Reserve(id))
				must(t, r.Activate(id, w.PID))
			}
		})
		return dead
	}

	plantDeadRunNaming()
	a := startInstance(t, snakepit.Config{Workers: 2, RegistryPath: pathA})
	if rep := a.Stats().Reap; rep.Runs != 1 || rep.SkippedReused != len(bWorkers) || rep.Reaped+rep.Descendants != 0 {
		t.Errorf("A's startup reap = %+v; want B's workers skipped as not ours", rep)
	}
	assertBUntouched("after A started and reaped")
	spawnGrandchildren(t, a, 2, inGroup)
	assertBUntouched("while A runs")
	a.stop(t)
	assertBUntouched("after A stopped")

	// Reaping A's registry with no live instance (what `snakepit reap` does).
	plantDeadRunNaming()
	log, _ := newRecordingLogger()
	reg, err := registry.Open(registry.Options{Path: pathA, Logger: log})
	must(t, err)
	rep, err := reg.ReapOrphans(context.Background())
	must(t, reg.Close())
	must(t, err)
	if rep.Runs != 1 || rep.SkippedReused != len(bWorkers) || rep.Reaped+rep.Descendants != 0 {
		t.Errorf("reap of A's registry = %+v; want B's workers skipped as not ours", rep)
	}
	assertBUntouched("after A's registry was reaped")

	// A second life of A on its registry, and its stop.
	a2 := startInstance(t, snakepit.Config{Workers: 2, RegistryPath: pathA})
	assertBUntouched("after A restarted")
	a2.stop(t)
	assertBUntouched("after A stopped again")
}
