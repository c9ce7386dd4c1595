package pool_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/snakepit-go/snakepit/pool"
	"github.com/snakepit-go/snakepit/worker"
	"github.com/snakepit-go/snakepit/worker/fake"
)

func TestNewValidatesOptions(t *testing.T) {
	for _, o := range []pool.Options{
		{MaxQueue: -1}, {QueueTimeout: -1}, {DefaultCapacity: -1}, {HungGrace: -1},
		{RetryAttempts: -1}, {RetryBackoff: -1}, {ReadyTimeout: -1}, {AffinityTTL: -1},
	} {
		_, err := pool.New(o)
		var oe *pool.OptionsError
		if !errors.As(err, &oe) || !errors.Is(err, pool.ErrInvalidOptions) {
			t.Errorf("New(%+v) = %v; want *OptionsError", o, err)
		}
	}
	if _, err := pool.New(pool.Options{}); err != nil {
		t.Fatal(err)
	}
}

// Rule 1: a worker never runs more calls than its capacity, and slots free
// up for the next call.
func TestCapacityPerWorker(t *testing.T) {
	h := newHarness(t, pool.Options{})
	g := newGate()
	w := h.add("w1", 2, g.tool("block"))
	h.ready(1)

	a := h.goExecute(context.Background(), &worker.Call{Tool: "block", RequestID: "a"}, pool.CallOptions{})
	b := h.goExecute(context.Background(), &worker.Call{Tool: "block", RequestID: "b"}, pool.CallOptions{})
	g.waitEntered(t)
	g.waitEntered(t) // both run at once: capacity 2
	c := h.goExecute(context.Background(), &worker.Call{Tool: "block", RequestID: "c"}, pool.CallOptions{})
	h.waitStats("third call queued", func(s pool.Stats) bool { return s.Queued == 1 && s.InFlight == 2 })
	if s := h.p.Stats(); s.Workers.Busy != 1 {
		t.Fatalf("workers %+v; want 1 busy", s.Workers)
	}
	for range 3 {
		g.release <- struct{}{}
	}
	for _, ch := range []<-chan outcome{a, b, c} {
		if o := recv(t, ch); o.err != nil {
			t.Fatal(o.err)
		}
	}
	if m := w.MaxInFlight(); m != 2 {
		t.Fatalf("max in flight %d; want 2", m)
	}
	s := h.waitStats("idle", func(s pool.Stats) bool { return s.Workers.Idle == 1 })
	checkBalanced(t, s)
}

// Rule 1: waiters get freed slots strictly in arrival order.
func TestFIFOHandoff(t *testing.T) {
	h := newHarness(t, pool.Options{})
	var mu sync.Mutex
	var order []string
	g := newGate()
	h.add("w1", 1, g.tool("block"), fake.WithTool("record", func(_ context.Context, c *worker.Call) (*worker.Result, error) {
		mu.Lock()
		order = append(order, c.RequestID)
		mu.Unlock()
		return &worker.Result{JSON: json.RawMessage(`null`)}, nil
	}))
	h.ready(1)

	blocker := h.goExecute(context.Background(), &worker.Call{Tool: "block"}, pool.CallOptions{})
	g.waitEntered(t)
	const n = 20
	var outs []<-chan outcome
	var want []string
	for i := range n {
		id := strconv.Itoa(i)
		want = append(want, id)
		outs = append(outs, h.goExecute(context.Background(), &worker.Call{Tool: "record", RequestID: id}, pool.CallOptions{}))
		h.waitStats("waiter "+id+" queued", func(s pool.Stats) bool { return s.Queued == i+1 })
	}
	g.release <- struct{}{}
	recv(t, blocker)
	for _, ch := range outs {
		if o := recv(t, ch); o.err != nil {
			t.Fatal(o.err)
		}
	}
	if got := strings.Join(order, ","); got != strings.Join(want, ",") {
		t.Fatalf("served in order %s; want %s", got, strings.Join(want, ","))
	}
}

// Rule 1: free workers are used round-robin, so load spreads.
func TestRoundRobin(t *testing.T) {
	h := newHarness(t, pool.Options{})
	ws := []*fake.Worker{h.add("w1", 1, whoami("w1")), h.add("w2", 1, whoami("w2")), h.add("w3", 1, whoami("w3"))}
	h.ready(3)
	for range 30 {
		if _, err := h.p.Execute(context.Background(), call("whoami", ""), pool.CallOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	for _, w := range ws {
		if w.Calls() != 10 {
			t.Errorf("%s served %d calls; want 10", w.ID(), w.Calls())
		}
	}
}

// With room for several calls per worker, a call goes to the least-loaded
// ready worker: never beside a busy call while another worker is idle.
func TestLeastLoadedDispatch(t *testing.T) {
	h := newHarness(t, pool.Options{})
	g1, g2 := newGate(), newGate()
	h.add("w1", 4, g1.tool("block"))
	h.add("w2", 4, g2.tool("block"))
	h.ready(2)
	entered := func() string {
		t.Helper()
		select {
		case <-g1.entered:
			return "w1"
		case <-g2.entered:
			return "w2"
		case <-time.After(5 * time.Second):
			t.Fatal("no call entered")
			return ""
		}
	}
	var outs []<-chan outcome
	start := func() string {
		outs = append(outs, h.goExecute(context.Background(), call("block", ""), pool.CallOptions{}))
		return entered()
	}
	// Two calls spread over both workers, whichever comes first.
	if a, b := start(), start(); a == b {
		t.Fatalf("two calls both went to %s; want one per worker", a)
	}
	// w2's call ends: w2 is idle, w1 busy with one call.
	g2.release <- struct{}{}
	h.waitStats("one in flight", func(s pool.Stats) bool { return s.InFlight == 1 })
	if got := start(); got != "w2" {
		t.Fatalf("the next call went to %s beside a busy call while w2 was idle; want w2", got)
	}
	// Both at one call: the next two spread again.
	if a, b := start(), start(); a == b {
		t.Fatalf("two calls both went to %s with both workers at one call; want one each", a)
	}
	for range 2 {
		g1.release <- struct{}{}
		g2.release <- struct{}{}
	}
	for _, o := range outs {
		if r := recv(t, o); r.err != nil {
			t.Fatal(r.err)
		}
	}
	checkBalanced(t, h.p.Stats())
}

// Rule 2: beyond MaxQueue, ErrPoolSaturated at once, and counted.
func TestSaturated(t *testing.T) {
	h := newHarness(t, pool.Options{MaxQueue: 2})
	g := newGate()
	h.add("w1", 1, g.tool("block"))
	h.ready(1)
	busy := h.goExecute(context.Background(), call("block", ""), pool.CallOptions{})
	g.waitEntered(t)
	q1 := h.goExecute(context.Background(), call("block", ""), pool.CallOptions{})
	q2 := h.goExecute(context.Background(), call("block", ""), pool.CallOptions{})
	h.waitStats("2 queued", func(s pool.Stats) bool { return s.Queued == 2 })

	_, err := h.p.Execute(context.Background(), call("block", ""), pool.CallOptions{})
	if !errors.Is(err, pool.ErrPoolSaturated) || !strings.Contains(err.Error(), "raise MaxQueue") {
		t.Fatalf("err = %v; want ErrPoolSaturated saying what to do", err)
	}
	if s := h.p.Stats(); s.Outcomes[pool.OutcomeSaturated] != 1 {
		t.Fatalf("saturated count %d; want 1", s.Outcomes[pool.OutcomeSaturated])
	}
	for range 3 {
		g.release <- struct{}{}
	}
	for _, ch := range []<-chan outcome{busy, q1, q2} {
		if o := recv(t, ch); o.err != nil {
			t.Fatal(o.err)
		}
	}
	checkBalanced(t, h.p.Stats())
}

// Rule 3: the queue timeout ends the wait with ErrQueueTimeout; the pool
// default and the per-call override both apply.
func TestQueueTimeout(t *testing.T) {
	h := newHarness(t, pool.Options{QueueTimeout: 30 * time.Millisecond})
	g := newGate()
	h.add("w1", 1, g.tool("block"))
	h.ready(1)
	busy := h.goExecute(context.Background(), call("block", ""), pool.CallOptions{})
	g.waitEntered(t)

	start := time.Now()
	_, err := h.p.Execute(context.Background(), call("block", ""), pool.CallOptions{})
	if !errors.Is(err, pool.ErrQueueTimeout) {
		t.Fatalf("err = %v; want ErrQueueTimeout", err)
	}
	if el := time.Since(start); el < 30*time.Millisecond {
		t.Fatalf("timed out after %v; want >= 30ms", el)
	}
	_, err = h.p.Execute(context.Background(), call("block", ""), pool.CallOptions{QueueTimeout: time.Millisecond})
	if !errors.Is(err, pool.ErrQueueTimeout) {
		t.Fatalf("err = %v; want ErrQueueTimeout", err)
	}
	s := h.p.Stats()
	if s.Outcomes[pool.OutcomeQueueTimeout] != 2 || s.Queued != 0 {
		t.Fatalf("queue timeouts %d, queued %d; want 2, 0", s.Outcomes[pool.OutcomeQueueTimeout], s.Queued)
	}
	g.release <- struct{}{}
	recv(t, busy)
}

// Rule 3: a waiter whose context ends leaves the queue at once with the
// context's error, counted as cancelled.
func TestQueuedCallCancelled(t *testing.T) {
	h := newHarness(t, pool.Options{})
	g := newGate()
	w := h.add("w1", 1, g.tool("block"))
	h.ready(1)
	busy := h.goExecute(context.Background(), call("block", ""), pool.CallOptions{})
	g.waitEntered(t)

	ctx, cancel := context.WithCancel(context.Background())
	ch := h.goExecute(ctx, call("block", ""), pool.CallOptions{})
	h.waitStats("queued", func(s pool.Stats) bool { return s.Queued == 1 })
	cancel()
	if o := recv(t, ch); !errors.Is(o.err, context.Canceled) {
		t.Fatalf("err = %v; want context.Canceled", o.err)
	}
	if s := h.p.Stats(); s.Queued != 0 || s.Outcomes[pool.OutcomeCancelled] != 1 {
		t.Fatalf("queued %d cancelled %d; want 0, 1", s.Queued, s.Outcomes[pool.OutcomeCancelled])
	}
	g.release <- struct{}{}
	recv(t, busy)
	if w.Calls() != 1 {
		t.Fatalf("worker saw %d calls; want 1", w.Calls())
	}
	checkBalanced(t, h.p.Stats())
}

// Rule 3, the original's bug: many waiters whose queue timeouts race the
// hand-off of freed slots. A call that ran on a worker must never be
// answered ErrQueueTimeout, a call answered ErrQueueTimeout must never run,
// and every slot handed over must come back.
func TestQueueTimeoutNeverAfterHandoff(t *testing.T) {
	h := newHarness(t, pool.Options{})
	var ran sync.Map // request id → true
	work := fake.WithTool("work", func(ctx context.Context, c *worker.Call) (*worker.Result, error) {
		ran.Store(c.RequestID, true)
		time.Sleep(100 * time.Microsecond) // the tool's own work, not synchronisation
		return &worker.Result{JSON: json.RawMessage(`"` + c.RequestID + `"`)}, nil
	})
	workers := []*fake.Worker{h.add("w1", 1, work), h.add("w2", 2, work)}
	h.ready(2)

	const callers, calls = 48, 40
	var ok, timedOut atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, callers*calls)
	for g := range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(g), 7))
			for i := range calls {
				id := fmt.Sprintf("%d-%d", g, i)
				qt := time.Duration(50+rng.IntN(1500)) * time.Microsecond
				res, err := h.p.Execute(context.Background(), &worker.Call{Tool: "work", RequestID: id}, pool.CallOptions{QueueTimeout: qt})
				switch {
				case err == nil:
					var got string
					if derr := res.Decode(&got); derr != nil || got != id {
						errs <- fmt.Errorf("call %s got result %q (%v)", id, got, derr)
					}
					ok.Add(1)
				case errors.Is(err, pool.ErrQueueTimeout):
					timedOut.Add(1)
					if _, was := ran.Load(id); was {
						errs <- fmt.Errorf("call %s ran on a worker but was answered %v", id, err)
					}
				default:
					errs <- fmt.Errorf("call %s: %v", id, err)
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	// Every call that ran was answered with its result.
	n := 0
	ran.Range(func(any, any) bool { n++; return true })
	if int64(n) != ok.Load() {
		t.Errorf("%d calls ran on workers but %d succeeded", n, ok.Load())
	}
	s := h.waitStats("all slots back", func(s pool.Stats) bool { return s.Workers.Idle == 2 })
	checkBalanced(t, s)
	if s.Outcomes[pool.OutcomeQueueTimeout] != uint64(timedOut.Load()) || s.Outcomes[pool.OutcomeSuccess] != uint64(ok.Load()) {
		t.Errorf("stats %d ok / %d timeouts; callers saw %d / %d", s.Outcomes[pool.OutcomeSuccess], s.Outcomes[pool.OutcomeQueueTimeout], ok.Load(), timedOut.Load())
	}
	for i, w := range workers {
		if w.MaxInFlight() > i+1 {
			t.Errorf("%s ran %d calls at once; capacity %d", w.ID(), w.MaxInFlight(), i+1)
		}
	}
	t.Logf("%d calls ran, %d timed out in the queue", ok.Load(), timedOut.Load())
}

// Rule 4: calls made before any worker is ready wait for one.
func TestCallBeforeReadyWaits(t *testing.T) {
	h := newHarness(t, pool.Options{})
	ch := h.goExecute(context.Background(), call("echo", `{"x":1}`), pool.CallOptions{})
	h.waitStats("call waiting for readiness", func(s pool.Stats) bool { return s.Queued == 1 })
	h.add("w1", 1, fake.WithTool("echo", fake.Echo), fake.WithReadyDelay(5*time.Millisecond))
	o := recv(t, ch)
	if o.err != nil || string(o.res.JSON) != `{"x":1}` {
		t.Fatalf("got %v, %v", o.res, o.err)
	}
}

// Rule 4: ...bounded by ReadyTimeout.
func TestReadyTimeout(t *testing.T) {
	h := newHarness(t, pool.Options{ReadyTimeout: 20 * time.Millisecond})
	h.add("w1", 1, fake.WithTool("echo", fake.Echo), fake.WithReadyDelay(time.Hour))
	_, err := h.p.Execute(context.Background(), call("echo", ""), pool.CallOptions{})
	var nre *pool.NotReadyError
	if !errors.Is(err, pool.ErrNotReady) || !errors.As(err, &nre) {
		t.Fatalf("err = %v; want *NotReadyError", err)
	}
	if s := h.p.Stats(); s.Outcomes[pool.OutcomeNotReady] != 1 || s.Workers.Starting != 1 {
		t.Fatalf("stats %+v", s)
	}
}

// Rule 4: when every worker failed for good, calls fail at once with the
// startup error instead of waiting.
func TestAllWorkersFailed(t *testing.T) {
	h := newHarness(t, pool.Options{})
	boom := &worker.StartupError{WorkerID: "w1", Cause: errors.New("python exited with status 1"),
		Stderr: []string{"ModuleNotFoundError: No module named 'my_adapter'"}}
	queued := h.goExecute(context.Background(), call("echo", ""), pool.CallOptions{})
	h.waitStats("queued", func(s pool.Stats) bool { return s.Queued == 1 })
	h.addWith("w1", workerOpt{capacity: 1, giveUpAfter: 3, opts: []fake.Option{fake.WithFailStart(boom, 0)}})

	o := recv(t, queued)
	if !errors.Is(o.err, pool.ErrNotReady) || !strings.Contains(o.err.Error(), "No module named 'my_adapter'") {
		t.Fatalf("queued call: %v; want ErrNotReady with the startup error", o.err)
	}
	_, err := h.p.Execute(context.Background(), call("echo", ""), pool.CallOptions{})
	var se *worker.StartupError
	if !errors.As(err, &se) || se != boom {
		t.Fatalf("new call: %v; want the StartupError", err)
	}
	s := h.p.Stats()
	if s.Workers.Failed != 1 || s.Restarts != 3 || s.RestartReasons[pool.RestartStartup] != 3 {
		t.Fatalf("stats %+v", s)
	}
}

// Rule 4: a tool no ready worker offers fails without touching a worker.
func TestUnknownTool(t *testing.T) {
	h := newHarness(t, pool.Options{})
	w1 := h.add("w1", 1, fake.WithTool("echo", fake.Echo))
	w2 := h.add("w2", 1, fake.WithTool("add", fake.Echo))
	h.ready(2)
	_, err := h.p.Execute(context.Background(), call("nope", ""), pool.CallOptions{})
	var ute *worker.UnknownToolError
	if !errors.As(err, &ute) || strings.Join(ute.Available, ",") != "add,echo" {
		t.Fatalf("err = %v; want UnknownToolError listing add,echo", err)
	}
	if w1.Calls()+w2.Calls() != 0 {
		t.Fatal("a worker was called")
	}
	tools := h.p.Tools()
	if len(tools) != 2 || tools[0].Name != "add" || tools[1].Name != "echo" {
		t.Fatalf("Tools() = %+v", tools)
	}
	if s := h.p.Stats(); s.Outcomes[pool.OutcomeInvalidArgs] != 1 {
		t.Fatalf("invalid count %d", s.Outcomes[pool.OutcomeInvalidArgs])
	}
}

// Rule 4: a worker type that reports no tools leaves the check to the worker.
func TestNoToolListNoPoolCheck(t *testing.T) {
	h := newHarness(t, pool.Options{})
	w := h.add("w1", 1, fake.WithTool("echo", fake.Echo), fake.WithoutToolList())
	h.ready(1)
	_, err := h.p.Execute(context.Background(), call("nope", ""), pool.CallOptions{})
	if !errors.Is(err, worker.ErrUnknownTool) || w.Calls() != 0 {
		t.Fatalf("err = %v, calls %d", err, w.Calls())
	}
	if _, err := h.p.Execute(context.Background(), call("echo", ""), pool.CallOptions{}); err != nil {
		t.Fatal(err)
	}
}

// Rule 5: the caller's deadline reaches the worker unchanged.
func TestDeadlinePassedThrough(t *testing.T) {
	h := newHarness(t, pool.Options{})
	h.add("w1", 1, fake.WithTool("deadline", func(ctx context.Context, _ *worker.Call) (*worker.Result, error) {
		d, ok := ctx.Deadline()
		if !ok {
			return nil, errors.New("no deadline")
		}
		return &worker.Result{JSON: json.RawMessage(strconv.FormatInt(d.UnixNano(), 10))}, nil
	}))
	h.ready(1)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	want, _ := ctx.Deadline()
	res, err := h.p.Execute(ctx, call("deadline", ""), pool.CallOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var got int64
	if err := res.Decode(&got); err != nil || got != want.UnixNano() {
		t.Fatalf("worker saw deadline %d; want %d", got, want.UnixNano())
	}
}

// Rule 5: a worker still inside a call HungGrace after the deadline is
// killed with a reason, the call fails with ErrWorkerTimeout, and the
// restarted worker serves again.
func TestHungWorkerKilled(t *testing.T) {
	h := newHarness(t, pool.Options{HungGrace: 30 * time.Millisecond})
	w := h.add("w1", 1, fake.WithHangingTool("hang"), fake.WithTool("echo", fake.Echo))
	h.ready(1)

	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	_, err := h.p.Execute(ctx, call("hang", ""), pool.CallOptions{})
	var wte *pool.WorkerTimeoutError
	if !errors.Is(err, worker.ErrWorkerTimeout) || !errors.As(err, &wte) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v; want *WorkerTimeoutError", err)
	}
	if el := time.Since(start); el < 50*time.Millisecond {
		t.Fatalf("returned after %v; want deadline + grace", el)
	}
	kills := w.Kills()
	if len(kills) != 1 || kills[0] != "call hang exceeded its deadline by 30ms; worker considered hung" {
		t.Fatalf("kills = %q", kills)
	}
	s := h.waitStats("restarted", func(s pool.Stats) bool { return s.Restarts == 1 && s.Workers.Idle == 1 })
	if s.Outcomes[pool.OutcomeWorkerTimeout] != 1 || s.Restarts != 1 || s.RestartReasons[pool.RestartHung] != 1 || s.RestartDetail[pool.RestartHung] == "" {
		t.Fatalf("stats %+v", s)
	}
	if _, err := h.p.Execute(context.Background(), call("echo", ""), pool.CallOptions{}); err != nil {
		t.Fatal(err)
	}
	if w.Lifetimes() != 2 {
		t.Fatalf("lifetimes %d; want 2", w.Lifetimes())
	}
}

// Rule 5: cancellation without a deadline arms the watchdog too; a worker
// that honours its context is never killed.
func TestHungAfterCancel(t *testing.T) {
	h := newHarness(t, pool.Options{HungGrace: 20 * time.Millisecond})
	g := newGate()
	w := h.add("w1", 1, fake.WithHangingTool("hang"), g.tool("polite"))
	h.ready(1)

	ctx, cancel := context.WithCancel(context.Background())
	ch := h.goExecute(ctx, call("polite", ""), pool.CallOptions{})
	g.waitEntered(t)
	cancel()
	if o := recv(t, ch); !errors.Is(o.err, context.Canceled) || errors.Is(o.err, worker.ErrWorkerTimeout) {
		t.Fatalf("polite: %v", o.err)
	}

	ctx2, cancel2 := context.WithCancel(context.Background())
	ch = h.goExecute(ctx2, call("hang", ""), pool.CallOptions{})
	h.waitStats("hang in flight", func(s pool.Stats) bool { return s.InFlight == 1 })
	cancel2()
	if o := recv(t, ch); !errors.Is(o.err, worker.ErrWorkerTimeout) {
		t.Fatalf("hang: %v", o.err)
	}
	if len(w.Kills()) != 1 {
		t.Fatalf("kills %q", w.Kills())
	}
}

// crashing returns a tool factory: the tool crashes the worker running it
// on the first `times` calls across all workers sharing the counter.
func crashing(times int64, ws map[string]*fake.Worker, mu *sync.Mutex) (func(id string) fake.Option, *atomic.Int64) {
	var n atomic.Int64
	return func(id string) fake.Option {
		return fake.WithTool("flaky", func(ctx context.Context, c *worker.Call) (*worker.Result, error) {
			if n.Add(1) <= times {
				mu.Lock()
				w := ws[id]
				mu.Unlock()
				w.Crash()
				<-ctx.Done()
				return nil, ctx.Err()
			}
			return &worker.Result{JSON: json.RawMessage(`"ok"`)}, nil
		})
	}, &n
}

// Rule 6: a crash fails the call it hit (and nothing else) unless the call
// is idempotent, in which case it runs again elsewhere.
func TestCrashMidCall(t *testing.T) {
	h := newHarness(t, pool.Options{RetryBackoff: time.Millisecond})
	g := newGate()
	w1 := h.add("w1", 1, g.tool("block"))
	h.add("w2", 1, g.tool("block"))
	h.ready(2)

	a := h.goExecute(context.Background(), &worker.Call{Tool: "block", RequestID: "a"}, pool.CallOptions{})
	b := h.goExecute(context.Background(), &worker.Call{Tool: "block", RequestID: "b"}, pool.CallOptions{})
	g.waitEntered(t)
	g.waitEntered(t)
	w1.Crash()
	// Exactly one of the two calls ran on w1: it fails, the other is unaffected.
	var first outcome
	var rest <-chan outcome
	select {
	case first = <-a:
		rest = b
	case first = <-b:
		rest = a
	case <-time.After(5 * time.Second):
		t.Fatal("no call failed after the crash")
	}
	var ce *worker.CrashError
	if !errors.As(first.err, &ce) || ce.WorkerID != "w1" || !errors.Is(first.err, worker.ErrWorkerCrashed) {
		t.Fatalf("call on the crashed worker: %v", first.err)
	}
	g.release <- struct{}{}
	if o := recv(t, rest); o.err != nil {
		t.Fatalf("call on the other worker: %v", o.err)
	}
	s := h.waitStats("w1 back", func(s pool.Stats) bool { return s.Restarts == 1 && s.Workers.Idle == 2 })
	if s.Outcomes[pool.OutcomeCrashed] != 1 || s.Outcomes[pool.OutcomeSuccess] != 1 || s.Restarts != 1 || s.RestartReasons[pool.RestartCrashed] != 1 || s.Retries != 0 {
		t.Fatalf("stats %+v", s)
	}
}

func TestIdempotentRetry(t *testing.T) {
	h := newHarness(t, pool.Options{RetryBackoff: time.Millisecond})
	var mu sync.Mutex
	ws := map[string]*fake.Worker{}
	tool, n := crashing(1, ws, &mu)
	mu.Lock()
	for _, id := range []string{"w1", "w2"} {
		ws[id] = h.add(id, 1, tool(id))
	}
	mu.Unlock()
	h.ready(2)

	res, err := h.p.Execute(context.Background(), call("flaky", ""), pool.CallOptions{Idempotent: true})
	if err != nil || string(res.JSON) != `"ok"` {
		t.Fatalf("idempotent call: %v %v", res, err)
	}
	if n.Load() != 2 {
		t.Fatalf("tool ran %d times; want 2", n.Load())
	}
	s := h.p.Stats()
	if s.Retries != 1 || s.Outcomes[pool.OutcomeSuccess] != 1 || s.Requests != 1 {
		t.Fatalf("stats %+v", s)
	}

	// Not idempotent: no retry.
	h.waitStats("both ready", func(s pool.Stats) bool { return s.Restarts == 1 && s.Workers.Idle == 2 })
	n.Store(0)
	_, err = h.p.Execute(context.Background(), call("flaky", ""), pool.CallOptions{})
	if !errors.Is(err, worker.ErrWorkerCrashed) || n.Load() != 1 {
		t.Fatalf("non-idempotent: %v after %d runs", err, n.Load())
	}
}

func TestRetryBounded(t *testing.T) {
	h := newHarness(t, pool.Options{RetryBackoff: 5 * time.Millisecond, RetryAttempts: 3})
	var mu sync.Mutex
	ws := map[string]*fake.Worker{}
	tool, n := crashing(1<<30, ws, &mu)
	mu.Lock()
	for _, id := range []string{"w1", "w2"} {
		ws[id] = h.add(id, 1, tool(id))
	}
	mu.Unlock()
	h.ready(2)
	_, err := h.p.Execute(context.Background(), call("flaky", ""), pool.CallOptions{Idempotent: true})
	// 4 attempts; one may have met a worker in the instant between its death
	// and the pool hearing of it (ErrWorkerUnavailable: retried, tool not run).
	if !errors.Is(err, worker.ErrWorkerCrashed) || n.Load() < 2 || n.Load() > 4 {
		t.Fatalf("err %v after %d runs; want a crash after 4 attempts", err, n.Load())
	}
	if s := h.p.Stats(); s.Retries != 3 || s.Outcomes[pool.OutcomeCrashed] != 1 {
		t.Fatalf("stats %+v", s)
	}
}

// Rule 7: bad input is rejected with a typed error before any worker.
func TestInvalidCalls(t *testing.T) {
	h := newHarness(t, pool.Options{})
	w := h.add("w1", 1, fake.WithTool("echo", fake.Echo))
	h.ready(1)
	done, cancel := context.WithCancel(context.Background())
	cancel()
	cases := []struct {
		name string
		ctx  context.Context
		call *worker.Call
		opts pool.CallOptions
	}{
		{"nil call", context.Background(), nil, pool.CallOptions{}},
		{"empty tool", context.Background(), &worker.Call{}, pool.CallOptions{}},
		{"ctx done", done, call("echo", ""), pool.CallOptions{}},
		{"negative queue timeout", context.Background(), call("echo", ""), pool.CallOptions{QueueTimeout: -time.Second}},
		{"unknown affinity", context.Background(), call("echo", ""), pool.CallOptions{Affinity: pool.AffinityMode(9)}},
		{"array args", context.Background(), call("echo", `[1,2]`), pool.CallOptions{}},
		{"broken args", context.Background(), call("echo", `{"a":`), pool.CallOptions{}},
		{"string args", context.Background(), call("echo", ` "x"`), pool.CallOptions{}},
	}
	for _, c := range cases {
		_, err := h.p.Execute(c.ctx, c.call, c.opts)
		var ice *pool.InvalidCallError
		if !errors.Is(err, pool.ErrInvalidCall) || !errors.As(err, &ice) || ice.Reason == "" {
			t.Errorf("%s: err = %v; want *InvalidCallError", c.name, err)
		}
		for _, e := range h.p.ExecuteStream(c.ctx, c.call, c.opts) {
			if !errors.Is(e, pool.ErrInvalidCall) {
				t.Errorf("%s (stream): err = %v", c.name, e)
			}
		}
	}
	if _, err := h.p.Execute(done, call("echo", ""), pool.CallOptions{}); !errors.Is(err, context.Canceled) {
		t.Errorf("done ctx error does not wrap context.Canceled: %v", err)
	}
	for _, args := range []string{`{}`, ` {"a": [1]} `} {
		if _, err := h.p.Execute(context.Background(), call("echo", args), pool.CallOptions{}); err != nil {
			t.Errorf("args %s: %v", args, err)
		}
	}
	if w.Calls() != 2 {
		t.Fatalf("worker saw %d calls; want only the 2 valid ones", w.Calls())
	}
	checkBalanced(t, h.p.Stats())
}

func TestParseAffinity(t *testing.T) {
	for s, want := range map[string]pool.AffinityMode{
		"hint": pool.AffinityHint, "": pool.AffinityHint,
		"strict-queue": pool.AffinityStrictQueue, "strict-fail-fast": pool.AffinityStrictFailFast,
	} {
		got, err := pool.ParseAffinity(s)
		if err != nil || got != want {
			t.Errorf("ParseAffinity(%q) = %v, %v", s, got, err)
		}
		if s != "" && got.String() != s {
			t.Errorf("String() = %q; want %q", got.String(), s)
		}
	}
	if _, err := pool.ParseAffinity("sticky"); !errors.Is(err, pool.ErrInvalidCall) || !strings.Contains(err.Error(), "strict-queue") {
		t.Fatalf("ParseAffinity(sticky) = %v", err)
	}
}

// affinityHarness: two workers that answer with their id, one holdable.
func affinityHarness(t *testing.T, opts pool.Options) (*harness, *gate, map[string]*fake.Worker) {
	h := newHarness(t, opts)
	g := newGate()
	ws := map[string]*fake.Worker{}
	for _, id := range []string{"w1", "w2"} {
		ws[id] = h.add(id, 1, whoami(id), g.tool("block"))
	}
	h.ready(2)
	return h, g, ws
}

func sessionCall(tool, session string) *worker.Call {
	return &worker.Call{Tool: tool, SessionID: session}
}

func (h *harness) who(session string, mode pool.AffinityMode) (string, error) {
	res, err := h.p.Execute(context.Background(), sessionCall("whoami", session), pool.CallOptions{Affinity: mode})
	if err != nil {
		return "", err
	}
	var s string
	err = res.Decode(&s)
	return s, err
}

// blockOn holds a slot of the session's worker.
func (h *harness) blockOn(t *testing.T, g *gate, session string) <-chan outcome {
	t.Helper()
	ch := h.goExecute(context.Background(), sessionCall("block", session), pool.CallOptions{Affinity: pool.AffinityStrictQueue})
	g.waitEntered(t)
	return ch
}

func TestAffinityHint(t *testing.T) {
	h, g, _ := affinityHarness(t, pool.Options{})
	first, err := h.who("s", pool.AffinityHint)
	if err != nil {
		t.Fatal(err)
	}
	for range 5 { // round-robin would alternate; the session keeps its worker
		if got, _ := h.who("s", pool.AffinityHint); got != first {
			t.Fatalf("session moved from %s to %s", first, got)
		}
	}
	// Busy session worker: hint takes the other one.
	busy := h.blockOn(t, g, "s")
	other, err := h.who("s", pool.AffinityHint)
	if err != nil || other == first {
		t.Fatalf("hint with busy worker went to %s (%v)", other, err)
	}
	g.release <- struct{}{}
	recv(t, busy)
}

func TestAffinityStrict(t *testing.T) {
	h, g, _ := affinityHarness(t, pool.Options{})
	first, _ := h.who("s", pool.AffinityHint)
	busy := h.blockOn(t, g, "s")

	// fail-fast: busy at once, other worker free regardless.
	if _, err := h.who("s", pool.AffinityStrictFailFast); !errors.Is(err, pool.ErrSessionWorkerBusy) {
		t.Fatalf("strict-fail-fast: %v", err)
	}
	// strict-queue: waits for that worker although the other one is free.
	ch := h.goExecute(context.Background(), sessionCall("whoami", "s"), pool.CallOptions{Affinity: pool.AffinityStrictQueue})
	h.waitStats("strict waiter queued", func(s pool.Stats) bool { return s.Queued == 1 && s.Workers.Idle == 1 })
	g.release <- struct{}{}
	recv(t, busy)
	o := recv(t, ch)
	if o.err != nil || resultString(t, o.res) != first {
		t.Fatalf("strict-queue served by %v (%v); want %s", o.res, o.err, first)
	}
	if s := h.p.Stats(); s.Outcomes[pool.OutcomeAffinity] != 1 {
		t.Fatalf("affinity failures %d", s.Outcomes[pool.OutcomeAffinity])
	}
}

func TestAffinityWorkerRestarted(t *testing.T) {
	h, g, ws := affinityHarness(t, pool.Options{})
	first, _ := h.who("s", pool.AffinityHint)
	busy := h.blockOn(t, g, "s")
	// A strict waiter queued for the worker fails when it dies.
	ch := h.goExecute(context.Background(), sessionCall("whoami", "s"), pool.CallOptions{Affinity: pool.AffinityStrictQueue})
	h.waitStats("strict waiter queued", func(s pool.Stats) bool { return s.Queued == 1 })
	ws[first].Crash()
	if o := recv(t, ch); !errors.Is(o.err, pool.ErrSessionWorkerUnavailable) {
		t.Fatalf("queued strict call: %v", o.err)
	}
	recv(t, busy)
	h.waitStats("restarted", func(s pool.Stats) bool { return s.Restarts == 1 && s.Workers.Idle == 2 })
	for _, mode := range []pool.AffinityMode{pool.AffinityStrictQueue, pool.AffinityStrictFailFast} {
		if _, err := h.who("s", mode); !errors.Is(err, pool.ErrSessionWorkerUnavailable) {
			t.Fatalf("%v after restart: %v", mode, err)
		}
	}
	// hint falls back to any worker and re-pins the session there.
	now, err := h.who("s", pool.AffinityHint)
	if err != nil {
		t.Fatal(err)
	}
	if again, err := h.who("s", pool.AffinityStrictFailFast); err != nil || again != now {
		t.Fatalf("after re-pin: %s %v; want %s", again, err, now)
	}
}

func TestAffinityTTL(t *testing.T) {
	var mu sync.Mutex
	clock := time.Unix(1_000_000, 0)
	now := func() time.Time { mu.Lock(); defer mu.Unlock(); return clock }
	h, g, _ := affinityHarness(t, pool.Options{AffinityTTL: time.Minute, Now: now})
	first, _ := h.who("s", pool.AffinityHint)
	busy := h.blockOn(t, g, "s") // re-pins at the current clock
	mu.Lock()
	clock = clock.Add(61 * time.Second)
	mu.Unlock()
	// Expired: strict-fail-fast no longer sticks to the busy worker.
	got, err := h.who("s", pool.AffinityStrictFailFast)
	if err != nil || got == first {
		t.Fatalf("after TTL: %s %v", got, err)
	}
	g.release <- struct{}{}
	recv(t, busy)
}

func TestRemove(t *testing.T) {
	h, g, _ := affinityHarness(t, pool.Options{})
	first, _ := h.who("s", pool.AffinityHint)
	busy := h.blockOn(t, g, "s")
	h.p.Remove(first)
	g.release <- struct{}{}
	if o := recv(t, busy); o.err != nil { // in-flight call completes
		t.Fatal(o.err)
	}
	if _, err := h.who("s", pool.AffinityStrictQueue); !errors.Is(err, pool.ErrSessionWorkerUnavailable) {
		t.Fatalf("strict after remove: %v", err)
	}
	for range 4 {
		if got, err := h.who("", pool.AffinityHint); err != nil || got == first {
			t.Fatalf("call went to %s (%v) after it was removed", got, err)
		}
	}
	s := h.p.Stats()
	if s.Workers.Total != 1 || s.InFlight != 0 {
		t.Fatalf("stats %+v", s)
	}
}

func TestWaitReady(t *testing.T) {
	h := newHarness(t, pool.Options{})
	for i := range 3 {
		h.add("w"+strconv.Itoa(i), 1, fake.WithTool("echo", fake.Echo), fake.WithReadyDelay(time.Duration(i)*5*time.Millisecond))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := h.p.WaitReady(ctx, 0); err != nil {
		t.Fatal(err)
	}
	if s := h.p.Stats(); s.Workers.Idle != 3 {
		t.Fatalf("workers %+v", s.Workers)
	}
}

func TestWaitReadyFailsEarly(t *testing.T) {
	h := newHarness(t, pool.Options{})
	boom := errors.New("ImportError: cannot import name 'Adapter' from 'my_adapter'")
	h.add("w1", 1, fake.WithTool("echo", fake.Echo))
	h.addWith("w2", workerOpt{capacity: 1, giveUpAfter: 2, opts: []fake.Option{fake.WithFailStart(boom, 0)}})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	start := time.Now()
	err := h.p.WaitReady(ctx, 2)
	var se *worker.StartupError
	if !errors.Is(err, pool.ErrNotReady) || !errors.As(err, &se) || !errors.Is(err, boom) || !strings.Contains(err.Error(), "ImportError") {
		t.Fatalf("err = %v; want NotReady wrapping the StartupError", err)
	}
	if time.Since(start) > 10*time.Second {
		t.Fatal("did not fail early")
	}
	if err := h.p.WaitReady(ctx, 1); err != nil { // one is still reachable
		t.Fatal(err)
	}
}

func TestWaitReadyContext(t *testing.T) {
	h := newHarness(t, pool.Options{})
	h.add("w1", 1, fake.WithReadyDelay(time.Hour))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	if err := h.p.WaitReady(ctx, 1); !errors.Is(err, pool.ErrNotReady) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v", err)
	}
}

// Events may reach the pool before Add (the worker started first).
func TestEventsBeforeAdd(t *testing.T) {
	p, err := pool.New(pool.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	w := fake.New(worker.Spec{ID: "w1", Capacity: 1, Events: p}, fake.WithTool("echo", fake.Echo))
	done := make(chan error, 1)
	go func() { done <- w.Serve(ctx) }()
	waitFor(t, "fake ready", w.IsReady)
	p.Add(w, 1)
	if _, err := p.Execute(context.Background(), call("echo", ""), pool.CallOptions{}); err != nil {
		t.Fatal(err)
	}
	cancel()
	<-done
	if s := p.Stats(); s.Workers.Exited != 1 || s.Restarts != 0 {
		t.Fatalf("stats %+v", s)
	}
}

func TestStopLetsInFlightFinish(t *testing.T) {
	h := newHarness(t, pool.Options{})
	g := newGate()
	h.add("w1", 1, g.tool("block"))
	h.ready(1)
	inflight := h.goExecute(context.Background(), call("block", ""), pool.CallOptions{})
	g.waitEntered(t)
	queued := h.goExecute(context.Background(), call("block", ""), pool.CallOptions{})
	h.waitStats("queued", func(s pool.Stats) bool { return s.Queued == 1 })

	stopped := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		stopped <- h.p.Stop(ctx)
	}()
	if o := recv(t, queued); !errors.Is(o.err, pool.ErrPoolStopping) {
		t.Fatalf("queued: %v", o.err)
	}
	if _, err := h.p.Execute(context.Background(), call("block", ""), pool.CallOptions{}); !errors.Is(err, pool.ErrPoolStopping) {
		t.Fatalf("new call: %v", err)
	}
	if err := h.p.WaitReady(context.Background(), 1); !errors.Is(err, pool.ErrPoolStopping) {
		t.Fatalf("WaitReady: %v", err)
	}
	select {
	case err := <-stopped:
		t.Fatalf("Stop returned %v with a call in flight", err)
	default:
	}
	g.release <- struct{}{}
	if o := recv(t, inflight); o.err != nil {
		t.Fatal(o.err)
	}
	if err := <-stopped; err != nil {
		t.Fatal(err)
	}
	s := h.p.Stats()
	checkBalanced(t, s)
	if s.Outcomes[pool.OutcomeStopping] != 2 {
		t.Fatalf("stopping failures %d", s.Outcomes[pool.OutcomeStopping])
	}
}

func TestStopGraceCancelsCalls(t *testing.T) {
	h := newHarness(t, pool.Options{HungGrace: 20 * time.Millisecond})
	g := newGate()
	w1 := h.add("w1", 1, fake.WithHangingTool("hang"), g.tool("block"))
	w2 := h.add("w2", 1, fake.WithHangingTool("hang"), g.tool("block"))
	h.ready(2)
	polite := h.goExecute(context.Background(), call("block", ""), pool.CallOptions{})
	g.waitEntered(t)
	hung := h.goExecute(context.Background(), call("hang", ""), pool.CallOptions{})
	h.waitStats("2 in flight", func(s pool.Stats) bool { return s.InFlight == 2 })

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	err := h.p.Stop(ctx)
	if err == nil || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Stop = %v; want an error naming the cancelled calls", err)
	}
	if o := recv(t, polite); !errors.Is(o.err, pool.ErrPoolStopping) {
		t.Fatalf("polite call: %v (cause should be ErrPoolStopping)", o.err)
	}
	if o := recv(t, hung); !errors.Is(o.err, worker.ErrWorkerTimeout) {
		t.Fatalf("hung call: %v", o.err)
	}
	if k := len(w1.Kills()) + len(w2.Kills()); k != 1 {
		t.Fatalf("%d kills; want only the hung worker's", k)
	}
	checkBalanced(t, h.p.Stats())
}

func TestStatsLatencyAndStates(t *testing.T) {
	h := newHarness(t, pool.Options{})
	h.add("w1", 1, fake.WithTool("echo", fake.Echo))
	h.addWith("w2", workerOpt{capacity: 1, giveUpAfter: 1, opts: []fake.Option{fake.WithFailStart(errors.New("no"), 0)}})
	h.add("w3", 1, fake.WithReadyDelay(time.Hour))
	h.ready(1)
	for range 100 {
		if _, err := h.p.Execute(context.Background(), call("echo", ""), pool.CallOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	s := h.waitStats("w2 failed", func(s pool.Stats) bool { return s.Workers.Failed == 1 })
	if s.Workers != (pool.WorkerCounts{Total: 3, Starting: 1, Idle: 1, Failed: 1}) {
		t.Fatalf("workers %+v", s.Workers)
	}
	l := s.Latency
	if l.Samples != 100 || l.P50 <= 0 || l.P50 > l.P90 || l.P90 > l.P99 || l.P99 > l.Max {
		t.Fatalf("latency %+v", l)
	}
	checkBalanced(t, s)
}

// 64 callers × 1,000 calls: every call returns exactly once, with its own
// answer, and the stats add up.
func TestConcurrentCallsExactlyOnce(t *testing.T) {
	h := newHarness(t, pool.Options{})
	for i := range 4 {
		h.add("w"+strconv.Itoa(i), 2, fake.WithTool("echo", fake.Echo))
	}
	h.ready(4)
	const callers, calls = 64, 1000
	var returned [callers * calls]atomic.Int32
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for g := range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range calls {
				id := g*calls + i
				args := `{"id":` + strconv.Itoa(id) + `}`
				res, err := h.p.Execute(context.Background(), call("echo", args), pool.CallOptions{})
				if err == nil && string(res.JSON) != args {
					err = fmt.Errorf("call %d got %s", id, res.JSON)
				}
				if err != nil {
					select {
					case errs <- err:
					default:
					}
					continue
				}
				returned[id].Add(1)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	for id := range returned {
		if n := returned[id].Load(); n != 1 {
			t.Fatalf("call %d returned %d times", id, n)
		}
	}
	s := h.p.Stats()
	checkBalanced(t, s)
	if s.Requests != callers*calls || s.Outcomes[pool.OutcomeSuccess] != callers*calls {
		t.Fatalf("stats %+v", s)
	}
}
