package lifecycle

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/snakepit-go/snakepit"
	"github.com/snakepit-go/snakepit/internal/proc"
	"github.com/snakepit-go/snakepit/registry"
)

// Guarantee: a corrupt registry file never stops the application: it is
// moved aside as <path>.corrupt-<time> with a warning naming where, and a
// fresh registry takes its place.
func TestCorruptRegistryIsMovedAsideAndAppStarts(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "registry.db")
	garbage := bytes.Repeat([]byte("this is not a bbolt file \x00\xff\x13\x37 "), 1024)
	must(t, os.WriteFile(path, garbage, 0o600))

	in := startInstance(t, snakepit.Config{Workers: 2, RegistryPath: path})
	moved, err := filepath.Glob(path + ".corrupt-*")
	must(t, err)
	if len(moved) != 1 {
		t.Fatalf("want one %s.corrupt-* file, found %v", path, moved)
	}
	if b, err := os.ReadFile(moved[0]); err != nil || !bytes.Equal(b, garbage) {
		t.Errorf("%s does not hold the corrupt file's bytes (err %v)", moved[0], err)
	}
	warned := in.logs.find(func(r logRecord) bool {
		return strings.Contains(r.Msg, "corrupt") && r.Attrs["moved_to"] == moved[0]
	})
	if len(warned) != 1 {
		t.Errorf("want one log record saying the registry was moved to %s; got %v", moved[0], warned)
	}
	if rep := in.Stats().Reap; rep.Runs != 0 {
		t.Errorf("reap of the fresh registry: %+v", rep)
	}
	if _, err := in.Execute(ctxFor(t, 10*time.Second), "ping", nil); err != nil {
		t.Fatal(err)
	}
	in.stop(t)
	// The fresh file is a working registry: the next start uses it as is.
	again := startInstance(t, snakepit.Config{Workers: 1, RegistryPath: path})
	again.stop(t)
	if moved2, _ := filepath.Glob(path + ".corrupt-*"); len(moved2) != 1 {
		t.Errorf("the fresh registry was moved aside again: %v", moved2)
	}
}

// Guarantee: one live instance per registry file. A second App on the same
// file fails to start within a few seconds with ErrRegistryLocked naming
// the path (and the holder), starts no worker process, and leaves the first
// instance untouched; `snakepit reap` refuses the locked file the same way.
func TestSecondInstanceOnLockedRegistryFailsWithoutWorkers(t *testing.T) {
	path := filepath.Join(t.TempDir(), "registry.db")
	first := startInstance(t, snakepit.Config{Workers: 2, RegistryPath: path})
	firstProcs := pidSet(testRunProcs(t, first))

	second := newInstance(t, snakepit.Config{Workers: 2, RegistryPath: path})
	// Watch the process table for the second run id for as long as its
	// Start takes.
	stopWatch := make(chan struct{})
	var watched sync.WaitGroup
	var seen []proc.Process
	watched.Go(func() {
		for {
			ps, _ := proc.FindByRunID(second.RunID())
			seen = append(seen, ps...)
			select {
			case <-stopWatch:
				return
			case <-time.After(10 * time.Millisecond):
			}
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	began := time.Now()
	err := second.Start(ctx)
	took := time.Since(began)
	close(stopWatch)
	watched.Wait()
	if err == nil {
		second.stop(t)
		t.Fatal("a second instance started on a locked registry")
	}
	if !errors.Is(err, snakepit.ErrRegistryLocked) {
		t.Errorf("Start error %v does not match ErrRegistryLocked", err)
	}
	if !strings.Contains(err.Error(), path) {
		t.Errorf("Start error does not name the registry %s: %v", path, err)
	}
	var le *registry.LockedError
	if !errors.As(err, &le) {
		t.Errorf("Start error is not a *registry.LockedError: %T", err)
	} else if le.HolderPID != os.Getpid() || le.HolderRunID != first.RunID() {
		t.Errorf("LockedError names holder pid %d run %q; want this process (%d) and run %s", le.HolderPID, le.HolderRunID, os.Getpid(), first.RunID())
	}
	if took > 5*time.Second {
		t.Errorf("the second Start took %s to fail", took)
	}
	if len(seen) > 0 {
		t.Errorf("the refused instance started processes: %+v", seen)
	}
	if st := second.Stats().Pool.Workers; st.Total != 0 {
		t.Errorf("the refused instance has workers: %+v", st)
	}
	t.Logf("second Start failed after %s: %v", took.Round(time.Millisecond), err)

	// The CLI reaper refuses the live instance's file too.
	bin := buildBinary(t, "snakepit", "github.com/snakepit-go/snakepit/cmd/snakepit")
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, bin, "reap", "--registry", path)
	cmd.Stderr = &stderr
	if out, err := cmd.Output(); err == nil {
		t.Errorf("snakepit reap succeeded on a locked registry:\n%s", out)
	} else if !strings.Contains(stderr.String(), "locked") || !strings.Contains(stderr.String(), path) {
		t.Errorf("snakepit reap on a locked registry: %v, stderr:\n%s", err, stderr.String())
	}

	// The first instance noticed nothing.
	for p := range firstProcs {
		if !p.alive() {
			t.Errorf("process %d of the first instance is gone", p.PID)
		}
	}
	if st := first.Stats().Pool; st.Restarts != 0 || st.Workers.Idle != 2 {
		t.Errorf("first instance: restarts %d, workers %+v", st.Restarts, st.Workers)
	}
	if _, err := first.Execute(ctx, "ping", nil); err != nil {
		t.Errorf("first instance ping: %v", err)
	}
}
