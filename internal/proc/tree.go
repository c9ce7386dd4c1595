package proc

import (
	"bytes"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Descendants returns the live (non-zombie) descendants of pid found
// through the parent-pid chain in one scan of /proc: children,
// grandchildren, ..., wherever they moved their process group or session.
// pid itself is not included. A descendant whose parent died and that was
// reparented outside pid's tree is not found (unless pid is its child
// subreaper, as snakepit's Python worker is).
func Descendants(pid int) ([]Stat, error) {
	pids, err := listPIDs()
	if err != nil {
		return nil, err
	}
	children := map[int][]Stat{}
	for _, p := range pids {
		st, err := ReadStat(p)
		if err != nil {
			continue
		}
		children[st.PPID] = append(children[st.PPID], st)
	}
	var out []Stat
	seen := map[int]bool{pid: true}
	stack := []int{pid}
	for len(stack) > 0 {
		p := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		for _, c := range children[p] {
			if seen[c.PID] {
				continue
			}
			seen[c.PID] = true
			stack = append(stack, c.PID)
			if !c.Zombie() {
				out = append(out, c)
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].PID < out[j].PID })
	return out, nil
}

// RSS returns the resident set size of pid in bytes (the second field of
// /proc/PID/statm times the page size: anonymous, file-backed and shared
// memory pages, as VmRSS in /proc/PID/status). An exited process yields an
// error matching ErrGone.
func RSS(pid int) (int64, error) {
	b, err := readProcFile(pid, "statm")
	if err != nil {
		return 0, err
	}
	f := strings.Fields(string(b))
	if len(f) < 2 {
		return 0, fmt.Errorf("proc: pid %d: malformed statm %q", pid, b)
	}
	pages, err := strconv.ParseInt(f[1], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("proc: pid %d: malformed statm %q", pid, b)
	}
	return pages * int64(os.Getpagesize()), nil
}

// TreeRSS is the RSS of pid plus that of each of its live descendants
// (Descendants). Pages shared between them (copy-on-write after fork,
// shared libraries) are counted once per process, so the sum is an upper
// bound of the tree's real footprint — the right side to err on for a
// recycle threshold. Descendants that exit mid-scan count as 0.
func TreeRSS(pid int) (int64, error) {
	total, err := RSS(pid)
	if err != nil {
		return 0, err
	}
	kids, err := Descendants(pid)
	if err != nil {
		return total, err
	}
	for _, k := range kids {
		if n, err := RSS(k.PID); err == nil {
			total += n
		}
	}
	return total, nil
}

// Tagged is a live process whose environment carries both the run id and
// an exact tag variable (see FindTagged).
type Tagged struct {
	Stat
	RunID string
}

// Identity returns the identity under which p can be verified and signalled.
func (p Tagged) Identity(bootID string) Identity {
	return Identity{PID: p.PID, StartTime: p.StartTime, BootID: bootID, RunID: p.RunID}
}

// FindTagged scans /proc for live processes started at or after
// startedAfter (clock ticks after boot, as Stat.StartTime) whose
// environment holds exactly RunIDEnv=runID and tagVar=tag. The start-time
// filter keeps the scan cheap (only younger processes' environments are
// read) and is part of the proof: a process carrying the tag was spawned
// by the tagged process or its descendants, which all started after it.
// The caller and its ancestors are never returned. Empty runID or tag
// finds nothing.
func FindTagged(runID, tagVar, tag string, startedAfter uint64) ([]Tagged, error) {
	if runID == "" || tag == "" || tagVar == "" {
		return nil, nil
	}
	pids, err := listPIDs()
	if err != nil {
		return nil, err
	}
	skip := selfAndAncestors()
	wantRun := []byte(RunIDEnv + "=" + runID)
	wantTag := []byte(tagVar + "=" + tag)
	var out []Tagged
	for _, pid := range pids {
		if skip[pid] {
			continue
		}
		st, err := ReadStat(pid)
		if err != nil || st.Zombie() || st.StartTime < startedAfter {
			continue
		}
		b, err := readProcFile(pid, "environ")
		if err != nil {
			continue
		}
		run, tagged := false, false
		for _, kv := range bytes.Split(b, []byte{0}) {
			run = run || bytes.Equal(kv, wantRun)
			tagged = tagged || bytes.Equal(kv, wantTag)
		}
		if run && tagged {
			out = append(out, Tagged{Stat: st, RunID: runID})
		}
	}
	return out, nil
}

// KillTagged SIGKILLs every process FindTagged finds: it freezes each with
// SIGSTOP and scans again until no new one appears (so nothing can fork
// between the scan and the kill), then SIGKILLs them all. Every signal is
// sent only after the process's identity verified (SignalVerified). It
// returns the processes it signalled, once each has died (or after
// killWait, for one stuck in uninterruptible sleep).
func KillTagged(runID, tagVar, tag string, startedAfter uint64) ([]Tagged, error) {
	boot, err := BootID()
	if err != nil {
		return nil, err
	}
	frozen := map[int]Tagged{}
	var order []Tagged
	for round := 0; round < 16; round++ {
		found, err := FindTagged(runID, tagVar, tag, startedAfter)
		if err != nil {
			return order, err
		}
		grew := false
		for _, p := range found {
			if _, ok := frozen[p.PID]; ok {
				continue
			}
			if SignalVerified(p.Identity(boot), syscall.SIGSTOP) == nil {
				frozen[p.PID] = p
				order = append(order, p)
				grew = true
			}
		}
		if !grew {
			break
		}
	}
	var killed []Tagged
	for _, p := range order {
		if SignalVerified(p.Identity(boot), syscall.SIGKILL) == nil {
			killed = append(killed, p)
		}
	}
	deadline := time.Now().Add(killWait)
	for _, p := range killed {
		for sameAlive(p.Stat) && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
		}
	}
	return killed, nil
}

// sameAlive: the process st describes still runs (same pid and start
// time, not a zombie). A dying process loses its argv and environment
// before it turns zombie, so Verify is not the test of death.
func sameAlive(st Stat) bool {
	now, err := ReadStat(st.PID)
	return err == nil && !now.Zombie() && now.StartTime == st.StartTime
}
