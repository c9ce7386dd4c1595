package lifecycle

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/snakepit-go/snakepit"
	"github.com/snakepit-go/snakepit/internal/proc/proctest"
	"github.com/snakepit-go/snakepit/registry"
)

// Guarantee (the PID-reuse guard): the startup reaper signals a recorded
// process only if its identity verifies — same boot, same start time, the
// dead run's id in argv or environ. A record of a dead run that points at
//
//	(a) a live unrelated process (no run id at all),
//	(b) a live process carrying another run id (e.g. another instance's worker),
//	(c) a live process whose start time differs from the record's,
//
// is dropped and its process never signalled.
//
// For (c) the process carries a run id that is not one of the file's dead
// runs: the start-time check is the one that fails first (the report says
// "start time"), and nothing else could legitimately claim it. A process that
// does carry the dead run's id is that run's by proof (run ids are never
// reused), so the reaper's /proc sweep stops it even when its record is
// wrong — case (d) asserts exactly that, and docs/GUARANTEES.md explains it.
func TestStartupReaperNeverSignalsUnprovenProcesses(t *testing.T) {
	path := filepath.Join(t.TempDir(), "registry.db")
	dead := registry.NewRunID()
	stranger := registry.NewRunID() // a run id that is in no registry

	unrelated := startLeftover(t, proctest.Spec{GroupMates: 1})                                                          // (a)
	otherRun := startLeftover(t, proctest.Spec{Args: proctest.RunIDArgs(stranger), EnvRunID: stranger, GroupMates: 1})   // (b)
	wrongStart := startLeftover(t, proctest.Spec{Args: proctest.RunIDArgs(stranger), EnvRunID: stranger, GroupMates: 1}) // (c)
	deadRunCarrier := startLeftover(t, proctest.Spec{Args: proctest.RunIDArgs(dead), EnvRunID: dead, GroupMates: 1})     // (d)
	plantDeadRun(t, path, dead, func(r *registry.Registry) {
		for id, c := range map[string]*proctest.Child{"a": unrelated, "b": otherRun, "c": wrongStart, "d": deadRunCarrier} {
			must(t, r.Reserve(id))
			must(t, r.Activate(id, c.PID)) // records the true start time
		}
	})
	for _, id := range []string{"c", "d"} {
		patchRecord(t, path, dead, id, func(r *registry.Record) { r.StartTime-- })
	}

	in := startInstance(t, snakepit.Config{Workers: 2, RegistryPath: path})
	rep := in.Stats().Reap
	t.Logf("startup reap: %+v", rep)
	if rep.Runs != 1 || rep.SkippedReused != 4 || rep.Reaped != 0 || rep.AlreadyGone != 0 {
		t.Errorf("Stats().Reap = %+v; want 1 dead run, 4 records skipped as not ours, none reaped", rep)
	}
	detail := func(worker string) string {
		for _, d := range rep.Details {
			if strings.Contains(d, " worker "+worker+" ") {
				return d
			}
		}
		return ""
	}
	for id, check := range map[string]string{"a": "run id", "b": "run id", "c": "start time", "d": "start time"} {
		d := detail(id)
		if !strings.Contains(d, "not signalled") || !strings.Contains(d, check+" check failed") {
			t.Errorf("reap detail for record %s = %q; want it not signalled for its %s", id, d, check)
		}
	}
	// (d): the sweep stopped it by its run id (with its group), not by the record.
	if rep.Descendants < 1 {
		t.Errorf("Stats().Reap.Descendants = %d; the process carrying the dead run id must be swept", rep.Descendants)
	}
	deadRunCarrier.WaitAllGone(2 * time.Second)

	in.stop(t)
	// Every one of those records is dropped, with the dead run.
	runs, recs := registryContents(t, path)
	if len(runs) != 0 || len(recs) != 0 {
		t.Errorf("registry after the reap: runs %+v, records %+v; want none", runs, recs)
	}
	// Proof that (a)-(c) were never signalled: they and their group mates
	// are alive, and each leader dies of the SIGKILL this test sends now,
	// not of anything sent earlier.
	unrelated.AssertNotSignalled()
	otherRun.AssertNotSignalled()
	wrongStart.AssertNotSignalled()
}
