package cgroup

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// Prefix starts the name of every run directory: Prefix + run id.
const Prefix = "snakepit-"

// RunDirName is the name of run id's directory.
func RunDirName(runID string) string { return Prefix + runID }

// Limits bound one pool's cgroup: the pool's worker processes and
// everything they start, together; zero values set nothing.
type Limits struct {
	// MemoryMax is memory.max in bytes.
	MemoryMax int64
	// CPUMax is cpu.max in CPUs (0.5: half a core).
	CPUMax float64
}

func (l Limits) wanted() []string {
	var c []string
	if l.MemoryMax > 0 {
		c = append(c, "memory")
	}
	if l.CPUMax > 0 {
		c = append(c, "cpu")
	}
	return c
}

// Pool is one pool of the run: its directory <run>/<Name> holds the cgroup
// of each of its process starts, and carries its Limits.
type Pool struct {
	Name string
	Limits
}

// ControllerError: a pool's limit was asked for but its controller is not
// delegated to the run's cgroup. It matches ErrUnavailable.
type ControllerError struct {
	Pool       string
	Controller string
	Base       string // the cgroup whose subtree_control lacks it
}

func (e *ControllerError) Error() string {
	setting := "MemoryMax"
	if e.Controller == "cpu" {
		setting = "CPUMax"
	}
	return fmt.Sprintf("cgroup: pool %q sets %s, but the %s controller is not enabled in %s/cgroup.subtree_control; "+
		"run the host in a cgroup that delegates it (systemd: Delegate=yes with the host in a leaf such as DelegateSubgroup=), or unset the pool's %s",
		e.Pool, setting, e.Controller, e.Base, setting)
}

func (e *ControllerError) Is(target error) bool { return target == ErrUnavailable }

// Run is one run's subtree: <base>/snakepit-<run id>/<pool>/<leaf>. Only
// leaves hold processes (cgroup v2's no-internal-process rule, which a
// directory with controllers enabled for its children must follow).
type Run struct {
	dir    string
	mode   Mode
	memory bool // the memory controller is enabled for the leaves
	n      atomic.Uint64

	// required: containment was required (Registry.Contain's policy), so
	// a process that cannot get its cgroup must not start (Strict).
	required atomic.Bool

	mu      sync.Mutex
	pools   map[string]string // pool name → its directory
	limited map[string]bool   // pools with MemoryMax/CPUMax
}

// NewRun creates run id's directory under d.Base (or, when a pool's limits
// need a controller the host's cgroup does not delegate, under its parent
// if that one does and is writable), checks that it can be used, enables
// the controllers the pools need, and creates each pool's directory with
// its limits. An error matches ErrUnavailable; nothing is left behind.
func NewRun(d Detection, runID string, pools []Pool) (*Run, error) {
	if !d.Mode.Contained() {
		return nil, fmt.Errorf("%w: %s", ErrUnavailable, d.Reason)
	}
	if runID == "" || strings.ContainsAny(runID, "/\x00") || runID == "." || runID == ".." {
		return nil, fmt.Errorf("cgroup: invalid run id %q", runID)
	}
	for _, p := range pools {
		if err := checkPoolName(p.Name); err != nil {
			return nil, err
		}
	}
	base, err := chooseBase(d, pools)
	if err != nil {
		return nil, err
	}
	dir := filepath.Join(base, RunDirName(runID))
	if err := os.Mkdir(dir, 0o755); errors.Is(err, fs.ErrExist) {
		// This run's own directory, left by an earlier Serve of the same
		// App whose removal failed: ours by name; empty it first.
		if _, err := EndDir(dir, runID, 2*time.Second); err != nil {
			return nil, err
		}
		err = os.Mkdir(dir, 0o755)
		if err != nil {
			return nil, fmt.Errorf("%w: cannot create %s: %v", ErrUnavailable, dir, err)
		}
	} else if err != nil {
		if errors.Is(err, fs.ErrPermission) || errors.Is(err, unix.EROFS) {
			return nil, fmt.Errorf("%w: cannot create %s (the cgroup is not delegated to this user): %v", ErrNoPermission, dir, err)
		}
		return nil, fmt.Errorf("%w: cannot create %s: %v", ErrUnavailable, dir, err)
	}
	r := &Run{dir: dir, mode: d.Mode, pools: map[string]string{}}
	err = r.check(base, pools)
	for i := 0; err == nil && i < len(pools); i++ {
		_, err = r.newPool(pools[i].Name, pools[i].Limits)
	}
	if err != nil {
		_ = removeTree(dir) // no process has entered it yet
		return nil, err
	}
	return r, nil
}

// chooseBase is d.Base unless a wanted controller is only delegated one
// level up (the host's cgroup holds processes, so on pure v2 it cannot
// delegate controllers to its children).
func chooseBase(d Detection, pools []Pool) (string, error) {
	var first *ControllerError
	for _, p := range pools {
		if c := firstMissing(d.Base, p.wanted()); c != "" {
			first = &ControllerError{Pool: p.Name, Controller: c, Base: d.Base}
			break
		}
	}
	if first == nil {
		return d.Base, nil
	}
	want := wantedBy(pools)
	if parent := filepath.Dir(d.Base); d.Base != d.Mount && firstMissing(parent, want) == "" &&
		unix.Access(filepath.Join(parent, "cgroup.procs"), unix.W_OK) == nil {
		return parent, nil
	}
	return "", first
}

// wantedBy is every controller some pool's limits need.
func wantedBy(pools []Pool) []string {
	var want []string
	for _, p := range pools {
		for _, c := range p.wanted() {
			if !contains(want, c) {
				want = append(want, c)
			}
		}
	}
	return want
}

func firstMissing(dir string, want []string) string {
	have := strings.Fields(readString(filepath.Join(dir, "cgroup.subtree_control")))
	for _, c := range want {
		if !contains(have, c) {
			return c
		}
	}
	return ""
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// check proves the run directory usable: cgroup.kill exists, processes can
// be moved out of the host's cgroup, controllers are enabled.
func (r *Run) check(base string, pools []Pool) error {
	if _, err := os.Stat(filepath.Join(r.dir, "cgroup.kill")); err != nil {
		return fmt.Errorf("%w: %s has no cgroup.kill (it needs Linux 5.14 or later)", ErrUnavailable, r.dir)
	}
	// Moving a process needs write access to cgroup.procs of the common
	// ancestor of its old and new cgroup.
	if err := unix.Access(filepath.Join(base, "cgroup.procs"), unix.W_OK); err != nil {
		return fmt.Errorf("%w: cannot write %s/cgroup.procs (the cgroup is not delegated to this user): %v", ErrNoPermission, base, err)
	}
	avail := strings.Fields(readString(filepath.Join(r.dir, "cgroup.controllers")))
	for _, p := range pools {
		for _, c := range p.wanted() {
			if !contains(avail, c) {
				return &ControllerError{Pool: p.Name, Controller: c, Base: base}
			}
		}
	}
	enable := wantedBy(pools)
	if contains(avail, "memory") && !contains(enable, "memory") {
		// Free accounting for RecycleAboveRSS: memory.stat (anon + file_mapped) per process tree.
		enable = append(enable, "memory")
	}
	if len(enable) == 0 {
		return nil
	}
	if err := enableControllers(r.dir, enable); err != nil {
		if len(wantedBy(pools)) > 0 {
			return fmt.Errorf("%w: %v", ErrUnavailable, err)
		}
		return nil // accounting only: go on without it
	}
	r.memory = contains(enable, "memory")
	return nil
}

// enableControllers writes "+c" for each of cs to dir's subtree_control.
func enableControllers(dir string, cs []string) error {
	plus := make([]string, len(cs))
	for i, c := range cs {
		plus[i] = "+" + c
	}
	if err := os.WriteFile(filepath.Join(dir, "cgroup.subtree_control"), []byte(strings.Join(plus, " ")), 0); err != nil {
		return fmt.Errorf("cgroup: cannot enable %v in %s: %w", plus, dir, err)
	}
	return nil
}

// newPool creates pool name's directory with its limits, and passes the
// memory controller on to its leaves for accounting.
func (r *Run) newPool(name string, lim Limits) (string, error) {
	dir := filepath.Join(r.dir, name)
	if err := os.Mkdir(dir, 0o755); err != nil {
		return "", fmt.Errorf("cgroup: cannot create the cgroup of pool %q, %s: %w", name, dir, err)
	}
	err := setLimits(dir, lim)
	if err == nil && r.memory {
		err = enableControllers(dir, []string{"memory"})
	}
	if err != nil {
		_ = os.Remove(dir)
		return "", err
	}
	r.pools[name] = dir
	if r.limited == nil {
		r.limited = map[string]bool{}
	}
	r.limited[name] = lim.MemoryMax > 0 || lim.CPUMax > 0
	return dir, nil
}

// Require makes containment required for every process of the run (the
// policy "required"); see Strict.
func (r *Run) Require() { r.required.Store(true) }

// Strict reports whether a process of pool must not run outside its
// cgroup: containment was required, or the pool has limits, which a
// process outside would escape. Otherwise a process whose cgroup cannot
// be made still runs, contained by its process group, tag and run id.
func (r *Run) Strict(pool string) bool {
	if r.required.Load() {
		return true
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.limited[pool]
}

// poolDir is pool name's directory; a pool NewRun was not told of gets one
// without limits, and "" is the run's directory itself.
func (r *Run) poolDir(name string) (string, error) {
	if name == "" {
		return r.dir, nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if dir, ok := r.pools[name]; ok {
		return dir, nil
	}
	if err := checkPoolName(name); err != nil {
		return "", err
	}
	return r.newPool(name, Limits{})
}

func checkPoolName(name string) error {
	if name == "" || name != dirName(name) || name == "." || name == ".." {
		return fmt.Errorf("cgroup: invalid pool name %q", name)
	}
	return nil
}

// dirName replaces the characters a directory name cannot hold.
func dirName(s string) string {
	return strings.Map(func(c rune) rune {
		if c == '/' || c == 0 || c == '\n' {
			return '_'
		}
		return c
	}, s)
}

// Dir is the run's directory.
func (r *Run) Dir() string { return r.dir }

// Mode is the containment in force.
func (r *Run) Mode() Mode { return r.mode }

// Memory reports whether the leaves account memory (memory.stat).
func (r *Run) Memory() bool { return r.memory }

// NewLeaf creates the cgroup of one process start of pool (its name as
// given to NewRun; "" for a process of no pool, directly under the run):
// <run>/<pool>/<key>-<n>. Key is the process's registry key; characters a
// directory name cannot hold are replaced.
func (r *Run) NewLeaf(pool, key string) (*Leaf, error) {
	parent, err := r.poolDir(pool)
	if err != nil {
		return nil, err
	}
	dir := filepath.Join(parent, dirName(key)+"-"+strconv.FormatUint(r.n.Add(1), 10))
	if err := os.Mkdir(dir, 0o755); err != nil {
		return nil, fmt.Errorf("cgroup: cannot create %s: %w", dir, err)
	}
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		_ = os.Remove(dir)
		return nil, fmt.Errorf("cgroup: cannot open %s: %w", dir, err)
	}
	return &Leaf{dir: dir, fd: fd}, nil
}

// PoolDir is pool name's directory, "" when the run has none for it.
func (r *Run) PoolDir(name string) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.pools[name]
}

// Procs lists every process in the run's subtree.
func (r *Run) Procs() []int { return procsUnder(r.dir) }

// Kill ends every process in the run's subtree (cgroup.kill) and waits up
// to timeout for them to be gone; the directories stay.
func (r *Run) Kill(timeout time.Duration) error {
	if err := kill(r.dir); err != nil {
		return fmt.Errorf("cgroup: cannot kill the processes in %s: %w", r.dir, err)
	}
	if !waitEmpty(r.dir, timeout) {
		return fmt.Errorf("cgroup: processes in %s still alive %s after cgroup.kill (pids %v)", r.dir, timeout, procsUnder(r.dir))
	}
	return nil
}

// Close ends whatever is still in the run's subtree (cgroup.kill) and
// removes it, waiting at most timeout for the processes to go.
func (r *Run) Close(timeout time.Duration) error {
	return endTree(r.dir, timeout)
}

// Leaf is one process start's cgroup.
type Leaf struct {
	dir string
	fd  int // for CLONE_INTO_CGROUP; -1 once closed
}

// Dir is the leaf's directory.
func (l *Leaf) Dir() string { return l.dir }

// FD is an open descriptor of the directory (SysProcAttr.CgroupFD); valid
// until CloseFD.
func (l *Leaf) FD() int { return l.fd }

// CloseFD closes FD once the process is started.
func (l *Leaf) CloseFD() {
	if l.fd >= 0 {
		_ = unix.Close(l.fd)
		l.fd = -1
	}
}

// Add moves pid into the leaf (the fallback when the process could not be
// forked into it).
func (l *Leaf) Add(pid int) error {
	return os.WriteFile(filepath.Join(l.dir, "cgroup.procs"), []byte(strconv.Itoa(pid)), 0)
}

// Kill SIGKILLs every process in the leaf and below, at once.
func (l *Leaf) Kill() error { return kill(l.dir) }

// Empty reports whether no process is left in the leaf.
func (l *Leaf) Empty() bool { return !populated(l.dir) }

// Remove kills what is left, waits up to timeout for it to be gone and
// removes the leaf.
func (l *Leaf) Remove(timeout time.Duration) error {
	l.CloseFD()
	return endTree(l.dir, timeout)
}

// Memory is the memory the leaf's processes use, comparable to their
// summed RSS: memory.stat's anon plus file_mapped (memory.current would add
// page cache, which reclaim frees on its own and which would make a worker
// that reads big files look like it leaks). ok is false without the memory
// controller, or when pid (the process the leaf was made for) is not in
// the leaf — entered by /bin/sh and failed, say — where the leaf's figure
// would say nothing about it.
func (l *Leaf) Memory(pid int) (bytes int64, ok bool) {
	if !slices.Contains(strings.Fields(readString(filepath.Join(l.dir, "cgroup.procs"))), strconv.Itoa(pid)) {
		return 0, false
	}
	return parseMemoryStat(readString(filepath.Join(l.dir, "memory.stat")))
}

// parseMemoryStat sums anon and file_mapped of a memory.stat text; ok is
// false when anon is missing (no memory controller, unreadable file).
func parseMemoryStat(text string) (bytes int64, ok bool) {
	for _, line := range strings.Split(text, "\n") {
		k, v, found := strings.Cut(line, " ")
		if !found || (k != "anon" && k != "file_mapped") {
			continue
		}
		n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		if err != nil {
			return 0, false
		}
		bytes += n
		ok = ok || k == "anon"
	}
	return bytes, ok
}

// setLimits writes lim into the cgroup dir in the kernel's format.
func setLimits(dir string, lim Limits) error {
	if lim.MemoryMax > 0 {
		if err := os.WriteFile(filepath.Join(dir, "memory.max"), []byte(strconv.FormatInt(lim.MemoryMax, 10)), 0); err != nil {
			return fmt.Errorf("cgroup: cannot set memory.max in %s: %w", dir, err)
		}
	}
	if lim.CPUMax > 0 {
		const period = 100000
		quota := max(int64(lim.CPUMax*period), 1000)
		if err := os.WriteFile(filepath.Join(dir, "cpu.max"), []byte(fmt.Sprintf("%d %d", quota, period)), 0); err != nil {
			return fmt.Errorf("cgroup: cannot set cpu.max in %s: %w", dir, err)
		}
	}
	return nil
}

func readString(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	return string(b)
}
