package integration

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/snakepit-go/snakepit"
	"github.com/snakepit-go/snakepit/internal/proc"
	"github.com/snakepit-go/snakepit/internal/testutil"
)

const healingAdapter = "healing_adapter.HealingAdapter"

func healingPath(t *testing.T) []string {
	_, file, _, _ := runtime.Caller(0)
	return []string{filepath.Join(filepath.Dir(file), "testdata", "py")}
}

// workerProcs lists the worker processes of the run ("" for any worker id).
func workerProcs(t *testing.T, app *snakepit.App, id string) []proc.Process {
	t.Helper()
	var out []proc.Process
	for _, p := range testutil.RunIDProcesses(t, app.RunID()) {
		if strings.Contains(p.Cmdline, "snakepit_bridge.server") && (id == "" || strings.Contains(p.Cmdline, "--worker-id "+id+" ")) {
			out = append(out, p)
		}
	}
	return out
}

// killOurs SIGKILLs pid after proving it is a process of this run started
// when we saw it (run id + start time).
func killOurs(t *testing.T, app *snakepit.App, p proc.Process, sig syscall.Signal) {
	t.Helper()
	if !signalIfOurs(app, p, sig) {
		t.Fatalf("pid %d is no longer the process of run %s we saw; not signalled", p.PID, app.RunID())
	}
}

func TestOutsideKillsDuringStartupDoNotGiveTheWorkerUp(t *testing.T) {
	app := newApp(t, snakepit.Config{Workers: 1, Adapter: healingAdapter, PythonPath: healingPath(t),
		Env: map[string]string{"HEALING_SETUP_S": "1"}, StartupFailures: 2, StartupTimeout: 20 * time.Second})
	first := workerProcs(t, app, "w0")
	if len(first) != 1 {
		t.Fatalf("want one worker process, got %+v", first)
	}
	killOurs(t, app, first[0], syscall.SIGKILL)
	seen := map[int]bool{first[0].PID: true}
	// Kill every new process before its handshake, twice the give-up budget.
	for i := 0; i < 4; i++ {
		var p proc.Process
		testutil.Eventually(t, 10*time.Second, "a new worker process starting", func() bool {
			for _, c := range workerProcs(t, app, "w0") {
				if !seen[c.PID] {
					p = c
					return true
				}
			}
			return false
		})
		seen[p.PID] = true
		if s := app.Stats().Pool.Workers; s.Starting != 1 {
			t.Fatalf("the new process is not in its start-up (workers %+v); the test must kill before the handshake", s)
		}
		killOurs(t, app, p, syscall.SIGKILL)
	}
	testutil.Eventually(t, 20*time.Second, "the worker ready again after the outside kills", func() bool {
		w := app.Stats().Pool.Workers
		return w.Idle == 1
	})
	s := app.Stats().Pool
	if s.Workers.Failed != 0 || len(s.GivenUp) != 0 {
		t.Fatalf("outside kills during start-up gave the worker up: %+v", s.GivenUp)
	}
	if _, err := app.Execute(ctxT(t), "ping", nil); err != nil {
		t.Fatal(err)
	}
}

func TestGivenUpWorkerIsRetriedAndVisibleInStats(t *testing.T) {
	marker := filepath.Join(t.TempDir(), "fixed")
	const rest = 1500 * time.Millisecond
	app := newApp(t, snakepit.Config{Workers: 2, MinReady: 1, Adapter: healingAdapter, PythonPath: healingPath(t),
		Env:             map[string]string{"HEALING_BROKEN_WORKER": "w1", "HEALING_FIXED_MARKER": marker},
		StartupFailures: 2, RetryGivenUpAfter: rest})
	var given snakepit.Stats
	testutil.Eventually(t, 10*time.Second, "w1 given up, visibly", func() bool {
		given = app.Stats()
		return len(given.Pool.GivenUp) == 1
	})
	g := given.Pool.GivenUp[0]
	if g.ID != "w1" || !errors.Is(g.Err, snakepit.ErrStartup) || !strings.Contains(g.Err.Error(), "environment not fixed yet") {
		t.Fatalf("GivenUp = %+v, want w1 with its setup() error", g)
	}
	if until := time.Until(g.RetryAt); until <= 0 || until > rest {
		t.Fatalf("RetryAt is %s away, want within the %s rest", until, rest)
	}
	if given.Pool.Workers.Failed != 1 {
		t.Fatalf("Workers = %+v, want one failed", given.Pool.Workers)
	}
	// The pool keeps serving on the other worker meanwhile.
	if _, err := app.Execute(ctxT(t), "ping", nil); err != nil {
		t.Fatal(err)
	}
	// A reload replaces the running worker and skips the given-up one,
	// which has no process to replace.
	if rep, err := app.Reload(ctxT(t)); err != nil || fmt.Sprint(rep.Recycled, rep.Skipped) != "[w0] [w1]" {
		t.Fatalf("Reload with w1 given up = %+v, %v; want w0 replaced and w1 skipped", rep, err)
	}
	if err := os.WriteFile(marker, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 15*time.Second, "the given-up worker healed once its environment was fixed", func() bool {
		s := app.Stats().Pool
		return s.Workers.Idle+s.Workers.Busy == 2 && len(s.GivenUp) == 0
	})
}

// minReadySampler records the fewest ready workers seen while it runs.
type minReadySampler struct {
	stop chan struct{}
	done chan struct{}
	min  atomic.Int64
	n    atomic.Int64
}

func sampleReady(app *snakepit.App) *minReadySampler {
	s := &minReadySampler{stop: make(chan struct{}), done: make(chan struct{})}
	s.min.Store(1 << 30)
	go func() {
		defer close(s.done)
		for {
			w := app.Stats().Pool.Workers
			r := int64(w.Idle + w.Busy)
			if r < s.min.Load() {
				s.min.Store(r)
			}
			s.n.Add(1)
			select {
			case <-s.stop:
				return
			case <-time.After(2 * time.Millisecond):
			}
		}
	}()
	return s
}

func (s *minReadySampler) finish() (minReady, samples int64) {
	close(s.stop)
	<-s.done
	return s.min.Load(), s.n.Load()
}

func TestRecyclingUnderLoadKeepsThePoolServing(t *testing.T) {
	const workers, quota = 3, 50
	app := newApp(t, snakepit.Config{Workers: workers, RecycleAfterRequests: quota})
	sampler := sampleReady(app)
	ctx := ctxT(t)
	var failed atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for c := 0; c < 2*workers; c++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				if _, err := app.Execute(ctx, "add", map[string]any{"a": 1, "b": 2}); err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err)
				}
			}
		}()
	}
	testutil.Eventually(t, 60*time.Second, "every worker recycled twice", func() bool {
		return app.Stats().Pool.Recycles >= 2*workers
	})
	close(stop)
	wg.Wait()
	minReady, samples := sampler.finish()
	s := app.Stats().Pool
	t.Logf("%d calls, %d recycles, fewest ready workers %d in %d samples", s.Requests, s.Recycles, minReady, samples)
	if n := failed.Load(); n > 0 {
		t.Fatalf("%d calls failed during recycling; first: %v", n, firstErr.Load())
	}
	if minReady < workers-1 {
		t.Fatalf("ready workers dropped to %d of %d while recycling", minReady, workers)
	}
	if s.Restarts != 0 || s.RecycleReasons[snakepit.RecycleRequests] != int(s.Recycles) {
		t.Fatalf("planned recycles must not count as restarts: restarts %d %v, recycles %d %v", s.Restarts, s.RestartReasons, s.Recycles, s.RecycleReasons)
	}
}

func TestWorkerWedgedWhileDrainingIsKilledAndItsCallFails(t *testing.T) {
	app := newApp(t, snakepit.Config{Workers: 1, Capacity: 2, RecycleAfterRequests: 2,
		HealthInterval: 150 * time.Millisecond, HealthMisses: 3})
	old := workerPID(t, app) // call 1 of the quota
	long := make(chan error, 1)
	go func() {
		_, err := app.Execute(context.Background(), "sleep", map[string]any{"ms": 60000}) // no deadline
		long <- err
	}()
	testutil.Eventually(t, 5*time.Second, "the long call in flight", func() bool { return app.Stats().Pool.InFlight == 1 })
	if _, err := app.Execute(ctxT(t), "ping", nil); err != nil { // call 2: the quota is reached
		t.Fatal(err)
	}
	testutil.Eventually(t, 20*time.Second, "the successor took over", func() bool { return app.Stats().Pool.Recycles == 1 })
	if pid := workerPID(t, app); pid == old {
		t.Fatalf("new calls still go to the draining process %d", pid)
	}
	var p proc.Process
	for _, c := range workerProcs(t, app, "w0") {
		if c.PID == old {
			p = c
		}
	}
	if p.PID == 0 {
		t.Fatalf("the draining process %d is gone before the test could wedge it", old)
	}
	killOurs(t, app, p, syscall.SIGSTOP)
	select {
	case err := <-long:
		if !errors.Is(err, snakepit.ErrWorkerCrashed) {
			t.Fatalf("the call on the wedged draining process: want ErrWorkerCrashed, got %v", err)
		}
	case <-time.After(15 * time.Second):
		_ = syscall.Kill(old, syscall.SIGCONT)
		t.Fatal("a call on a process that wedged while draining hung (health checks stopped during the drain)")
	}
	testutil.Eventually(t, 5*time.Second, "the wedged process reaped", func() bool {
		for _, c := range workerProcs(t, app, "w0") {
			if c.PID == old {
				return false
			}
		}
		return true
	})
	if _, err := app.Execute(ctxT(t), "ping", nil); err != nil {
		t.Fatalf("the new process does not serve: %v", err)
	}
}

func TestSlowStreamConsumerDoesNotGetAHealthyWorkerKilled(t *testing.T) {
	app := newApp(t, snakepit.Config{Workers: 1, Capacity: 2, HungGrace: 300 * time.Millisecond})
	pid := workerPID(t, app)
	// An unrelated call on the same worker, which must not be failed.
	other := make(chan error, 1)
	go func() {
		_, err := app.Execute(context.Background(), "sleep", map[string]any{"ms": 2500})
		other <- err
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	var last error
	for _, err := range app.ExecuteStream(ctx, "stream_count", map[string]any{"n": 5}) {
		if err != nil {
			last = err
			break
		}
		time.Sleep(700 * time.Millisecond) // the scenario: a slow loop body, past deadline + HungGrace
	}
	if errors.Is(last, snakepit.ErrWorkerTimeout) || errors.Is(last, snakepit.ErrWorkerCrashed) {
		t.Fatalf("the consumer's own slowness was blamed on the worker: %v", last)
	}
	if err := <-other; err != nil {
		t.Fatalf("an unrelated call on the worker failed: %v", err)
	}
	if got := workerPID(t, app); got != pid {
		t.Fatalf("the worker was replaced (pid %d → %d)", pid, got)
	}
	if s := app.Stats().Pool; s.Restarts != 0 {
		t.Fatalf("restarts %d: %v", s.Restarts, s.RestartReasons)
	}
}

func TestReplacementThatFailsToStartLeavesTheOldProcessServing(t *testing.T) {
	marker := filepath.Join(t.TempDir(), "fixed")
	if err := os.WriteFile(marker, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	app := newApp(t, snakepit.Config{Workers: 1, RecycleAfterRequests: 2, Adapter: healingAdapter, PythonPath: healingPath(t),
		Env: map[string]string{"HEALING_BROKEN_WORKER": "w0", "HEALING_FIXED_MARKER": marker}})
	old := workerPID(t, app)
	if err := os.Remove(marker); err != nil { // new code is broken from here on
		t.Fatal(err)
	}
	if _, err := app.Execute(ctxT(t), "ping", nil); err != nil { // the quota is reached
		t.Fatal(err)
	}
	// The successor fails its setup(); the old process keeps serving.
	var succ int
	testutil.Eventually(t, 10*time.Second, "a successor process starting", func() bool {
		for _, p := range workerProcs(t, app, "w0") {
			if p.PID != old {
				succ = p.PID
				return true
			}
		}
		return false
	})
	testutil.Eventually(t, 10*time.Second, "the broken successor gone", func() bool {
		for _, p := range workerProcs(t, app, "w0") {
			if p.PID == succ {
				return false
			}
		}
		return true
	})
	for i := 0; i < 20; i++ {
		if pid := workerPID(t, app); pid != old {
			t.Fatalf("call %d went to pid %d, not the old process %d", i, pid, old)
		}
	}
	if s := app.Stats().Pool; s.Recycles != 0 || s.Restarts != 0 || s.Workers.Idle != 1 {
		t.Fatalf("a failed replacement must leave the worker as it was: %+v", s)
	}
	if err := os.WriteFile(marker, nil, 0o600); err != nil { // fixed again
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, "the replacement retried and done", func() bool { return app.Stats().Pool.Recycles == 1 })
	if pid := workerPID(t, app); pid == old {
		t.Fatal("still on the old process after the replacement")
	}
}

func TestSyncToolIgnoringCancellationGetsItsWorkerReplaced(t *testing.T) {
	app := newApp(t, snakepit.Config{Workers: 1, Capacity: 2, HungGrace: 300 * time.Millisecond})
	old := workerPID(t, app)
	for i := 0; i < 8; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		_, err := app.Execute(ctx, "stubborn_sleep", map[string]any{"ms": 20000})
		cancel()
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("cancelled call %d: want the caller's DeadlineExceeded, got %v", i, err)
		}
	}
	// Capacity is exact: the two stuck calls keep both slots (the other six
	// waited and were dropped), so the process is replaced, and only then
	// does a sync call run at once.
	testutil.Eventually(t, 10*time.Second, "the process carrying the abandoned threads replaced", func() bool {
		return app.Stats().Pool.RecycleReasons[snakepit.RecycleAbandoned] >= 1
	})
	if pid := workerPID(t, app); pid == old {
		t.Fatal("calls still go to the process with the stuck threads")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if _, err := app.Execute(ctx, "add", map[string]any{"a": 1, "b": 2}); err != nil {
		t.Fatalf("a normal call after the replacement: %v", err)
	}
	testutil.Eventually(t, 10*time.Second, "the old process (and its stuck threads) gone", func() bool {
		for _, p := range workerProcs(t, app, "w0") {
			if p.PID == old {
				return false
			}
		}
		return true
	})
	if s := app.Stats().Pool; s.Restarts != 0 {
		t.Fatalf("a planned replacement counted as restart: %v", s.RestartReasons)
	}
}

func TestCapacitySizesThePythonThreadPool(t *testing.T) {
	const capacity = 12
	app := newApp(t, snakepit.Config{Workers: 1, Capacity: capacity})
	var wg sync.WaitGroup
	seen := make(chan int, capacity)
	for i := 0; i < capacity; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n, err := snakepit.Decode[int](app.Execute(ctxT(t), "rendezvous", map[string]any{"n": capacity, "timeout_ms": 10000}))
			if err != nil {
				t.Error(err)
			}
			seen <- n
		}()
	}
	wg.Wait()
	close(seen)
	for n := range seen {
		if n != capacity {
			t.Fatalf("at most %d of %d concurrent sync calls ran at once with Capacity %d", n, capacity, capacity)
		}
	}
}

// With callers queued, the pool sends the Python worker calls beyond its
// Capacity (prefetch, up to four times as many); they wait in the worker,
// which still runs no more than Capacity at once.
func TestPrefetchedCallsWaitInThePythonWorker(t *testing.T) {
	const capacity = 2
	app := newApp(t, snakepit.Config{Workers: 1, Capacity: capacity})
	var wg sync.WaitGroup
	seen := make(chan int, 2*capacity)
	for i := 0; i < 2*capacity; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Never released: each call ends at its timeout, reporting the
			// most calls it saw inside together.
			n, err := snakepit.Decode[int](app.Execute(ctxT(t), "rendezvous", map[string]any{"n": capacity + 1, "timeout_ms": 1000}))
			if err != nil {
				t.Error(err)
			}
			seen <- n
		}()
	}
	testutil.Eventually(t, 10*time.Second, "2 calls running and 2 prefetched to the worker", func() bool {
		return app.Stats().Pool.InFlight == 2*capacity
	})
	wg.Wait()
	close(seen)
	for n := range seen {
		if n != capacity {
			t.Fatalf("a call saw %d calls inside at once with Capacity %d; want exactly %d", n, capacity, capacity)
		}
	}
}

func TestLongStderrLineDoesNotWedgeTheWorker(t *testing.T) {
	app := newApp(t, snakepit.Config{Workers: 1, StopGrace: 3 * time.Second})
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	for i := 0; i < 3; i++ { // every later stderr write must go through too
		if _, err := app.Execute(ctx, "print_big", map[string]any{"nbytes": 2 << 20}); err != nil {
			t.Fatalf("print_big %d: %v", i, err)
		}
	}
	// A worker whose stderr drain stopped would block in its next write and
	// need SIGKILL at Stop; a drained one exits on SIGTERM within the grace.
	pid := workerPID(t, app)
	logs, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if !strings.Contains(string(logs), "State:") {
		t.Fatalf("worker %d gone before Stop", pid)
	}
	if _, err := app.Stop(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	if proc.Alive(pid) {
		t.Fatal("worker alive after Stop")
	}
}
