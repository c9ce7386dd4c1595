package cgroup

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"
)

// kill writes cgroup.kill: the kernel SIGKILLs every process in dir and
// its descendant cgroups, including ones forked while it runs.
func kill(dir string) error {
	err := os.WriteFile(filepath.Join(dir, "cgroup.kill"), []byte("1"), 0)
	if errors.Is(err, fs.ErrNotExist) {
		return nil // already removed
	}
	return err
}

// populated reads cgroup.events; a missing directory is empty.
func populated(dir string) bool {
	for _, line := range strings.Split(readString(filepath.Join(dir, "cgroup.events")), "\n") {
		if v, ok := strings.CutPrefix(line, "populated "); ok {
			return strings.TrimSpace(v) != "0"
		}
	}
	return false
}

// waitEmpty polls cgroup.events until populated is 0, at most timeout.
func waitEmpty(dir string, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	pause := 500 * time.Microsecond
	for populated(dir) {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(pause)
		pause = min(2*pause, 10*time.Millisecond)
	}
	return true
}

// procsUnder lists the processes in dir and every cgroup below it.
func procsUnder(dir string) []int {
	var pids []int
	_ = filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			return nil
		}
		for _, f := range strings.Fields(readString(filepath.Join(path, "cgroup.procs"))) {
			if pid, err := strconv.Atoi(f); err == nil {
				pids = append(pids, pid)
			}
		}
		return nil
	})
	sort.Ints(pids)
	return pids
}

// endTree kills everything under dir, waits until it is empty and removes
// dir and the cgroups below it, deepest first.
func endTree(dir string, timeout time.Duration) error {
	if _, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err := kill(dir); err != nil {
		return fmt.Errorf("cgroup: cannot kill the processes in %s: %w", dir, err)
	}
	if !waitEmpty(dir, timeout) {
		return fmt.Errorf("cgroup: processes in %s still alive %s after cgroup.kill (pids %v); the next start retries", dir, timeout, procsUnder(dir))
	}
	return removeTree(dir)
}

// removeTree removes the empty cgroup dir and those below it, deepest
// first (a cgroup with children cannot be removed).
func removeTree(dir string) error {
	var dirs []string
	_ = filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			dirs = append(dirs, path)
		}
		return nil
	})
	var errs []error
	for i := len(dirs) - 1; i >= 0; i-- {
		if err := os.Remove(dirs[i]); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("cgroup: cannot remove %s: %w", dir, errors.Join(errs...))
	}
	return nil
}

// EndDir ends and removes a dead run's directory: it must be named
// snakepit-<runID> and lie on a cgroup2 file system, or it is not touched.
// It returns the processes it found in it.
func EndDir(dir, runID string, timeout time.Duration) ([]int, error) {
	if filepath.Base(dir) != RunDirName(runID) || !isCgroup2(dir) {
		return nil, fmt.Errorf("cgroup: %s is not the cgroup of run %s; not touched", dir, runID)
	}
	pids := procsUnder(dir)
	return pids, endTree(dir, timeout)
}

// RunDirs lists the existing directories of run id: the one the registry
// recorded (recorded; may be empty) and those named for it in d.Base and
// its parent (the two places NewRun creates them), each on cgroup2 and
// named exactly snakepit-<runID>.
func RunDirs(d Detection, runID, recorded string) []string {
	var out []string
	add := func(dir string) {
		if dir == "" || filepath.Base(dir) != RunDirName(runID) || contains(out, dir) || !isCgroup2(dir) {
			return
		}
		out = append(out, dir)
	}
	add(filepath.Clean(recorded))
	if d.Mode.Contained() {
		add(filepath.Join(d.Base, RunDirName(runID)))
		if d.Base != d.Mount {
			add(filepath.Join(filepath.Dir(d.Base), RunDirName(runID)))
		}
	}
	return out
}
