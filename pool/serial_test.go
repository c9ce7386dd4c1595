package pool_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/snakepit-go/snakepit/internal/testutil"
	"github.com/snakepit-go/snakepit/pool"
	"github.com/snakepit-go/snakepit/worker"
	"github.com/snakepit-go/snakepit/worker/fake"
)

// burnTool is a fake tool taking d per call. With gil set, the calls on
// one worker take turns on a mutex, as pure-Python calls take turns on a
// process's GIL: side by side they gain nothing. Without it they overlap
// freely (I/O). It records the most calls it ever had at once per worker.
type burnTool struct {
	name string
	d    time.Duration
	gil  atomic.Bool
	hold chan struct{} // a call with args {"hold":true} waits for it

	mu  sync.Mutex
	per []*burnWorker
}

type burnWorker struct {
	gil     sync.Mutex
	in, max atomic.Int32
}

func newBurn(name string, d time.Duration, gil bool) *burnTool {
	b := &burnTool{name: name, d: d, hold: make(chan struct{})}
	b.gil.Store(gil)
	return b
}

// option is the tool for one worker.
func (b *burnTool) option() fake.Option {
	bw := &burnWorker{}
	b.mu.Lock()
	b.per = append(b.per, bw)
	b.mu.Unlock()
	return fake.WithTool(b.name, func(ctx context.Context, c *worker.Call) (*worker.Result, error) {
		n := bw.in.Add(1)
		defer bw.in.Add(-1)
		for m := bw.max.Load(); n > m && !bw.max.CompareAndSwap(m, n); m = bw.max.Load() {
		}
		if b.gil.Load() {
			bw.gil.Lock()
			defer bw.gil.Unlock()
		}
		if string(c.Args) == `{"hold":true}` {
			select {
			case <-b.hold:
			case <-ctx.Done():
				return nil, context.Cause(ctx)
			}
		}
		t := time.NewTimer(b.d)
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
			return nil, context.Cause(ctx)
		}
		return &worker.Result{JSON: json.RawMessage(`{}`)}, nil
	})
}

// maxOverlap is the most calls one worker had at once since the last reset.
func (b *burnTool) maxOverlap() int32 {
	b.mu.Lock()
	defer b.mu.Unlock()
	var m int32
	for _, bw := range b.per {
		m = max(m, bw.max.Load())
	}
	return m
}

func (b *burnTool) resetOverlap() {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, bw := range b.per {
		bw.max.Store(0)
	}
}

// load keeps callers calling tool until stop; errs collects failures.
type load struct {
	stop chan struct{}
	wg   sync.WaitGroup
	n    atomic.Int64
	mu   sync.Mutex
	errs []error
}

func (h *harness) load(tool string, callers int) *load {
	l := &load{stop: make(chan struct{})}
	for range callers {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			for {
				select {
				case <-l.stop:
					return
				default:
				}
				ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
				_, err := h.p.Execute(ctx, call(tool, ""), pool.CallOptions{QueueTimeout: 20 * time.Second})
				cancel()
				if err != nil {
					l.mu.Lock()
					l.errs = append(l.errs, err)
					l.mu.Unlock()
				}
				l.n.Add(1)
			}
		}()
	}
	return l
}

// end stops the callers and fails the test on any call's error.
func (l *load) end(t *testing.T) {
	t.Helper()
	close(l.stop)
	l.wg.Wait()
	if len(l.errs) > 0 {
		t.Fatalf("%d calls failed, the first: %v", len(l.errs), l.errs[0])
	}
}

// until waits (polling, 30 s at most) for cond on the stats while the load runs.
func (l *load) until(t *testing.T, h *harness, what string, cond func(pool.Stats) bool) pool.Stats {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		s := h.p.Stats()
		if cond(s) {
			return s
		}
		if time.Now().After(deadline) {
			close(l.stop)
			l.wg.Wait()
			t.Fatalf("timed out waiting for %s (%d calls made; serial tools %v)", what, l.n.Load(), s.SerialTools)
		}
		time.Sleep(time.Millisecond)
	}
}

// calls waits until the load made n more calls.
func (l *load) calls(t *testing.T, h *harness, n int64) {
	t.Helper()
	from := l.n.Load()
	l.until(t, h, fmt.Sprintf("%d more calls", n), func(pool.Stats) bool { return l.n.Load() >= from+n })
}

func serial(tool string) func(pool.Stats) bool {
	return func(s pool.Stats) bool { return slices.Contains(s.SerialTools, tool) }
}

// newSerialPool is n fake workers of capacity 8 with the burn tools and echo.
func newSerialPool(t *testing.T, opts pool.Options, n int, tools ...*burnTool) (*harness, []*fake.Worker) {
	return newSerialPoolCap(t, opts, n, 8, tools...)
}

func newSerialPoolCap(t *testing.T, opts pool.Options, n, capacity int, tools ...*burnTool) (*harness, []*fake.Worker) {
	h := newHarness(t, opts)
	var ws []*fake.Worker
	for i := range n {
		o := []fake.Option{fake.WithTool("echo", fake.Echo)}
		for _, b := range tools {
			o = append(o, b.option())
		}
		ws = append(ws, h.add(fmt.Sprintf("w%d", i), capacity, o...))
	}
	h.ready(n)
	return h, ws
}

func TestSerialToolLearnedThenOnePerWorker(t *testing.T) {
	b := newBurn("burn", 5*time.Millisecond, true)
	h, _ := newSerialPool(t, pool.Options{}, 2, b)
	l := h.load("burn", 4)
	l.until(t, h, "burn marked serial", serial("burn"))
	b.resetOverlap()
	l.calls(t, h, 60)
	s := h.p.Stats()
	l.end(t)
	if !slices.Contains(s.SerialTools, "burn") {
		t.Fatalf("burn no longer serial after 60 calls: %v", s.SerialTools)
	}
	if m := b.maxOverlap(); m != 1 {
		t.Fatalf("a serial tool had %d calls at once on one worker; want 1", m)
	}
	checkBalanced(t, h.waitStats("quiet", func(s pool.Stats) bool { return s.InFlight == 0 }))
}

func TestOverlappingToolNeverSerial(t *testing.T) {
	b := newBurn("io", 5*time.Millisecond, false)
	h, _ := newSerialPool(t, pool.Options{}, 2, b)
	l := h.load("io", 4)
	deadline := time.Now().Add(30 * time.Second)
	// It is probed (one per worker) first, then runs side by side.
	for l.n.Load() < 300 || b.maxOverlap() < 2 {
		if s := h.p.Stats(); len(s.SerialTools) > 0 {
			l.end(t)
			t.Fatalf("a tool that overlaps freely was marked serial: %v", s.SerialTools)
		}
		if time.Now().After(deadline) {
			l.end(t)
			t.Fatalf("after %d calls, at most %d at once per worker", l.n.Load(), b.maxOverlap())
		}
		time.Sleep(time.Millisecond)
	}
	l.end(t)
}

func TestFastToolNeverSerial(t *testing.T) {
	// 300 µs under the GIL: CPU-bound, but too short for one call per
	// worker to pay; it must keep the whole capacity.
	b := newBurn("fast", 300*time.Microsecond, true)
	h, ws := newSerialPool(t, pool.Options{}, 1, b)
	l := h.load("fast", 16)
	for l.n.Load() < 2000 || ws[0].MaxInFlight() < 8 {
		if s := h.p.Stats(); len(s.SerialTools) > 0 {
			l.end(t)
			t.Fatalf("a fast tool was marked serial: %v", s.SerialTools)
		}
		if l.n.Load() > 50000 {
			l.end(t)
			t.Fatalf("a fast tool had at most %d calls at once on a worker of capacity 8", ws[0].MaxInFlight())
		}
		time.Sleep(time.Millisecond)
	}
	l.end(t)
}

func TestSerialOff(t *testing.T) {
	b := newBurn("burn", 3*time.Millisecond, true)
	h, _ := newSerialPool(t, pool.Options{DisableSerialTools: true}, 1, b)
	l := h.load("burn", 4)
	l.calls(t, h, 200)
	s := h.p.Stats()
	l.end(t)
	if len(s.SerialTools) > 0 || b.maxOverlap() < 2 {
		t.Fatalf("serial tools %v, at most %d calls at once; want none and all 4", s.SerialTools, b.maxOverlap())
	}
}

// markedPool is one worker whose burn tool is marked serial.
func markedPool(t *testing.T, opts pool.Options, b *burnTool, more ...*burnTool) (*harness, *fake.Worker) {
	h, ws := newSerialPoolCap(t, opts, 1, 2, append([]*burnTool{b}, more...)...)
	l := h.load(b.name, 2)
	l.until(t, h, "burn marked serial", serial(b.name))
	l.end(t)
	h.waitStats("quiet", func(s pool.Stats) bool { return s.InFlight == 0 })
	return h, ws[0]
}

// holdOne starts a call of b that waits for b.hold and returns once the
// pool has inflight calls running.
func holdOne(t *testing.T, h *harness, b *burnTool, inflight int) <-chan outcome {
	t.Helper()
	ch := h.goExecute(context.Background(), call(b.name, `{"hold":true}`), pool.CallOptions{})
	h.waitStats("the held call running", func(s pool.Stats) bool { return s.InFlight == inflight })
	return ch
}

func TestSerialWaiterDoesNotBlockOthers(t *testing.T) {
	b := newBurn("burn", 3*time.Millisecond, true)
	other := newBurn("other", 0, false)
	h, _ := markedPool(t, pool.Options{}, b, other)
	b.resetOverlap()
	// Capacity 2: a serial call and another tool's call fill the worker.
	held := holdOne(t, h, b, 1)
	heldOther := holdOne(t, h, other, 2)
	var queued []<-chan outcome
	for range 3 {
		queued = append(queued, h.goExecute(context.Background(), call("burn", ""), pool.CallOptions{}))
	}
	h.waitStats("3 serial calls queued", func(s pool.Stats) bool { return s.Queued == 3 })
	echo := h.goExecute(context.Background(), call("echo", `{"x":1}`), pool.CallOptions{})
	h.waitStats("echo queued behind them", func(s pool.Stats) bool { return s.Queued == 4 })
	// The other tool's slot frees: it goes to echo, past the serial calls
	// queued first, which cannot use this worker yet.
	close(other.hold)
	for _, ch := range []<-chan outcome{heldOther, echo} {
		if o := recv(t, ch); o.err != nil {
			t.Fatal(o.err)
		}
	}
	if s := h.p.Stats(); s.Queued != 3 || b.maxOverlap() != 1 {
		t.Fatalf("queued %d, %d serial calls at once; want 3 and 1", s.Queued, b.maxOverlap())
	}
	close(b.hold)
	for _, ch := range append(queued, held) {
		if o := recv(t, ch); o.err != nil {
			t.Fatal(o.err)
		}
	}
	if m := b.maxOverlap(); m != 1 {
		t.Fatalf("%d serial calls at once; want 1", m)
	}
	checkBalanced(t, h.waitStats("quiet", func(s pool.Stats) bool { return s.InFlight == 0 }))
}

func TestSerialWaitersCancelDeadlineCrash(t *testing.T) {
	b := newBurn("burn", 3*time.Millisecond, true)
	h, w := markedPool(t, pool.Options{RetryBackoff: time.Millisecond}, b)
	held := holdOne(t, h, b, 1)

	cctx, cancel := context.WithCancel(context.Background())
	cancelled := h.goExecute(cctx, call("burn", ""), pool.CallOptions{})
	dctx, dcancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer dcancel()
	expired := h.goExecute(dctx, call("burn", ""), pool.CallOptions{})
	var rest []<-chan outcome
	for range 3 {
		rest = append(rest, h.goExecute(context.Background(), call("burn", ""), pool.CallOptions{Idempotent: true}))
	}
	h.waitStats("5 serial calls queued", func(s pool.Stats) bool { return s.Queued == 5 })
	cancel()
	if o := recv(t, cancelled); !errors.Is(o.err, context.Canceled) {
		t.Fatalf("cancelled waiter: %v; want context.Canceled", o.err)
	}
	if o := recv(t, expired); !errors.Is(o.err, context.DeadlineExceeded) {
		t.Fatalf("waiter past its deadline: %v; want context.DeadlineExceeded", o.err)
	}
	// The worker crashes under the held call; the queued calls run on its
	// next lifetime, one at a time.
	b.resetOverlap()
	w.Crash()
	if o := recv(t, held); !errors.Is(o.err, worker.ErrWorkerCrashed) {
		t.Fatalf("held call: %v; want a crash", o.err)
	}
	for _, ch := range rest {
		if o := recv(t, ch); o.err != nil {
			t.Fatal(o.err)
		}
	}
	if m := b.maxOverlap(); m != 1 {
		t.Fatalf("%d serial calls at once on the restarted worker; want 1", m)
	}
	checkBalanced(t, h.waitStats("quiet", func(s pool.Stats) bool { return s.InFlight == 0 && s.Queued == 0 }))
}

func TestSerialMarkExpiresAndRelearns(t *testing.T) {
	var skew atomic.Int64 // lets the test jump past the mark's expiry
	now := func() time.Time { return time.Now().Add(time.Duration(skew.Load())) }
	b := newBurn("burn", 5*time.Millisecond, true)
	h, _ := newSerialPool(t, pool.Options{Now: now}, 2, b)
	l := h.load("burn", 4)
	l.until(t, h, "burn marked serial", serial("burn"))
	l.calls(t, h, 20) // its time alone, measured while serial
	l.end(t)
	h.waitStats("quiet", func(s pool.Stats) bool { return s.InFlight == 0 })

	// The tool changes: its calls now overlap. Past the mark's expiry it
	// is measured side by side again and let go.
	b.gil.Store(false)
	skew.Store(int64(time.Minute))
	b.resetOverlap()
	l = h.load("burn", 4)
	l.until(t, h, "burn no longer serial", func(s pool.Stats) bool { return len(s.SerialTools) == 0 })
	l.calls(t, h, 40)
	s := h.p.Stats()
	l.end(t)
	if len(s.SerialTools) > 0 || b.maxOverlap() < 2 {
		t.Fatalf("serial tools %v, at most %d calls at once per worker; want none and 2", s.SerialTools, b.maxOverlap())
	}
}

// A strict-affinity call of a serial tool waits for its worker's call of
// that tool to end, then runs there: not before, not after a timeout.
func TestSerialStrictSessionWaiter(t *testing.T) {
	b := newBurn("burn", 3*time.Millisecond, true)
	h, _ := markedPool(t, pool.Options{}, b)
	if o := recv(t, h.goExecute(context.Background(), sessionCall("burn", "s"), pool.CallOptions{})); o.err != nil {
		t.Fatal(o.err) // the session is pinned to the one worker
	}
	b.resetOverlap()
	held := holdOne(t, h, b, 1)
	// The worker has a free slot, but not for this tool: fail-fast fails.
	if o := recv(t, h.goExecute(context.Background(), sessionCall("burn", "s"), pool.CallOptions{Affinity: pool.AffinityStrictFailFast})); !errors.Is(o.err, pool.ErrSessionWorkerBusy) {
		t.Fatalf("strict-fail-fast call of a serial tool on a worker running one: %v; want ErrSessionWorkerBusy", o.err)
	}
	strict := h.goExecute(context.Background(), sessionCall("burn", "s"), pool.CallOptions{Affinity: pool.AffinityStrictQueue, QueueTimeout: time.Minute})
	h.waitStats("the strict call queued", func(s pool.Stats) bool { return s.Queued == 1 })
	close(b.hold)
	for _, ch := range []<-chan outcome{held, strict} {
		if o := recv(t, ch); o.err != nil {
			t.Fatal(o.err)
		}
	}
	if m := b.maxOverlap(); m != 1 {
		t.Fatalf("%d serial calls at once; want 1", m)
	}
	checkBalanced(t, h.waitStats("quiet", func(s pool.Stats) bool { return s.InFlight == 0 && s.Queued == 0 }))
}

// A queued call of a serial tool goes to a worker that joins (elastic
// scale-up) at once, and a removed worker's call ending strands no one:
// the call queued meanwhile goes to the worker left, not the removed one.
func TestSerialWaiterServedByJoiningWorker(t *testing.T) {
	b := newBurn("burn", 3*time.Millisecond, true)
	other := newBurn("other", 0, false)
	h, _ := markedPool(t, pool.Options{}, b, other)
	held := holdOne(t, h, b, 1)
	queued := h.goExecute(context.Background(), call("burn", ""), pool.CallOptions{QueueTimeout: time.Minute})
	h.waitStats("the serial call queued", func(s pool.Stats) bool { return s.Queued == 1 })
	w1 := h.add("w1", 2, fake.WithTool("echo", fake.Echo), b.option(), other.option())
	if o := recv(t, queued); o.err != nil {
		t.Fatal(o.err)
	}
	h.p.Remove("w0")
	// w1 is full (the other tool's two held calls): the next call of burn
	// queues while w0's call still runs.
	var busy []<-chan outcome
	for range 2 {
		busy = append(busy, h.goExecute(context.Background(), call("other", `{"hold":true}`), pool.CallOptions{QueueTimeout: time.Minute}))
	}
	waitFor(t, "w1 full", func() bool { return w1.InFlight() == 2 })
	queued = h.goExecute(context.Background(), call("burn", ""), pool.CallOptions{QueueTimeout: time.Minute})
	h.waitStats("the serial call queued behind w1", func(s pool.Stats) bool { return s.Queued == 1 })
	close(b.hold)
	recv(t, held) // ran on the removed worker: its outcome is the fake's
	if s := h.p.Stats(); s.Queued != 1 {
		t.Fatalf("after the removed worker's call ended: %d queued; want the call still waiting for w1", s.Queued)
	}
	close(other.hold)
	for _, ch := range append(busy, queued) {
		if o := recv(t, ch); o.err != nil {
			t.Fatal(o.err)
		}
	}
	checkBalanced(t, h.waitStats("quiet", func(s pool.Stats) bool { return s.InFlight == 0 && s.Queued == 0 }))
}

// A serial tool's queue timeout says why capacity does not help.
func TestSerialQueueTimeoutSaysWhy(t *testing.T) {
	b := newBurn("burn", 3*time.Millisecond, true)
	h, _ := markedPool(t, pool.Options{}, b)
	held := holdOne(t, h, b, 1)
	o := recv(t, h.goExecute(context.Background(), call("burn", ""), pool.CallOptions{QueueTimeout: 20 * time.Millisecond}))
	if !errors.Is(o.err, pool.ErrQueueTimeout) || !strings.Contains(o.err.Error(), "one call per worker") {
		t.Fatalf("queued call of a serial tool: %v; want ErrQueueTimeout saying it runs one call per worker", o.err)
	}
	close(b.hold)
	if o := recv(t, held); o.err != nil {
		t.Fatal(o.err)
	}
}

// probes counts the pool's probes in its Debug log.
func probes(logs *testutil.Buffer) int {
	return strings.Count(logs.String(), "measuring a tool's time alone")
}

// An overlapping slow tool (I/O) never runs alone under steady load, so
// only a probe refreshes its time alone; once confirmed free it is probed
// less often (not again 30 s later), yet still measured again in time.
func TestFreeToolReprobeBacksOff(t *testing.T) {
	var skew atomic.Int64
	now := func() time.Time { return time.Now().Add(time.Duration(skew.Load())) }
	logs := &testutil.Buffer{}
	logger := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	b := newBurn("io", 5*time.Millisecond, false)
	// The held calls are another tool's: a call of "io" held on each
	// worker would stop the load outright whenever "io" is being probed
	// (one call per worker), and a probe that began as the last phase
	// ended runs until one of its calls ends.
	other := newBurn("hold", 0, false)
	h, ws := newSerialPool(t, pool.Options{Now: now, Logger: logger}, 2, b, other)
	l := h.load("io", 4)
	// A probe, a window, a second probe (to confirm), then windows that
	// confirm it free.
	l.until(t, h, "two probes", func(pool.Stats) bool { return probes(logs) >= 2 })
	l.calls(t, h, 80)
	l.end(t)
	before := probes(logs)

	// steady moves the clock on while the pool is quiet (a call spanning
	// the jump would look serial), then keeps every worker busy with a
	// held call so that no call of the load runs alone.
	steady := func(d time.Duration) (*load, []<-chan outcome) {
		h.waitStats("quiet", func(s pool.Stats) bool { return s.InFlight == 0 })
		skew.Add(int64(d))
		other.hold = make(chan struct{})
		held := []<-chan outcome{holdOne(t, h, other, 1), holdOne(t, h, other, 2)}
		if ws[0].InFlight() != 1 || ws[1].InFlight() != 1 {
			t.Fatalf("held calls on the workers: %d and %d; want one each", ws[0].InFlight(), ws[1].InFlight())
		}
		return h.load("io", 4), held
	}
	release := func(l *load, held []<-chan outcome) {
		close(other.hold)
		l.end(t)
		for _, ch := range held {
			if o := recv(t, ch); o.err != nil {
				t.Fatal(o.err)
			}
		}
	}
	l, held := steady(45 * time.Second) // past serialTTL, within the doubled 60 s
	l.calls(t, h, 200)
	if n := probes(logs); n != before {
		release(l, held)
		t.Fatalf("a tool confirmed free was probed again %d time(s) 45 s later; want none before 60 s", n-before)
	}
	release(l, held)
	before = probes(logs)
	l, held = steady(5 * time.Minute) // past the longest interval
	l.until(t, h, "a probe past the longest interval", func(pool.Stats) bool { return probes(logs) > before })
	s := h.p.Stats()
	release(l, held)
	if len(s.SerialTools) > 0 {
		t.Fatalf("an overlapping tool was marked serial: %v", s.SerialTools)
	}
}
