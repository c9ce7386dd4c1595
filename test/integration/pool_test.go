package integration

import (
	"context"
	"errors"
	"syscall"
	"testing"
	"time"

	"github.com/snakepit-go/snakepit"
	"github.com/snakepit-go/snakepit/internal/proc"
	"github.com/snakepit-go/snakepit/internal/testutil"
)

type counters struct {
	CancelledStreams int `json:"cancelled_streams"`
	CancelledHangs   int `json:"cancelled_hangs"`
}

func readCounters(t *testing.T, app *snakepit.App) counters {
	t.Helper()
	c, err := snakepit.Decode[counters](app.Execute(ctxT(t), "counters", nil))
	if err != nil {
		t.Fatalf("counters: %v", err)
	}
	return c
}

func TestCallerDeadlineCancelsThePythonTool(t *testing.T) {
	app := newApp(t, snakepit.Config{Workers: 1})
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	_, err := app.Execute(ctx, "hang", nil)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("want the caller's DeadlineExceeded, got %v", err)
	}
	testutil.Eventually(t, 5*time.Second, "hang observed its cancellation in Python", func() bool {
		return readCounters(t, app).CancelledHangs == 1
	})
	if s := app.Stats().Pool; s.Outcomes[snakepit.OutcomeDeadline] != 1 {
		t.Fatalf("stats do not count the call under deadline: %v", s.Outcomes)
	}
}

func TestCrashMidCallFailsOnlyThatCall(t *testing.T) {
	app := newApp(t, snakepit.Config{Workers: 2})
	ctx := ctxT(t)
	other := make(chan error, 1)
	go func() {
		_, err := app.Execute(ctx, "sleep", map[string]any{"ms": 400})
		other <- err
	}()
	testutil.Eventually(t, 5*time.Second, "first call in flight", func() bool { return app.Stats().Pool.InFlight == 1 })
	_, err := app.Execute(ctx, "crash", map[string]any{"code": 3})
	var ce *snakepit.CrashError
	if !errors.As(err, &ce) || ce.ExitCode != 3 {
		t.Fatalf("crash: want CrashError with exit status 3, got %v", err)
	}
	if err := <-other; err != nil {
		t.Fatalf("the call on the other worker failed too: %v", err)
	}
}

func TestIdempotentCallIsRetriedAfterItsWorkerIsKilled(t *testing.T) {
	app := newApp(t, snakepit.Config{Workers: 1})
	pid := workerPID(t, app)
	res := make(chan error, 1)
	go func() {
		_, err := app.Execute(ctxT(t), "sleep", map[string]any{"ms": 1500}, snakepit.Idempotent())
		res <- err
	}()
	testutil.Eventually(t, 5*time.Second, "call in flight", func() bool { return app.Stats().Pool.InFlight == 1 })
	if !proc.CarriesRunID(pid, app.RunID()) {
		t.Fatalf("pid %d is not ours", pid)
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-res:
		if err != nil {
			t.Fatalf("idempotent call was not retried to success: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("idempotent call never returned")
	}
	if app.Stats().Pool.Retries < 1 {
		t.Fatalf("no retry counted: %+v", app.Stats().Pool)
	}
}

func TestBreakingOutOfAStreamCancelsThePythonGenerator(t *testing.T) {
	app := newApp(t, snakepit.Config{Workers: 1})
	n := 0
	for _, err := range app.ExecuteStream(ctxT(t), "stream_count", map[string]any{"n": 10000, "delay_ms": 5}) {
		if err != nil {
			t.Fatal(err)
		}
		if n++; n == 3 {
			break
		}
	}
	testutil.Eventually(t, 5*time.Second, "generator saw the break", func() bool { return readCounters(t, app).CancelledStreams == 1 })

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var last error
	n = 0
	for _, err := range app.ExecuteStream(ctx, "stream_count", map[string]any{"n": 10000, "delay_ms": 5}) {
		if err != nil {
			last = err
			break
		}
		if n++; n == 2 {
			cancel()
		}
	}
	if !errors.Is(last, context.Canceled) {
		t.Fatalf("cancelling ctx mid-stream: want context.Canceled as the iterator's error, got %v", last)
	}
	testutil.Eventually(t, 5*time.Second, "generator saw the cancellation", func() bool { return readCounters(t, app).CancelledStreams == 2 })
}

func TestSessionAffinityAfterTheSessionsWorkerRestarts(t *testing.T) {
	app := newApp(t, snakepit.Config{Workers: 2})
	ctx := ctxT(t)
	first, err := snakepit.Decode[map[string]any](app.Execute(ctx, "session_counter", nil, snakepit.WithSession("s")))
	if err != nil {
		t.Fatal(err)
	}
	// The crash lands on the session's worker because the affinity is strict.
	if _, err := app.Execute(ctx, "crash", map[string]any{"code": 1}, snakepit.WithSession("s"), snakepit.WithAffinity(snakepit.AffinityStrictQueue)); !errors.Is(err, snakepit.ErrWorkerCrashed) {
		t.Fatalf("crash: %v", err)
	}
	if _, err := app.Execute(ctx, "session_counter", nil, snakepit.WithSession("s"), snakepit.WithAffinity(snakepit.AffinityStrictFailFast)); !errors.Is(err, snakepit.ErrSessionWorkerUnavailable) {
		t.Fatalf("strict-fail-fast after the session's worker restarted: want ErrSessionWorkerUnavailable, got %v", err)
	}
	again, err := snakepit.Decode[map[string]any](app.Execute(ctx, "session_counter", nil, snakepit.WithSession("s")))
	if err != nil {
		t.Fatalf("hint affinity should fall back to any worker: %v", err)
	}
	if again["pid"] == first["pid"] && again["count"].(float64) != 1 {
		t.Fatalf("unexpected session state after restart: first %v, again %v", first, again)
	}
	if _, err := app.Execute(ctx, "ping", nil, snakepit.WithAffinity(snakepit.Affinity(9))); err == nil {
		t.Fatal("unknown affinity mode accepted")
	}
}

func TestCallsMadeBeforeReadyWait(t *testing.T) {
	app := buildApp(t, snakepit.Config{Workers: 1})
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- app.Serve(ctx) }()
	defer func() {
		cancel()
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
		if left := testutil.RunIDProcesses(t, app.RunID()); len(left) > 0 {
			t.Errorf("%d processes left", len(left))
		}
	}()
	// No WaitReady: once Serve runs, the call itself waits for a worker.
	// Until the goroutine has entered Serve the App is not started, and a
	// call fails at once with ErrNotStarted instead.
	var err error
	testutil.Eventually(t, 10*time.Second, "Serve to have begun", func() bool {
		_, err = app.Execute(ctxT(t), "ping", nil)
		return !errors.Is(err, snakepit.ErrNotStarted)
	})
	if err != nil {
		t.Fatalf("call before ready: %v", err)
	}
}

func TestStopDrainsInFlightCallsAndRefusesNewOnes(t *testing.T) {
	app := buildApp(t, snakepit.Config{Workers: 1})
	if err := app.Start(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	inflight := make(chan error, 1)
	go func() {
		_, err := app.Execute(context.Background(), "sleep", map[string]any{"ms": 500})
		inflight <- err
	}()
	testutil.Eventually(t, 5*time.Second, "call in flight", func() bool { return app.Stats().Pool.InFlight == 1 })
	stopped := make(chan struct{})
	go func() { stopApp(t, app); close(stopped) }()
	testutil.Eventually(t, 5*time.Second, "new calls refused", func() bool {
		_, err := app.Execute(ctxT(t), "ping", nil)
		return errors.Is(err, snakepit.ErrPoolStopping)
	})
	if err := <-inflight; err != nil {
		t.Fatalf("in-flight call was not allowed to finish: %v", err)
	}
	<-stopped
}

func TestCallOnAHungWorkerReturnsWorkerTimeoutAndTheWorkerIsRestarted(t *testing.T) {
	app := newApp(t, snakepit.Config{Workers: 1, HungGrace: 300 * time.Millisecond, HealthInterval: -1})
	pid := workerPID(t, app)
	ctx, cancel := context.WithTimeout(context.Background(), 400*time.Millisecond)
	defer cancel()
	res := make(chan error, 1)
	go func() {
		_, err := app.Execute(ctx, "sleep", map[string]any{"ms": 5000})
		res <- err
	}()
	testutil.Eventually(t, 5*time.Second, "call in flight", func() bool { return app.Stats().Pool.InFlight == 1 })
	if !proc.CarriesRunID(pid, app.RunID()) {
		t.Fatalf("pid %d is not ours", pid)
	}
	// Stopped: alive but answering nothing — the interpreter is wedged.
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-res:
		var wte *snakepit.WorkerTimeoutError
		if !errors.As(err, &wte) || !errors.Is(err, snakepit.ErrWorkerTimeout) {
			t.Fatalf("want a *WorkerTimeoutError (ErrWorkerTimeout), got %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("call on a hung worker never returned")
	}
	testutil.Eventually(t, 20*time.Second, "worker replaced", func() bool {
		out, err := snakepit.Decode[map[string]any](app.Execute(ctxT(t), "worker_info", nil))
		return err == nil && int(out["pid"].(float64)) != pid
	})
	if proc.Alive(pid) {
		t.Fatalf("hung worker %d still alive", pid)
	}
}

func TestErrorMidStreamIsTheIteratorsError(t *testing.T) {
	app := newApp(t, snakepit.Config{Workers: 1})
	var got int
	var last error
	for _, err := range app.ExecuteStream(ctxT(t), "stream_fail", map[string]any{"after": 3}) {
		if err != nil {
			last = err
			break
		}
		got++
	}
	var te *snakepit.ToolError
	if got != 3 || !errors.As(last, &te) || te.Type != "RuntimeError" {
		t.Fatalf("got %d chunks then %v; want 3 chunks then a RuntimeError ToolError", got, last)
	}
	if _, err := app.Execute(ctxT(t), "ping", nil); err != nil {
		t.Fatalf("worker unusable after a failed stream: %v", err)
	}
}

func TestWorkerIsRecycledAfterItsRequestQuotaWithoutFailingACall(t *testing.T) {
	app := newApp(t, snakepit.Config{Workers: 1, RecycleAfterRequests: 5})
	pids := map[int]bool{}
	// The quota starts a replacement; the old process serves until the new
	// one is ready, so calls keep succeeding throughout.
	testutil.Eventually(t, 30*time.Second, "two recycles", func() bool {
		pids[workerPID(t, app)] = true // fails the test if any call fails
		return app.Stats().Pool.Recycles >= 2
	})
	pids[workerPID(t, app)] = true
	if len(pids) < 3 {
		t.Fatalf("calls across two recycles ran on %d processes, want 3", len(pids))
	}
	testutil.Eventually(t, 10*time.Second, "at most one of the processes alive (the current one)", func() bool {
		alive := 0
		for pid := range pids {
			if proc.Alive(pid) {
				alive++
			}
		}
		return alive <= 1
	})
	if s := app.Stats().Pool; s.RecycleReasons[snakepit.RecycleRequests] < 2 || s.Restarts != 0 {
		t.Fatalf("recycles %v, restarts %d %v: want >= 2 quota recycles and no restart", s.RecycleReasons, s.Restarts, s.RestartReasons)
	}
}

func TestRecyclingWaitsForInFlightCalls(t *testing.T) {
	app := newApp(t, snakepit.Config{Workers: 1, Capacity: 2, RecycleAfterRequests: 1})
	ctx := ctxT(t)
	slow := make(chan error, 1)
	go func() {
		_, err := app.Execute(ctx, "sleep", map[string]any{"ms": 600})
		slow <- err
	}()
	testutil.Eventually(t, 5*time.Second, "slow call in flight", func() bool { return app.Stats().Pool.InFlight == 1 })
	// This call completes first and reaches the quota; the slow one must still succeed.
	if _, err := app.Execute(ctx, "ping", nil); err != nil {
		t.Fatal(err)
	}
	if err := <-slow; err != nil {
		t.Fatalf("in-flight call failed during a recycle: %v", err)
	}
}
