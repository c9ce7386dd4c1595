package lifecycle

import (
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/snakepit-go/snakepit/internal/proc"
)

// Guarantee: `snakepit run` performs the ordered stop on the FIRST SIGTERM
// or SIGINT it receives: it exits 0, and when it has exited no process of
// its run is alive and its registry holds nothing (a clean stop, not a
// host death that the workers noticed by themselves).
func TestRunCommandStopsInOrderOnTheFirstSignal(t *testing.T) {
	bin := buildBinary(t, "snakepit", "github.com/snakepit-go/snakepit/cmd/snakepit")
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT} {
		t.Run(sig.String(), func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "registry.db")
			h := runHost(t, bin, "ready ", "run", "--workers", "2", "--registry", path, "--log-level", "warn")
			if h.fields["workers"] != "2" {
				t.Fatalf("ready line says workers=%s, want 2", h.fields["workers"])
			}
			if n := len(workerProcs(t, h.runID)); n != 2 {
				t.Fatalf("%d worker processes, want 2", n)
			}
			must(t, h.cmd.Process.Signal(sig))
			select {
			case <-h.done:
			case <-time.After(10 * time.Second):
				left, _ := proc.FindByRunID(h.runID)
				t.Fatalf("snakepit run did not exit within 10 s of one %v (its %d workers are still alive); the first signal was lost. stderr:\n%s",
					sig, len(left), h.stderr)
			}
			if code := h.cmd.ProcessState.ExitCode(); code != 0 {
				t.Errorf("snakepit run exited %d after %v; stderr:\n%s", code, sig, h.stderr)
			}
			if left, _ := proc.FindByRunID(h.runID); len(left) > 0 {
				t.Errorf("processes of run %s alive after snakepit run exited: %+v", h.runID, left)
			}
			if runs, recs := registryContents(t, path); len(runs) != 0 || len(recs) != 0 {
				t.Errorf("registry after snakepit run stopped: runs %+v, records %+v; want none (a clean stop)", runs, recs)
			}
			for _, m := range startFailureMarkers {
				if strings.Contains(h.stderr.String(), m) {
					t.Errorf("snakepit run logged %q:\n%s", m, h.stderr)
				}
			}
		})
	}
}

// Guarantee: SIGHUP makes `snakepit run` reload — every worker process is
// replaced by a new one (make-before-break), the outcome is printed, and
// the command keeps running; the old processes are gone, and a later
// SIGTERM still stops it cleanly.
func TestRunCommandReloadsOnSIGHUP(t *testing.T) {
	bin := buildBinary(t, "snakepit", "github.com/snakepit-go/snakepit/cmd/snakepit")
	path := filepath.Join(t.TempDir(), "registry.db")
	h := runHost(t, bin, "ready ", "run", "--workers", "2", "--registry", path, "--log-level", "warn")
	before := pidSet(workerProcs(t, h.runID))
	if len(before) != 2 {
		t.Fatalf("%d worker processes, want 2", len(before))
	}
	must(t, h.cmd.Process.Signal(syscall.SIGHUP))
	waitFor(t, 30*time.Second, "the reload to be reported", func() bool {
		return strings.Contains(h.stderr.String(), "reload: ok recycled=2")
	})
	waitFor(t, 20*time.Second, "the old worker processes to be replaced", func() bool {
		now := pidSet(workerProcs(t, h.runID))
		for p := range before {
			if now[p] {
				return false
			}
		}
		return len(now) == 2
	})
	if h.exited() {
		t.Fatalf("snakepit run exited on SIGHUP; stderr:\n%s", h.stderr)
	}
	must(t, h.cmd.Process.Signal(syscall.SIGTERM))
	select {
	case <-h.done:
	case <-time.After(10 * time.Second):
		t.Fatalf("snakepit run did not stop after the reload; stderr:\n%s", h.stderr)
	}
	if code := h.cmd.ProcessState.ExitCode(); code != 0 {
		t.Errorf("snakepit run exited %d; stderr:\n%s", code, h.stderr)
	}
	if left, _ := proc.FindByRunID(h.runID); len(left) > 0 {
		t.Errorf("processes of run %s alive after snakepit run exited: %+v", h.runID, left)
	}
}
