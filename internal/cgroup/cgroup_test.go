package cgroup

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestDetectReadsMountinfoAndOwnCgroup(t *testing.T) {
	dir := t.TempDir()
	cases := []struct {
		name, mounts, self string
		mode               Mode
		base               string
	}{
		{"pure v2", "36 25 0:31 / " + dir + " rw - cgroup2 cgroup2 rw\n", "0::/\n", ModeV2, dir},
		{"hybrid", "31 30 0:28 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu\n40 30 0:37 / " + dir + " rw - cgroup2 cgroup2 rw\n", "4:memory:/x\n0::/\n", ModeHybrid, dir},
		{"v1 only", "31 30 0:28 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu\n", "4:cpu:/\n", ModeNone, ""},
		{"no v2 line", "36 25 0:31 / " + dir + " rw - cgroup2 cgroup2 rw\n", "4:cpu:/\n", ModeNone, ""},
		{"sub-tree mount", "36 25 0:31 /kubepods/pod1 " + dir + " rw - cgroup2 cgroup2 rw\n", "0::/kubepods/pod1\n", ModeV2, dir},
		{"outside the mount", "36 25 0:31 /a " + dir + " rw - cgroup2 cgroup2 rw\n", "0::/b\n", ModeNone, ""},
	}
	oldM, oldS := mountinfo, procSelfCgroup
	t.Cleanup(func() { mountinfo, procSelfCgroup = oldM, oldS })
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			mountinfo, procSelfCgroup = filepath.Join(dir, "mountinfo"), filepath.Join(dir, "cgroup")
			if err := os.WriteFile(mountinfo, []byte(c.mounts), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(procSelfCgroup, []byte(c.self), 0o600); err != nil {
				t.Fatal(err)
			}
			d := Detect()
			if d.Mode != c.mode || d.Base != c.base {
				t.Fatalf("Detect() = %+v, want mode %s base %q", d, c.mode, c.base)
			}
			if d.Mode == ModeNone && d.Reason == "" {
				t.Fatal("a fallback without a reason")
			}
		})
	}
}

func TestLimitsAreWrittenInTheKernelsFormat(t *testing.T) {
	l := &Leaf{dir: t.TempDir(), fd: -1}
	if err := setLimits(l.dir, Limits{MemoryMax: 256 << 20, CPUMax: 0.5}); err != nil {
		t.Fatal(err)
	}
	for file, want := range map[string]string{"memory.max": "268435456", "cpu.max": "50000 100000"} {
		if b, _ := os.ReadFile(filepath.Join(l.dir, file)); string(b) != want {
			t.Errorf("%s = %q, want %q", file, b, want)
		}
	}
}

// liveRun makes a run subtree on this machine's cgroup v2 hierarchy, or
// skips; the test's cleanup removes it.
func liveRun(t *testing.T) *Run {
	t.Helper()
	d := Detect()
	if !d.Mode.Contained() {
		t.Skipf("no cgroup v2 here: %s", d.Reason)
	}
	var b [6]byte
	_, _ = rand.Read(b[:])
	r, err := NewRun(d, "test-"+hex.EncodeToString(b[:]), []Pool{{Name: "p"}})
	if errors.Is(err, ErrUnavailable) {
		t.Skipf("cgroup v2 not usable here: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := r.Close(5 * time.Second); err != nil {
			t.Error(err)
		}
		if _, err := os.Stat(r.Dir()); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("run directory %s left behind", r.Dir())
		}
	})
	return r
}

// startIn starts a shell in leaf (CLONE_INTO_CGROUP) that starts a setsid
// sleeper with an empty environment and prints its pid; returns both.
func startIn(t *testing.T, leaf *Leaf) (*exec.Cmd, int) {
	t.Helper()
	cmd := exec.Command("/bin/sh", "-c", `env -i setsid sleep 300 </dev/null >/dev/null 2>&1 & echo $!; wait`)
	cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: leaf.FD()}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	var pid int
	if _, err := fmt.Fscan(out, &pid); err != nil {
		t.Fatal(err)
	}
	return cmd, pid
}

func alive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	return len(f) > 0 && f[0] != "Z"
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// A descendant that left the session and scrubbed its environment stays
// in its process's cgroup; killing the leaf ends it, after its parent is
// gone too; Remove leaves nothing.
func TestLeafKillEndsAnEscapedScrubbedDescendant(t *testing.T) {
	r := liveRun(t)
	leaf, err := r.NewLeaf("p", "w0/a")
	if err != nil {
		t.Fatal(err)
	}
	if filepath.Base(leaf.Dir()) != "w0_a-1" {
		t.Fatalf("leaf %s, want w0_a-1", leaf.Dir())
	}
	cmd, sleeper := startIn(t, leaf)
	leaf.CloseFD()
	waitUntil(t, "the sleeper in its own session", func() bool {
		b, _ := os.ReadFile("/proc/" + strconv.Itoa(sleeper) + "/comm")
		return strings.TrimSpace(string(b)) == "sleep"
	})
	if got := r.Procs(); len(got) != 2 {
		t.Fatalf("run procs %v, want the shell %d and the sleeper %d", got, cmd.Process.Pid, sleeper)
	}
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
	if !alive(sleeper) || leaf.Empty() {
		t.Fatal("the sleeper should outlive its parent until the cgroup is killed")
	}
	began := time.Now()
	if err := leaf.Remove(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	t.Logf("sleeper gone and leaf removed %s after cgroup.kill", time.Since(began))
	if alive(sleeper) {
		t.Fatal("the sleeper survived cgroup.kill")
	}
	if _, err := os.Stat(leaf.Dir()); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("leaf %s left behind", leaf.Dir())
	}
}

// The watchdog kills the run's processes when its pipe reaches EOF (the
// host died) and nothing when told to stop.
func TestWatchdogKillsTheRunWhenTheHostIsGone(t *testing.T) {
	r := liveRun(t)
	leaf, err := r.NewLeaf("p", "w0")
	if err != nil {
		t.Fatal(err)
	}
	_, sleeper := startIn(t, leaf)
	leaf.CloseFD()

	polite, err := r.StartWatchdog()
	if err != nil {
		t.Fatal(err)
	}
	if err := polite.Stop(); err != nil {
		t.Fatal(err)
	}
	<-polite.Done()
	if !alive(sleeper) {
		t.Fatal("a stopped watchdog killed the run")
	}

	wd, err := r.StartWatchdog()
	if err != nil {
		t.Fatal(err)
	}
	_ = wd.w.Close() // what the host's death does
	began := time.Now()
	waitUntil(t, "the sleeper killed by the watchdog", func() bool { return !alive(sleeper) })
	t.Logf("sleeper gone %s after the watchdog's pipe closed", time.Since(began))
	<-wd.done
}

// EndDir touches only a directory named for the run and on cgroup2.
func TestEndDirRefusesWhatIsNotTheRunsCgroup(t *testing.T) {
	r := liveRun(t)
	other := strings.TrimPrefix(filepath.Base(r.Dir()), Prefix) + "x"
	if _, err := EndDir(r.Dir(), other, time.Second); err == nil {
		t.Fatal("EndDir accepted a directory named for another run")
	}
	fake := filepath.Join(t.TempDir(), RunDirName("r1"))
	if err := os.Mkdir(fake, 0o700); err != nil {
		t.Fatal(err)
	}
	if _, err := EndDir(fake, "r1", time.Second); err == nil {
		t.Fatal("EndDir accepted a directory that is no cgroup")
	}
	if _, err := os.Stat(fake); err != nil || !strings.HasPrefix(filepath.Base(r.Dir()), Prefix) {
		t.Fatal("a refused directory was touched")
	}
	d := Detect()
	id := strings.TrimPrefix(filepath.Base(r.Dir()), Prefix)
	if got := RunDirs(d, id, ""); len(got) != 1 || got[0] != r.Dir() {
		t.Fatalf("RunDirs = %v, want [%s]", got, r.Dir())
	}
	if got := RunDirs(d, id, fake); len(got) != 1 {
		t.Fatalf("RunDirs with a recorded non-cgroup = %v, want only the real one", got)
	}
}

// A limit whose controller is not delegated is a ControllerError and
// leaves nothing behind.
func TestLimitWithoutItsControllerIsRefused(t *testing.T) {
	d := Detect()
	if !d.Mode.Contained() {
		t.Skipf("no cgroup v2 here: %s", d.Reason)
	}
	if strings.Contains(readString(filepath.Join(d.Base, "cgroup.subtree_control")), "memory") {
		t.Skip("the memory controller is delegated here")
	}
	// The first pool has no limit; the refusal names the second.
	_, err := NewRun(d, "test-limit", []Pool{{Name: "free"}, {Name: "big", Limits: Limits{MemoryMax: 1 << 30}}})
	var ce *ControllerError
	if !errors.As(err, &ce) || ce.Controller != "memory" || ce.Pool != "big" || ce.Base != d.Base || !errors.Is(err, ErrUnavailable) {
		t.Fatalf("NewRun with pool big's MemoryMax: %v, want a ControllerError for pool big, memory, %s", err, d.Base)
	}
	for _, want := range []string{`pool "big"`, "MemoryMax", "memory controller", d.Base} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name %s", err, want)
		}
	}
	if _, err := os.Stat(filepath.Join(d.Base, RunDirName("test-limit"))); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("a refused run left its directory")
	}
}

// Each pool's directory carries its own limits in the kernel's format and
// passes memory accounting on to its leaves; a pool without limits writes
// no limit file.
func TestEachPoolDirCarriesItsLimits(t *testing.T) {
	r := &Run{dir: t.TempDir(), pools: map[string]string{}, memory: true}
	for _, p := range []Pool{{Name: "embed", Limits: Limits{MemoryMax: 1 << 30, CPUMax: 2}}, {Name: "tok", Limits: Limits{CPUMax: 0.25}}, {Name: "free"}} {
		if _, err := r.newPool(p.Name, p.Limits); err != nil {
			t.Fatal(err)
		}
	}
	for file, want := range map[string]string{
		"embed/memory.max": "1073741824", "embed/cpu.max": "200000 100000", "tok/cpu.max": "25000 100000",
		"embed/cgroup.subtree_control": "+memory", "tok/cgroup.subtree_control": "+memory",
		"tok/memory.max": "", "free/memory.max": "", "free/cpu.max": "",
	} {
		if b, _ := os.ReadFile(filepath.Join(r.dir, file)); string(b) != want {
			t.Errorf("%s = %q, want %q", file, b, want)
		}
	}
	if got := r.PoolDir("tok"); got != filepath.Join(r.dir, "tok") {
		t.Errorf("PoolDir(tok) = %q", got)
	}
	if _, err := r.NewLeaf("../x", "w0"); err == nil {
		t.Error("a pool name with a slash was accepted")
	}
}

// Leaves lie in their pool's directory (one made on first use for a pool
// NewRun was not told of); a run with processes in two pools' leaves is
// ended and removed whole, deepest first, by EndDir.
func TestPoolsNestLeavesAndEndDirRemovesThemAll(t *testing.T) {
	r := liveRun(t)
	a, err := r.NewLeaf("p", "p.w0")
	if err != nil {
		t.Fatal(err)
	}
	b, err := r.NewLeaf("q", "q.w0")
	if err != nil {
		t.Fatal(err)
	}
	if filepath.Dir(a.Dir()) != filepath.Join(r.Dir(), "p") || filepath.Dir(b.Dir()) != filepath.Join(r.Dir(), "q") {
		t.Fatalf("leaves %s and %s, want them in %s/p and %s/q", a.Dir(), b.Dir(), r.Dir(), r.Dir())
	}
	_, s1 := startIn(t, a)
	_, s2 := startIn(t, b)
	a.CloseFD()
	b.CloseFD()
	runID := strings.TrimPrefix(filepath.Base(r.Dir()), Prefix)
	pids, err := EndDir(r.Dir(), runID, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if len(pids) != 4 {
		t.Errorf("EndDir found %v, want 2 shells and 2 sleepers", pids)
	}
	if alive(s1) || alive(s2) {
		t.Fatal("a sleeper survived EndDir")
	}
	if _, err := os.Stat(r.Dir()); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("run directory %s left behind", r.Dir())
	}
}

// A base where mkdir is refused (here /sys, read-only for everyone) is
// ErrNoPermission, the "no-permission" fallback; nothing is created.
func TestNoWritePermissionIsReported(t *testing.T) {
	_, err := NewRun(Detection{Mode: ModeV2, Mount: "/sys", Base: "/sys"}, "test-perm", nil)
	if !errors.Is(err, ErrNoPermission) || !errors.Is(err, ErrUnavailable) {
		t.Fatalf("NewRun under /sys: %v, want ErrNoPermission", err)
	}
	if _, err := os.Stat("/sys/" + RunDirName("test-perm")); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("something was created under /sys")
	}
	// A directory that is no cgroup: usable mkdir, but no cgroup.kill.
	base := t.TempDir()
	_, err = NewRun(Detection{Mode: ModeV2, Mount: base, Base: base}, "test-nokill", nil)
	if !errors.Is(err, ErrUnavailable) || errors.Is(err, ErrNoPermission) || !strings.Contains(err.Error(), "cgroup.kill") {
		t.Fatalf("NewRun on a plain directory: %v, want ErrUnavailable naming cgroup.kill", err)
	}
	if _, err := os.Stat(filepath.Join(base, RunDirName("test-nokill"))); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("the refused run directory was left behind")
	}
}
