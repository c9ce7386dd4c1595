package proc

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
)

const (
	// RunIDFlag is the argv flag that carries the run id, followed by the id
	// as a separate argument (or joined as "--snakepit-run-id=<id>").
	RunIDFlag = "--snakepit-run-id"
	// RunIDEnv is the environment variable that carries the run id; children
	// inherit it, which is how descendants of a worker are found.
	RunIDEnv = "SNAKEPIT_RUN_ID"
)

const procRoot = "/proc"

// Stat is the subset of /proc/PID/stat that identifies a process and its
// place in the process tree.
type Stat struct {
	PID       int
	Comm      string // executable name as the kernel reports it (may hold spaces or ')')
	State     byte   // R, S, D, Z, T, t, X, I, …
	PPID      int
	PGID      int
	StartTime uint64 // clock ticks after boot; with PID and boot id it names one process
}

// Zombie reports whether the process has exited and waits to be reaped.
func (s Stat) Zombie() bool { return s.State == 'Z' || s.State == 'X' || s.State == 'x' }

var bootID = sync.OnceValues(func() (string, error) {
	b, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return "", fmt.Errorf("proc: read boot id: %w (is /proc mounted?)", err)
	}
	id := strings.TrimSpace(string(b))
	if id == "" {
		return "", errors.New("proc: /proc/sys/kernel/random/boot_id is empty")
	}
	return id, nil
})

// BootID returns the kernel's boot id. It changes on every boot, which makes
// start times from an earlier boot meaningless; it is read once and cached.
func BootID() (string, error) { return bootID() }

// readProcFile reads /proc/PID/name and maps "no such process" to ErrGone.
func readProcFile(pid int, name string) ([]byte, error) {
	if pid <= 0 {
		return nil, fmt.Errorf("proc: invalid pid %d", pid)
	}
	b, err := os.ReadFile(procRoot + "/" + strconv.Itoa(pid) + "/" + name)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) || errors.Is(err, syscall.ESRCH) {
			return nil, fmt.Errorf("proc: pid %d: %w", pid, ErrGone)
		}
		return nil, fmt.Errorf("proc: pid %d: %w", pid, err)
	}
	return b, nil
}

// ReadStat reads and parses /proc/PID/stat. A pid that does not exist yields
// an error matching ErrGone. A zombie is returned without error; check
// Stat.Zombie.
func ReadStat(pid int) (Stat, error) {
	b, err := readProcFile(pid, "stat")
	if err != nil {
		return Stat{}, err
	}
	st, err := parseStat(b)
	if err != nil {
		return Stat{}, fmt.Errorf("proc: pid %d: %w", pid, err)
	}
	return st, nil
}

// StartTime returns field 22 of /proc/PID/stat.
func StartTime(pid int) (uint64, error) {
	st, err := ReadStat(pid)
	if err != nil {
		return 0, err
	}
	return st.StartTime, nil
}

// Alive reports whether pid exists and is not a zombie.
func Alive(pid int) bool {
	st, err := ReadStat(pid)
	return err == nil && !st.Zombie()
}

// Cmdline returns the process's argv. A zombie or kernel thread has none.
func Cmdline(pid int) ([]string, error) {
	b, err := readProcFile(pid, "cmdline")
	if err != nil {
		return nil, err
	}
	return splitNUL(b), nil
}

// Environ returns the environment the process was started with. Reading it
// needs the same privileges as ptrace; other users' processes fail with a
// permission error.
func Environ(pid int) ([]string, error) {
	b, err := readProcFile(pid, "environ")
	if err != nil {
		return nil, err
	}
	return splitNUL(b), nil
}

func splitNUL(b []byte) []string {
	b = bytes.TrimRight(b, "\x00")
	if len(b) == 0 {
		return nil
	}
	parts := bytes.Split(b, []byte{0})
	out := make([]string, len(parts))
	for i, p := range parts {
		out[i] = string(p)
	}
	return out
}

// errBadStat is wrapped by every parse failure of /proc/PID/stat.
var errBadStat = errors.New("malformed /proc/PID/stat")

// parseStat parses one /proc/PID/stat line. comm is delimited by the first
// '(' and the LAST ')', because the executable name itself may contain both
// spaces and parentheses; every field after it is space separated.
func parseStat(b []byte) (Stat, error) {
	open := bytes.IndexByte(b, '(')
	closing := bytes.LastIndexByte(b, ')')
	if open <= 0 || closing < open {
		return Stat{}, fmt.Errorf("%w: no (comm)", errBadStat)
	}
	pid, err := strconv.Atoi(string(bytes.TrimSpace(b[:open])))
	if err != nil || pid <= 0 {
		return Stat{}, fmt.Errorf("%w: bad pid", errBadStat)
	}
	// Fields after comm start at field 3 (state); starttime is field 22.
	f := strings.Fields(string(b[closing+1:]))
	if len(f) < 20 {
		return Stat{}, fmt.Errorf("%w: %d fields after comm, want at least 20", errBadStat, len(f))
	}
	if len(f[0]) != 1 {
		return Stat{}, fmt.Errorf("%w: bad state %q", errBadStat, f[0])
	}
	ppid, err1 := strconv.Atoi(f[1])
	pgid, err2 := strconv.Atoi(f[2])
	start, err3 := strconv.ParseUint(f[19], 10, 64)
	if err1 != nil || err2 != nil || err3 != nil || ppid < 0 || pgid < 0 {
		return Stat{}, fmt.Errorf("%w: bad ppid, pgid or starttime", errBadStat)
	}
	return Stat{
		PID:       pid,
		Comm:      string(b[open+1 : closing]),
		State:     f[0][0],
		PPID:      ppid,
		PGID:      pgid,
		StartTime: start,
	}, nil
}
