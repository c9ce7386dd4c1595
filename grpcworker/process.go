package grpcworker

import (
	"bufio"
	"errors"
	"log/slog"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/snakepit-go/snakepit/internal/spawn"
)

// stderrKeep is how many trailing stderr lines a start failure quotes.
const stderrKeep = 20

// process is one running Python worker: its pipes, its readers and its
// reaper. The reaper is the only code that reaps it.
type process struct {
	cmd    *exec.Cmd
	pid    int
	log    *slog.Logger
	stdin  *os.File // host's write end; closing it is the worker's EOF
	stdout *os.File
	stderr *os.File

	handshake chan string   // first stdout line
	exited    chan struct{} // closed after the process is reaped
	state     *os.ProcessState

	readers sync.WaitGroup

	mu      sync.Mutex
	lastErr []string
}

// startProcess forks cmd from the locked spawner thread with its own process
// group and SIGTERM as its parent-death signal, wiring pipes we own. The
// pipes are plain *os.File so exec starts no copying goroutines and Wait
// never blocks on a grandchild that inherited them.
func startProcess(cmd *exec.Cmd, log *slog.Logger) (*process, error) {
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
	cmd.Stdin, cmd.Stdout, cmd.Stderr = inR, outW, errW
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	err = spawn.Start(cmd)
	// The child has its copies; ours of the child's ends must go, or EOF
	// would never reach either side.
	closeAll(inR, outW, errW)
	if err != nil {
		closeAll(inW, outR, errR)
		return nil, err
	}
	p := &process{
		cmd: cmd, pid: cmd.Process.Pid, stdin: inW, stdout: outR, stderr: errR,
		handshake: make(chan string, 1),
		exited:    make(chan struct{}),
	}
	p.log = log.With("pid", p.pid)
	p.readers.Add(2)
	go p.readStdout()
	go p.readStderr()
	go p.reap()
	return p, nil
}

func closeAll(fs ...*os.File) {
	for _, f := range fs {
		_ = f.Close()
	}
}

func (p *process) readStdout() {
	defer p.readers.Done()
	sc := bufio.NewScanner(p.stdout)
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	first := true
	for sc.Scan() {
		line := sc.Text()
		if first {
			first = false
			p.handshake <- line
			continue
		}
		// The contract keeps stdout for the handshake; anything else is an
		// adapter printing where it should not.
		p.log.Warn("worker wrote to stdout after the handshake", "line", line)
	}
}

func (p *process) readStderr() {
	defer p.readers.Done()
	sc := bufio.NewScanner(p.stderr)
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		p.mu.Lock()
		p.lastErr = append(p.lastErr, line)
		if len(p.lastErr) > stderrKeep {
			p.lastErr = p.lastErr[len(p.lastErr)-stderrKeep:]
		}
		p.mu.Unlock()
		p.log.Info(line, "stream", "stderr")
	}
}

// stderrTail returns the last stderr lines, first letting the reader drain
// what the process wrote before exiting (bounded: a grandchild may hold the
// pipe open forever).
func (p *process) stderrTail(wait time.Duration) []string {
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
// (so the id cannot have been reused by a stranger), then reaps it.
func (p *process) reap() {
	var info unix.Siginfo
	for {
		err := unix.Waitid(unix.P_PID, p.pid, &info, unix.WEXITED|unix.WNOWAIT, nil)
		if !errors.Is(err, unix.EINTR) {
			break
		}
	}
	_ = syscall.Kill(-p.pid, syscall.SIGKILL)
	_ = p.cmd.Wait()
	p.state = p.cmd.ProcessState
	_ = p.stdin.Close()
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

// signalGroup sends sig to the worker's process group. Safe until the
// process is reaped: a live or zombie leader pins the group id.
func (p *process) signalGroup(sig syscall.Signal) {
	select {
	case <-p.exited:
		return
	default:
	}
	if err := syscall.Kill(-p.pid, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
		p.log.Warn("cannot signal worker process group", "signal", sig.String(), "err", err)
	}
}

// terminate is the graceful stop: SIGTERM to the group, grace, SIGKILL to
// the group, then wait for the reap.
func (p *process) terminate(grace time.Duration) {
	p.signalGroup(syscall.SIGTERM)
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-p.exited:
		return
	case <-t.C:
		p.log.Warn("worker did not exit within the grace period; killing its process group", "grace", grace)
	}
	p.kill()
}

// kill ends the process group at once and waits for the reap.
func (p *process) kill() {
	p.signalGroup(syscall.SIGKILL)
	<-p.exited
}

// exitDescription returns the exit code (or -1) and the signal name.
func (p *process) exitDescription() (int, string) {
	st := p.state
	if st == nil {
		return -1, ""
	}
	if ws, ok := st.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		if name := unix.SignalName(ws.Signal()); name != "" {
			return -1, name
		}
		return -1, ws.Signal().String()
	}
	return st.ExitCode(), ""
}
