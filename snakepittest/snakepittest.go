// Package snakepittest is snakepit's lifecycle suite as a conformance kit:
// it runs the no-survivor guarantees against whatever Config you give it —
// your adapter, your interpreter, your own WorkerFactory — with real
// processes and real signals.
//
//	func TestSnakepitConformance(t *testing.T) {
//		snakepittest.Run(t, snakepit.Config{
//			Adapter:    "myproject.adapters.Model",
//			PythonPath: []string{"../python"},
//		}, snakepittest.WithSpawnTool("spawn_child", nil))
//	}
//
// Each guarantee is a subtest:
//
//   - CleanStopLeavesNoProcess: after Stop nothing carrying the run id is
//     alive (descendants included, with WithSpawnTool).
//   - WorkerCountIsStable: for two seconds the same N worker processes run
//     and nothing restarts.
//   - KilledWorkerIsReplaced: a SIGKILLed worker process is replaced, the
//     pool is back to N ready, and its descendant dies with its group.
//   - EscapedDescendantDiesWithItsWorker (WithEscapeTool): a descendant
//     that left the worker's process group (setsid) dies within 5 s when
//     its worker process is SIGKILLed — long before Stop — and the cleanup
//     at Stop finds nothing.
//   - HostKillLeavesNothing: the test binary is re-executed as the host of
//     the App and SIGKILLed; within 2 s nothing of its run is alive.
//   - NextStartReapsADeadRun: a process recorded by a dead run is stopped by
//     the next start.
//   - ForeignLookAlikesAreNeverSignalled: records of a dead run that point at
//     processes which are not provably that run's are dropped, and those
//     processes are never signalled.
//   - CleanupRunsLastAndFindsNothing: the stop order is workers → bridge →
//     cleanup → registry and the last-resort sweep finds nothing.
//   - ContainmentIsWhatStatsSays: Stats().Containment is logged; where it
//     is cgroup v2 ("cgroup2", "cgroup2-hybrid"), each worker process is in
//     a cgroup of its own under the run's snakepit-<run id>; with
//     SNAKEPIT_CGROUP=off it is "off". Run the kit in both modes
//     (SNAKEPIT_CGROUP=off go test ...) to check the fallback too.
//
// An elastic Config (MaxWorkers) is held to the same guarantees at its
// MinWorkers, which must be at least 1; the kit's calls come one at a time
// and do not make it grow.
//
// Sharp edges:
//   - Worker processes are recognised as the direct children of the host
//     that carry the run id (argv or environment). A worker type built on
//     package childproc (or the Python worker) satisfies this.
//   - HostKillLeavesNothing runs the calling test function again in a child
//     process (go test's -test.run with the test's name): keep what the test
//     does before Run cheap and free of side effects outside t.TempDir().
//   - Each subtest uses its own registry file in t.TempDir(); cfg's
//     RegistryPath and Instance are ignored.
//   - Capabilities your worker type lacks are declared with options; the
//     cases that need them are skipped, saying why.
package snakepittest

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/snakepit-go/snakepit"
	"github.com/snakepit-go/snakepit/internal/cgroup"
	"github.com/snakepit-go/snakepit/internal/proc"
	"github.com/snakepit-go/snakepit/internal/proc/proctest"
	"github.com/snakepit-go/snakepit/internal/testutil"
	"github.com/snakepit-go/snakepit/registry"
)

// Option declares what the worker type under test can do.
type Option func(*options)

type options struct {
	spawnTool  string
	spawnArgs  any
	escapeTool string
	escapeArgs any
	hostKill   time.Duration
}

// WithSpawnTool names a tool that makes the worker start one descendant
// process in the worker's own process group and returns a JSON object with
// its "pid" (the showcase adapter's spawn_child does). Without it, the cases
// about descendants are skipped.
func WithSpawnTool(tool string, args any) Option {
	return func(o *options) { o.spawnTool, o.spawnArgs = tool, args }
}

// WithEscapeTool names a tool that makes the worker start one descendant
// that leaves the worker's process group (setsid; a double fork too, if
// you like) without scrubbing its environment, and returns a JSON object
// with its "pid" (the showcase adapter's spawn_child with
// {"new_session": true} does). Without it, EscapedDescendantDiesWithItsWorker
// is skipped.
func WithEscapeTool(tool string, args any) Option {
	return func(o *options) { o.escapeTool, o.escapeArgs = tool, args }
}

// hostEnv marks the re-executed test binary that plays the killed host.
const hostEnv = "SNAKEPITTEST_HOST_REGISTRY"

// readyPrefix starts the one line the host child prints once it runs.
const readyPrefix = "SNAKEPITTEST_HOST_READY run_id="

// Run runs every guarantee against cfg as a subtest of t.
func Run(t *testing.T, cfg snakepit.Config, opts ...Option) {
	o := options{hostKill: 2 * time.Second}
	for _, opt := range opts {
		opt(&o)
	}
	if cfg.Workers == 0 && cfg.MaxWorkers == 0 {
		cfg.Workers = 2
	}
	if cfg.MaxWorkers > 0 && cfg.MinWorkers == 0 {
		t.Fatal("snakepittest: an elastic Config needs MinWorkers >= 1: the kit kills and counts the workers a pool starts with")
	}
	if path := os.Getenv(hostEnv); path != "" {
		serveAsHost(t, cfg, o, path)
		return
	}
	top := t.Name()
	t.Run("CleanStopLeavesNoProcess", func(t *testing.T) { cleanStop(t, cfg, o) })
	t.Run("WorkerCountIsStable", func(t *testing.T) { stableCount(t, cfg) })
	t.Run("KilledWorkerIsReplaced", func(t *testing.T) { killedWorker(t, cfg, o) })
	t.Run("EscapedDescendantDiesWithItsWorker", func(t *testing.T) { escapedDescendant(t, cfg, o) })
	t.Run("HostKillLeavesNothing", func(t *testing.T) { hostKill(t, top, o) })
	t.Run("NextStartReapsADeadRun", func(t *testing.T) { reapDeadRun(t, cfg) })
	t.Run("ForeignLookAlikesAreNeverSignalled", func(t *testing.T) { lookAlikes(t, cfg) })
	t.Run("CleanupRunsLastAndFindsNothing", func(t *testing.T) { cleanupLast(t, cfg) })
	t.Run("ContainmentIsWhatStatsSays", func(t *testing.T) { containment(t, cfg) })
}

func containment(t *testing.T, cfg snakepit.Config) {
	in := start(t, cfg)
	mode := in.Stats().Containment
	t.Logf("containment in force: %q", mode)
	switch {
	case os.Getenv(registry.EnvContainment) == registry.ContainOff:
		if mode != registry.ContainOff {
			t.Errorf("%s=off but Stats().Containment = %q", registry.EnvContainment, mode)
		}
	case mode == "cgroup2" || mode == "cgroup2-hybrid":
		seen := map[string]bool{}
		for _, w := range workerProcs(t, in.RunID(), os.Getpid()) {
			cg := cgroupOf(w.PID)
			if !strings.Contains(cg, "/snakepit-"+in.RunID()+"/") || seen[cg] {
				t.Errorf("worker %d is in cgroup %q; want its own under snakepit-%s", w.PID, cg, in.RunID())
			}
			seen[cg] = true
		}
	case mode == "":
		t.Error("Stats().Containment is empty after Start")
	}
	in.stop(t)
}

// cgroupOf is pid's cgroup v2 path ("0::" line of /proc/PID/cgroup).
func cgroupOf(pid int) string {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	for _, l := range strings.Split(string(b), "\n") {
		if p, ok := strings.CutPrefix(l, "0::"); ok {
			return p
		}
	}
	return ""
}

// instance is one started App of a subtest.
type instance struct {
	*snakepit.App
	stopped bool
}

func isolated(t *testing.T, cfg snakepit.Config) snakepit.Config {
	cfg.RegistryPath = filepath.Join(t.TempDir(), "registry.db")
	cfg.Instance = ""
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))
	}
	return cfg
}

// start builds and starts an App on its own registry; the subtest's
// cleanup stops it and fails on anything of its run left alive.
func start(t *testing.T, cfg snakepit.Config) *instance {
	t.Helper()
	return startOn(t, isolated(t, cfg))
}

func (in *instance) stop(t *testing.T) snakepit.StopReport {
	t.Helper()
	in.stopped = true
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	rep, err := in.Stop(ctx)
	if err != nil {
		t.Errorf("Stop: %v", err)
	}
	return rep
}

func runProcs(t *testing.T, runID string) []proc.Process {
	t.Helper()
	ps, err := proc.FindByRunID(runID)
	if err != nil {
		t.Fatalf("scan /proc: %v", err)
	}
	return ps
}

// workerProcs are the run's processes whose parent is host: the workers,
// not their descendants.
func workerProcs(t *testing.T, runID string, host int) []proc.Process {
	t.Helper()
	var out []proc.Process
	for _, p := range runProcs(t, runID) {
		if p.PPID == host {
			out = append(out, p)
		}
	}
	return out
}

func eventually(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %s: %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func ready(in *instance) int {
	w := in.Stats().Pool.Workers
	return w.Idle + w.Busy
}

type pidStart struct {
	PID   int
	Start uint64
}

func (p pidStart) alive() bool { return proctest.Alive(p.PID, p.Start) }

func identify(t *testing.T, pid int) pidStart {
	t.Helper()
	st, err := proc.ReadStat(pid)
	if err != nil {
		t.Fatalf("stat of pid %d: %v", pid, err)
	}
	return pidStart{pid, st.StartTime}
}

// spawn asks a worker for a descendant and returns it and its worker.
func spawn(t *testing.T, in *instance, o options) (kid, parent pidStart) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := in.Execute(ctx, o.spawnTool, o.spawnArgs)
	if err != nil {
		t.Fatalf("%s: %v", o.spawnTool, err)
	}
	var out struct {
		PID int `json:"pid"`
	}
	if err := json.Unmarshal(res.JSON, &out); err != nil || out.PID <= 0 {
		t.Fatalf("%s returned %s; want a JSON object with the descendant's \"pid\"", o.spawnTool, res.JSON)
	}
	st, err := proc.ReadStat(out.PID)
	if err != nil {
		t.Fatalf("the descendant %d that %s reported is not alive: %v", out.PID, o.spawnTool, err)
	}
	eventually(t, 5*time.Second, "the descendant carries the run id (inherited environment)", func() bool {
		return proc.CarriesRunID(out.PID, in.RunID())
	})
	return pidStart{out.PID, st.StartTime}, identify(t, st.PPID)
}

func cleanStop(t *testing.T, cfg snakepit.Config, o options) {
	in := start(t, cfg)
	var kids []pidStart
	if o.spawnTool != "" {
		for range size(cfg) {
			kid, _ := spawn(t, in, o)
			kids = append(kids, kid)
		}
	}
	before := runProcs(t, in.RunID())
	if len(before) < size(cfg) {
		t.Fatalf("%d processes carry the run id before Stop, want at least the %d workers: the kit cannot see them", len(before), size(cfg))
	}
	rep := in.stop(t)
	if left := runProcs(t, in.RunID()); len(left) > 0 {
		t.Fatalf("%d processes of the run alive when Stop returned: %+v", len(left), left)
	}
	for _, k := range kids {
		if k.alive() {
			t.Errorf("descendant %d alive after Stop", k.PID)
		}
	}
	if len(rep.Cleanup.Found) != 0 {
		t.Errorf("the ordered stop left %d processes for the cleanup to kill: %+v", len(rep.Cleanup.Found), rep.Cleanup.Found)
	}
	if o.spawnTool == "" {
		t.Log("descendants not tested: declare WithSpawnTool to cover them")
	}
}

func stableCount(t *testing.T, cfg snakepit.Config) {
	in := start(t, cfg)
	self := os.Getpid()
	first := map[pidStart]bool{}
	for _, p := range workerProcs(t, in.RunID(), self) {
		first[pidStart{p.PID, p.StartTime}] = true
	}
	if len(first) != size(cfg) {
		t.Fatalf("%d worker processes, want %d", len(first), size(cfg))
	}
	until := time.Now().Add(2 * time.Second)
	for time.Now().Before(until) {
		now := workerProcs(t, in.RunID(), self)
		if len(now) != len(first) {
			t.Fatalf("worker processes changed from %d to %d: %+v", len(first), len(now), now)
		}
		for _, p := range now {
			if !first[pidStart{p.PID, p.StartTime}] {
				t.Fatalf("a new worker process %d appeared without any failure", p.PID)
			}
		}
		if r := ready(in); r != size(cfg) {
			t.Fatalf("%d of %d workers ready", r, size(cfg))
		}
		time.Sleep(50 * time.Millisecond)
	}
	if s := in.Stats().Pool; s.Restarts != 0 {
		t.Fatalf("restarts %d %v in normal operation", s.Restarts, s.RestartReasons)
	}
}

func killedWorker(t *testing.T, cfg snakepit.Config, o options) {
	in := start(t, cfg)
	self := os.Getpid()
	var victim, kid pidStart
	if o.spawnTool != "" {
		kid, victim = spawn(t, in, o)
	} else {
		ws := workerProcs(t, in.RunID(), self)
		if len(ws) == 0 {
			t.Fatal("no worker process found (a direct child carrying the run id)")
		}
		victim = pidStart{ws[0].PID, ws[0].StartTime}
	}
	boot, err := proc.BootID()
	if err != nil {
		t.Fatal(err)
	}
	if err := proc.SignalVerified(proc.Identity{PID: victim.PID, StartTime: victim.Start, BootID: boot, RunID: in.RunID()}, syscall.SIGKILL); err != nil {
		t.Fatalf("SIGKILL worker %d: %v", victim.PID, err)
	}
	eventually(t, 30*time.Second, "the killed worker replaced and the pool back to N ready", func() bool {
		if victim.alive() || ready(in) != size(cfg) {
			return false
		}
		return len(workerProcs(t, in.RunID(), self)) == size(cfg)
	})
	if kid.PID != 0 {
		eventually(t, 5*time.Second, "the killed worker's descendant reaped with its group", func() bool { return !kid.alive() })
	}
	if s := in.Stats().Pool; s.Restarts != 1 {
		t.Errorf("Restarts = %d, want 1", s.Restarts)
	}
}

func escapedDescendant(t *testing.T, cfg snakepit.Config, o options) {
	if o.escapeTool == "" {
		t.Skip("no tool declared that starts a descendant outside the worker's process group (WithEscapeTool)")
	}
	in := start(t, cfg)
	self := os.Getpid()
	kid, _ := spawn(t, in, options{spawnTool: o.escapeTool, spawnArgs: o.escapeArgs})
	if st, err := proc.ReadStat(kid.PID); err == nil {
		for _, w := range workerProcs(t, in.RunID(), self) {
			if st.PGID == w.PGID {
				t.Fatalf("%s's descendant %d is still in worker %d's process group: declare a tool whose descendant leaves it", o.escapeTool, kid.PID, w.PID)
			}
		}
	}
	// Which worker started it is not always visible (a double-forked
	// descendant may have another parent), so every worker process dies.
	boot, err := proc.BootID()
	if err != nil {
		t.Fatal(err)
	}
	var victims []pidStart
	for _, w := range workerProcs(t, in.RunID(), self) {
		v := pidStart{w.PID, w.StartTime}
		victims = append(victims, v)
		if err := proc.SignalVerified(proc.Identity{PID: v.PID, StartTime: v.Start, BootID: boot, RunID: in.RunID()}, syscall.SIGKILL); err != nil {
			t.Fatalf("SIGKILL worker %d: %v", v.PID, err)
		}
	}
	eventually(t, 5*time.Second, "the escaped descendant to die with its SIGKILLed worker", func() bool { return !kid.alive() })
	eventually(t, 30*time.Second, "the pool back to N ready", func() bool {
		for _, v := range victims {
			if v.alive() {
				return false
			}
		}
		return ready(in) == size(cfg)
	})
	if rep := in.stop(t); len(rep.Cleanup.Found) != 0 {
		t.Errorf("the cleanup at Stop found %d processes: %+v", len(rep.Cleanup.Found), rep.Cleanup.Found)
	}
}

// serveAsHost is the re-executed test binary: it runs an App on the
// registry it was given, tells the parent its run id, and waits to be
// killed.
func serveAsHost(t *testing.T, cfg snakepit.Config, o options, path string) {
	cfg.RegistryPath = path
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))
	}
	app, err := snakepit.New(cfg)
	if err != nil {
		fmt.Printf("SNAKEPITTEST_HOST_FAILED New: %v\n", err)
		os.Exit(3)
	}
	if err := app.Start(context.Background()); err != nil {
		fmt.Printf("SNAKEPITTEST_HOST_FAILED Start: %v\n", err)
		os.Exit(3)
	}
	if o.spawnTool != "" {
		for range size(cfg) {
			if _, err := app.Execute(context.Background(), o.spawnTool, o.spawnArgs); err != nil {
				fmt.Printf("SNAKEPITTEST_HOST_FAILED %s: %v\n", o.spawnTool, err)
			}
		}
	}
	fmt.Println(readyPrefix + app.RunID())
	select {} // until the parent's SIGKILL
}

func hostKill(t *testing.T, top string, o options) {
	path := filepath.Join(t.TempDir(), "registry.db")
	cmd := exec.Command(os.Args[0], "-test.run=^"+regexp.QuoteMeta(top)+"$", "-test.count=1", "-test.timeout=5m")
	cmd.Env = append(os.Environ(), hostEnv+"="+path)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("re-executing the test binary as the host: %v", err)
	}
	var once sync.Once
	reaped := make(chan struct{})
	wait := func() { once.Do(func() { _ = cmd.Wait(); close(reaped) }) }
	t.Cleanup(func() {
		_ = cmd.Process.Kill() // our own child: its pid cannot be reused before we reap it
		wait()
	})
	runID := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			line := sc.Text()
			if strings.HasPrefix(line, readyPrefix) {
				runID <- strings.TrimPrefix(line, readyPrefix)
			} else if strings.HasPrefix(line, "SNAKEPITTEST_HOST_FAILED") {
				t.Errorf("host: %s", line)
			}
		}
		_, _ = io.Copy(io.Discard, out)
	}()
	var id string
	select {
	case id = <-runID:
	case <-time.After(90 * time.Second):
		t.Fatal("the host child never became ready")
	}
	t.Cleanup(func() { testutil.KillRunSurvivors(t, id) })
	host := cmd.Process.Pid
	before := runProcs(t, id)
	if len(workersOf(before, host)) == 0 {
		t.Fatalf("the host runs no worker process that the kit can see: %+v", before)
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	wait()
	killed := time.Now()
	deadline := killed.Add(o.hostKill)
	for {
		left := runProcs(t, id)
		if len(left) == 0 {
			t.Logf("%d processes of the killed host's run gone %s after its SIGKILL", len(before), time.Since(killed).Round(time.Millisecond))
			reapCgroups(t, path, id)
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d processes of the killed host's run alive %s after its SIGKILL: %+v", len(left), o.hostKill, left)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// reapCgroups is the next start's reap on the dead host's registry: the
// cgroup directories the dead run left (their processes are gone) must be
// removed by it.
func reapCgroups(t *testing.T, path, runID string) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	reg, err := registry.Open(registry.Options{Path: path, RunID: registry.NewRunID(), Logger: log})
	if err != nil {
		t.Fatalf("open the dead host's registry: %v", err)
	}
	_, err = reg.ReapOrphans(context.Background())
	if cerr := reg.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Errorf("reap of the dead host's registry: %v", err)
	}
	if left := cgroup.RunDirs(cgroup.Detect(), runID, ""); len(left) != 0 {
		t.Errorf("the dead run's cgroups %v are still there after the next reap", left)
	}
}

func workersOf(ps []proc.Process, host int) []proc.Process {
	var out []proc.Process
	for _, p := range ps {
		if p.PPID == host {
			out = append(out, p)
		}
	}
	return out
}

// plantDeadRun records processes under runID the way a host that then died
// would have: the test plays the dead host, and the file is unlocked after.
func plantDeadRun(t *testing.T, path, runID string, procs map[string]*proctest.Child) {
	t.Helper()
	r, err := registry.Open(registry.Options{Path: path, RunID: runID, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatalf("registry.Open(%s): %v", path, err)
	}
	for key, c := range procs {
		if err := r.Reserve(key); err != nil {
			t.Fatal(err)
		}
		if err := r.Activate(key, c.PID); err != nil {
			t.Fatal(err)
		}
	}
	if err := r.Close(); err != nil {
		t.Fatalf("registry close: %v", err)
	}
}

func reapDeadRun(t *testing.T, cfg snakepit.Config) {
	dead := registry.NewRunID()
	left := proctest.Start(t, proctest.Spec{Args: proctest.RunIDArgs(dead), EnvRunID: dead, GroupMates: 1})
	cfg = isolated(t, cfg)
	plantDeadRun(t, cfg.RegistryPath, dead, map[string]*proctest.Child{"w0": left})
	in := startOn(t, cfg)
	left.WaitAllGone(5 * time.Second)
	if rep := in.Stats().Reap; rep.Reaped < 1 {
		t.Errorf("Stats().Reap = %+v, want the dead run's process reaped", rep)
	}
}

func lookAlikes(t *testing.T, cfg snakepit.Config) {
	dead := registry.NewRunID()
	stranger := registry.NewRunID() // in no registry: another instance's, say
	unrelated := proctest.Start(t, proctest.Spec{GroupMates: 1})
	otherRun := proctest.Start(t, proctest.Spec{Args: proctest.RunIDArgs(stranger), EnvRunID: stranger, GroupMates: 1})
	cfg = isolated(t, cfg)
	plantDeadRun(t, cfg.RegistryPath, dead, map[string]*proctest.Child{"a": unrelated, "b": otherRun})
	in := startOn(t, cfg)
	if rep := in.Stats().Reap; rep.SkippedReused != 2 || rep.Reaped != 0 {
		t.Errorf("Stats().Reap = %+v; want both records skipped as not provably the dead run's", rep)
	}
	in.stop(t)
	unrelated.AssertNotSignalled()
	otherRun.AssertNotSignalled()
}

// startOn starts an App on cfg as given (its registry already chosen);
// the subtest's cleanup stops it and fails on anything of its run left alive.
func startOn(t *testing.T, cfg snakepit.Config) *instance {
	t.Helper()
	app, err := snakepit.New(cfg)
	if err != nil {
		t.Fatalf("snakepit.New: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := app.Start(ctx); err != nil {
		t.Fatalf("Start: %v", err)
	}
	in := &instance{App: app}
	t.Cleanup(func() {
		if !in.stopped {
			in.stop(t)
		}
		testutil.KillRunSurvivors(t, app.RunID())
	})
	return in
}

func cleanupLast(t *testing.T, cfg snakepit.Config) {
	in := start(t, cfg)
	rep := in.stop(t)
	index := map[string]int{}
	for i, c := range rep.Children {
		index[c.Child] = i
	}
	for _, name := range []string{"workers", "bridge", "cleanup", "registry"} {
		if _, ok := index[name]; !ok {
			t.Fatalf("StopReport.Children lacks %q: %+v", name, rep.Children)
		}
	}
	if !(index["workers"] < index["bridge"] && index["bridge"] < index["cleanup"] && index["cleanup"] < index["registry"]) {
		t.Errorf("stop order %+v: want workers, bridge, cleanup, registry", rep.Children)
	}
	w, c := rep.Children[index["workers"]], rep.Children[index["cleanup"]]
	if c.Started.Before(w.Finished) {
		t.Errorf("the cleanup started before the workers had stopped")
	}
	if rep.Cleanup.RanAt.Before(rep.WorkersStoppedAt) || len(rep.Cleanup.Found) != 0 || rep.Cleanup.Err() != nil {
		t.Errorf("cleanup report %+v: want it run after the workers stopped, finding nothing", rep.Cleanup)
	}
}

// size is the number of workers cfg starts with: Workers, or an elastic
// pool's MinWorkers (the kit's calls come one at a time and never make it grow).
func size(cfg snakepit.Config) int {
	if cfg.MaxWorkers > 0 {
		return cfg.MinWorkers
	}
	return cfg.Workers
}
