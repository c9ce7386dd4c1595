// Package proctest starts real child processes for the tests of the "no
// survivors" packages and guarantees each one is killed and reaped by the
// test that started it.
//
// Tests call Main from TestMain: it makes the test binary a child subreaper,
// so grandchildren orphaned by a test (a leader killed before its children)
// are re-parented to the test binary instead of to PID 1 — which in some
// containers never reaps — and can be reaped by their test. After the tests
// it fails the run if any child process is left or any goroutine leaked.
//
// Only processes this package started are ever signalled, through pidfds
// opened while their identity (parent and start time) was checked.
package proctest

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/snakepit-go/snakepit/internal/proc"
	"go.uber.org/goleak"
	"golang.org/x/sys/unix"
)

// SutureRemoveNotice ignores suture v4's own leak: when RemoveAndWait
// gives up on its timeout (a child that overran its stop bound, which we log),
// suture's goroutine that would report the removal stays blocked on an
// unbuffered send nobody reads. It holds no process and no descriptor.
var SutureRemoveNotice = goleak.IgnoreTopFunction("github.com/thejerf/suture/v4.(*Supervisor).removeService.func1.1")

// Main runs the tests of a package whose tests start processes.
func Main(m *testing.M) {
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		fmt.Fprintf(os.Stderr, "proctest: cannot become a child subreaper: %v\n", err)
		os.Exit(2)
	}
	code := m.Run()
	if code == 0 {
		if kids := childrenOf(os.Getpid(), true); len(kids) > 0 {
			fmt.Fprintf(os.Stderr, "proctest: %d child process(es) left behind by the tests: %v\n", len(kids), kids)
			code = 1
		}
		if err := goleak.Find(SutureRemoveNotice); err != nil {
			fmt.Fprintf(os.Stderr, "proctest: %v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}

// Spec describes a process tree to start: a /bin/sh leader (its own process
// group leader unless NoSetpgid) waiting on sleep children.
type Spec struct {
	Args           []string // extra argv of the leader, e.g. RunIDArgs(id)
	EnvRunID       string   // SNAKEPIT_RUN_ID in the environment (inherited by the children)
	Env            []string // more environment entries
	GroupMates     int      // sleep children in the leader's group besides the one it always waits on
	OwnGroup       int      // sleep children that move to their own session and group (setsid)
	IgnoreTERM     bool     // leader and children ignore SIGTERM, so only SIGKILL stops them
	KidsIgnoreTERM bool     // only the children ignore SIGTERM
	NoSetpgid      bool     // leave the leader in the test binary's group (never signal that group!)
}

// RunIDArgs is the argv pair that carries runID.
func RunIDArgs(runID string) []string { return []string{proc.RunIDFlag, runID} }

// Kid is a child of the leader. Kids lists the 1+GroupMates group-mates
// and the OwnGroup children in no particular order; check PGID to tell.
type Kid struct {
	PID       int
	PGID      int
	StartTime uint64
	fd        int // pidfd, opened while its parent and start time were checked
}

// Child is a started process tree.
type Child struct {
	t         testing.TB
	PID       int
	StartTime uint64
	Kids      []Kid
	cmd       *exec.Cmd
	done      chan struct{}
	state     *os.ProcessState
}

// Start starts the tree described by s and waits (polling, with a deadline)
// until every child has exec'd sleep and, for OwnGroup, left the group. It
// registers a cleanup that kills and reaps all of it.
func Start(t testing.TB, s Spec) *Child {
	t.Helper()
	var script strings.Builder
	if s.IgnoreTERM {
		script.WriteString("trap '' TERM; ")
	}
	kid := func(cmd string) {
		if s.KidsIgnoreTERM {
			cmd = "(trap '' TERM; exec " + cmd + ")"
		}
		script.WriteString(cmd + " & ")
	}
	for range s.GroupMates {
		kid("sleep 300")
	}
	for range s.OwnGroup {
		kid("setsid sleep 300")
	}
	kid("sleep 300")
	script.WriteString("wait")
	// The last "sleep 300 &" plus "wait" keeps the shell itself alive and
	// waiting (a bare "sleep" could be exec'd in place of the shell).
	args := append([]string{"-c", script.String(), "sh"}, s.Args...)
	cmd := exec.Command("/bin/sh", args...)
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH")}, s.Env...)
	if s.EnvRunID != "" {
		cmd.Env = append(cmd.Env, proc.RunIDEnv+"="+s.EnvRunID)
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: !s.NoSetpgid}
	if err := cmd.Start(); err != nil {
		t.Fatalf("proctest: start sh: %v", err)
	}
	c := &Child{t: t, PID: cmd.Process.Pid, cmd: cmd, done: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		c.state = cmd.ProcessState
		close(c.done)
	}()
	t.Cleanup(c.cleanup)
	st, err := proc.ReadStat(c.PID)
	if err != nil {
		t.Fatalf("proctest: stat of fresh child %d: %v", c.PID, err)
	}
	c.StartTime = st.StartTime

	want := s.GroupMates + s.OwnGroup + 1
	deadline := time.Now().Add(10 * time.Second)
	for {
		kids := childrenOf(c.PID, false)
		own, sleeping := 0, 0
		for _, k := range kids {
			if k.Comm == "sleep" {
				sleeping++
				if k.PGID == k.PID {
					own++
				}
			}
		}
		if sleeping == want && own == s.OwnGroup {
			for _, k := range kids {
				c.adopt(k)
			}
			if len(c.Kids) == want {
				return c
			}
			for _, k := range c.Kids { // a kid changed under us; look again
				_ = unix.Close(k.fd)
			}
			c.Kids = nil
		}
		if time.Now().After(deadline) {
			t.Fatalf("proctest: children of %d did not appear: %+v", c.PID, kids)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// adopt opens a pidfd for k and keeps it only if k is still the same child.
func (c *Child) adopt(k proc.Stat) {
	fd, err := unix.PidfdOpen(k.PID, 0)
	if err != nil {
		return
	}
	now, err := proc.ReadStat(k.PID)
	if err != nil || now.StartTime != k.StartTime || now.PPID != c.PID {
		_ = unix.Close(fd)
		return
	}
	c.Kids = append(c.Kids, Kid{PID: k.PID, PGID: now.PGID, StartTime: k.StartTime, fd: fd})
}

// childrenOf lists the children of ppid (zombies only if withZombies).
func childrenOf(ppid int, withZombies bool) []proc.Stat {
	ents, _ := os.ReadDir("/proc")
	var out []proc.Stat
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		st, err := proc.ReadStat(pid)
		if err == nil && st.PPID == ppid && (withZombies || !st.Zombie()) {
			out = append(out, st)
		}
	}
	return out
}

// Exited reports whether the leader has exited and been reaped by the test.
func (c *Child) Exited() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// Alive reports whether the leader is alive (not even a zombie).
func (c *Child) Alive() bool { return !c.Exited() && Alive(c.PID, c.StartTime) }

// KidAlive reports whether kid i is alive.
func (c *Child) KidAlive(i int) bool { return Alive(c.Kids[i].PID, c.Kids[i].StartTime) }

// Identity is the identity of the leader under runID.
func (c *Child) Identity(runID string) proc.Identity {
	boot, _ := proc.BootID()
	return proc.Identity{PID: c.PID, StartTime: c.StartTime, BootID: boot, RunID: runID}
}

// Alive reports whether the process pid started at start is alive; a
// recycled pid does not count.
func Alive(pid int, start uint64) bool {
	st, err := proc.ReadStat(pid)
	return err == nil && !st.Zombie() && st.StartTime == start
}

// WaitAllGone polls until the leader and every kid are dead, failing the
// test at the deadline.
func (c *Child) WaitAllGone(timeout time.Duration) {
	c.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		var alive []int
		if !c.Exited() && Alive(c.PID, c.StartTime) {
			alive = append(alive, c.PID)
		}
		for i, k := range c.Kids {
			if c.KidAlive(i) {
				alive = append(alive, k.PID)
			}
		}
		if len(alive) == 0 {
			return
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("proctest: still alive after %v: %v", timeout, alive)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// WaitExited polls until the leader has exited and been reaped.
func (c *Child) WaitExited(timeout time.Duration) {
	c.t.Helper()
	select {
	case <-c.done:
	case <-time.After(timeout):
		c.t.Fatalf("proctest: leader %d still running after %v", c.PID, timeout)
	}
}

// AssertNotSignalled fails the test unless the leader and its kids are all
// still alive and the leader, killed now by the test itself, dies of that
// SIGKILL. A fatal signal delivered earlier (e.g. a SIGTERM from the code
// under test) would have fixed the exit status first, so this proves nothing
// was sent without waiting for an arbitrary time.
func (c *Child) AssertNotSignalled() {
	c.t.Helper()
	if !c.Alive() {
		c.t.Errorf("proctest: leader %d is no longer alive; something signalled it", c.PID)
		return
	}
	for i, k := range c.Kids {
		if !c.KidAlive(i) {
			c.t.Errorf("proctest: child %d of %d is no longer alive", k.PID, c.PID)
		}
	}
	_ = c.cmd.Process.Signal(syscall.SIGKILL)
	select {
	case <-c.done:
	case <-time.After(10 * time.Second):
		c.t.Fatalf("proctest: leader %d did not die of SIGKILL", c.PID)
	}
	ws, ok := c.state.Sys().(syscall.WaitStatus)
	if !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		c.t.Errorf("proctest: leader %d ended with %v, want death by the test's SIGKILL", c.PID, c.state)
	}
}

func (c *Child) cleanup() {
	c.t.Helper()
	for _, k := range c.Kids {
		_ = unix.PidfdSendSignal(k.fd, unix.SIGKILL, nil, 0)
	}
	if !c.Exited() {
		_ = c.cmd.Process.Signal(syscall.SIGKILL)
	}
	select {
	case <-c.done:
	case <-time.After(10 * time.Second):
		c.t.Errorf("proctest: leader %d not reaped 10s after SIGKILL", c.PID)
	}
	// With the leader reaped, its kids are children of this (subreaper)
	// process: reap each through its pidfd, which cannot hit another test's
	// child that recycled the pid.
	deadline := time.Now().Add(10 * time.Second)
	for _, k := range c.Kids {
		for {
			var info unix.Siginfo
			err := unix.Waitid(unix.P_PIDFD, k.fd, &info, unix.WEXITED|unix.WNOHANG, nil)
			if errors.Is(err, unix.ECHILD) || unix.PidfdSendSignal(k.fd, 0, nil, 0) != nil {
				break // reaped (by us or by the shell before it died)
			}
			if err != nil && !errors.Is(err, unix.EINTR) {
				c.t.Errorf("proctest: reap child %d: %v", k.PID, err)
				break
			}
			if time.Now().After(deadline) {
				c.t.Errorf("proctest: child %d not reaped 10s after SIGKILL", k.PID)
				break
			}
			time.Sleep(2 * time.Millisecond)
		}
		_ = unix.Close(k.fd)
	}
}
