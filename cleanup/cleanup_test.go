package cleanup_test

import (
	"context"
	"errors"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/snakepit-go/snakepit/cleanup"
	"github.com/snakepit-go/snakepit/internal/cgroup"
	"github.com/snakepit-go/snakepit/internal/proc"
	"github.com/snakepit-go/snakepit/internal/proc/proctest"
	"github.com/snakepit-go/snakepit/registry"
)

func TestMain(m *testing.M) { proctest.Main(m) }

func openRegistry(t *testing.T, runID string) *registry.Registry {
	t.Helper()
	log, _ := proctest.Logger(t)
	r, err := registry.Open(registry.Options{Path: filepath.Join(t.TempDir(), "r.db"), RunID: runID, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Close() })
	return r
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// A correct run: the worker was spawned, recorded, stopped, reaped and
// unregistered before cleanup ran. The sweep finds nothing.
func TestCorrectRunFindsNothing(t *testing.T) {
	runID := registry.NewRunID()
	reg := openRegistry(t, runID)
	w := proctest.Start(t, proctest.Spec{Args: proctest.RunIDArgs(runID), EnvRunID: runID, GroupMates: 1})
	must(t, reg.Reserve("w1"))
	must(t, reg.Activate("w1", w.PID))
	out, err := proc.TerminateGroup(context.Background(), w.Identity(runID), 2*time.Second)
	if out != proc.Terminated || err != nil {
		t.Fatalf("stopping the worker: %v, %v", out, err)
	}
	w.WaitAllGone(5 * time.Second)
	must(t, reg.Unregister("w1"))

	log, buf := proctest.Logger(t)
	s := cleanup.New(cleanup.Options{RunID: runID, Registry: fixed(reg), Logger: log})
	rep := serveAndStop(t, s)
	if len(rep.Found) != 0 || rep.Killed != 0 || len(rep.Errors) != 0 || rep.Err() != nil || rep.RanAt.IsZero() {
		t.Fatalf("report %+v", rep)
	}
	if strings.Contains(buf.String(), "level=ERROR") {
		t.Fatalf("errors logged on a clean run:\n%s", buf)
	}
}

// serveAndStop runs s like a supervisor would and returns its report.
func serveAndStop(t *testing.T, s *cleanup.Service) cleanup.Report {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- s.Serve(ctx) }()
	select {
	case <-s.Ready():
	case <-time.After(5 * time.Second):
		t.Fatal("not ready")
	}
	if _, ok := s.Report(); ok {
		t.Fatal("report before the sweep")
	}
	cancel()
	select {
	case err := <-served:
		must(t, err)
	case <-time.After(30 * time.Second):
		t.Fatal("Serve did not return")
	}
	<-s.Done()
	rep, ok := s.Report()
	if !ok {
		t.Fatal("no report after Serve")
	}
	if err := s.Serve(context.Background()); !errors.Is(err, cleanup.ErrServedTwice) {
		t.Fatalf("second Serve = %v", err)
	}
	return rep
}

// A process left behind that carries the run id only in its environment
// (like a grandchild of a worker) is found by the /proc scan and killed.
func TestSurvivorIsFoundAndKilled(t *testing.T) {
	runID := registry.NewRunID()
	left := proctest.Start(t, proctest.Spec{EnvRunID: runID, GroupMates: 1})
	log, buf := proctest.Logger(t)
	s := cleanup.New(cleanup.Options{RunID: runID, Logger: log, KillGrace: time.Second})
	rep := serveAndStop(t, s)

	if !hasPID(rep.Found, left.PID) || rep.Killed < 1 {
		t.Fatalf("report %+v", rep)
	}
	err := rep.Err()
	if !errors.Is(err, cleanup.ErrSurvivors) {
		t.Fatalf("Err() = %v, want ErrSurvivors", err)
	}
	left.WaitAllGone(5 * time.Second)
	logs := buf.String()
	if !strings.Contains(logs, "level=ERROR") || !strings.Contains(logs, "survivor of run "+runID+" found at shutdown; this is a bug") || !strings.Contains(logs, "sleep 300") {
		t.Fatalf("survivor not reported as a bug:\n%s", logs)
	}
}

// A worker still recorded as active, whose children do not carry the run
// id: the record leads to it, the group kill takes its children, and the
// record is deleted.
func TestRecordedSurvivorIsKilledAndUnregistered(t *testing.T) {
	runID := registry.NewRunID()
	reg := openRegistry(t, runID)
	w := proctest.Start(t, proctest.Spec{Args: proctest.RunIDArgs(runID), GroupMates: 1, IgnoreTERM: true})
	must(t, reg.Reserve("w1"))
	must(t, reg.Activate("w1", w.PID))
	must(t, reg.Reserve("never-spawned"))

	log, _ := proctest.Logger(t)
	rep := cleanup.New(cleanup.Options{RunID: runID, Registry: fixed(reg), Logger: log, KillGrace: 200 * time.Millisecond}).Sweep()
	if len(rep.Found) != 1 || rep.Found[0].PID != w.PID || rep.Killed != 1 || !errors.Is(rep.Err(), cleanup.ErrSurvivors) {
		t.Fatalf("report %+v", rep)
	}
	w.WaitAllGone(5 * time.Second)
	if recs, err := reg.RunRecords(runID); err != nil || len(recs) != 0 {
		t.Fatalf("records left: %+v, %v", recs, err)
	}
}

// Processes of another run (another instance, or a previous run not yet
// reaped) and processes without any run id are never touched, even when the
// registry holds records for them.
func TestOtherRunsAreNeverTouched(t *testing.T) {
	runID, other := registry.NewRunID(), registry.NewRunID()
	otherProc := proctest.Start(t, proctest.Spec{Args: proctest.RunIDArgs(other), EnvRunID: other, GroupMates: 1})
	prefixProc := proctest.Start(t, proctest.Spec{Args: proctest.RunIDArgs(runID + "0"), EnvRunID: runID[:len(runID)-1]})
	plain := proctest.Start(t, proctest.Spec{})
	reg := openRegistry(t, runID)
	// A bogus record of this run pointing at the plain process.
	must(t, reg.Reserve("bogus"))
	must(t, reg.Activate("bogus", plain.PID))

	log, _ := proctest.Logger(t)
	rep := cleanup.New(cleanup.Options{RunID: runID, Registry: fixed(reg), Logger: log}).Sweep()
	if len(rep.Found) != 0 || rep.Killed != 0 || rep.Err() != nil {
		t.Fatalf("report %+v", rep)
	}
	otherProc.AssertNotSignalled()
	prefixProc.AssertNotSignalled()
	plain.AssertNotSignalled()
	if recs, _ := reg.RunRecords(runID); len(recs) != 0 {
		t.Fatalf("bogus record kept: %+v", recs)
	}
}

func TestClosedRegistryStillSweepsProc(t *testing.T) {
	runID := registry.NewRunID()
	reg := openRegistry(t, runID)
	must(t, reg.Close())
	left := proctest.Start(t, proctest.Spec{EnvRunID: runID})
	log, _ := proctest.Logger(t)
	rep := cleanup.New(cleanup.Options{RunID: runID, Registry: fixed(reg), Logger: log, KillGrace: time.Second}).Sweep()
	if !hasPID(rep.Found, left.PID) || len(rep.Errors) == 0 || !strings.Contains(rep.Errors[0], "closed") {
		t.Fatalf("report %+v", rep)
	}
	left.WaitAllGone(5 * time.Second)
}

func TestNoRunIDSweepsNothing(t *testing.T) {
	plain := proctest.Start(t, proctest.Spec{})
	log, _ := proctest.Logger(t)
	rep := cleanup.New(cleanup.Options{Logger: log}).Sweep()
	if len(rep.Found) != 0 || len(rep.Errors) != 1 {
		t.Fatalf("report %+v", rep)
	}
	plain.AssertNotSignalled()
}

func TestSurvivorsErrorMessage(t *testing.T) {
	rep := cleanup.Report{RunID: "r", Found: []cleanup.Survivor{{PID: 7}}, Killed: 1}
	var se *cleanup.SurvivorsError
	if err := rep.Err(); !errors.As(err, &se) || se.RunID != "r" || len(se.PIDs) != 1 || !strings.Contains(err.Error(), "7") {
		t.Fatalf("Err() = %v", err)
	}
}

func hasPID(ps []cleanup.Survivor, pid int) bool {
	for _, p := range ps {
		if p.PID == pid {
			return true
		}
	}
	return false
}

func fixed(r *registry.Registry) func() *registry.Registry {
	return func() *registry.Registry { return r }
}

// With cgroup containment, a process left in the run's cgroups is the
// run's by construction: found (though it carries no run id), reported
// and ended with cgroup.kill.
func TestSweepEndsWhatIsLeftInTheRunsCgroups(t *testing.T) {
	if d := cgroup.Detect(); !d.Mode.Contained() {
		t.Skipf("no cgroup v2 here: %s", d.Reason)
	}
	runID := registry.NewRunID()
	reg := openRegistry(t, runID)
	must(t, reg.Contain(registry.ContainRequired, []registry.PoolLimits{{Name: "default"}}))
	leaf, err := reg.Cgroups().NewLeaf("default", "w0")
	must(t, err)
	cmd := exec.Command("sleep", "300")
	cmd.Env = []string{} // nothing that proves it ours
	cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: leaf.FD()}
	must(t, cmd.Start())
	leaf.CloseFD()
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() { _ = cmd.Process.Kill(); <-done }) // our unreaped child

	log, _ := proctest.Logger(t)
	rep := cleanup.New(cleanup.Options{RunID: runID, Registry: fixed(reg), Logger: log}).Sweep()
	if len(rep.Found) != 1 || rep.Found[0].PID != cmd.Process.Pid || rep.Killed != 1 || !errors.Is(rep.Err(), cleanup.ErrSurvivors) {
		t.Fatalf("report %+v, want the sleeper %d found and killed", rep, cmd.Process.Pid)
	}
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("the sleeper in the run's cgroup survived the sweep")
	}
}
