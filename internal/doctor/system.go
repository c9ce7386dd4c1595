package doctor

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/snakepit-go/snakepit/internal/proc"
)

// Open descriptors the host holds per local worker: the worker's stdin,
// stdout and stderr pipes, the gRPC connection to it and the bridge's
// connection from it (measured: 5 per worker at rest, `snakepit run`
// with 1 and 5 workers: 16 and 36), a pidfd while it is signalled, twice
// all that while a replacement (reload, recycle) runs beside it, rounded
// up for headroom. baseFDs covers the rest of the host (listeners, the
// registry, the Go runtime, logs).
const (
	fdsPerWorker = 16
	baseFDs      = 64
)

// NeededNoFile is the RLIMIT_NOFILE soft limit a host with workers local
// workers needs (see fdsPerWorker).
func NeededNoFile(workers int) uint64 {
	return baseFDs + fdsPerWorker*uint64(max(workers, 0))
}

func checkNoFile(workers int) Check {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return Check{Name: "ulimit -n", Status: Warn, Detail: "cannot read RLIMIT_NOFILE: " + err.Error()}
	}
	need := NeededNoFile(workers)
	detail := fmt.Sprintf("soft %d, hard %d; %d worker(s) need %d (%d per worker: its pipes and connections, doubled while it is replaced, with headroom; plus %d for the host)",
		rl.Cur, rl.Max, workers, need, fdsPerWorker, baseFDs)
	if rl.Cur < need {
		fix := fmt.Sprintf("raise the limit to at least %d: ulimit -n %d in the shell, LimitNOFILE=%d in a systemd unit, or fewer --workers", need, need, need)
		if rl.Max < need {
			fix = fmt.Sprintf("the hard limit %d is below %d: raise it as root (limits.conf, LimitNOFILE=%d in a systemd unit, the container runtime's ulimit) or use fewer --workers", rl.Max, need, need)
		}
		return Check{Name: "ulimit -n", Status: Fail, Detail: detail, Fix: fix}
	}
	return Check{Name: "ulimit -n", Status: Pass, Detail: detail}
}

// checkBytecodeEnv warns when PYTHONDONTWRITEBYTECODE is set: a worker then
// compiles from source, at every start, whatever has no .pyc yet (the
// adapter's modules; snakepit_bridge is compiled when it is extracted).
func checkBytecodeEnv() Check {
	if v, ok := os.LookupEnv("PYTHONDONTWRITEBYTECODE"); ok && v != "" {
		return Check{Name: "bytecode cache", Status: Warn,
			Detail: "PYTHONDONTWRITEBYTECODE is set: snakepit_bridge comes precompiled, but the adapter's own modules (and any library without .pyc files) are compiled again at every worker start (slower starts and reloads)",
			Fix:    "unset PYTHONDONTWRITEBYTECODE for the snakepit process, or accept the slower worker starts"}
	}
	return Check{Name: "bytecode cache", Status: Pass, Detail: "PYTHONDONTWRITEBYTECODE is not set: workers reuse compiled imports"}
}

// checkProc: the registry, reaper and cleanup identify processes through
// /proc (start time, boot id, environment); pidfds close the pid-reuse
// window when signalling.
func checkProc() Check {
	if _, err := proc.ReadStat(os.Getpid()); err != nil {
		return Check{Name: "/proc", Status: Fail, Detail: "cannot read /proc/self/stat: " + err.Error(),
			Fix: "mount procfs at /proc (in a container: do not mask it); snakepit identifies its processes through it"}
	}
	if _, err := proc.BootID(); err != nil {
		return Check{Name: "/proc", Status: Fail, Detail: "cannot read the boot id: " + err.Error(),
			Fix: "mount procfs at /proc with /proc/sys/kernel/random/boot_id readable"}
	}
	if _, err := proc.Environ(os.Getpid()); err != nil {
		return Check{Name: "/proc", Status: Fail, Detail: "cannot read /proc/self/environ: " + err.Error(),
			Fix: "mount procfs at /proc readable by this user; the reaper finds workers by the run id in their environment"}
	}
	fd, err := unix.PidfdOpen(os.Getpid(), 0)
	if err != nil {
		return Check{Name: "/proc", Status: Warn, Detail: "/proc is readable; pidfd_open is unavailable (" + err.Error() + "): a process is re-verified just before each signal instead",
			Fix: "a Linux kernel 5.3 or newer (and a seccomp profile allowing pidfd_open) closes the remaining pid-reuse window"}
	}
	_ = unix.Close(fd)
	return Check{Name: "/proc", Status: Pass, Detail: "/proc is readable (stat, boot id, environ) and pidfd_open works"}
}

// checkPdeathsig: workers get SIGTERM when the host dies through the
// parent-death signal; the prctl must work here.
func checkPdeathsig() Check {
	var sig int32
	if err := unix.Prctl(unix.PR_GET_PDEATHSIG, uintptr(unsafe.Pointer(&sig)), 0, 0, 0); err != nil {
		return Check{Name: "parent-death signal", Status: Fail, Detail: "prctl(PR_GET_PDEATHSIG) failed: " + err.Error(),
			Fix: "allow prctl in the seccomp profile; workers rely on the parent-death signal when the host is killed"}
	}
	return Check{Name: "parent-death signal", Status: Pass, Detail: "prctl(PR_SET_PDEATHSIG) is available: workers get SIGTERM when the host dies"}
}

// Cgroup layouts.
const (
	cgroupRoot    = "/sys/fs/cgroup"
	cgroupUnified = "/sys/fs/cgroup/unified"
)

// checkCgroup reports whether cgroup v2 containment could be used: where
// the v2 hierarchy is mounted and whether this process's cgroup is
// writable (needed to create a child cgroup per worker). Containment is
// optional, so a missing or read-only hierarchy is a warning.
func checkCgroup() Check {
	mount := ""
	layout := ""
	switch {
	case fileExists(filepath.Join(cgroupRoot, "cgroup.controllers")):
		mount, layout = cgroupRoot, "cgroup v2 (unified) at "+cgroupRoot
	case fileExists(filepath.Join(cgroupUnified, "cgroup.controllers")):
		mount, layout = cgroupUnified, "hybrid: cgroup v2 at "+cgroupUnified
	default:
		return Check{Name: "cgroup", Status: Warn, Detail: "no cgroup v2 hierarchy (neither " + cgroupRoot + " nor " + cgroupUnified + "): no cgroup containment; process groups and run ids still find every worker",
			Fix: "boot with the unified hierarchy (systemd.unified_cgroup_hierarchy=1) to have cgroup containment"}
	}
	rel, err := ownCgroup()
	if err != nil {
		return Check{Name: "cgroup", Status: Warn, Detail: layout + "; cannot read /proc/self/cgroup: " + err.Error(),
			Fix: "mount procfs at /proc; without this process's cgroup there is no cgroup containment"}
	}
	dir := filepath.Join(mount, rel)
	if err := unix.Access(dir, unix.W_OK); err != nil {
		return Check{Name: "cgroup", Status: Warn, Detail: fmt.Sprintf("%s; this process's cgroup %s is not writable (%v): no containment", layout, dir, err),
			Fix: "run under a delegated cgroup (systemd: Delegate=yes, or systemd-run --user --scope -p Delegate=yes) to have cgroup containment"}
	}
	return Check{Name: "cgroup", Status: Pass, Detail: fmt.Sprintf("%s; this process's cgroup %s is writable", layout, dir)}
}

// ownCgroup is this process's v2 cgroup path (the "0::" line).
func ownCgroup() (string, error) {
	b, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return "", err
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "0::"); ok {
			return rest, nil
		}
	}
	return "", fmt.Errorf("no cgroup v2 entry")
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}
