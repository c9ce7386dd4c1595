package registry

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/snakepit-go/snakepit/internal/cgroup"
	"github.com/snakepit-go/snakepit/internal/proc"
	"github.com/snakepit-go/snakepit/internal/proc/proctest"
)

func needCgroups(t *testing.T) cgroup.Detection {
	t.Helper()
	d := cgroup.Detect()
	if !d.Mode.Contained() {
		t.Skipf("no cgroup v2 here: %s", d.Reason)
	}
	return d
}

func TestContainFollowsThePolicy(t *testing.T) {
	path := filepath.Join(t.TempDir(), "r.db")
	r := open(t, path, NewRunID())
	if err := r.Contain("bogus", nil); !errors.Is(err, ErrContainment) {
		t.Fatalf("Contain(bogus) = %v, want ErrContainment", err)
	}
	t.Setenv(EnvContainment, ContainOff)
	if err := r.Contain("", []PoolLimits{{Name: "big", MemoryMax: 1 << 30}}); !errors.Is(err, ErrContainment) {
		t.Fatalf("a limit with containment off: %v, want ErrContainment", err)
	}
	must(t, r.Contain("", nil))
	if r.Containment() != string(cgroup.ModeOff) || r.Cgroups() != nil {
		t.Fatalf("with %s=off: containment %q, cgroups %v", EnvContainment, r.Containment(), r.Cgroups())
	}
	if err := r.Contain("", nil); !errors.Is(err, ErrContainment) {
		t.Fatalf("a second Contain: %v, want ErrContainment", err)
	}
	must(t, r.Close())
}

// Of two pools with different limits, the refusal names the one whose
// controller is missing, with the controller and the cgroup; with
// containment off it names the first pool that set a limit.
func TestRefusedLimitNamesItsPool(t *testing.T) {
	d := needCgroups(t)
	sub := readFile(filepath.Join(d.Base, "cgroup.subtree_control"))
	if strings.Contains(sub, "memory") {
		t.Skip("the memory controller is delegated here")
	}
	pools := []PoolLimits{{Name: "default"}, {Name: "tok", CPUMax: 0.5}, {Name: "embed", MemoryMax: 1 << 30}}
	if !strings.Contains(sub, "cpu") {
		pools[1].CPUMax = 0 // then tok would be refused first
	}
	r := open(t, filepath.Join(t.TempDir(), "r.db"), NewRunID())
	err := r.Contain(ContainAuto, pools)
	if !errors.Is(err, ErrContainment) {
		t.Fatalf("Contain: %v, want ErrContainment", err)
	}
	for _, want := range []string{`pool "embed"`, "memory controller", d.Base} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("refusal %q does not name %s", err, want)
		}
	}
	if r.Cgroups() != nil {
		t.Error("a refused Contain set up cgroups")
	}
	must(t, r.Close())

	t.Setenv(EnvContainment, ContainOff)
	r = open(t, filepath.Join(t.TempDir(), "r.db"), NewRunID())
	pools[1].CPUMax = 0.5
	if err := r.Contain("", pools); !errors.Is(err, ErrContainment) || !strings.Contains(err.Error(), `pool "tok"`) {
		t.Fatalf("limits with containment off: %v, want ErrContainment naming pool tok", err)
	}
	must(t, r.Close())
}

func readFile(path string) string {
	b, _ := os.ReadFile(path)
	return string(b)
}

// A dead run's cgroup is found from its registry entry; what is still in
// it — a process that left its session and scrubbed its environment, which
// nothing else could prove ours — is killed, and the directory removed. A
// directory named for a run the file does not know is never touched.
func TestReapEndsTheCgroupOfADeadRun(t *testing.T) {
	d := needCgroups(t)
	path := filepath.Join(t.TempDir(), "r.db")
	dead := NewRunID()
	log, _ := proctest.Logger(t)
	r, err := Open(Options{Path: path, RunID: dead, Logger: log})
	must(t, err)
	must(t, r.Contain(ContainRequired, []PoolLimits{{Name: "default"}, {Name: "embed"}}))
	dir := r.Cgroups().Dir()
	leaf, err := r.Cgroups().NewLeaf("embed", "embed.w0")
	must(t, err)
	cmd := exec.Command("/bin/sh", "-c", `env -i setsid sleep 300 </dev/null >/dev/null 2>&1 & echo $!; wait`)
	cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: leaf.FD()}
	out, err := cmd.StdoutPipe()
	must(t, err)
	must(t, cmd.Start())
	leaf.CloseFD()
	var sleeper int
	_, err = fmt.Fscan(out, &sleeper)
	must(t, err)
	start, err := proc.StartTime(sleeper)
	must(t, err)
	t.Cleanup(func() {
		if proctest.Alive(sleeper, start) {
			_ = syscall.Kill(sleeper, syscall.SIGKILL)
		}
	})
	_ = cmd.Process.Kill()
	_ = cmd.Wait()

	// The host "crashes": its watchdog dies with it (the case the reap is
	// for), and the file is closed without Close.
	_ = syscall.Kill(r.wd.PID(), syscall.SIGKILL) // our child, reaped only by its Done goroutine
	<-r.wd.Done()
	r.closed.Store(true)
	must(t, r.db.Close())

	foreign := filepath.Join(d.Base, cgroup.RunDirName(NewRunID()))
	must(t, os.Mkdir(foreign, 0o755))
	t.Cleanup(func() { _ = os.Remove(foreign) })

	r2 := open(t, path, NewRunID())
	rep, err := r2.ReapOrphans(context.Background())
	must(t, err)
	must(t, r2.Close())
	if rep.Cgroups != 1 || rep.CgroupProcs != 1 {
		t.Fatalf("reap: %+v, want 1 cgroup with 1 process", rep)
	}
	if proctest.Alive(sleeper, start) {
		t.Fatal("the scrubbed sleeper survived the reap")
	}
	// Orphaned, it was adopted by this test binary (a subreaper): reap it.
	if st, err := proc.ReadStat(sleeper); err == nil && st.StartTime == start && st.PPID == os.Getpid() {
		_, _ = syscall.Wait4(sleeper, nil, 0, nil)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the dead run's cgroup %s is still there", dir)
	}
	if _, err := os.Stat(foreign); err != nil {
		t.Fatalf("a cgroup of no dead run was touched: %v", err)
	}
}

// Close of a contained run kills what is left in its cgroup and removes it.
func TestCloseRemovesTheRunsCgroup(t *testing.T) {
	needCgroups(t)
	r := open(t, filepath.Join(t.TempDir(), "r.db"), NewRunID())
	must(t, r.Contain(ContainAuto, nil))
	if !cgroup.Mode(r.Containment()).Contained() {
		t.Fatalf("containment %q on a machine with cgroup v2", r.Containment())
	}
	dir := r.Cgroups().Dir()
	leaf, err := r.Cgroups().NewLeaf("default", "w0")
	must(t, err)
	cmd := exec.Command("sleep", "300")
	cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: leaf.FD()}
	must(t, cmd.Start())
	leaf.CloseFD()
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	must(t, r.Close())
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = cmd.Process.Kill()
		t.Fatal("a process left in the run's cgroup survived Close")
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("%s left after Close", dir)
	}
}
