package grpcworker

import (
	"context"
	"errors"
	"syscall"
	"testing"
	"time"

	"github.com/snakepit-go/snakepit/internal/proc"
	"github.com/snakepit-go/snakepit/internal/testutil"
	"github.com/snakepit-go/snakepit/pool"
	"github.com/snakepit-go/snakepit/worker"
)

// A call on a process that stops answering (SIGSTOP: a wedged interpreter,
// a tool stuck in C code holding the process) comes back past its
// deadline as the pool's *WorkerTimeoutError, the one shape of "hung":
// the worker keeps the call until the process proves it is alive, which a
// stopped one cannot, so the pool's watchdog finds it still inside the
// call after HungGrace and kills it. Health checks are off, so nothing
// else could have ended it.
func TestCallOnAStoppedProcessIsAWorkerTimeoutError(t *testing.T) {
	const grace = 300 * time.Millisecond
	p, err := pool.New(pool.Options{HungGrace: grace, Logger: testutil.Logger()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Stop(context.Background()) })
	fx := startWorkerEvents(t, 0, p, func(o *Options) { o.HealthInterval = -1; o.HungGrace = grace })
	p.Add(fx.w, 1)
	fx.waitReady(t)
	pid := fx.w.PID()

	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	res := make(chan error, 1)
	go func() {
		_, err := p.Execute(ctx, &worker.Call{Tool: "hang"}, pool.CallOptions{})
		res <- err
	}()
	testutil.Eventually(t, 5*time.Second, "call in flight", func() bool { return p.Stats().InFlight == 1 })
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	var wte *pool.WorkerTimeoutError
	select {
	case err := <-res:
		if !errors.As(err, &wte) || !errors.Is(err, worker.ErrWorkerTimeout) || !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("call on a stopped process = %v; want *pool.WorkerTimeoutError (ErrWorkerTimeout, DeadlineExceeded)", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("the call on a stopped process never returned")
	}
	if wte.WorkerID != "w0" || wte.Tool != "hang" || wte.Grace != grace || !errors.Is(wte.WorkerErr, worker.ErrWorkerCrashed) {
		t.Fatalf("WorkerTimeoutError = %+v; want w0, hang, %s, the killed lifetime's crash", wte, grace)
	}
	testutil.Eventually(t, 10*time.Second, "the stopped process killed", func() bool { return !proc.Alive(pid) })
}

// A tool that ignores cancellation in a process that still answers is not
// hung: the caller gets its own deadline at once, and the process is
// recycled later (checkAbandoned), not killed.
func TestCallIgnoringCancellationInALiveProcessIsNotHung(t *testing.T) {
	const grace = 300 * time.Millisecond
	p, err := pool.New(pool.Options{HungGrace: grace, Logger: testutil.Logger()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Stop(context.Background()) })
	fx := startWorkerEvents(t, 2, p, func(o *Options) { o.HealthInterval = -1; o.HungGrace = grace })
	p.Add(fx.w, 2)
	fx.waitReady(t)

	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	_, err = p.Execute(ctx, &worker.Call{Tool: "stubborn_sleep", Args: []byte(`{"ms":20000}`)}, pool.CallOptions{})
	if !errors.Is(err, context.DeadlineExceeded) || errors.Is(err, worker.ErrWorkerTimeout) {
		t.Fatalf("stubborn call = %v; want the caller's own DeadlineExceeded", err)
	}
	testutil.Eventually(t, 10*time.Second, "the process carrying the abandoned call recycled", func() bool {
		return fx.ev.has("replaced:" + reasonIgnored)
	})
}
