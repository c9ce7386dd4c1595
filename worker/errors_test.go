package worker_test

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"

	"github.com/snakepit-go/snakepit/worker"
)

func TestResourceStartupErrorNamesTheLimitToRaise(t *testing.T) {
	for errno, want := range map[syscall.Errno]string{syscall.EMFILE: "ulimit -n", syscall.ENFILE: "fs.file-max", syscall.ENOMEM: "memory", syscall.EAGAIN: "RLIMIT_NPROC"} {
		se := &worker.StartupError{WorkerID: "w0", Cause: fmt.Errorf("cannot start: %w", &os.SyscallError{Syscall: "fork", Err: errno})}
		if se.Class() != worker.StartupResource || !strings.Contains(se.Error(), want) || strings.Contains(se.Error(), "adapter") {
			t.Errorf("%v: class %v, message %q; want a host resource naming %q", errno, se.Class(), se.Error(), want)
		}
	}
	if se := (&worker.StartupError{WorkerID: "w0", Cause: errors.New("ModuleNotFoundError")}); se.Class() == worker.StartupResource {
		t.Error("an import error classified as a host resource")
	}
}

// Signals are typed; messages and the agent protocol spell them by name,
// and a name read back is the same signal.
func TestSignalNamesRoundTrip(t *testing.T) {
	for _, sig := range []syscall.Signal{syscall.SIGKILL, syscall.SIGTERM, syscall.SIGSEGV} {
		if got := worker.SignalNamed(worker.SignalName(sig)); got != sig {
			t.Errorf("SignalNamed(SignalName(%d)) = %d", sig, got)
		}
	}
	if worker.SignalName(0) != "" || worker.SignalNamed("") != 0 || worker.SignalNamed("SIGNOPE") != 0 {
		t.Error("0 and unknown names must map to no signal")
	}
	ce := &worker.CrashError{WorkerID: "w0", PID: 7, ExitCode: -1, Signal: syscall.SIGKILL}
	if !strings.Contains(ce.Error(), "was killed by SIGKILL") {
		t.Errorf("CrashError = %q; want the signal by name", ce.Error())
	}
}
