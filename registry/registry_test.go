package registry

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/snakepit-go/snakepit/internal/proc"
	"github.com/snakepit-go/snakepit/internal/proc/proctest"
	bolt "go.etcd.io/bbolt"
)

func TestMain(m *testing.M) { proctest.Main(m) }

func open(t testing.TB, path, runID string) *Registry {
	t.Helper()
	log, _ := proctest.Logger(t)
	r, err := Open(Options{Path: path, RunID: runID, Logger: log, KillGrace: 2 * time.Second})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = r.Close() })
	return r
}

func TestNewRunID(t *testing.T) {
	seen := map[string]bool{}
	for range 10000 {
		id := NewRunID()
		if len(id) > 20 || strings.Trim(id, "abcdefghijklmnopqrstuvwxyz0123456789-") != "" || validRunID(id) != nil {
			t.Fatalf("bad run id %q", id)
		}
		if seen[id] {
			t.Fatalf("run id %q repeated", id)
		}
		seen[id] = true
	}
}

func TestNames(t *testing.T) {
	for _, bad := range []string{"", "-x", ".x", "a/b", "a b", "a=b", "ä", strings.Repeat("a", 65)} {
		if !errors.Is(validRunID(bad), ErrInvalidName) || !errors.Is(ValidInstance(bad), ErrInvalidName) {
			t.Errorf("%q accepted", bad)
		}
	}
	for _, good := range []string{"a", "default", "my_app.prod-2", "lx3k9m2a-0f3c9a1b"} {
		if validRunID(good) != nil || ValidInstance(good) != nil {
			t.Errorf("%q rejected", good)
		}
	}
}

func TestDefaultPath(t *testing.T) {
	t.Setenv("SNAKEPIT_STATE_DIR", "")
	t.Setenv("XDG_STATE_HOME", "")
	t.Setenv("HOME", "/home/u")
	check := func(instance, want string) {
		t.Helper()
		if got := DefaultPath(instance); got != want {
			t.Errorf("DefaultPath(%q) = %q; want %q", instance, got, want)
		}
	}
	check("", "/home/u/.local/state/snakepit/default.db")
	t.Setenv("XDG_STATE_HOME", "relative/ignored")
	check("x", "/home/u/.local/state/snakepit/x.db")
	t.Setenv("XDG_STATE_HOME", "/xdg")
	check("x", "/xdg/snakepit/x.db")
	t.Setenv("SNAKEPIT_STATE_DIR", "/state")
	check("x", "/state/x.db")
	if p := DefaultPath("../etc"); p != "" {
		t.Errorf("DefaultPath(../etc) = %q, want \"\"", p)
	}
	if _, err := Open(Options{Path: DefaultPath("../etc"), Instance: "../etc"}); !errors.Is(err, ErrInvalidName) {
		t.Errorf("Open with an invalid instance = %v, want ErrInvalidName", err)
	}
}

func TestReserveActivateUnregister(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state", "r.db")
	runID := NewRunID()
	r := open(t, path, runID)
	c := proctest.Start(t, proctest.Spec{Args: proctest.RunIDArgs(runID), EnvRunID: runID})

	if err := r.Activate("w1", c.PID); !errors.Is(err, errNotReserved) {
		t.Fatalf("Activate before Reserve = %v, want ErrNotReserved", err)
	}
	if err := r.Reserve("w1"); err != nil {
		t.Fatal(err)
	}
	rec, ok, err := r.lookup("w1")
	if err != nil || !ok || rec.State != StateReserved || rec.PID != 0 || rec.HostPID != os.Getpid() || rec.HostStartTime == 0 || rec.Created.IsZero() {
		t.Fatalf("after Reserve: %+v %v %v", rec, ok, err)
	}
	if err := r.Activate("w1", c.PID); err != nil {
		t.Fatal(err)
	}
	rec, _, _ = r.lookup("w1")
	boot, _ := proc.BootID()
	if rec.State != StateActive || rec.PID != c.PID || rec.PGID != c.PID || rec.StartTime != c.StartTime || rec.BootID != boot || rec.RunID != runID {
		t.Fatalf("after Activate: %+v", rec)
	}
	if err := proc.Verify(rec.Identity()); err != nil {
		t.Fatalf("record does not verify: %v", err)
	}
	if err := r.Reserve("w1"); !errors.Is(err, errStillActive) {
		t.Fatalf("Reserve over a live worker = %v, want ErrStillActive", err)
	}
	all, err := r.Records()
	if err != nil || len(all) != 1 {
		t.Fatalf("Records = %+v, %v", all, err)
	}
	if err := r.Unregister("w1"); err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := r.lookup("w1"); ok {
		t.Fatal("record still there after Unregister")
	}
	if err := r.Unregister("w1"); err != nil {
		t.Fatalf("second Unregister = %v", err)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if err := r.Reserve("w2"); !errors.Is(err, errClosed) {
		t.Fatalf("Reserve after Close = %v, want ErrClosed", err)
	}

	// No records were left, so the run entry went with Close.
	r2 := open(t, path, NewRunID())
	runs, _ := r2.Runs()
	for _, run := range runs {
		if run.RunID == runID {
			t.Fatalf("run entry of a cleanly closed run kept: %+v", run)
		}
	}
}

func TestStaleActiveRecordIsReplaced(t *testing.T) {
	runID := NewRunID()
	r := open(t, filepath.Join(t.TempDir(), "r.db"), runID)
	c := proctest.Start(t, proctest.Spec{Args: proctest.RunIDArgs(runID)})
	if err := r.Reserve("w"); err != nil {
		t.Fatal(err)
	}
	if err := r.Activate("w", c.PID); err != nil {
		t.Fatal(err)
	}
	if err := proc.SignalVerified(c.Identity(runID), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	c.WaitExited(5 * time.Second)
	if err := r.Reserve("w"); err != nil {
		t.Fatalf("Reserve over an exited worker's record = %v", err)
	}
	if rec, _, _ := r.lookup("w"); rec.State != StateReserved {
		t.Fatalf("record %+v", rec)
	}
}

func TestConcurrentWrites(t *testing.T) {
	r := open(t, filepath.Join(t.TempDir(), "r.db"), NewRunID())
	var wg sync.WaitGroup
	for i := range 50 {
		wg.Go(func() {
			id := "w" + string(rune('a'+i%26)) + string(rune('a'+i/26))
			if err := r.Reserve(id); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	recs, err := r.Records()
	if err != nil || len(recs) != 50 {
		t.Fatalf("Records: %d, %v", len(recs), err)
	}
}

func TestFileModes(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "a", "b")
	path := filepath.Join(dir, "r.db")
	open(t, path, NewRunID())
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("file mode %v, %v; want 0600", fi.Mode(), err)
	}
	di, err := os.Stat(dir)
	if err != nil || di.Mode().Perm() != 0o700 {
		t.Fatalf("dir mode %v, %v; want 0700", di.Mode(), err)
	}
}

func TestSecondOpenIsLocked(t *testing.T) {
	path := filepath.Join(t.TempDir(), "r.db")
	first := open(t, path, NewRunID())
	start := time.Now()
	_, err := Open(Options{Path: path, Logger: slog.New(slog.DiscardHandler)})
	took := time.Since(start)
	if !errors.Is(err, ErrLocked) {
		t.Fatalf("second Open = %v, want ErrLocked", err)
	}
	if took > 1500*time.Millisecond {
		t.Errorf("second Open took %v", took)
	}
	var le *LockedError
	if !errors.As(err, &le) || le.Path != path || !strings.Contains(err.Error(), path) {
		t.Fatalf("error %v does not name the path", err)
	}
	if le.HolderPID != os.Getpid() || le.HolderRunID != first.RunID() {
		t.Errorf("holder = pid %d run %q, want pid %d run %q", le.HolderPID, le.HolderRunID, os.Getpid(), first.RunID())
	}
	if !strings.Contains(err.Error(), "Instance") {
		t.Errorf("error does not say what to do: %v", err)
	}
}

func TestCorruptFileIsMovedAside(t *testing.T) {
	for name, content := range map[string][]byte{
		"short":   []byte("this is not a bbolt file"),
		"garbage": bytes.Repeat([]byte("\xde\xad\xbe\xef"), 8192),
		"zeros":   make([]byte, 32768),
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "r.db")
			if err := os.WriteFile(path, content, 0o600); err != nil {
				t.Fatal(err)
			}
			log, buf := proctest.Logger(t)
			r, err := Open(Options{Path: path, Logger: log})
			if err != nil {
				t.Fatalf("Open of a corrupt file = %v", err)
			}
			defer r.Close()
			if err := r.Reserve("w"); err != nil {
				t.Fatalf("fresh registry unusable: %v", err)
			}
			moved, _ := filepath.Glob(path + ".corrupt-*")
			if len(moved) != 1 {
				t.Fatalf("moved-aside files: %v", moved)
			}
			if got, _ := os.ReadFile(moved[0]); !bytes.Equal(got, content) {
				t.Fatal("moved-aside file does not hold the original content")
			}
			if !strings.Contains(buf.String(), "level=WARN") || !strings.Contains(buf.String(), "corrupt") {
				t.Fatalf("no warning logged: %s", buf)
			}
		})
	}
}

// Damage inside a real registry (not just its header) is also caught at
// Open, by the full read of the buckets, rather than crashing a later reap.
func TestDamagedPagesAreMovedAside(t *testing.T) {
	path := filepath.Join(t.TempDir(), "r.db")
	r := open(t, path, NewRunID())
	for i := range 200 {
		if err := r.Reserve(strings.Repeat("x", 100) + string(rune('A'+i%50)) + string(rune('A'+i/50))); err != nil {
			t.Fatal(err)
		}
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(path)
	page := os.Getpagesize()
	for i := 2 * page; i < len(b); i++ { // keep both meta pages valid
		b[i] ^= 0x5a
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	log, _ := proctest.Logger(t)
	r2, err := Open(Options{Path: path, Logger: log})
	if err != nil {
		t.Fatalf("Open = %v", err)
	}
	defer r2.Close()
	if moved, _ := filepath.Glob(path + ".corrupt-*"); len(moved) != 1 {
		t.Fatalf("moved-aside files: %v", moved)
	}
}

func TestForeignBoltFileIsRefusedNotMoved(t *testing.T) {
	path := filepath.Join(t.TempDir(), "user.db")
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(tx *bolt.Tx) error { _, err := tx.CreateBucket([]byte("mine")); return err }); err != nil {
		t.Fatal(err)
	}
	db.Close()
	_, err = Open(Options{Path: path, Logger: slog.New(slog.DiscardHandler)})
	if !errors.Is(err, ErrNotRegistry) {
		t.Fatalf("Open = %v, want ErrNotRegistry", err)
	}
	if moved, _ := filepath.Glob(path + ".corrupt-*"); len(moved) != 0 {
		t.Fatalf("a foreign file was moved: %v", moved)
	}
}

func TestMalformedRecordsAreSkipped(t *testing.T) {
	path := filepath.Join(t.TempDir(), "r.db")
	old := NewRunID()
	r := open(t, path, old)
	if err := r.Reserve("good"); err != nil {
		t.Fatal(err)
	}
	put(t, r, bucketWorkers, old+"/bad", `{"run_id":`)
	put(t, r, bucketWorkers, old+"/wrong", `{"run_id":"x","worker_id":"y","state":"active","pid":1}`)
	put(t, r, bucketWorkers, "nokey", `{}`)
	put(t, r, bucketRuns, "zz", `not json`)
	log, buf := proctest.Logger(t)
	r.log = log
	recs, err := r.Records()
	if err != nil || len(recs) != 1 || recs[0].WorkerID != "good" {
		t.Fatalf("Records = %+v, %v", recs, err)
	}
	if !strings.Contains(buf.String(), "malformed") {
		t.Fatalf("no warning: %s", buf)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	// A later run reaps the malformed entries along with the dead run.
	r2 := open(t, path, NewRunID())
	if _, err := r2.ReapOrphans(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n := countKeys(t, r2, bucketWorkers); n != 0 {
		t.Fatalf("%d worker keys left after reaping", n)
	}
	if n := countKeys(t, r2, bucketRuns); n != 1 {
		t.Fatalf("%d run entries left, want only the current one", n)
	}
}

func put(t testing.TB, r *Registry, bucket []byte, k, v string) {
	t.Helper()
	if err := r.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucket).Put([]byte(k), []byte(v)) }); err != nil {
		t.Fatal(err)
	}
}

func countKeys(t testing.TB, r *Registry, bucket []byte) int {
	t.Helper()
	n := 0
	if err := r.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucket).ForEach(func(_, _ []byte) error { n++; return nil })
	}); err != nil {
		t.Fatal(err)
	}
	return n
}

// A caller tells "another instance runs" from "the registry cannot be used
// at all" with errors.Is alone, whatever the underlying cause.
func TestOpenFailuresOtherThanLockedAreUnavailable(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "plain")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	foreign := filepath.Join(dir, "foreign.db")
	db, err := bolt.Open(foreign, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(tx *bolt.Tx) error { _, err := tx.CreateBucket([]byte("mine")); return err }); err != nil {
		t.Fatal(err)
	}
	db.Close()
	for name, path := range map[string]string{
		"directory cannot be created": filepath.Join(file, "sub", "r.db"),
		"path is a directory":         dir,
		"foreign bbolt file":          foreign,
	} {
		t.Run(name, func(t *testing.T) {
			_, err := Open(Options{Path: path, Logger: slog.New(slog.DiscardHandler)})
			if !errors.Is(err, ErrUnavailable) || errors.Is(err, ErrLocked) {
				t.Fatalf("Open(%s) = %v; want ErrUnavailable, not ErrLocked", path, err)
			}
		})
	}
	r := open(t, filepath.Join(dir, "r.db"), NewRunID())
	_ = r.Close()
	if err := r.Reserve("w"); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Reserve after Close = %v; want ErrUnavailable", err)
	}
}
