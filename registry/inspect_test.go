package registry

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// Inspect reads without writing: a missing file stays missing, a locked
// one is ErrLocked naming its holder, a free one lists runs and records.
func TestInspect(t *testing.T) {
	path := filepath.Join(t.TempDir(), "r.db")
	if _, _, err := Inspect(path, 100*time.Millisecond); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("missing file: %v, want os.ErrNotExist", err)
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("Inspect created the file")
	}
	runID := NewRunID()
	r := open(t, path, runID)
	if err := r.Reserve("w1"); err != nil {
		t.Fatal(err)
	}
	_, _, err := Inspect(path, 100*time.Millisecond)
	var le *LockedError
	if !errors.Is(err, ErrLocked) || !errors.As(err, &le) || le.HolderPID != os.Getpid() {
		t.Fatalf("locked file: %v, want a *LockedError naming pid %d", err, os.Getpid())
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	runs, recs, err := Inspect(path, 100*time.Millisecond)
	if err != nil || len(runs) != 1 || runs[0].RunID != runID || len(recs) != 1 || recs[0].WorkerID != "w1" || recs[0].State != StateReserved {
		t.Fatalf("Inspect after Close: runs %+v, records %+v, %v", runs, recs, err)
	}
}
