package proc

import (
	"errors"
	"fmt"
	"os"
)

// Identity names one process for the lifetime of a machine and ties it to a
// snakepit run. All four fields are required; an Identity with a missing
// field never verifies.
type Identity struct {
	PID       int
	StartTime uint64 // field 22 of /proc/PID/stat when the process was recorded
	BootID    string // BootID() when the process was recorded
	RunID     string
}

func (id Identity) String() string {
	return fmt.Sprintf("pid %d (start %d, run %s)", id.PID, id.StartTime, id.RunID)
}

var (
	// ErrGone: the identified process no longer exists — it exited (a zombie
	// counts as exited), or the machine rebooted since it was recorded.
	// Nothing needs to be signalled.
	ErrGone = errors.New("process is gone")
	// ErrPIDReused: the pid exists but is not the identified process (start
	// time differs, or it does not carry the run id). It must never be
	// signalled; drop whatever record pointed at it.
	ErrPIDReused = errors.New("pid belongs to another process")
	// ErrUnverifiable: the identity lacks a field (or names pid 1 or the
	// caller itself), so ownership cannot be proven and nothing is signalled.
	ErrUnverifiable = errors.New("identity cannot be verified")
)

// Check names the identity check that failed.
type Check string

const (
	CheckIdentity  Check = "identity"   // incomplete or forbidden identity
	CheckBootID    Check = "boot id"    // recorded in an earlier boot
	CheckAlive     Check = "alive"      // no such pid, or a zombie
	CheckStartTime Check = "start time" // pid recycled by another process
	CheckRunID     Check = "run id"     // process does not carry the run id
)

// IdentityError says which check of Verify failed and why. It matches
// ErrGone (boot id, alive), ErrPIDReused (start time, run id) or
// ErrUnverifiable (identity) under errors.Is.
type IdentityError struct {
	ID     Identity
	Check  Check
	Detail string
}

func (e *IdentityError) Error() string {
	return fmt.Sprintf("proc: %s: %s check failed: %s", e.ID, e.Check, e.Detail)
}

func (e *IdentityError) Is(target error) bool {
	switch e.Check {
	case CheckBootID, CheckAlive:
		return target == ErrGone
	case CheckStartTime, CheckRunID:
		return target == ErrPIDReused
	case CheckIdentity:
		return target == ErrUnverifiable
	}
	return false
}

// Verify returns nil only if id.PID is alive (not a zombie), the boot id and
// start time match, and the process carries id.RunID. Otherwise it returns
// an *IdentityError naming the failed check, or an error reading the boot id.
func Verify(id Identity) error {
	_, err := verify(id)
	return err
}

// verify is Verify that also returns the Stat it checked, so callers can use
// the pgid without a second, racy read.
func verify(id Identity) (Stat, error) {
	fail := func(c Check, format string, a ...any) (Stat, error) {
		return Stat{}, &IdentityError{ID: id, Check: c, Detail: fmt.Sprintf(format, a...)}
	}
	switch {
	case id.PID <= 1:
		return fail(CheckIdentity, "pid %d is never a worker", id.PID)
	case id.PID == os.Getpid():
		return fail(CheckIdentity, "pid %d is the calling process itself", id.PID)
	case id.StartTime == 0 || id.BootID == "" || id.RunID == "":
		return fail(CheckIdentity, "start time, boot id and run id are all required")
	}
	boot, err := BootID()
	if err != nil {
		return Stat{}, err
	}
	if boot != id.BootID {
		return fail(CheckBootID, "recorded in boot %s, this is boot %s", id.BootID, boot)
	}
	st, err := ReadStat(id.PID)
	if errors.Is(err, ErrGone) {
		return fail(CheckAlive, "no such process")
	}
	if err != nil {
		return Stat{}, err
	}
	if st.Zombie() {
		return fail(CheckAlive, "exited (zombie, state %c)", st.State)
	}
	if st.StartTime != id.StartTime {
		return fail(CheckStartTime, "pid now held by %q started at %d", st.Comm, st.StartTime)
	}
	if !CarriesRunID(id.PID, id.RunID) {
		// An exit between the two reads empties cmdline and environ; report
		// that as gone rather than as a stranger.
		if now, err := ReadStat(id.PID); err != nil || now.Zombie() || now.StartTime != st.StartTime {
			return fail(CheckAlive, "exited during verification")
		}
		return fail(CheckRunID, "%q carries neither %s %s nor %s=%s", st.Comm, RunIDFlag, id.RunID, RunIDEnv, id.RunID)
	}
	return st, nil
}
