// Package childproc starts and stops the processes of a worker type under
// snakepit's no-survivor guarantees. The Python gRPC worker is built on it,
// and so can a worker type of your own (see examples/linesworker):
//
//	p, err := spec.Launcher.Start(exec.Command("my-tool", "--serve"), childproc.Options{
//		Stdout: func(line string) { replies <- line },
//	})
//	...
//	p.Stop(2 * time.Second) // SIGTERM to the group, grace, SIGKILL, reap
//
// What Start does for you, in order:
//   - reserves the process's registry record before the fork, so a crash of
//     the host between fork and record cannot lose the child;
//   - puts SNAKEPIT_RUN_ID in the child's environment (inherited by all it
//     spawns), which is how the cleanup sweep and the next start's reaper
//     find it and its descendants;
//   - forks without a shell from one OS thread that never exits, with the
//     child leading its own process group and SIGTERM as its parent-death
//     signal (Linux sends it when the forking thread dies: see
//     internal/spawn);
//   - activates the record with pid, process group and start time;
//   - drains stdout and stderr line by line, always (lines over MaxLine are
//     cut with a marker): stderr goes to the Logger with the pid (or to
//     Options.Stderr, which may group lines into records), stdout to
//     Options.Stdout;
//   - holds the write end of the child's stdin: it reaches EOF when the host
//     dies, a second host-death signal the child can watch;
//   - puts a tag unique to this process start in its environment
//     (SNAKEPIT_PROCESS_TAG, inherited like the run id);
//   - with cgroup v2 containment (the App's registry provides it where the
//     machine allows, see docs/GUARANTEES.md §4c), forks it straight into a
//     cgroup of its own, so everything it ever starts stays in that cgroup
//     whatever it does (setsid, double fork, a scrubbed environment). When
//     that cgroup cannot be made or entered, the start fails
//     (registry.ErrContainment) if containment is required or the pool has
//     MemoryMax/CPUMax; under "auto" without limits it runs without one;
//   - reaps it: waits for the exit without reaping (waitid WNOWAIT), ends
//     its cgroup (cgroup.kill), kills what is left of its process group
//     while the zombie leader still pins the group id (so the signal
//     cannot reach a stranger), reaps, then
//     kills every process still carrying its run id and tag that started
//     after it — descendants that left the group (setsid) or were orphaned
//     (double fork) — removes its cgroup, and only then removes the record.
//
// What your worker type must still do:
//   - call Stop (or Kill) when its lifetime ends, and return from Serve only
//     after Exited is closed;
//   - make its command exit on SIGTERM (after cleaning up what it started)
//     and preferably when stdin reaches EOF;
//   - not scrub the environment of what it spawns: a descendant that
//     leaves the process group is found through SNAKEPIT_RUN_ID and
//     SNAKEPIT_PROCESS_TAG (at the end of its process's lifetime, by the
//     cleanup at stop and by the next start).
//
// Leak checkers: the spawner goroutine lives as long as the program; ignore
// it with goleak.IgnoreTopFunction(childproc.SpawnerFunction).
package childproc

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/snakepit-go/snakepit/internal/auth"
	"github.com/snakepit-go/snakepit/internal/cgroup"
	"github.com/snakepit-go/snakepit/internal/proc"
	"github.com/snakepit-go/snakepit/internal/spawn"
)

// SpawnerFunction is the goroutine that owns the forking thread.
const SpawnerFunction = spawn.LoopFunction

// RunIDEnv carries the run id into a child's environment.
const RunIDEnv = "SNAKEPIT_RUN_ID"

// TagEnv carries a tag unique to one started process into its environment;
// its descendants inherit it, which is how they are found and killed when
// that process ends, even after they left its process group and lost it as
// their parent.
const TagEnv = "SNAKEPIT_PROCESS_TAG"

// escapeeWait bounds the wait for a process's cgroup to empty after
// cgroup.kill at its reap.
const escapeeWait = 2 * time.Second

// stderrKeep is how many trailing stderr lines a process keeps for a
// start-failure message.
const stderrKeep = 20

// Recorder is the part of the process registry a launcher writes to.
type Recorder interface {
	Reserve(key string) error
	Activate(key string, pid int) error
	Unregister(key string) error
}

// ErrRecord: the registry could not record the process, so it was not
// started (an unrecorded child could outlive a crash of the host).
var ErrRecord = errors.New("snakepit: cannot record the process in the registry")

// Launcher starts the processes of one worker of one run. The App gives
// every worker one in worker.Spec.
type Launcher struct {
	// RunID is the App's run id; every process gets it in its environment.
	RunID string
	// WorkerID names the worker; it is the default registry key.
	WorkerID string
	// Pool names the worker's pool: with cgroup containment its processes'
	// cgroups lie in the pool's, which carries the pool's limits.
	Pool string
	// Recorder is the registry; nil records nothing (tests only).
	Recorder Recorder
	// Logger receives stderr lines and process events.
	Logger *slog.Logger
}

// Options tune one process.
type Options struct {
	// Key is its registry record; default the launcher's WorkerID. Two live
	// processes of one worker need distinct keys.
	Key string
	// Stdout receives each stdout line (called from one goroutine, in
	// order). Nil logs stdout lines as warnings.
	Stdout func(line string)
	// Stderr, when set, builds what consumes the stderr lines from the
	// process's logger (the Launcher's, with the pid): it is called once
	// at Start, then Line for each line in order from one goroutine and
	// Close once after the last. Nil logs each line at INFO. StderrTail
	// sees the lines either way.
	Stderr func(log *slog.Logger) LineSink
	// Secrets (the token the process is given) are replaced by
	// auth.Redacted in every stdout and stderr line before Stdout, Stderr,
	// the log or StderrTail see it: a worker that prints its environment
	// and dies must not put the secret into an error string.
	Secrets []string
}

// LineSink consumes a stream's lines: Line for each (from one goroutine,
// in order), then Close once when the stream has ended. A sink that groups
// lines into records must emit what it holds by the time Close returns.
type LineSink interface {
	Line(line string)
	Close()
}

// Process is one started child.
type Process struct {
	cmd    *exec.Cmd
	pid    int
	key    string
	rec    Recorder
	log    *slog.Logger
	stdin  *os.File
	stdout *os.File
	stderr *os.File

	runID string
	tag   string       // TagEnv's value in this process's environment
	leaf  *cgroup.Leaf // its own cgroup; nil without cgroup containment
	start uint64       // its start time (clock ticks after boot); 0 if unknown

	exited  chan struct{}
	state   *os.ProcessState
	readers sync.WaitGroup

	// sigMu orders signals against the reap: once reaped is set the group
	// id may belong to a stranger, and no signal may be sent.
	sigMu  sync.Mutex
	reaped bool

	secrets []string // redacted from every line read (Options.Secrets)

	mu      sync.Mutex
	lastErr []string
}

// Start starts cmd as described in the package doc. cmd must not have been
// started; its Stdin, Stdout, Stderr and SysProcAttr are set by Start (use
// Process.Stdin and Options.Stdout instead). cmd.Env nil means the host's
// environment.
func (l *Launcher) Start(cmd *exec.Cmd, opts Options) (*Process, error) {
	if cmd == nil || cmd.Path == "" {
		return nil, errors.New("snakepit: childproc.Start needs a command (exec.Command(name, args...))")
	}
	if l.RunID == "" {
		return nil, errors.New("snakepit: childproc.Launcher has no RunID; use the Launcher from worker.Spec")
	}
	key := opts.Key
	if key == "" {
		key = l.WorkerID
	}
	log := l.Logger
	if log == nil {
		log = slog.Default()
	}
	if l.Recorder != nil {
		if err := l.Recorder.Reserve(key); err != nil {
			return nil, fmt.Errorf("%w (record %q): %w; no process was started", ErrRecord, key, err)
		}
	}
	tag := newTag()
	leaf, strict, err := l.newLeaf(key)
	if err != nil {
		if strict {
			if l.Recorder != nil {
				_ = l.Recorder.Unregister(key)
			}
			return nil, fmt.Errorf("%w: %w; no process was started (containment is required or the pool has MemoryMax/CPUMax, which a process outside its cgroup would escape)", cgroup.ErrContainment, err)
		}
		// Containment "auto" without limits: the run's process group, tag
		// and run id still contain it.
		log.Warn("cannot create the process's cgroup; starting it without one", "err", err)
	}
	p, err := startProcess(cmd, withRunID(cmd.Env, l.RunID, tag), log, leaf, strict)
	if err != nil {
		if leaf != nil {
			_ = leaf.Remove(time.Second)
		}
		if l.Recorder != nil {
			_ = l.Recorder.Unregister(key)
		}
		return nil, fmt.Errorf("snakepit: cannot start %s: %w", cmd.Path, err)
	}
	p.key, p.rec, p.runID, p.tag, p.leaf = key, l.Recorder, l.RunID, tag, leaf
	if st, err := proc.ReadStat(p.pid); err == nil {
		p.start = st.StartTime
	}
	if l.Recorder != nil {
		if err := l.Recorder.Activate(key, p.pid); err != nil {
			// The reserved record and the run id in its environment still
			// let the reaper and the cleanup find this process.
			p.log.Warn("cannot record the process's pid", "err", err)
		}
	}
	var sink LineSink
	if opts.Stderr != nil {
		sink = opts.Stderr(p.log)
	}
	p.secrets = opts.Secrets
	p.readers.Add(2)
	go p.read(p.stdout, opts.Stdout)
	go p.readStderr(sink)
	go p.reap()
	return p, nil
}

// withRunID returns env (nil: the host's) with RunIDEnv set to runID and
// TagEnv to tag.
func withRunID(env []string, runID, tag string) []string {
	if env == nil {
		env = os.Environ()
	}
	out := make([]string, 0, len(env)+2)
	for _, kv := range env {
		if !strings.HasPrefix(kv, RunIDEnv+"=") && !strings.HasPrefix(kv, TagEnv+"=") {
			out = append(out, kv)
		}
	}
	return append(out, RunIDEnv+"="+runID, TagEnv+"="+tag)
}

// newTag is 128 random bits: unique per process start, never reused.
func newTag() string {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic("snakepit: no randomness for a process tag: " + err.Error())
	}
	return hex.EncodeToString(b[:])
}

// startProcess forks cmd from the locked spawner thread with its own process
// group and SIGTERM as its parent-death signal, wiring pipes we own, and —
// with a leaf — straight into that cgroup (CLONE_INTO_CGROUP), so it runs
// no instruction outside it. The pipes are plain *os.File so exec starts no
// copying goroutines and Wait never blocks on a grandchild that inherited
// them.
func startProcess(cmd *exec.Cmd, env []string, log *slog.Logger, leaf *cgroup.Leaf, strict bool) (*Process, error) {
	inR, inW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		closeAll(inR, inW)
		return nil, err
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		closeAll(inR, inW, outR, outW)
		return nil, err
	}
	cmd.Env = env
	cmd.Stdin, cmd.Stdout, cmd.Stderr = inR, outW, errW
	cmd, err = forkInto(cmd, leaf, strict, log)
	// The child has its copies; ours of the child's ends must go, or EOF
	// would never reach either side.
	closeAll(inR, outW, errW)
	if err != nil {
		closeAll(inW, outR, errR)
		return nil, err
	}
	p := &Process{cmd: cmd, pid: cmd.Process.Pid, stdin: inW, stdout: outR, stderr: errR, exited: make(chan struct{})}
	p.log = log.With("pid", p.pid)
	return p, nil
}

// cloneIntoUnsupported is set once clone3 with CLONE_INTO_CGROUP failed
// (a seccomp profile that denies clone3, as some container runtimes'
// defaults do): later starts go straight to the fallback.
var cloneIntoUnsupported atomic.Bool

// enterScript moves the shell into the cgroup ($0) and execs the command:
// the command's own code, and all it forks, run inside. A failed move is
// said on stderr (the host logs it) and the command runs uncontained;
// enterScriptStrict (containment required, or pool limits) exits 125
// instead, before any of the command's code runs.
const (
	enterScript       = `echo 0 > "$0/cgroup.procs" || echo "snakepit: cannot enter cgroup $0; running uncontained" >&2; exec "$@"`
	enterScriptStrict = `echo 0 > "$0/cgroup.procs" || { echo "snakepit: cannot enter cgroup $0, and containment is required (or the pool has MemoryMax/CPUMax); not running the command" >&2; exit 125; }; exec "$@"`
)

// forkInto starts cmd, in leaf if there is one, and returns the started
// command (a fresh one when the first fork was refused). Fallback, where
// clone3 is refused: /bin/sh starts in the host's cgroup, moves itself into
// the leaf and execs the command (same pid; its argv[0] becomes cmd.Path).
func forkInto(cmd *exec.Cmd, leaf *cgroup.Leaf, strict bool, log *slog.Logger) (*exec.Cmd, error) {
	attr := func(into bool) *syscall.SysProcAttr {
		a := &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
		if into {
			a.UseCgroupFD, a.CgroupFD = true, leaf.FD()
		}
		return a
	}
	if leaf == nil {
		cmd.SysProcAttr = attr(false)
		return cmd, spawn.Start(cmd)
	}
	defer leaf.CloseFD()
	if !cloneIntoUnsupported.Load() {
		cmd.SysProcAttr = attr(true)
		err := spawn.Start(cmd)
		if err == nil || !(errors.Is(err, syscall.ENOSYS) || errors.Is(err, syscall.EPERM) || errors.Is(err, syscall.EINVAL) || errors.Is(err, syscall.EOPNOTSUPP)) {
			return cmd, err
		}
		cloneIntoUnsupported.Store(true)
		log.Warn("cannot fork into a cgroup (clone3 with CLONE_INTO_CGROUP refused); each process enters its cgroup through /bin/sh before its command runs", "err", err)
	}
	// exec.Cmd cannot be started twice, even after a failed Start.
	script := enterScript
	if strict {
		script = enterScriptStrict
	}
	wrapped := &exec.Cmd{Path: "/bin/sh", Args: append([]string{"sh", "-c", script, leaf.Dir(), cmd.Path}, cmd.Args[1:]...),
		Env: cmd.Env, Dir: cmd.Dir, ExtraFiles: cmd.ExtraFiles, Stdin: cmd.Stdin, Stdout: cmd.Stdout, Stderr: cmd.Stderr,
		SysProcAttr: attr(false)}
	return wrapped, spawn.Start(wrapped)
}

// newLeaf creates the cgroup of one process start when the Recorder (the
// App's registry) provides cgroup containment; nil otherwise. strict: the
// process must not run outside it (cgroup.Run.Strict).
func (l *Launcher) newLeaf(key string) (leaf *cgroup.Leaf, strict bool, err error) {
	co, ok := l.Recorder.(interface{ Cgroups() *cgroup.Run })
	if !ok {
		return nil, false, nil
	}
	run := co.Cgroups()
	if run == nil {
		return nil, false, nil
	}
	leaf, err = run.NewLeaf(l.Pool, key)
	return leaf, run.Strict(l.Pool), err
}

func closeAll(fs ...*os.File) {
	for _, f := range fs {
		_ = f.Close()
	}
}

func (p *Process) read(f *os.File, fn func(string)) {
	defer p.readers.Done()
	if fn == nil {
		fn = func(line string) { p.log.Warn("process wrote to stdout", "line", line) }
	}
	readLines(f, func(line string) { fn(auth.RedactIn(line, p.secrets...)) })
}

// readStderr keeps the tail for StderrTail and hands each line to sink
// (nil: logged at INFO); the sink is closed when the stream ends.
func (p *Process) readStderr(sink LineSink) {
	defer p.readers.Done()
	if sink != nil {
		defer sink.Close()
	}
	readLines(p.stderr, func(line string) {
		line = auth.RedactIn(line, p.secrets...)
		p.mu.Lock()
		p.lastErr = append(p.lastErr, line)
		if len(p.lastErr) > stderrKeep {
			p.lastErr = p.lastErr[len(p.lastErr)-stderrKeep:]
		}
		p.mu.Unlock()
		if sink != nil {
			sink.Line(line)
		} else {
			p.log.Info(line, "stream", "stderr")
		}
	})
}

// PID is the process id.
func (p *Process) PID() int { return p.pid }

// Stdin is the write end of the child's stdin. Closing it sends EOF; it is
// closed when the process is reaped.
func (p *Process) Stdin() io.Writer { return p.stdin }

// Exited is closed once the process is reaped and its record removed.
func (p *Process) Exited() <-chan struct{} { return p.exited }

// StderrTail returns the last stderr lines, first giving the readers up to
// wait to drain what the process wrote before exiting (bounded: a
// descendant may hold the pipe open forever).
func (p *Process) StderrTail(wait time.Duration) []string {
	done := make(chan struct{})
	go func() { p.readers.Wait(); close(done) }()
	t := time.NewTimer(wait)
	select {
	case <-done:
	case <-t.C:
	}
	t.Stop()
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.lastErr...)
}

// reap waits for the process to exit without reaping it, kills whatever is
// left in its process group while the zombie leader still pins the group id
// (so the id cannot have been reused by a stranger), then reaps it and
// removes its record.
func (p *Process) reap() {
	var info unix.Siginfo
	for {
		err := unix.Waitid(unix.P_PID, p.pid, &info, unix.WEXITED|unix.WNOWAIT, nil)
		if !errors.Is(err, unix.EINTR) {
			break
		}
	}
	// Its cgroup first: every descendant, wherever it went in the process
	// tree and whatever it did to its environment, dies at once.
	p.killCgroup()
	p.sigMu.Lock()
	_ = syscall.Kill(-p.pid, syscall.SIGKILL)
	p.reaped = true
	_ = p.cmd.Wait()
	p.sigMu.Unlock()
	p.state = p.cmd.ProcessState
	_ = p.stdin.Close()
	// Still needed with a cgroup: a descendant with the rights to do so
	// can move itself out of it.
	p.killEscapees()
	if p.leaf != nil {
		if err := p.leaf.Remove(escapeeWait); err != nil {
			p.log.Warn("cannot remove the process's cgroup; the cleanup at stop and the next start retry", "err", err)
		}
	}
	if p.rec != nil {
		if err := p.rec.Unregister(p.key); err != nil {
			p.log.Warn("cannot remove the process's registry record", "err", err)
		}
	}
	close(p.exited)
	// Readers end at EOF once every holder of the pipes is gone; a
	// descendant that left the group may still hold them, so stop waiting
	// after a moment and close our ends.
	done := make(chan struct{})
	go func() { p.readers.Wait(); close(done) }()
	t := time.NewTimer(time.Second)
	select {
	case <-done:
	case <-t.C:
	}
	t.Stop()
	closeAll(p.stdout, p.stderr)
	<-done
}

// killEscapees kills what the process left behind outside its group: every
// live process carrying its run id and tag that started after it
// (identity-verified, frozen then SIGKILLed: proc.KillTagged). Its group
// is already gone; these left it with setsid, and may have been orphaned
// by a double fork or by the death of their parent.
func (p *Process) killEscapees() {
	killed, err := proc.KillTagged(p.runID, TagEnv, p.tag, p.start)
	if err != nil {
		p.log.Warn("cannot look for descendants that left the process group", "err", err)
	}
	for _, k := range killed {
		p.log.Info("killed a descendant that outlived its process outside its process group", "descendant_pid", k.PID, "descendant_ppid", k.PPID, "comm", k.Comm)
	}
}

// Signal sends sig to the process group. It is a no-op once the process is
// reaped: until then a live or zombie leader pins the group id, so the
// signal cannot reach a stranger.
func (p *Process) Signal(sig syscall.Signal) {
	p.sigMu.Lock()
	defer p.sigMu.Unlock()
	if p.reaped {
		return
	}
	if err := syscall.Kill(-p.pid, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
		p.log.Warn("cannot signal the process group", "signal", sig.String(), "err", err)
	}
}

// Stop is the graceful stop: SIGTERM to the group, grace, SIGKILL to the
// group, then the reap.
func (p *Process) Stop(grace time.Duration) {
	p.Signal(syscall.SIGTERM)
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-p.exited:
		return
	case <-t.C:
		p.log.Warn("process did not exit within the grace period; killing its process group", "grace", grace)
	}
	p.Kill()
}

// Kill ends the process group (and, with containment, its cgroup) at once
// and waits for the reap.
func (p *Process) Kill() {
	p.Signal(syscall.SIGKILL)
	p.killCgroup()
	<-p.exited
}

func (p *Process) killCgroup() {
	if p.leaf == nil {
		return
	}
	if err := p.leaf.Kill(); err != nil {
		p.log.Warn("cannot kill the process's cgroup", "cgroup", p.leaf.Dir(), "err", err)
	}
}

// Cgroup is the directory of the process's own cgroup, "" without cgroup
// containment.
func (p *Process) Cgroup() string {
	if p.leaf == nil {
		return ""
	}
	return p.leaf.Dir()
}

// CgroupMemory is the memory of the process's whole tree as its cgroup
// accounts it (anon and mapped file pages, not page cache); ok is false
// without containment, without the memory controller, or when the
// process is not in its cgroup (then measure its tree in /proc).
func (p *Process) CgroupMemory() (bytes int64, ok bool) {
	if p.leaf == nil {
		return 0, false
	}
	return p.leaf.Memory(p.pid)
}

// ExitStatus is the exit code (-1 if killed by a signal) and the signal
// (0 if it exited); valid once Exited is closed.
func (p *Process) ExitStatus() (code int, signal syscall.Signal) {
	st := p.state
	if st == nil {
		return -1, 0
	}
	if ws, ok := st.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return -1, ws.Signal()
	}
	return st.ExitCode(), 0
}
