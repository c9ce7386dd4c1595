package proc

import (
	"testing"

	"golang.org/x/sys/unix"
)

// DisablePidfd makes the package behave as on a kernel without pidfds for
// the rest of the test, to exercise the verify-then-kill(2) fallback.
func DisablePidfd(t testing.TB) {
	old := pidfdOpen
	pidfdOpen = func(int, int) (int, error) { return -1, unix.ENOSYS }
	t.Cleanup(func() { pidfdOpen = old })
}
