package childproc_test

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/snakepit-go/snakepit/childproc"
	"github.com/snakepit-go/snakepit/internal/auth"
	"github.com/snakepit-go/snakepit/internal/cgroup"
	"github.com/snakepit-go/snakepit/internal/proc"
	"github.com/snakepit-go/snakepit/internal/testutil"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction(childproc.SpawnerFunction))
}

type memRecorder struct {
	mu  sync.Mutex
	log []string
}

func (m *memRecorder) add(s string) { m.mu.Lock(); m.log = append(m.log, s); m.mu.Unlock() }
func (m *memRecorder) Reserve(k string) error {
	m.add("reserve " + k)
	return nil
}
func (m *memRecorder) Activate(k string, pid int) error { m.add("activate " + k); return nil }
func (m *memRecorder) Unregister(k string) error        { m.add("unregister " + k); return nil }
func (m *memRecorder) String() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return strings.Join(m.log, ", ")
}

func TestProcessIsRecordedGroupedCarriesTheRunIDAndIsReaped(t *testing.T) {
	rec := &memRecorder{}
	l := &childproc.Launcher{RunID: "run-kit-1", WorkerID: "w0", Recorder: rec, Logger: testutil.Logger()}
	var lines []string
	var mu sync.Mutex
	p, err := l.Start(exec.Command("/bin/sh", "-c", `echo hello; sleep 60 & wait`), childproc.Options{Stdout: func(s string) {
		mu.Lock()
		lines = append(lines, s)
		mu.Unlock()
	}})
	if err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 5*time.Second, "stdout line delivered", func() bool { mu.Lock(); defer mu.Unlock(); return len(lines) == 1 })
	if !proc.CarriesRunID(p.PID(), "run-kit-1") {
		t.Fatal("the child does not carry the run id")
	}
	if st, _ := proc.ReadStat(p.PID()); st.PGID != p.PID() {
		t.Fatalf("pgid %d, want its own group", st.PGID)
	}
	p.Stop(time.Second)
	if code, sig := p.ExitStatus(); sig != syscall.SIGTERM && code != 0 {
		t.Fatalf("exit %d %s", code, sig)
	}
	if got := rec.String(); got != "reserve w0, activate w0, unregister w0" {
		t.Fatalf("registry calls %q", got)
	}
	if proc.Alive(p.PID()) {
		t.Fatal("alive after Stop")
	}
}

// A child printing one 2 MiB line to stderr must not block on a full pipe:
// it goes on, and stops gracefully on SIGTERM.
func TestLongStderrLineNeverBlocksTheChild(t *testing.T) {
	l := &childproc.Launcher{RunID: "run-kit-2", WorkerID: "w0", Logger: testutil.Logger()}
	done := make(chan string, 1)
	p, err := l.Start(exec.Command("/usr/bin/python3", "-c",
		`import sys,signal,time
signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
sys.stderr.write("x"*(2<<20)+"\n"); sys.stderr.flush()
print("done", flush=True)
time.sleep(60)`), childproc.Options{Stdout: func(s string) { done <- s }})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		p.Kill()
		t.Fatal("the child blocked writing its long stderr line")
	}
	p.Stop(5 * time.Second)
	if code, sig := p.ExitStatus(); code != 0 || sig != 0 {
		t.Fatalf("exit %d %s, want a graceful exit 0", code, sig)
	}
	if tail := p.StderrTail(0); len(tail) == 0 || !strings.Contains(tail[len(tail)-1], "more bytes dropped") {
		t.Fatalf("stderr tail %d lines, want the cut line", len(tail))
	}
}

func TestKillReachesTheWholeGroup(t *testing.T) {
	l := &childproc.Launcher{RunID: "run-kit-3", WorkerID: "w0", Logger: testutil.Logger()}
	p, err := l.Start(exec.Command("/bin/sh", "-c", `trap '' TERM; sleep 60 & echo $!; wait`), childproc.Options{Stdout: func(string) {}})
	if err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 5*time.Second, "the group mate", func() bool {
		ps, _ := proc.FindByRunID("run-kit-3")
		return len(ps) == 2
	})
	p.Stop(200 * time.Millisecond) // ignores SIGTERM: SIGKILL after the grace
	if _, sig := p.ExitStatus(); sig != syscall.SIGKILL {
		t.Fatalf("signal %q, want SIGKILL", sig)
	}
	testutil.Eventually(t, 2*time.Second, "the group mate gone", func() bool {
		ps, _ := proc.FindByRunID("run-kit-3")
		return len(ps) == 0
	})
}

// A descendant that left the process group (setsid) dies when its process
// ends, found by the run id and the process's tag in its environment; one
// that scrubbed its environment cannot be proven ours and is left alone.
func TestEscapedDescendantDiesWithItsProcessUnlessUnprovable(t *testing.T) {
	l := &childproc.Launcher{RunID: "run-kit-escape", WorkerID: "w0", Logger: testutil.Logger()}
	pids := make(chan int, 2)
	p, err := l.Start(exec.Command("/bin/sh", "-c",
		`setsid sleep 300 </dev/null >/dev/null 2>&1 & echo $!; env -i setsid sleep 301 </dev/null >/dev/null 2>&1 & echo $!; wait`),
		childproc.Options{Stdout: func(s string) {
			var pid int
			if _, err := fmt.Sscan(s, &pid); err == nil {
				pids <- pid
			}
		}})
	if err != nil {
		t.Fatal(err)
	}
	tagged, scrubbed := <-pids, <-pids
	testutil.Eventually(t, 5*time.Second, "both sleepers left the group", func() bool {
		a, errA := proc.ReadStat(tagged)
		b, errB := proc.ReadStat(scrubbed)
		return errA == nil && errB == nil && a.PGID == tagged && b.PGID == scrubbed && a.Comm == "sleep" && b.Comm == "sleep"
	})
	scrubbedStart, _ := proc.StartTime(scrubbed)
	defer func() { _ = syscall.Kill(scrubbed, syscall.SIGKILL) }()
	p.Kill()
	if proc.Alive(tagged) {
		t.Errorf("the tagged setsid descendant %d outlived its process's reap", tagged)
	}
	if st, err := proc.StartTime(scrubbed); err != nil || st != scrubbedStart || !proc.Alive(scrubbed) {
		t.Errorf("the descendant with a scrubbed environment (%d) was signalled: it carries nothing that proves it ours", scrubbed)
	}
}

// sinkRecorder is a LineSink that records its calls.
type sinkRecorder struct {
	mu     sync.Mutex
	lines  []string
	closed int
	pid    bool
}

func (s *sinkRecorder) Line(l string) { s.mu.Lock(); s.lines = append(s.lines, l); s.mu.Unlock() }
func (s *sinkRecorder) Close()        { s.mu.Lock(); s.closed++; s.mu.Unlock() }

// Options.Stderr gets every stderr line in order and one Close at the end;
// its logger carries the pid; StderrTail still sees the lines.
func TestStderrSinkGetsEveryLineAndOneClose(t *testing.T) {
	var buf testutil.Buffer
	l := &childproc.Launcher{RunID: "run-kit-sink", WorkerID: "w0", Logger: slog.New(slog.NewJSONHandler(&buf, nil))}
	sink := &sinkRecorder{}
	p, err := l.Start(exec.Command("/bin/sh", "-c", `echo one >&2; echo two >&2; echo three >&2`), childproc.Options{
		Stderr: func(log *slog.Logger) childproc.LineSink {
			log.Info("probe")
			sink.pid = strings.Contains(buf.String(), `"pid":`)
			return sink
		}})
	if err != nil {
		t.Fatal(err)
	}
	<-p.Exited()
	testutil.Eventually(t, 10*time.Second, "sink closed", func() bool { sink.mu.Lock(); defer sink.mu.Unlock(); return sink.closed > 0 })
	sink.mu.Lock()
	defer sink.mu.Unlock()
	if strings.Join(sink.lines, ",") != "one,two,three" || sink.closed != 1 || !sink.pid {
		t.Fatalf("sink got %q, closed %d times, logger with pid %v", sink.lines, sink.closed, sink.pid)
	}
	if tail := p.StderrTail(time.Second); strings.Join(tail, ",") != "one,two,three" {
		t.Fatalf("stderr tail %q", tail)
	}
}

type cgroupRecorder struct {
	memRecorder
	run *cgroup.Run
}

func (c *cgroupRecorder) Cgroups() *cgroup.Run { return c.run }

// With cgroup containment (a Recorder that provides the run's cgroups, as
// the App's registry does), the process is forked into a cgroup of its
// own, and a descendant that left the group and scrubbed its environment
// — unprovable above — dies at the process's end too, before Kill returns;
// the process's cgroup is removed.
func TestScrubbedDescendantDiesWithItsProcessInItsCgroup(t *testing.T) {
	for _, how := range []string{"CLONE_INTO_CGROUP", "entered by /bin/sh"} {
		t.Run(how, func(t *testing.T) {
			if how != "CLONE_INTO_CGROUP" {
				t.Cleanup(childproc.ForceEnterBySh())
			}
			scrubbedDescendantDiesInItsCgroup(t)
		})
	}
}

func scrubbedDescendantDiesInItsCgroup(t *testing.T) {
	d := cgroup.Detect()
	if !d.Mode.Contained() {
		t.Skipf("no cgroup v2 here: %s", d.Reason)
	}
	run, err := cgroup.NewRun(d, fmt.Sprintf("run-kit-cg-%d", time.Now().UnixNano()), nil)
	if err != nil {
		t.Skipf("cgroup v2 not usable: %v", err)
	}
	t.Cleanup(func() {
		if err := run.Close(5 * time.Second); err != nil {
			t.Error(err)
		}
	})
	rec := &cgroupRecorder{run: run}
	l := &childproc.Launcher{RunID: "run-kit-cg", WorkerID: "w0", Recorder: rec, Logger: testutil.Logger()}
	pids := make(chan int, 1)
	p, err := l.Start(exec.Command("/bin/sh", "-c", `env -i setsid sleep 301 </dev/null >/dev/null 2>&1 & echo $!; wait`),
		childproc.Options{Stdout: func(s string) {
			var pid int
			if _, err := fmt.Sscan(s, &pid); err == nil {
				pids <- pid
			}
		}})
	if err != nil {
		t.Fatal(err)
	}
	scrubbed := <-pids
	// Pid and start time name that very process; the deferred kill reaches
	// it wherever it ended up, and nothing else.
	started, _ := proc.StartTime(scrubbed)
	defer func() {
		if st, err := proc.StartTime(scrubbed); err == nil && st == started && proc.Alive(scrubbed) {
			_ = syscall.Kill(scrubbed, syscall.SIGKILL)
		}
	}()
	if p.Cgroup() == "" || !strings.HasPrefix(p.Cgroup(), run.Dir()+"/") {
		t.Fatalf("process cgroup %q, want one under %s", p.Cgroup(), run.Dir())
	}
	want := strings.TrimPrefix(p.Cgroup(), d.Mount)
	testutil.Eventually(t, 5*time.Second, "the scrubbed sleeper in the process's cgroup", func() bool {
		st, err := proc.ReadStat(scrubbed)
		return err == nil && st.Comm == "sleep" && cgroupLine(scrubbed) == "0::"+want
	})
	p.Kill()
	if proc.Alive(scrubbed) {
		t.Fatalf("the scrubbed setsid descendant %d outlived its process's reap", scrubbed)
	}
	if _, err := os.Stat(p.Cgroup()); !os.IsNotExist(err) {
		t.Fatalf("the process's cgroup %s was not removed: %v", p.Cgroup(), err)
	}
}

func cgroupLine(pid int) string {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "0::") {
			return l
		}
	}
	return ""
}

// A secret the process prints (its token) is redacted before the stdout
// callback, the sink or StderrTail — which ends up in StartupError — see it.
func TestSecretsAreRedactedFromEveryLine(t *testing.T) {
	const secret = "s3cr3t-token-value"
	l := &childproc.Launcher{RunID: "run-kit-secret", WorkerID: "w0"}
	sink := &sinkRecorder{}
	var mu sync.Mutex
	var out []string
	p, err := l.Start(exec.Command("/bin/sh", "-c", `echo "out $0"; echo "err $0" >&2; exit 3`, secret), childproc.Options{
		Secrets: []string{secret},
		Stdout:  func(line string) { mu.Lock(); out = append(out, line); mu.Unlock() },
		Stderr:  func(*slog.Logger) childproc.LineSink { return sink }})
	if err != nil {
		t.Fatal(err)
	}
	<-p.Exited()
	tail := p.StderrTail(10 * time.Second)
	testutil.Eventually(t, 10*time.Second, "sink closed", func() bool { sink.mu.Lock(); defer sink.mu.Unlock(); return sink.closed > 0 })
	mu.Lock()
	defer mu.Unlock()
	sink.mu.Lock()
	defer sink.mu.Unlock()
	all := strings.Join(append(append(append([]string(nil), tail...), out...), sink.lines...), "\n")
	if strings.Contains(all, secret) || len(tail) != 1 || len(out) != 1 || !strings.Contains(all, auth.Redacted) {
		t.Fatalf("tail %q, stdout %q, sink %q: the secret must be redacted everywhere", tail, out, sink.lines)
	}
}

// A process whose cgroup cannot be made (here: a pool name no directory
// can carry) does not start when containment is required; under "auto"
// it runs without one.
func TestNoCgroupFailsTheStartOnlyWhenRequired(t *testing.T) {
	d := cgroup.Detect()
	if !d.Mode.Contained() {
		t.Skipf("no cgroup v2 here: %s", d.Reason)
	}
	run, err := cgroup.NewRun(d, fmt.Sprintf("run-kit-strict-%d", time.Now().UnixNano()), nil)
	if err != nil {
		t.Skipf("cgroup v2 not usable: %v", err)
	}
	t.Cleanup(func() {
		if err := run.Close(5 * time.Second); err != nil {
			t.Error(err)
		}
	})
	rec := &cgroupRecorder{run: run}
	l := &childproc.Launcher{RunID: "run-kit-strict", WorkerID: "w0", Pool: "..", Recorder: rec, Logger: testutil.Logger()}
	p, err := l.Start(exec.Command("/bin/true"), childproc.Options{})
	if err != nil {
		t.Fatalf("auto containment: %v", err)
	}
	<-p.Exited()
	run.Require()
	if p, err := l.Start(exec.Command("/bin/true"), childproc.Options{}); !errors.Is(err, cgroup.ErrContainment) {
		if p != nil {
			<-p.Exited()
		}
		t.Fatalf("required containment: Start returned %v, want ErrContainment", err)
	}
	if log := rec.String(); !strings.HasSuffix(log, "reserve w0, unregister w0") {
		t.Fatalf("records %q: the refused start must unregister its reservation", log)
	}
}
