package cgroup

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// Prefix starts the name of every run directory: Prefix + run id.
const Prefix = "snakepit-"

// RunDirName is the name of run id's directory.
func RunDirName(runID string) string { return Prefix + runID }

// Limits apply to each worker process's cgroup (the process and all its
// descendants); zero values set nothing.
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

// ControllerError: a limit was asked for but its controller is not
// delegated to the run's cgroup. It matches ErrUnavailable.
type ControllerError struct {
	Controller string
	Base       string // the cgroup whose subtree_control lacks it
}

func (e *ControllerError) Error() string {
	return fmt.Sprintf("cgroup: the %s controller is not enabled in %s/cgroup.subtree_control, so a per-process limit cannot be set; "+
		"run the host in a cgroup that delegates it (systemd: Delegate=yes with the host in a leaf such as DelegateSubgroup=), or unset the limit", e.Controller, e.Base)
}

func (e *ControllerError) Is(target error) bool { return target == ErrUnavailable }

// Run is one run's subtree: <base>/snakepit-<run id>.
type Run struct {
	dir    string
	mode   Mode
	limits Limits
	memory bool // the memory controller is enabled for the leaves
	n      atomic.Uint64
}

// NewRun creates run id's directory under d.Base (or, when limits need a
// controller the host's cgroup does not delegate, under its parent if that
// one does and is writable), checks that it can be used, and enables the
// controllers the leaves need. An error matches ErrUnavailable; nothing is
// left behind.
func NewRun(d Detection, runID string, lim Limits) (*Run, error) {
	if !d.Mode.Contained() {
		return nil, fmt.Errorf("%w: %s", ErrUnavailable, d.Reason)
	}
	if runID == "" || strings.ContainsAny(runID, "/\x00") || runID == "." || runID == ".." {
		return nil, fmt.Errorf("cgroup: invalid run id %q", runID)
	}
	base, err := chooseBase(d, lim.wanted())
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
	r := &Run{dir: dir, mode: d.Mode, limits: lim}
	if err := r.check(base); err != nil {
		_ = os.Remove(dir)
		return nil, err
	}
	return r, nil
}

// chooseBase is d.Base unless a wanted controller is only delegated one
// level up (the host's cgroup holds processes, so on pure v2 it cannot
// delegate controllers to its children).
func chooseBase(d Detection, want []string) (string, error) {
	missing := firstMissing(d.Base, want)
	if missing == "" {
		return d.Base, nil
	}
	if parent := filepath.Dir(d.Base); d.Base != d.Mount && firstMissing(parent, want) == "" &&
		unix.Access(filepath.Join(parent, "cgroup.procs"), unix.W_OK) == nil {
		return parent, nil
	}
	return "", &ControllerError{Controller: missing, Base: d.Base}
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
func (r *Run) check(base string) error {
	if _, err := os.Stat(filepath.Join(r.dir, "cgroup.kill")); err != nil {
		return fmt.Errorf("%w: %s has no cgroup.kill (it needs Linux 5.14 or later)", ErrUnavailable, r.dir)
	}
	// Moving a process needs write access to cgroup.procs of the common
	// ancestor of its old and new cgroup.
	if err := unix.Access(filepath.Join(base, "cgroup.procs"), unix.W_OK); err != nil {
		return fmt.Errorf("%w: cannot write %s/cgroup.procs (the cgroup is not delegated to this user): %v", ErrNoPermission, base, err)
	}
	avail := strings.Fields(readString(filepath.Join(r.dir, "cgroup.controllers")))
	var enable []string
	for _, c := range r.limits.wanted() {
		if !contains(avail, c) {
			return &ControllerError{Controller: c, Base: base}
		}
		enable = append(enable, "+"+c)
	}
	if contains(avail, "memory") && !contains(enable, "+memory") {
		// Free accounting for RecycleAboveRSS: memory.current per process tree.
		enable = append(enable, "+memory")
	}
	if len(enable) == 0 {
		return nil
	}
	if err := os.WriteFile(filepath.Join(r.dir, "cgroup.subtree_control"), []byte(strings.Join(enable, " ")), 0); err != nil {
		if len(r.limits.wanted()) > 0 {
			return fmt.Errorf("%w: cannot enable %v in %s: %v", ErrUnavailable, enable, r.dir, err)
		}
		return nil // accounting only: go on without it
	}
	r.memory = contains(enable, "+memory")
	return nil
}

// Dir is the run's directory.
func (r *Run) Dir() string { return r.dir }

// Mode is the containment in force.
func (r *Run) Mode() Mode { return r.mode }

// Memory reports whether the leaves account memory (memory.current).
func (r *Run) Memory() bool { return r.memory }

// NewLeaf creates the cgroup of one process start: <run>/<key>-<n>. Key is
// the process's registry key; characters a directory name cannot hold are
// replaced.
func (r *Run) NewLeaf(key string) (*Leaf, error) {
	name := strings.Map(func(c rune) rune {
		if c == '/' || c == 0 || c == '\n' {
			return '_'
		}
		return c
	}, key)
	dir := filepath.Join(r.dir, name+"-"+strconv.FormatUint(r.n.Add(1), 10))
	if err := os.Mkdir(dir, 0o755); err != nil {
		return nil, fmt.Errorf("cgroup: cannot create %s: %w", dir, err)
	}
	l := &Leaf{dir: dir, fd: -1}
	if err := l.setLimits(r.limits); err != nil {
		_ = os.Remove(dir)
		return nil, err
	}
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		_ = os.Remove(dir)
		return nil, fmt.Errorf("cgroup: cannot open %s: %w", dir, err)
	}
	l.fd = fd
	return l, nil
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

// MemoryCurrent is memory.current (the whole tree's memory, page cache
// included); ok is false without the memory controller.
func (l *Leaf) MemoryCurrent() (int64, bool) {
	v, err := strconv.ParseInt(strings.TrimSpace(readString(filepath.Join(l.dir, "memory.current"))), 10, 64)
	return v, err == nil
}

func (l *Leaf) setLimits(lim Limits) error {
	if lim.MemoryMax > 0 {
		if err := os.WriteFile(filepath.Join(l.dir, "memory.max"), []byte(strconv.FormatInt(lim.MemoryMax, 10)), 0); err != nil {
			return fmt.Errorf("cgroup: cannot set memory.max in %s: %w", l.dir, err)
		}
	}
	if lim.CPUMax > 0 {
		const period = 100000
		quota := max(int64(lim.CPUMax*period), 1000)
		if err := os.WriteFile(filepath.Join(l.dir, "cpu.max"), []byte(fmt.Sprintf("%d %d", quota, period)), 0); err != nil {
			return fmt.Errorf("cgroup: cannot set cpu.max in %s: %w", l.dir, err)
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
