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
