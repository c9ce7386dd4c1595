package pool_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"

	"github.com/snakepit-go/snakepit/pool"
	"github.com/snakepit-go/snakepit/worker"
)

// The hint of a *NotReadyError fits the kind of the failed starts: the
// adapter advice only for adapters that could not be imported or set up.
func TestNotReadyHintFitsTheCause(t *testing.T) {
	emfile := fmt.Errorf("cannot start python3: %w", &os.SyscallError{Syscall: "pipe2", Err: syscall.EMFILE})
	for name, c := range map[string]struct {
		cause          error
		want, unwanted string
	}{
		"import error": {&worker.StartupError{WorkerID: "w0", Kind: worker.StartupAdapter, Cause: errors.New("exited with status 3")}, "Config.Adapter", "token"},
		"agent token":  {&worker.StartupError{WorkerID: "remote:a", Kind: worker.StartupAuth, Cause: errors.New("Unauthenticated")}, "same token", "adapter"},
		"EMFILE":       {&worker.StartupError{WorkerID: "w0", Cause: emfile}, "raise the limit", "adapter"},
		"unclassified": {&worker.StartupError{WorkerID: "w0", Cause: errors.New("boom")}, "startup errors above", "adapter"},
	} {
		err := &pool.NotReadyError{Wanted: 1, Failed: 1, Cause: errors.Join(c.cause)}
		hint := err.Error()[strings.LastIndex(err.Error(), "hint: "):]
		if !strings.Contains(hint, c.want) || strings.Contains(hint, c.unwanted) {
			t.Errorf("%s: hint %q; want one naming %q and not %q", name, hint, c.want, c.unwanted)
		}
	}
}

// Without failed starts the hint names what bounded the wait: the pool's
// ReadyTimeout for a call, the caller's context for WaitReady.
func TestNotReadyHintNamesWhatEndedTheWait(t *testing.T) {
	call := (&pool.NotReadyError{Wanted: 1, Cause: errors.New("no worker became ready within ReadyTimeout (30s)")}).Error()
	wait := (&pool.NotReadyError{Wanted: 1, Cause: context.DeadlineExceeded}).Error()
	if !strings.HasSuffix(call, "raise ReadyTimeout if they are just slow to start") {
		t.Errorf("a call's wait: %q", call)
	}
	if strings.Contains(wait, "ReadyTimeout") || !strings.Contains(wait, "later deadline") {
		t.Errorf("a caller's wait: %q", wait)
	}
}
