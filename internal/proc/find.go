package proc

import (
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
)

// Process is a live process found carrying a run id.
type Process struct {
	PID       int
	PPID      int
	PGID      int
	StartTime uint64
	RunID     string // which of the searched run ids it carries
	Cmdline   string // argv joined by spaces, for logs only (never parse it)
}

// Identity returns the identity under which p can be verified and signalled.
func (p Process) Identity(bootID string) Identity {
	return Identity{PID: p.PID, StartTime: p.StartTime, BootID: bootID, RunID: p.RunID}
}

// CarriesRunID reports whether pid carries runID in its argv or environment,
// by exact match only. An empty runID never matches.
func CarriesRunID(pid int, runID string) bool {
	if runID == "" {
		return false
	}
	set := map[string]bool{runID: true}
	if argv, err := Cmdline(pid); err == nil && argvRunID(argv, set) != "" {
		return true
	}
	env, err := Environ(pid)
	return err == nil && envRunID(env, set) != ""
}

// argvRunID returns the run id from set that argv carries, or "".
func argvRunID(argv []string, set map[string]bool) string {
	for i, a := range argv {
		if a == RunIDFlag {
			if i+1 < len(argv) && set[argv[i+1]] {
				return argv[i+1]
			}
			continue
		}
		if v, ok := strings.CutPrefix(a, RunIDFlag+"="); ok && set[v] {
			return v
		}
	}
	return ""
}

// envRunID returns the run id from set that env carries, or "".
func envRunID(env []string, set map[string]bool) string {
	for _, e := range env {
		if v, ok := strings.CutPrefix(e, RunIDEnv+"="); ok && set[v] {
			return v
		}
	}
	return ""
}

// FindByRunID scans /proc for live (non-zombie) processes carrying any of
// runIDs. The caller and its ancestors are never returned: a host started
// from something that carries a run id must not find (and kill) its own
// line. Processes that vanish or cannot be read mid-scan are skipped; the
// only error is failing to list /proc at all. The result is sorted by pid.
func FindByRunID(runIDs ...string) ([]Process, error) {
	set := make(map[string]bool, len(runIDs))
	for _, id := range runIDs {
		if id != "" {
			set[id] = true
		}
	}
	if len(set) == 0 {
		return nil, nil
	}
	names, err := listPIDs()
	if err != nil {
		return nil, err
	}
	skip := selfAndAncestors()
	var out []Process
	for _, pid := range names {
		if skip[pid] {
			continue
		}
		p, ok := inspect(pid, set)
		if ok {
			out = append(out, p)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].PID < out[j].PID })
	return out, nil
}

func inspect(pid int, set map[string]bool) (Process, bool) {
	argv, err := Cmdline(pid)
	if err != nil {
		return Process{}, false
	}
	id := argvRunID(argv, set)
	if id == "" {
		env, err := Environ(pid)
		if err != nil {
			return Process{}, false
		}
		if id = envRunID(env, set); id == "" {
			return Process{}, false
		}
	}
	// stat last: if the pid was recycled between the reads, the start time
	// taken here belongs to the newcomer, and signalling through Identity
	// re-verifies the run id against that very process anyway.
	st, err := ReadStat(pid)
	if err != nil || st.Zombie() {
		return Process{}, false
	}
	return Process{
		PID: pid, PPID: st.PPID, PGID: st.PGID, StartTime: st.StartTime,
		RunID: id, Cmdline: strings.Join(argv, " "),
	}, true
}

// listPIDs lists the numeric entries of /proc (thread-group leaders only;
// threads are hidden there, which is what we want).
func listPIDs() ([]int, error) {
	d, err := os.Open(procRoot)
	if err != nil {
		return nil, fmt.Errorf("proc: scan %s: %w", procRoot, err)
	}
	defer d.Close()
	names, err := d.Readdirnames(-1)
	if err != nil {
		return nil, fmt.Errorf("proc: scan %s: %w", procRoot, err)
	}
	pids := make([]int, 0, len(names))
	for _, n := range names {
		if pid, err := strconv.Atoi(n); err == nil && pid > 0 {
			pids = append(pids, pid)
		}
	}
	return pids, nil
}

func selfAndAncestors() map[int]bool {
	skip := map[int]bool{}
	for pid := os.Getpid(); pid > 0 && !skip[pid]; {
		skip[pid] = true
		st, err := ReadStat(pid)
		if err != nil {
			break
		}
		pid = st.PPID
	}
	return skip
}

// groupMembers returns the live members of process group pgid.
func groupMembers(pgid int) []Stat {
	pids, err := listPIDs()
	if err != nil {
		return nil
	}
	var out []Stat
	for _, pid := range pids {
		st, err := ReadStat(pid)
		if err == nil && st.PGID == pgid && !st.Zombie() {
			out = append(out, st)
		}
	}
	return out
}
