package cgroup

import (
	"fmt"
	"os"
	"os/exec"
	"syscall"
)

// watchdogScript waits for a line on stdin. "stop" is the host's orderly
// goodbye; anything else — EOF above all, which the kernel delivers the
// moment the host dies, SIGKILL included, since the host holds the only
// write end — kills the run's whole subtree through cgroup.kill. It ends
// workers that could not end themselves (wedged, or killed along with the
// host) and every descendant they left, whatever it did to its
// environment; nothing of a host that died is worth more than that
// moment's grace (a worker's own host-death path exits at once too).
const watchdogScript = `IFS= read -r line; [ "$line" = stop ] || echo 1 > "$1/cgroup.kill"`

// WatchdogName is argv[0] of the watchdog, as ps shows it.
const WatchdogName = "snakepit-cgroup-watchdog"

// Watchdog is a /bin/sh that ends the run's cgroups when the host dies.
// It lives in the host's cgroup, not the run's, carries no run id (the
// cleanup sweep must not take it for a survivor) and exits on its own once
// the host is gone or says stop.
type Watchdog struct {
	cmd  *exec.Cmd
	w    *os.File
	done chan struct{}
}

// StartWatchdog starts the run's watchdog.
func (r *Run) StartWatchdog() (*Watchdog, error) {
	rd, w, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command("/bin/sh", "-c", watchdogScript, WatchdogName, r.dir)
	cmd.Env = []string{"PATH=/usr/bin:/bin"}
	cmd.Stdin = rd
	// Its own group: a terminal's ^C must not end it before the host.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	err = cmd.Start()
	_ = rd.Close()
	if err != nil {
		_ = w.Close()
		return nil, fmt.Errorf("cgroup: cannot start the host-death watchdog (/bin/sh): %w", err)
	}
	wd := &Watchdog{cmd: cmd, w: w, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); close(wd.done) }()
	return wd, nil
}

// Stop tells the watchdog the host is stopping in order. It does not wait:
// the line is in the pipe before its end is closed, so the watchdog exits
// without killing whenever it gets to read it (Done), and the host's stop
// budget is not spent on a shell's exit.
func (wd *Watchdog) Stop() error {
	_, werr := wd.w.WriteString("stop\n")
	_ = wd.w.Close()
	if werr != nil {
		return fmt.Errorf("cgroup: the watchdog had exited before the stop: %w", werr)
	}
	return nil
}

// PID is the watchdog's pid (tests).
func (wd *Watchdog) PID() int { return wd.cmd.Process.Pid }

// Done is closed once the watchdog has exited and been reaped.
func (wd *Watchdog) Done() <-chan struct{} { return wd.done }
