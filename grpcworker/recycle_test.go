package grpcworker

import (
	"context"
	"errors"
	"syscall"
	"testing"
	"time"

	"github.com/snakepit-go/snakepit/internal/proc"
	"github.com/snakepit-go/snakepit/internal/testutil"
	"github.com/snakepit-go/snakepit/worker"
)

// A planned replacement records the successor before it spawns, keeps the
// old process serving until the successor is ready, and removes the old
// record only after the old process is reaped.
func TestReplacementRecordsEveryProcessAndReapsTheOldOne(t *testing.T) {
	fx := startWorker(t, func(o *Options) { o.RecycleAfterRequests = 1 })
	fx.waitReady(t)
	old := fx.w.PID()
	if _, err := fx.w.Execute(context.Background(), &worker.Call{Tool: "ping"}); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 20*time.Second, "the successor took over", func() bool { return fx.ev.has("replaced") })
	next := fx.w.PID()
	if next == old || next == 0 {
		t.Fatalf("after Replaced the worker's pid is %d (old %d)", next, old)
	}
	if st, pid := fx.rec.get("w0.1"); st != "active" || pid != next {
		t.Fatalf("the successor's record is %s/%d, want active/%d", st, pid, next)
	}
	testutil.Eventually(t, 10*time.Second, "the old process reaped and its record removed", func() bool {
		st, _ := fx.rec.get("w0")
		return !proc.Alive(old) && st == ""
	})
	if fx.ev.has("exited") {
		t.Fatal("a planned replacement reported Exited: the pool would take the worker out of rotation")
	}
	if err := fx.stop(t); err != nil {
		t.Fatal(err)
	}
	if st, _ := fx.rec.get("w0.1"); st != "" || proc.Alive(next) {
		t.Fatalf("after stop: record %q, successor alive %v", st, proc.Alive(next))
	}
}

// Kill reaches a process that has not finished starting yet.
func TestKillDuringStartupKillsTheStartingProcess(t *testing.T) {
	fx := startWorker(t, nil)
	var pid int
	testutil.Eventually(t, 10*time.Second, "a process spawned", func() bool {
		_, pid = fx.rec.get("w0")
		return pid != 0
	})
	if fx.w.PID() != 0 {
		t.Skip("the worker became ready before the test could kill its start-up")
	}
	fx.w.Kill("test says so")
	select {
	case err := <-fx.done:
		se, ok := err.(*worker.StartupError)
		if !ok || se.Signal != syscall.SIGKILL {
			t.Fatalf("Serve returned %v, want a StartupError naming SIGKILL", err)
		}
		fx.done <- err
	case <-time.After(10 * time.Second):
		t.Fatal("Kill during start-up did nothing")
	}
}

// When the new process dies while the replaced one still drains a long
// call, the lifetime must end within the stop grace, not when that call
// ends: otherwise the worker stays down for as long as the call runs.
func TestCrashWhileTheOldProcessDrainsEndsTheLifetimePromptly(t *testing.T) {
	fx := startWorker(t, func(o *Options) { o.RecycleAfterRequests = 2; o.StopGrace = time.Second })
	fx.waitReady(t)
	long := make(chan error, 1)
	go func() {
		_, err := fx.w.Execute(context.Background(), &worker.Call{Tool: "sleep", Args: []byte(`{"ms": 60000}`)})
		long <- err
	}()
	for i := 0; i < 2; i++ { // reach the quota while the long call runs
		if _, err := fx.w.Execute(context.Background(), &worker.Call{Tool: "ping"}); err != nil {
			t.Fatal(err)
		}
	}
	testutil.Eventually(t, 20*time.Second, "the successor took over", func() bool { return fx.ev.has("replaced") })
	crashed := time.Now()
	if _, err := fx.w.Execute(context.Background(), &worker.Call{Tool: "crash", Args: []byte(`{"code": 5}`)}); err == nil {
		t.Fatal("crash returned no error")
	}
	select {
	case err := <-fx.done:
		fx.done <- err
		var ce *worker.CrashError
		if !errors.As(err, &ce) || ce.ExitCode != 5 {
			t.Fatalf("Serve returned %v, want the new process's crash", err)
		}
		if d := time.Since(crashed); d > 10*time.Second {
			t.Fatalf("Serve returned %s after the crash", d)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("Serve waited for the old process's 60 s call after the current process crashed")
	}
	select {
	case <-long:
	case <-time.After(5 * time.Second):
		t.Fatal("the long call on the old process did not end with it")
	}
}

// Replace swaps the process on request, reports Replaced with the given
// reason and returns once the new process took over; with no running
// process it returns ErrWorkerUnavailable at once.
func TestReplaceOnRequestAndWithoutAProcess(t *testing.T) {
	fx := startWorker(t, nil)
	fx.waitReady(t)
	old := fx.w.PID()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := fx.w.Recycle(ctx, "reload"); err != nil {
		t.Fatalf("Replace: %v", err)
	}
	if next := fx.w.PID(); next == old || next == 0 || !fx.ev.has("replaced:reload") {
		t.Fatalf("after Replace: pid %d (old %d), replaced with reason reload: %v", next, old, fx.ev.has("replaced:reload"))
	}
	if _, err := fx.w.Execute(ctx, &worker.Call{Tool: "ping"}); err != nil {
		t.Fatal(err)
	}
	if err := fx.stop(t); err != nil {
		t.Fatal(err)
	}
	if err := fx.w.Recycle(ctx, "reload"); !errors.Is(err, worker.ErrWorkerUnavailable) {
		t.Fatalf("Replace after stop = %v, want ErrWorkerUnavailable", err)
	}
}
