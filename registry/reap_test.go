package registry

import (
	"context"
	"encoding/json"
	"errors"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/snakepit-go/snakepit/internal/proc"
	"github.com/snakepit-go/snakepit/internal/proc/proctest"
)

// deadRun records workers under runID the way a host that then crashed
// would: fill runs the registry, and Close keeps the run because records
// are left.
func deadRunWith(t *testing.T, path, runID string, fill func(r *Registry)) {
	t.Helper()
	log, _ := proctest.Logger(t)
	r, err := Open(Options{Path: path, RunID: runID, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	fill(r)
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func TestReapVerifiedOrphanAndGroupMate(t *testing.T) {
	path := filepath.Join(t.TempDir(), "r.db")
	old := NewRunID()
	c := proctest.Start(t, proctest.Spec{Args: proctest.RunIDArgs(old), EnvRunID: old, GroupMates: 1})
	deadRunWith(t, path, old, func(r *Registry) {
		must(t, r.Reserve("w1"))
		must(t, r.Activate("w1", c.PID))
	})

	r := open(t, path, NewRunID())
	rep, err := r.ReapOrphans(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if rep.Runs != 1 || rep.Reaped != 1 || rep.SkippedReused != 0 || rep.AlreadyGone != 0 {
		t.Fatalf("report %+v", rep)
	}
	c.WaitAllGone(5 * time.Second)
	if recs, _ := r.RunRecords(old); len(recs) != 0 {
		t.Fatalf("records of the reaped run left: %+v", recs)
	}
	runs, _ := r.Runs()
	if len(runs) != 1 || runs[0].RunID != r.RunID() {
		t.Fatalf("runs left: %+v", runs)
	}
}

func TestReapSweepsDescendantsAndReservedOnlyWorkers(t *testing.T) {
	path := filepath.Join(t.TempDir(), "r.db")
	old := NewRunID()
	// w1 is recorded; one of its children moved to its own session, so the
	// group kill cannot reach it, but it inherited the run id.
	w1 := proctest.Start(t, proctest.Spec{Args: proctest.RunIDArgs(old), EnvRunID: old, OwnGroup: 1})
	// w2 was forked but the host died before Activate.
	w2 := proctest.Start(t, proctest.Spec{Args: proctest.RunIDArgs(old), EnvRunID: old})
	deadRunWith(t, path, old, func(r *Registry) {
		must(t, r.Reserve("w1"))
		must(t, r.Activate("w1", w1.PID))
		must(t, r.Reserve("w2"))
	})

	r := open(t, path, NewRunID())
	rep, err := r.ReapOrphans(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if rep.Reaped != 1 || rep.Descendants < 2 {
		t.Fatalf("report %+v", rep)
	}
	w1.WaitAllGone(5 * time.Second)
	w2.WaitAllGone(5 * time.Second)
	if recs, _ := r.Records(); len(recs) != 0 {
		t.Fatalf("records left: %+v", recs)
	}
}

// The PID-reuse guard: records pointing at processes that are not the
// recorded worker are dropped and nothing is signalled.
func TestReapNeverSignalsUnverifiedRecords(t *testing.T) {
	path := filepath.Join(t.TempDir(), "r.db")
	old := NewRunID()
	unrelated := proctest.Start(t, proctest.Spec{})
	otherRun := proctest.Start(t, proctest.Spec{Args: proctest.RunIDArgs(NewRunID())})
	deadRunWith(t, path, old, func(r *Registry) {
		must(t, r.Reserve("a"))
		must(t, r.Activate("a", unrelated.PID)) // right start time, no run id
		must(t, r.Reserve("b"))
		must(t, r.Activate("b", otherRun.PID)) // right start time, another run id
	})

	r := open(t, path, NewRunID())
	rep, err := r.ReapOrphans(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if rep.SkippedReused != 2 || rep.Reaped != 0 || rep.Descendants != 0 {
		t.Fatalf("report %+v", rep)
	}
	if recs, _ := r.Records(); len(recs) != 0 {
		t.Fatalf("unverified records kept: %+v", recs)
	}
	unrelated.AssertNotSignalled()
	otherRun.AssertNotSignalled()
}

// deadRunWithWrongStartTime records, for a dead run, a live process that
// carries that run's id under a record whose start time is off by one.
func deadRunWithWrongStartTime(t *testing.T) (string, *proctest.Child) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "r.db")
	old := NewRunID()
	c := proctest.Start(t, proctest.Spec{Args: proctest.RunIDArgs(old), EnvRunID: old})
	deadRunWith(t, path, old, func(r *Registry) {
		must(t, r.Reserve("c"))
		must(t, r.Activate("c", c.PID))
		rec, _, err := r.lookup("c")
		must(t, err)
		rec.StartTime--
		put(t, r, bucketWorkers, old+"/c", string(encode(rec)))
	})
	return path, c
}

// (c) of the guard: the process carries the dead run id, but the record's
// start time is wrong. The record step must refuse it.
func TestRecordWithWrongStartTimeIsNotSignalled(t *testing.T) {
	path, c := deadRunWithWrongStartTime(t)
	r := open(t, path, NewRunID())
	rp, err := r.newReaper()
	must(t, err)
	rp.stopRecorded(context.Background())
	if rp.rep.SkippedReused != 1 || rp.rep.Reaped != 0 || !strings.Contains(strings.Join(rp.rep.Details, "\n"), "start time") {
		t.Fatalf("report %+v", rp.rep)
	}
	c.AssertNotSignalled()
}

// The full pass differs from the record step for such a process: it still
// carries the dead run's id, which proves it belongs to that run (run ids
// are never reused), so the /proc sweep stops it — as it must, or a worker
// whose record was damaged would survive forever.
func TestSweepStopsRunIDCarrierDespiteBadRecord(t *testing.T) {
	path, c := deadRunWithWrongStartTime(t)
	r := open(t, path, NewRunID())
	rep, err := r.ReapOrphans(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if rep.SkippedReused != 1 || rep.Reaped != 0 || rep.Descendants < 1 {
		t.Fatalf("report %+v", rep)
	}
	c.WaitAllGone(5 * time.Second)
}

func TestReapNeverTouchesCurrentRun(t *testing.T) {
	path := filepath.Join(t.TempDir(), "r.db")
	old := NewRunID()
	orphan := proctest.Start(t, proctest.Spec{Args: proctest.RunIDArgs(old), EnvRunID: old})
	deadRunWith(t, path, old, func(r *Registry) {
		must(t, r.Reserve("w"))
		must(t, r.Activate("w", orphan.PID))
	})

	cur := NewRunID()
	r := open(t, path, cur)
	mine := proctest.Start(t, proctest.Spec{Args: proctest.RunIDArgs(cur), EnvRunID: cur, GroupMates: 1})
	must(t, r.Reserve("w"))
	must(t, r.Activate("w", mine.PID))
	must(t, r.Reserve("pending"))

	rep, err := r.ReapOrphans(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if rep.Runs != 1 || rep.Reaped != 1 {
		t.Fatalf("report %+v", rep)
	}
	orphan.WaitAllGone(5 * time.Second)
	recs, err := r.RunRecords(cur)
	if err != nil || len(recs) != 2 {
		t.Fatalf("current run records: %+v, %v", recs, err)
	}
	mine.AssertNotSignalled()
}

func TestReapCountsAlreadyGone(t *testing.T) {
	path := filepath.Join(t.TempDir(), "r.db")
	old := NewRunID()
	c := proctest.Start(t, proctest.Spec{Args: proctest.RunIDArgs(old)})
	deadRunWith(t, path, old, func(r *Registry) {
		must(t, r.Reserve("w"))
		must(t, r.Activate("w", c.PID))
	})
	must(t, proc.SignalVerified(c.Identity(old), syscall.SIGKILL))
	c.WaitExited(5 * time.Second)

	r := open(t, path, NewRunID())
	rep, err := r.ReapOrphans(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	// A recycled pid would show as SkippedReused instead; either way nothing
	// is signalled and the record goes.
	if rep.AlreadyGone+rep.SkippedReused != 1 || rep.Reaped != 0 {
		t.Fatalf("report %+v", rep)
	}
	if recs, _ := r.Records(); len(recs) != 0 {
		t.Fatalf("records left: %+v", recs)
	}
}

func TestServiceLifecycle(t *testing.T) {
	path := filepath.Join(t.TempDir(), "r.db")
	old := NewRunID()
	c := proctest.Start(t, proctest.Spec{Args: proctest.RunIDArgs(old), EnvRunID: old})
	deadRunWith(t, path, old, func(r *Registry) {
		must(t, r.Reserve("w"))
		must(t, r.Activate("w", c.PID))
	})

	log, _ := proctest.Logger(t)
	s := NewService(Options{Path: path, Logger: log})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	served := make(chan error, 1)
	go func() { served <- s.Serve(ctx) }()
	select {
	case <-s.Ready():
	case <-s.Done():
		t.Fatalf("Serve ended early: %v", s.startError())
	case <-time.After(10 * time.Second):
		t.Fatal("not ready")
	}
	if rep, err := s.LastReap(), s.reapError(); err != nil || rep.Reaped != 1 {
		t.Fatalf("LastReap = %+v, %v", rep, err)
	}
	c.WaitAllGone(5 * time.Second)
	reg := s.Registry()
	must(t, reg.Reserve("w1"))
	must(t, reg.Unregister("w1"))

	// A second instance on the same file fails to start, visibly.
	s2 := NewService(Options{Path: path, Logger: log, LockTimeout: 100 * time.Millisecond})
	err := s2.Serve(context.Background())
	if !errors.Is(err, ErrLocked) || !errors.Is(s2.startError(), ErrLocked) {
		t.Fatalf("second Serve = %v, StartErr = %v", err, s2.startError())
	}
	select {
	case <-s2.Done():
	default:
		t.Fatal("Done not closed after a failed start")
	}
	select {
	case <-s2.Ready():
		t.Fatal("Ready closed after a failed start")
	default:
	}

	cancel()
	select {
	case err := <-served:
		if err != nil {
			t.Fatalf("Serve = %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return after cancel")
	}
	<-s.Done()
	if err := reg.Reserve("w2"); !errors.Is(err, errClosed) {
		t.Fatalf("Reserve after stop = %v", err)
	}
	if err := s.Serve(context.Background()); !errors.Is(err, errServedTwice) {
		t.Fatalf("second Serve = %v", err)
	}
}

func FuzzDecodeRecord(f *testing.F) {
	good := encode(Record{RunID: "r1", WorkerID: "w/1", State: StateActive, PID: 42, PGID: 42, StartTime: 7, BootID: "b", HostPID: 3, Created: time.Unix(1, 0).UTC()})
	f.Add([]byte("r1/w/1"), good)
	f.Add([]byte("r1/w"), []byte(`{"run_id":"r1","worker_id":"w","state":"reserved"}`))
	f.Add([]byte("r1"), []byte(`{}`))
	f.Add([]byte("r1/w"), []byte(`{"run_id":"r1","worker_id":"w","state":"active","pid":-1}`))
	f.Add([]byte("/"), []byte(`null`))
	f.Fuzz(func(t *testing.T, key, value []byte) {
		rec, err := decodeRecord(key, value)
		if err != nil {
			if !errors.Is(err, errMalformed) {
				t.Fatalf("error %v does not wrap errMalformed", err)
			}
			return
		}
		if rec.RunID+"/"+rec.WorkerID != string(key) {
			t.Fatalf("record %+v under key %q", rec, key)
		}
		if rec.State == StateActive && rec.PID <= 0 {
			t.Fatalf("active record without pid accepted: %+v", rec)
		}
		// What decodes re-encodes to something that decodes the same.
		b, err := json.Marshal(rec)
		if err != nil {
			return // e.g. a time outside what JSON can hold; decoding was still safe
		}
		again, err := decodeRecord(key, b)
		if err != nil {
			t.Fatalf("re-encoded record does not decode: %v", err)
		}
		b2, _ := json.Marshal(again)
		if string(b) != string(b2) {
			t.Fatalf("round trip changed the record:\n%s\n%s", b, b2)
		}
	})
}
