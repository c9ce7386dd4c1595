package proc

import (
	"context"
	"errors"
	"fmt"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Outcome is what a Terminate call did.
type Outcome int

const (
	// NotSignalled: nothing was signalled because the identity did not
	// verify (or signalling failed before any signal was delivered); the
	// accompanying error says why.
	NotSignalled Outcome = iota
	// AlreadyGone: the process had exited before it could be signalled.
	AlreadyGone
	// Terminated: it (and its group) exited within the grace after SIGTERM.
	Terminated
	// Killed: something was still alive after the grace and got SIGKILL.
	Killed
)

func (o Outcome) String() string {
	switch o {
	case NotSignalled:
		return "not signalled"
	case AlreadyGone:
		return "already gone"
	case Terminated:
		return "terminated"
	case Killed:
		return "killed"
	}
	return fmt.Sprintf("Outcome(%d)", int(o))
}

// ErrSurvivedKill: a process was still alive a while after SIGKILL, usually
// because it is stuck in uninterruptible sleep (state D). It will die when
// the kernel lets it; there is nothing more a signal can do.
var ErrSurvivedKill = errors.New("process still alive after SIGKILL (uninterruptible sleep?)")

var (
	// pidfdOpen is a variable so tests can force the kill(2) fallback.
	pidfdOpen = unix.PidfdOpen
	// killWait bounds how long we watch for death after SIGKILL.
	killWait = 2 * time.Second
	// pollStep bounds each wait between checks, and so how late a cancelled
	// ctx is noticed.
	pollStep = 20 * time.Millisecond
)

// handle is a verified process: the pidfd (or, without pidfd support, only
// the identity to re-verify before each kill) plus the Stat that verified.
type handle struct {
	id Identity
	fd int // -1 without pidfd support
	st Stat
}

// openVerified opens a pidfd for id.PID and only then verifies id through
// /proc. If the pidfd's process is still unreaped after verification, it held
// the pid the whole time, so the process /proc described is the one the
// pidfd refers to and every later signal through fd reaches only it.
func openVerified(id Identity) (*handle, error) {
	fd := -1
	if id.PID > 1 {
		var err error
		fd, err = pidfdOpen(id.PID, 0)
		switch {
		case err == nil:
		case errors.Is(err, unix.ESRCH):
			return nil, &IdentityError{ID: id, Check: CheckAlive, Detail: "no such process"}
		case errors.Is(err, unix.EINVAL), errors.Is(err, unix.ENOENT):
			// The pid is now a thread of some other process (pidfds name
			// thread-group leaders; older kernels say EINVAL, newer ENOENT):
			// whatever was recorded is gone.
			if _, verr := verify(id); verr != nil {
				return nil, verr
			}
			return nil, &IdentityError{ID: id, Check: CheckStartTime, Detail: "pid is now a thread, not a process"}
		case errors.Is(err, unix.ENOSYS), errors.Is(err, unix.EPERM):
			// ENOSYS before Linux 5.3; EPERM from seccomp filters that deny
			// syscalls they do not know. Fall back to verify-then-kill.
			fd = -1
		default:
			return nil, fmt.Errorf("proc: pidfd_open(%d): %w", id.PID, err)
		}
	}
	st, err := verify(id)
	if err != nil {
		closeFD(fd)
		return nil, err
	}
	h := &handle{id: id, fd: fd, st: st}
	if fd >= 0 {
		if err := unix.PidfdSendSignal(fd, 0, nil, 0); err != nil {
			h.close()
			return nil, h.signalErr(err, 0)
		}
	}
	return h, nil
}

func closeFD(fd int) {
	if fd >= 0 {
		_ = unix.Close(fd)
	}
}

func (h *handle) close() { closeFD(h.fd); h.fd = -1 }

func (h *handle) signalErr(err error, sig syscall.Signal) error {
	if errors.Is(err, unix.ESRCH) {
		return &IdentityError{ID: h.id, Check: CheckAlive, Detail: "exited before the signal"}
	}
	if errors.Is(err, unix.EPERM) {
		return fmt.Errorf("proc: signal %v to %s: %w (it runs as another user; stop it as that user or root)", sig, h.id, err)
	}
	return fmt.Errorf("proc: signal %v to %s: %w", sig, h.id, err)
}

// signal delivers sig to the verified process only.
func (h *handle) signal(sig syscall.Signal) error {
	if h.fd >= 0 {
		if err := unix.PidfdSendSignal(h.fd, sig, nil, 0); err != nil {
			return h.signalErr(err, sig)
		}
		return nil
	}
	if _, err := verify(h.id); err != nil {
		return err
	}
	if err := unix.Kill(h.id.PID, sig); err != nil {
		return h.signalErr(err, sig)
	}
	return nil
}

// pinned reports whether the leader is still unreaped (alive or zombie),
// which keeps its pid, and so its process group id, from being recycled.
// Without pidfds only a live, re-verified leader counts.
func (h *handle) pinned() bool {
	if h.fd >= 0 {
		return unix.PidfdSendSignal(h.fd, 0, nil, 0) == nil
	}
	return Verify(h.id) == nil
}

// signalGroup delivers sig to the group the verified leader leads, and only
// while the leader is pinned; otherwise it returns an error matching ErrGone.
func (h *handle) signalGroup(sig syscall.Signal) error {
	if !h.pinned() {
		return &IdentityError{ID: h.id, Check: CheckAlive, Detail: "group leader reaped"}
	}
	if err := unix.Kill(-h.id.PID, sig); err != nil {
		return h.signalErr(err, sig)
	}
	return nil
}

// exited reports whether the process has exited (zombie or reaped).
func (h *handle) exited() bool {
	if h.fd >= 0 {
		fds := []unix.PollFd{{Fd: int32(h.fd), Events: unix.POLLIN}}
		n, err := unix.Poll(fds, 0)
		return err == nil && n > 0 && fds[0].Revents&unix.POLLIN != 0
	}
	st, err := ReadStat(h.id.PID)
	return err != nil || st.Zombie() || st.StartTime != h.id.StartTime
}

// waitUntil polls cond until it holds (true), the deadline passes or ctx
// ends (false). While the process is alive it blocks on the pidfd, so its
// exit is noticed at once rather than at the next tick.
func (h *handle) waitUntil(ctx context.Context, deadline time.Time, cond func() bool) bool {
	for {
		if cond() {
			return true
		}
		left := time.Until(deadline)
		if left <= 0 || ctx.Err() != nil {
			return false
		}
		step := min(left, pollStep)
		if h.fd >= 0 && !h.exited() {
			fds := []unix.PollFd{{Fd: int32(h.fd), Events: unix.POLLIN}}
			_, _ = unix.Poll(fds, int(step/time.Millisecond)+1)
			continue
		}
		t := time.NewTimer(step)
		select {
		case <-ctx.Done():
		case <-t.C:
		}
		t.Stop()
	}
}

// SignalVerified sends sig to id.PID only if id verifies, through a pidfd
// where available. An error matching ErrGone means there was nothing to
// signal; any other error means nothing was signalled.
func SignalVerified(id Identity, sig syscall.Signal) error {
	h, err := openVerified(id)
	if err != nil {
		return err
	}
	defer h.close()
	return h.signal(sig)
}

// Terminate stops the single verified process id: SIGTERM, up to grace for
// it to exit, then SIGKILL. A cancelled ctx cuts the grace short but never
// skips the SIGKILL: a caller giving up must not leave a survivor.
func Terminate(ctx context.Context, id Identity, grace time.Duration) (Outcome, error) {
	h, err := openVerified(id)
	if err != nil {
		return openOutcome(err)
	}
	defer h.close()
	return h.terminate(ctx, grace)
}

// TerminateGroup stops the verified process id and the process group it
// leads: SIGTERM to the group, up to grace for the leader and every member
// to exit, then SIGKILL to whatever is left. If id does not lead its own
// group (pgid != pid) only the process itself is stopped, since the group
// then is not provably ours. ctx behaves as for Terminate.
//
// Members are signalled as a group only while the leader is unreaped; once
// it has been reaped, leftover members are signalled one by one, and only
// those that carry id.RunID (the group id may have been recycled).
func TerminateGroup(ctx context.Context, id Identity, grace time.Duration) (Outcome, error) {
	h, err := openVerified(id)
	if err != nil {
		return openOutcome(err)
	}
	defer h.close()
	if h.st.PGID != id.PID {
		return h.terminate(ctx, grace)
	}
	deadline := time.Now().Add(grace)
	if err := h.signalGroup(syscall.SIGTERM); err != nil {
		if errors.Is(err, ErrGone) {
			return AlreadyGone, nil
		}
		return NotSignalled, err
	}
	done := func() bool { return h.exited() && len(h.groupLeft()) == 0 }
	if h.waitUntil(ctx, deadline, done) {
		return Terminated, nil
	}
	killErr := h.killGroupLeft()
	if !h.waitUntil(context.Background(), time.Now().Add(killWait), done) {
		return Killed, errors.Join(killErr, fmt.Errorf("proc: group of %s: %w", id, ErrSurvivedKill))
	}
	return Killed, killErr
}

func openOutcome(err error) (Outcome, error) {
	if errors.Is(err, ErrGone) {
		return AlreadyGone, nil
	}
	return NotSignalled, err
}

func (h *handle) terminate(ctx context.Context, grace time.Duration) (Outcome, error) {
	deadline := time.Now().Add(grace)
	if err := h.signal(syscall.SIGTERM); err != nil {
		return openOutcome(err)
	}
	if h.waitUntil(ctx, deadline, h.exited) {
		return Terminated, nil
	}
	if err := h.signal(syscall.SIGKILL); err != nil {
		if errors.Is(err, ErrGone) {
			return Terminated, nil // exited between the last check and SIGKILL
		}
		return NotSignalled, err
	}
	if !h.waitUntil(context.Background(), time.Now().Add(killWait), h.exited) {
		return Killed, fmt.Errorf("proc: %s: %w", h.id, ErrSurvivedKill)
	}
	return Killed, nil
}

// groupLeft lists the live members of the leader's group that are provably
// ours: all of them while the leader is pinned (checked after the scan, so
// it was pinned during it), else only those carrying the run id.
func (h *handle) groupLeft() []Stat {
	members := groupMembers(h.id.PID)
	if len(members) == 0 || h.pinned() {
		return members
	}
	ours := members[:0]
	for _, m := range members {
		if CarriesRunID(m.PID, h.id.RunID) {
			ours = append(ours, m)
		}
	}
	return ours
}

// killGroupLeft sends SIGKILL to what is left of the group.
func (h *handle) killGroupLeft() error {
	err := h.signalGroup(syscall.SIGKILL)
	if err == nil || !errors.Is(err, ErrGone) {
		return err
	}
	var errs []error
	for _, m := range h.groupLeft() {
		mid := Identity{PID: m.PID, StartTime: m.StartTime, BootID: h.id.BootID, RunID: h.id.RunID}
		if err := SignalVerified(mid, syscall.SIGKILL); err != nil && !errors.Is(err, ErrGone) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
