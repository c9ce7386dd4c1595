package lifecycle

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"github.com/snakepit-go/snakepit/internal/testutil"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/snakepit-go/snakepit"
	"github.com/snakepit-go/snakepit/internal/proc"
	"github.com/snakepit-go/snakepit/internal/proc/proctest"
	"github.com/snakepit-go/snakepit/registry"
)

// hostProc is a host process (testdata/host or `snakepit run`) started by
// the test, with what it printed on its first stdout line.
type hostProc struct {
	cmd    *exec.Cmd
	done   chan struct{}
	stderr *testutil.Buffer
	fields map[string]string // key=value pairs of the first stdout line
	runID  string
	kids   []pidStart
	kind   map[pidStart]string // which spawn tool made each of kids
}

// exited reports whether the host has exited and been reaped.
func (h *hostProc) exited() bool {
	select {
	case <-h.done:
		return true
	default:
		return false
	}
}

// runHost starts bin with args and waits (60 s at most) for its first
// stdout line, which must start with prefix and carry run_id=<id>. At the
// end of the test the host is SIGKILLed if still running — it is our own
// child, not yet reaped, so its pid cannot have been recycled — and then
// nothing may carry its run id (its workers get 3 s to notice).
func runHost(t *testing.T, bin, prefix string, args ...string) *hostProc {
	t.Helper()
	h := &hostProc{done: make(chan struct{}), stderr: &testutil.Buffer{}, fields: map[string]string{}, kind: map[pidStart]string{}}
	h.cmd = exec.Command(bin, args...)
	h.cmd.Stderr = h.stderr
	out, err := h.cmd.StdoutPipe()
	must(t, err)
	must(t, h.cmd.Start())
	go func() {
		_ = h.cmd.Wait()
		close(h.done)
	}()
	t.Cleanup(func() {
		if !h.exited() {
			_ = h.cmd.Process.Signal(syscall.SIGKILL)
			<-h.done
		}
		if h.runID == "" {
			return
		}
		// A dead host's cgroup directories wait for the next reap; tests
		// that do not reap its file must not leave them on the machine.
		defer testutil.EndRunCgroups(t, h.runID)
		deadline := time.Now().Add(3 * time.Second)
		for time.Now().Before(deadline) {
			if ps, _ := proc.FindByRunID(h.runID); len(ps) == 0 {
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
		testutil.KillRunSurvivors(t, h.runID)
	})
	lines := make(chan string, 1)
	go func() {
		line, _ := bufio.NewReader(out).ReadString('\n')
		lines <- line
		_, _ = io.Copy(io.Discard, out)
	}()
	var line string
	select {
	case line = <-lines:
	case <-time.After(60 * time.Second):
		t.Fatalf("%s printed no line within 60 s; stderr:\n%s", bin, h.stderr)
	}
	for _, f := range strings.Fields(line) {
		if k, v, ok := strings.Cut(f, "="); ok {
			h.fields[k] = v
		}
	}
	h.runID = h.fields["run_id"]
	if !strings.HasPrefix(line, prefix) || h.runID == "" {
		t.Fatalf("%s printed %q, want %q… run_id=<id>; stderr:\n%s", bin, line, prefix, h.stderr)
	}
	return h
}

// startHost runs the helper host binary on path with the lifecycle
// adapter, has its workers start inGroupKids grandchildren in their process
// groups and ownGroupKids that leave them, and waits for its line.
func startHost(t *testing.T, path string, workers, inGroupKids, ownGroupKids int, extra ...string) *hostProc {
	t.Helper()
	bin := buildBinary(t, "host", "./testdata/host")
	args := append([]string{"-registry", path, "-workers", strconv.Itoa(workers),
		"-grandchildren", strconv.Itoa(inGroupKids), "-session-grandchildren", strconv.Itoa(ownGroupKids),
		"-adapter", lifecycleAdapter, "-pythonpath", lifecycleAdapterPath(t),
		"-callers", strconv.Itoa(2 * workers), "-sleep-ms", "200"}, extra...)
	h := runHost(t, bin, "HOST ", args...)
	for key, want := range map[string]int{"grandchildren": inGroupKids, "session_grandchildren": ownGroupKids} {
		var got []string
		if v := h.fields[key]; v != "" {
			got = strings.Split(v, ",")
		}
		if len(got) != want {
			t.Fatalf("host reported %s=%v, want %d pids", key, got, want)
		}
		for _, s := range got {
			pid, err := strconv.Atoi(s)
			if err != nil {
				t.Fatalf("host line %v: bad pid %q", h.fields, s)
			}
			k := identify(t, pid)
			h.kids = append(h.kids, k)
			h.kind[k] = key
			// A just-exec'd process shows its environ a moment late: poll.
			waitFor(t, 2*time.Second, fmt.Sprintf("grandchild %d to carry run id %s", pid, h.runID), func() bool {
				return proc.CarriesRunID(pid, h.runID)
			})
		}
	}
	return h
}

// Guarantee: when the host is killed with SIGKILL — no Stop, no cleanup,
// calls in flight — every process of its run, workers and grandchildren
// (in the worker's process group and out of it), is gone within 2 s by
// itself (pdeathsig from the locked spawner thread, stdin EOF and the
// parent-pid watch in the worker, which kills its descendants); and
// whatever a dead run left recorded in the registry is reaped,
// identity-verified, when the next instance starts on that file.
//
// Known to fail now and then (about 1 run in 10 under -race -count=5): a
// worker sometimes dies by a second parent-death SIGTERM in the middle of
// killing its descendants; TestWorkerStoppingOnRepeatedSIGTERMStillKillsItsDescendants
// reproduces that deterministically.
func TestHostKilledUnderLoadLeavesNoProcessWithinTwoSeconds(t *testing.T) {
	const n = 4
	path := filepath.Join(t.TempDir(), "registry.db")
	h := startHost(t, path, n, n, n)

	workers := hostWorkers(t, h, n)
	killHostAndAssertRunGone(t, h, workers, 2*time.Second)

	// The killed host could not unregister its workers: its run and its n
	// records stay in the file for the next start.
	runs, recs := registryContents(t, path)
	if len(runs) != 1 || runs[0].RunID != h.runID || len(recs) != n {
		t.Fatalf("registry after the host's death: runs %+v, %d records; want the host's run with %d records", runs, len(recs), n)
	}

	// Leftovers of another dead run, made deterministically: a recorded
	// worker (a process group: leader plus a group mate, and a child that
	// left the group with setsid and carries the run id only in its
	// environment), and a worker the dead host had reserved but not yet
	// activated when it died.
	old := registry.NewRunID()
	recorded := startLeftover(t, proctest.Spec{Args: proctest.RunIDArgs(old), EnvRunID: old, GroupMates: 1, OwnGroup: 1})
	pending := startLeftover(t, proctest.Spec{Args: proctest.RunIDArgs(old), EnvRunID: old})
	plantDeadRun(t, path, old, func(r *registry.Registry) {
		must(t, r.Reserve("w0"))
		must(t, r.Activate("w0", recorded.PID))
		must(t, r.Reserve("w1"))
	})

	in := startInstance(t, snakepit.Config{Workers: 2, RegistryPath: path})
	rep := in.Stats().Reap
	t.Logf("startup reap: %+v", rep)
	if rep.Runs != 2 || rep.Reaped != 1 || rep.Descendants < 2 || rep.AlreadyGone+rep.SkippedReused != n {
		t.Errorf("Stats().Reap = %+v; want 2 dead runs, the recorded leftover reaped, >= 2 descendants (the setsid child, the unactivated worker), %d already gone (the killed host's workers)", rep, n)
	}
	// Reaping finished before Start returned: nothing of either dead run is
	// alive now (poll only for the zombie leaders to be reaped by us).
	recorded.WaitAllGone(2 * time.Second)
	pending.WaitAllGone(2 * time.Second)
	if ps, _ := proc.FindByRunID(old, h.runID); len(ps) > 0 {
		t.Errorf("processes of dead runs alive after the next start: %+v", ps)
	}
	in.stop(t)
	runs, recs = registryContents(t, path)
	if len(runs) != 0 || len(recs) != 0 {
		t.Errorf("registry after the reap and a clean stop: runs %+v, records %+v; want none", runs, recs)
	}
}

// Guarantee: the parent-death signal alone stops the workers of a killed
// host. With the worker's own host-death watchers (stdin EOF, parent pid)
// switched off by the test-only SNAKEPIT_TEST_IGNORE_HOST_DEATH=1, only the
// kernel's SIGTERM can end them — which it delivers only if the worker was
// forked from a thread that lived until the host died (internal/spawn's
// locked thread). The worker's SIGTERM path then kills its descendants.
func TestParentDeathSignalAloneStopsWorkersOfKilledHost(t *testing.T) {
	const n = 2
	path := filepath.Join(t.TempDir(), "registry.db")
	h := startHost(t, path, n, n, n, "-no-host-death-watch")
	workers := hostWorkers(t, h, n)
	for _, w := range workers {
		env, err := proc.Environ(w.PID)
		must(t, err)
		if !slices.Contains(env, "SNAKEPIT_TEST_IGNORE_HOST_DEATH=1") {
			t.Fatalf("worker %d does not have the watchers switched off", w.PID)
		}
	}
	// SIGTERM starts a graceful stop: in-flight calls get up to
	// SNAKEPIT_STOP_GRACE_S (1.5 s) before the worker kills its descendants
	// and exits; the host's calls are sleep(200 ms).
	killHostAndAssertRunGone(t, h, workers, 2*time.Second)
}

// Guarantee: `snakepit reap --registry PATH` does the same reap without
// starting a pool, on a registry no live instance holds, and prints its
// counts; a second reap finds nothing left.
func TestReapCommandStopsLeftoversOfDeadRuns(t *testing.T) {
	bin := buildBinary(t, "snakepit", "github.com/snakepit-go/snakepit/cmd/snakepit")
	path := filepath.Join(t.TempDir(), "registry.db")
	old := registry.NewRunID()
	leftover := startLeftover(t, proctest.Spec{Args: proctest.RunIDArgs(old), EnvRunID: old, GroupMates: 1, OwnGroup: 1})
	plantDeadRun(t, path, old, func(r *registry.Registry) {
		must(t, r.Reserve("w0"))
		must(t, r.Activate("w0", leftover.PID))
	})

	counts := func() map[string]int {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		var stderr bytes.Buffer
		cmd := exec.CommandContext(ctx, bin, "reap", "--registry", path)
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("snakepit reap: %v\nstdout:\n%s\nstderr:\n%s", err, out, stderr.String())
		}
		first, _, _ := strings.Cut(string(out), "\n")
		if !strings.Contains(first, path) {
			t.Errorf("reap output does not name the registry %s: %q", path, first)
		}
		m := map[string]int{}
		for _, f := range strings.Fields(first) {
			if k, v, ok := strings.Cut(f, "="); ok {
				if n, err := strconv.Atoi(v); err == nil {
					m[k] = n
				}
			}
		}
		for _, k := range []string{"runs", "reaped", "descendants", "skipped_reused_pid", "already_gone", "cgroups", "cgroup_procs"} {
			if _, ok := m[k]; !ok {
				t.Fatalf("reap output lacks %s=: %q", k, first)
			}
		}
		return m
	}

	got := counts()
	// The planted run has no cgroup (its processes were started by the test).
	want := map[string]int{"runs": 1, "reaped": 1, "descendants": 1, "skipped_reused_pid": 0, "already_gone": 0, "cgroups": 0, "cgroup_procs": 0}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("snakepit reap counts %v, want %v", got, want)
	}
	leftover.WaitAllGone(2 * time.Second)
	if ps, _ := proc.FindByRunID(old); len(ps) > 0 {
		t.Errorf("processes of the dead run alive after snakepit reap: %+v", ps)
	}
	if runs, recs := registryContents(t, path); len(runs) != 0 || len(recs) != 0 {
		t.Errorf("registry after snakepit reap: runs %+v, records %+v; want none", runs, recs)
	}
	if again := counts(); again["runs"]+again["reaped"]+again["descendants"] != 0 {
		t.Errorf("second snakepit reap found work: %v", again)
	}
}

// hostWorkers returns the host's n worker processes, checked to be its
// children.
func hostWorkers(t *testing.T, h *hostProc, n int) []proc.Process {
	t.Helper()
	workers := workerProcs(t, h.runID)
	if len(workers) != n {
		t.Fatalf("host runs %d workers, want %d", len(workers), n)
	}
	for _, w := range workers {
		if w.PPID != h.cmd.Process.Pid {
			t.Fatalf("worker %d has parent %d, not the host %d", w.PID, w.PPID, h.cmd.Process.Pid)
		}
	}
	return workers
}

// killHostAndAssertRunGone SIGKILLs the host (our own child, not yet
// reaped, so its pid cannot have been recycled) and asserts that within
// limit no process carries its run id — workers and grandchildren.
func killHostAndAssertRunGone(t *testing.T, h *hostProc, workers []proc.Process, limit time.Duration) {
	t.Helper()
	known := map[pidStart]string{}
	for _, w := range workers {
		known[pidStart{w.PID, w.StartTime}] = "worker"
	}
	for _, k := range h.kids {
		known[k] = h.kind[k]
	}
	must(t, h.cmd.Process.Signal(syscall.SIGKILL))
	killedAt := time.Now()
	<-h.done
	// Gone means: nothing carries the run id, and every process we know of
	// is dead (an exiting process loses its argv and environment a moment
	// before it is a zombie).
	var left []proc.Process
	var alive []pidStart
	for {
		var err error
		left, err = proc.FindByRunID(h.runID)
		must(t, err)
		alive = alive[:0]
		for p := range known {
			if p.alive() {
				alive = append(alive, p)
			}
		}
		if len(left)+len(alive) == 0 || time.Since(killedAt) > limit {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	took := time.Since(killedAt)
	for _, p := range left {
		t.Errorf("process of the killed host's run alive %s after SIGKILL: pid %d ppid %d pgid %d (%s): %s; %s",
			took.Round(time.Millisecond), p.PID, p.PPID, p.PGID, known[pidStart{p.PID, p.StartTime}], p.Cmdline, procStatus(p.PID))
	}
	for _, p := range alive {
		t.Errorf("%s %d alive %s after the host's SIGKILL; %s", known[p], p.PID, took.Round(time.Millisecond), procStatus(p.PID))
	}
	if t.Failed() {
		t.FailNow()
	}
	t.Logf("every process of run %s gone %s after the host's SIGKILL", h.runID, took.Round(time.Millisecond))
	for _, m := range startFailureMarkers {
		if strings.Contains(h.stderr.String(), m) {
			t.Errorf("host logged %q:\n%s", m, h.stderr)
		}
	}
}

// procStatus summarises /proc/PID/status for a failure message.
func procStatus(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return err.Error()
	}
	var keep []string
	for _, l := range strings.Split(string(b), "\n") {
		for _, k := range []string{"State:", "PPid:", "NSsid:", "SigPnd:", "ShdPnd:", "SigBlk:", "SigIgn:"} {
			if strings.HasPrefix(l, k) {
				keep = append(keep, strings.Join(strings.Fields(l), " "))
			}
		}
	}
	return strings.Join(keep, ", ")
}
