package proc_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/snakepit-go/snakepit/internal/proc"
	"github.com/snakepit-go/snakepit/internal/proc/proctest"
)

func TestMain(m *testing.M) { proctest.Main(m) }

func newRunID(t testing.TB) string {
	t.Helper()
	b := make([]byte, 6)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return "t-" + hex.EncodeToString(b)
}

func TestBootID(t *testing.T) {
	a, err := proc.BootID()
	if err != nil {
		t.Fatal(err)
	}
	b, _ := proc.BootID()
	if a == "" || a != b {
		t.Fatalf("boot id %q then %q", a, b)
	}
}

// A real process whose name holds spaces and parentheses: its stat line
// must still parse to the right fields.
func TestReadStatHostileComm(t *testing.T) {
	src, err := exec.LookPath("sleep")
	if err != nil {
		t.Skip("no sleep binary")
	}
	dst := filepath.Join(t.TempDir(), "a) b (c")
	copyFile(t, src, dst)
	cmd := exec.Command(dst, "300")
	if err := cmd.Start(); err != nil {
		t.Skipf("cannot run a copied binary here: %v", err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })

	st, err := proc.ReadStat(cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	if st.Comm != "a) b (c" || st.PID != cmd.Process.Pid || st.PPID != os.Getpid() || st.StartTime == 0 {
		t.Fatalf("unexpected stat %+v", st)
	}
	start, err := proc.StartTime(cmd.Process.Pid)
	if err != nil || start != st.StartTime {
		t.Fatalf("StartTime = %d, %v; want %d", start, err, st.StartTime)
	}
}

func copyFile(t *testing.T, src, dst string) {
	t.Helper()
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestCmdlineEnvironCarries(t *testing.T) {
	id := newRunID(t)
	argvOnly := proctest.Start(t, proctest.Spec{Args: proctest.RunIDArgs(id)})
	joined := proctest.Start(t, proctest.Spec{Args: []string{proc.RunIDFlag + "=" + id}})
	envOnly := proctest.Start(t, proctest.Spec{EnvRunID: id})
	prefix := proctest.Start(t, proctest.Spec{Args: proctest.RunIDArgs(id + "x"), EnvRunID: id[:len(id)-1]})

	argv, err := proc.Cmdline(argvOnly.PID)
	if err != nil || !slices.Equal(argv[len(argv)-2:], []string{proc.RunIDFlag, id}) {
		t.Fatalf("Cmdline = %q, %v", argv, err)
	}
	env, err := proc.Environ(envOnly.PID)
	if err != nil || !slices.Contains(env, proc.RunIDEnv+"="+id) {
		t.Fatalf("Environ = %q, %v", env, err)
	}
	for name, tc := range map[string]struct {
		pid  int
		want bool
	}{
		"argv":                        {argvOnly.PID, true},
		"argv=":                       {joined.PID, true},
		"env":                         {envOnly.PID, true},
		"env of child":                {envOnly.Kids[0].PID, true},
		"argv not inherited by child": {argvOnly.Kids[0].PID, false},
		"prefixes only":               {prefix.PID, false},
		"test binary":                 {os.Getpid(), false},
	} {
		if got := proc.CarriesRunID(tc.pid, id); got != tc.want {
			t.Errorf("%s: CarriesRunID = %v, want %v", name, got, tc.want)
		}
	}
	if proc.CarriesRunID(envOnly.PID, "") {
		t.Error("empty run id matched")
	}
	if !proc.Alive(envOnly.PID) || proc.Alive(1<<30) {
		t.Error("Alive is wrong")
	}
}

func TestFindByRunID(t *testing.T) {
	a, b := newRunID(t), newRunID(t)
	ca := proctest.Start(t, proctest.Spec{Args: proctest.RunIDArgs(a), EnvRunID: a, GroupMates: 1, OwnGroup: 1})
	cb := proctest.Start(t, proctest.Spec{EnvRunID: b})
	stranger := proctest.Start(t, proctest.Spec{})

	found, err := proc.FindByRunID(a)
	if err != nil {
		t.Fatal(err)
	}
	want := []int{ca.PID}
	for _, k := range ca.Kids {
		want = append(want, k.PID)
	}
	slices.Sort(want)
	var got []int
	for _, p := range found {
		got = append(got, p.PID)
		if p.RunID != a || p.StartTime == 0 || p.Cmdline == "" {
			t.Errorf("bad entry %+v", p)
		}
		if p.PID == ca.PID && (p.PGID != ca.PID || p.PPID != os.Getpid()) {
			t.Errorf("leader entry %+v", p)
		}
	}
	if !slices.Equal(got, want) {
		t.Fatalf("FindByRunID(a) = %v, want %v", got, want)
	}

	both, err := proc.FindByRunID(a, b, "")
	if err != nil {
		t.Fatal(err)
	}
	if len(both) != len(want)+2 { // cb and its one child
		t.Fatalf("FindByRunID(a, b) found %d, want %d: %+v", len(both), len(want)+2, both)
	}
	for _, p := range both {
		if p.PID == stranger.PID || p.PID == os.Getpid() {
			t.Fatalf("found a process without the run id: %+v", p)
		}
	}
	if none, err := proc.FindByRunID(); err != nil || none != nil {
		t.Fatalf("FindByRunID() = %v, %v", none, err)
	}
	_ = cb
}

func TestVerify(t *testing.T) {
	id := newRunID(t)
	c := proctest.Start(t, proctest.Spec{Args: proctest.RunIDArgs(id)})
	good := c.Identity(id)
	if err := proc.Verify(good); err != nil {
		t.Fatalf("Verify(good) = %v", err)
	}
	mutate := func(f func(*proc.Identity)) proc.Identity { x := good; f(&x); return x }
	for name, tc := range map[string]struct {
		id    proc.Identity
		check proc.Check
		is    error
	}{
		"start time": {mutate(func(x *proc.Identity) { x.StartTime++ }), proc.CheckStartTime, proc.ErrPIDReused},
		"run id":     {mutate(func(x *proc.Identity) { x.RunID = newRunID(t) }), proc.CheckRunID, proc.ErrPIDReused},
		"run prefix": {mutate(func(x *proc.Identity) { x.RunID = id[:len(id)-1] }), proc.CheckRunID, proc.ErrPIDReused},
		"boot id":    {mutate(func(x *proc.Identity) { x.BootID = "00000000-0000-0000-0000-000000000000" }), proc.CheckBootID, proc.ErrGone},
		"no pid":     {mutate(func(x *proc.Identity) { x.PID = 1 << 30 }), proc.CheckAlive, proc.ErrGone},
		"incomplete": {mutate(func(x *proc.Identity) { x.BootID = "" }), proc.CheckIdentity, proc.ErrUnverifiable},
		"pid 1":      {mutate(func(x *proc.Identity) { x.PID = 1 }), proc.CheckIdentity, proc.ErrUnverifiable},
		"self":       {mutate(func(x *proc.Identity) { x.PID = os.Getpid() }), proc.CheckIdentity, proc.ErrUnverifiable},
	} {
		err := proc.Verify(tc.id)
		var ie *proc.IdentityError
		if !errors.As(err, &ie) || ie.Check != tc.check || !errors.Is(err, tc.is) {
			t.Errorf("%s: Verify = %v, want check %q matching %v", name, err, tc.check, tc.is)
		}
	}
}

func TestZombieIsNotAlive(t *testing.T) {
	id := newRunID(t)
	cmd := exec.Command("/bin/sh", "-c", "exit 0", "sh", proc.RunIDFlag, id)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pid := cmd.Process.Pid
	reaped := false
	t.Cleanup(func() {
		if !reaped {
			_ = cmd.Wait()
		}
	})
	waitFor(t, 5*time.Second, func() bool {
		st, err := proc.ReadStat(pid)
		return err == nil && st.Zombie()
	})
	if proc.Alive(pid) {
		t.Fatal("a zombie counts as alive")
	}
	st, _ := proc.ReadStat(pid)
	boot, _ := proc.BootID()
	if err := proc.Verify(proc.Identity{PID: pid, StartTime: st.StartTime, BootID: boot, RunID: id}); !errors.Is(err, proc.ErrGone) {
		t.Fatalf("Verify(zombie) = %v, want ErrGone", err)
	}
	out, err := proc.TerminateGroup(context.Background(), proc.Identity{PID: pid, StartTime: st.StartTime, BootID: boot, RunID: id}, time.Second)
	if out != proc.AlreadyGone || err != nil {
		t.Fatalf("TerminateGroup(zombie) = %v, %v", out, err)
	}
	reaped = true
	_ = cmd.Wait()
}

// The identity guard: a wrong start time (the record of a process that
// died and whose pid was recycled) is refused by every signalling entry
// point, and nothing at all is delivered.
func TestWrongStartTimeSignalsNothing(t *testing.T) {
	id := newRunID(t)
	c := proctest.Start(t, proctest.Spec{Args: proctest.RunIDArgs(id), EnvRunID: id, GroupMates: 1})
	bad := c.Identity(id)
	bad.StartTime--

	if err := proc.SignalVerified(bad, syscall.SIGTERM); !errors.Is(err, proc.ErrPIDReused) {
		t.Errorf("SignalVerified = %v, want ErrPIDReused", err)
	}
	if out, err := proc.Terminate(context.Background(), bad, time.Second); out != proc.NotSignalled || !errors.Is(err, proc.ErrPIDReused) {
		t.Errorf("Terminate = %v, %v", out, err)
	}
	if out, err := proc.TerminateGroup(context.Background(), bad, time.Second); out != proc.NotSignalled || !errors.Is(err, proc.ErrPIDReused) {
		t.Errorf("TerminateGroup = %v, %v", out, err)
	}
	c.AssertNotSignalled()
}

func TestWrongRunIDSignalsNothing(t *testing.T) {
	c := proctest.Start(t, proctest.Spec{Args: proctest.RunIDArgs(newRunID(t))})
	if out, err := proc.TerminateGroup(context.Background(), c.Identity(newRunID(t)), time.Second); out != proc.NotSignalled || !errors.Is(err, proc.ErrPIDReused) {
		t.Errorf("TerminateGroup = %v, %v", out, err)
	}
	c.AssertNotSignalled()
}

func TestSignalVerifiedHitsOnlyTheProcess(t *testing.T) {
	id := newRunID(t)
	c := proctest.Start(t, proctest.Spec{Args: proctest.RunIDArgs(id), GroupMates: 1})
	if err := proc.SignalVerified(c.Identity(id), syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, c.Exited)
	for i := range c.Kids {
		if !c.KidAlive(i) {
			t.Errorf("group-mate %d was signalled too", c.Kids[i].PID)
		}
	}
}

func TestTerminateGroup(t *testing.T) {
	for _, fallback := range []bool{false, true} {
		name := "pidfd"
		if fallback {
			name = "kill-fallback"
		}
		t.Run(name, func(t *testing.T) {
			if fallback {
				proc.DisablePidfd(t)
			}
			id := newRunID(t)
			c := proctest.Start(t, proctest.Spec{Args: proctest.RunIDArgs(id), EnvRunID: id, GroupMates: 2, OwnGroup: 1})
			out, err := proc.TerminateGroup(context.Background(), c.Identity(id), 5*time.Second)
			if out != proc.Terminated || err != nil {
				t.Fatalf("TerminateGroup = %v, %v", out, err)
			}
			for i, k := range c.Kids {
				// Once the leader is reaped, a member counts only while it
				// shows the run id, and an exiting one no longer can (its
				// command line and environ go before it becomes a zombie):
				// it may still be on its way out when TerminateGroup returns.
				deadline := time.Now().Add(5 * time.Second)
				for k.PGID == c.PID && c.KidAlive(i) && time.Now().Before(deadline) {
					time.Sleep(5 * time.Millisecond)
				}
				if k.PGID == c.PID && c.KidAlive(i) {
					t.Errorf("group-mate %d survived", k.PID)
				}
				if k.PGID != c.PID && !c.KidAlive(i) {
					t.Errorf("child %d in its own group was signalled with the group", k.PID)
				}
			}
			waitFor(t, 5*time.Second, c.Exited)
		})
	}
}

func TestTerminateGroupEscalatesToSIGKILL(t *testing.T) {
	id := newRunID(t)
	c := proctest.Start(t, proctest.Spec{Args: proctest.RunIDArgs(id), GroupMates: 1, IgnoreTERM: true})
	start := time.Now()
	out, err := proc.TerminateGroup(context.Background(), c.Identity(id), 300*time.Millisecond)
	if out != proc.Killed || err != nil {
		t.Fatalf("TerminateGroup = %v, %v", out, err)
	}
	if d := time.Since(start); d < 300*time.Millisecond {
		t.Errorf("SIGKILL came after %v, before the grace ended", d)
	}
	c.WaitAllGone(5 * time.Second)
}

func TestTerminateCancelledContextStillKills(t *testing.T) {
	id := newRunID(t)
	c := proctest.Start(t, proctest.Spec{Args: proctest.RunIDArgs(id), IgnoreTERM: true})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	start := time.Now()
	out, err := proc.TerminateGroup(ctx, c.Identity(id), time.Hour)
	if out != proc.Killed || err != nil {
		t.Fatalf("TerminateGroup = %v, %v", out, err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("took %v despite the cancelled context", d)
	}
	c.WaitAllGone(5 * time.Second)
}

// A process that is not a group leader (here it shares the test binary's
// group) is stopped alone: signalling its group would hit the test itself.
func TestTerminateGroupOfNonLeaderStopsOnlyTheProcess(t *testing.T) {
	id := newRunID(t)
	c := proctest.Start(t, proctest.Spec{Args: proctest.RunIDArgs(id), NoSetpgid: true})
	out, err := proc.TerminateGroup(context.Background(), c.Identity(id), 5*time.Second)
	if out != proc.Terminated || err != nil {
		t.Fatalf("TerminateGroup = %v, %v", out, err)
	}
	waitFor(t, 5*time.Second, c.Exited)
	if !c.KidAlive(0) {
		t.Error("the non-leader's group was signalled")
	}
}

// The leader exits on SIGTERM at once but a group-mate ignores it: the
// group is not done until the grace ends, and the member then gets SIGKILL
// (through the group while the leader is unreaped, else one by one because
// it carries the run id).
func TestTerminateGroupKillsLingeringMember(t *testing.T) {
	id := newRunID(t)
	c := proctest.Start(t, proctest.Spec{Args: proctest.RunIDArgs(id), EnvRunID: id, KidsIgnoreTERM: true})
	out, err := proc.TerminateGroup(context.Background(), c.Identity(id), 300*time.Millisecond)
	if out != proc.Killed || err != nil {
		t.Fatalf("TerminateGroup = %v, %v", out, err)
	}
	c.WaitAllGone(5 * time.Second)
}

// Once the leader is reaped, a member left behind is found by its run id
// and stopped on its own.
func TestMemberOfReapedLeaderFoundByRunID(t *testing.T) {
	id := newRunID(t)
	c := proctest.Start(t, proctest.Spec{Args: proctest.RunIDArgs(id), EnvRunID: id, KidsIgnoreTERM: true})
	if err := proc.SignalVerified(c.Identity(id), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, c.Exited)
	out, err := proc.TerminateGroup(context.Background(), c.Identity(id), 200*time.Millisecond)
	if out != proc.AlreadyGone && !errors.Is(err, proc.ErrPIDReused) {
		t.Fatalf("TerminateGroup(reaped leader) = %v, %v", out, err)
	}
	found, err := proc.FindByRunID(id)
	if err != nil || len(found) != 1 || found[0].PID != c.Kids[0].PID {
		t.Fatalf("FindByRunID = %+v, %v", found, err)
	}
	boot, _ := proc.BootID()
	out, err = proc.Terminate(context.Background(), found[0].Identity(boot), 200*time.Millisecond)
	if out != proc.Killed || err != nil {
		t.Fatalf("Terminate(member) = %v, %v", out, err)
	}
	c.WaitAllGone(5 * time.Second)
}

func TestAlreadyGone(t *testing.T) {
	id := newRunID(t)
	c := proctest.Start(t, proctest.Spec{Args: proctest.RunIDArgs(id)})
	ident := c.Identity(id)
	if err := proc.SignalVerified(ident, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, c.Exited)
	out, err := proc.Terminate(context.Background(), ident, time.Second)
	// The pid may in principle have been recycled already; then the start
	// time check refuses it, which is just as safe.
	if !(out == proc.AlreadyGone && err == nil) && !(out == proc.NotSignalled && errors.Is(err, proc.ErrPIDReused)) {
		t.Fatalf("Terminate(reaped) = %v, %v", out, err)
	}
	if err := proc.SignalVerified(ident, syscall.SIGTERM); !errors.Is(err, proc.ErrGone) && !errors.Is(err, proc.ErrPIDReused) {
		t.Fatalf("SignalVerified(reaped) = %v", err)
	}
}

func waitFor(t testing.TB, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %v", timeout)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// A recorded pid that is now a thread of another process (here: of the test
// binary) is refused, never signalled.
func TestThreadIDIsRefused(t *testing.T) {
	ents, err := os.ReadDir("/proc/self/task")
	if err != nil {
		t.Fatal(err)
	}
	tid := 0
	for _, e := range ents {
		if n, err := strconv.Atoi(e.Name()); err == nil && n != os.Getpid() {
			tid = n
			break
		}
	}
	if tid == 0 {
		t.Skip("test binary has a single thread")
	}
	st, err := proc.ReadStat(tid)
	if err != nil {
		t.Skipf("thread %d vanished: %v", tid, err)
	}
	boot, _ := proc.BootID()
	id := proc.Identity{PID: tid, StartTime: st.StartTime, BootID: boot, RunID: newRunID(t)}
	if out, err := proc.Terminate(context.Background(), id, time.Second); out != proc.NotSignalled || !errors.Is(err, proc.ErrPIDReused) {
		t.Fatalf("Terminate(thread) = %v, %v", out, err)
	}
}
