package pool_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/snakepit-go/snakepit/pool"
	"github.com/snakepit-go/snakepit/worker"
)

// inFlight is each worker's in-flight count, by id.
func inFlight(s pool.Stats) map[string]int {
	m := map[string]int{}
	for _, w := range s.PerWorker {
		m[w.ID] = w.InFlight
	}
	return m
}

// A worker that reports Prefetch k is sent up to k calls beyond its
// capacity while callers queue, and never more; one that reports none (the
// contract of every worker type that does not ask for it) gets its
// capacity and no more.
func TestPrefetchSendsUpToKBeyondCapacity(t *testing.T) {
	// 8: four per slot, as the Python worker reports; 20: more than the
	// pool ever uses (four per slot).
	for _, tc := range []struct{ report, k int }{{2, 2}, {8, 8}, {20, 8}, {0, 0}} {
		k := tc.k
		t.Run(fmt.Sprintf("k=%d", tc.report), func(t *testing.T) {
			h := newHarness(t, pool.Options{})
			w := &infoWorker{id: "w", block: make(chan struct{})}
			h.p.Add(w, 2)
			h.p.Ready("w", worker.Info{Prefetch: tc.report})
			var outs []<-chan outcome
			for range 2 + k + 2 {
				outs = append(outs, h.goExecute(context.Background(), call("x", ""), pool.CallOptions{}))
			}
			h.waitStats(fmt.Sprintf("2 + %d calls on the worker, 2 queued in the pool", k),
				func(s pool.Stats) bool { return s.InFlight == 2+k && s.Queued == 2 })
			// The autoscaler's view: the prefetched calls wait too.
			if l := h.p.Load(); l.Queued != 2+k {
				t.Errorf("Load().Queued = %d, want %d (2 in the pool, %d prefetched)", l.Queued, 2+k, k)
			}
			close(w.block)
			waitAll(t, outs)
		})
	}
}

// threePrefetched adds worker id (Capacity 2, Prefetch 4) and holds five
// calls on it: two running, three prefetched.
func threePrefetched(h *harness, id string) (*infoWorker, []<-chan outcome) {
	w := &infoWorker{id: id, block: make(chan struct{})}
	h.p.Add(w, 2)
	h.p.Ready(id, worker.Info{Prefetch: 4})
	var outs []<-chan outcome
	for range 2 + 3 {
		outs = append(outs, h.goExecute(context.Background(), call("x", ""), pool.CallOptions{}))
	}
	h.waitStats("5 calls on "+id, func(s pool.Stats) bool { return s.InFlight == 5 && s.Queued == 0 })
	return w, outs
}

// Load, the autoscaler's view, counts a prefetched call as queued until
// its worker starts it, and its wait from when it was sent: with every
// caller's call in a worker, nothing else would show that they wait.
func TestLoadCountsPrefetchedCallsAsQueued(t *testing.T) {
	var mu sync.Mutex
	clock := time.Unix(1000, 0)
	now := func() time.Time { mu.Lock(); defer mu.Unlock(); return clock }
	h := newHarness(t, pool.Options{Now: now})
	w, outs := threePrefetched(h, "w")
	mu.Lock()
	clock = clock.Add(5 * time.Second)
	mu.Unlock()
	if l := h.p.Load(); l.Queued != 3 || l.OldestWait != 5*time.Second {
		t.Errorf("Load() = %d queued, oldest %v; want the 3 prefetched calls, 5s", l.Queued, l.OldestWait)
	}
	close(w.block)
	waitAll(t, outs)
	if l := h.p.Load(); l.Queued != 0 || l.OldestWait != 0 {
		t.Errorf("Load() after = %d queued, oldest %v; want none", l.Queued, l.OldestWait)
	}
}

// A worker with a free slot means the pool is not short of workers: the
// calls prefetched into a busy one (which a new worker could not take
// either) are not counted as queued then.
func TestLoadLeavesOutPrefetchedCallsWhileAWorkerHasAFreeSlot(t *testing.T) {
	h := newHarness(t, pool.Options{})
	a, outs := threePrefetched(h, "a")
	if l := h.p.Load(); l.Queued != 3 {
		t.Fatalf("Load().Queued = %d with every worker busy; want the 3 prefetched calls", l.Queued)
	}
	b := &infoWorker{id: "b", block: make(chan struct{})}
	h.p.Add(b, 2)
	h.p.Ready("b", worker.Info{Prefetch: 4})
	if l := h.p.Load(); l.Queued != 0 || l.OldestWait != 0 {
		t.Errorf("Load() = %d queued, oldest %v while b is idle; want none", l.Queued, l.OldestWait)
	}
	close(a.block)
	close(b.block)
	waitAll(t, outs)
}

// A worker's prefetch is used only once no worker has a free slot: a
// worker at its capacity ranks behind every worker under it, whatever
// their in-flight counts.
func TestPrefetchOnlyWhenNoWorkerHasAFreeSlot(t *testing.T) {
	h := newHarness(t, pool.Options{})
	block := make(chan struct{})
	a := &infoWorker{id: "a", block: block}
	b := &infoWorker{id: "b", block: block}
	h.p.Add(a, 2)
	h.p.Add(b, 6)
	h.p.Ready("a", worker.Info{Prefetch: 2})
	h.p.Ready("b", worker.Info{})
	var outs []<-chan outcome
	for range 8 {
		outs = append(outs, h.goExecute(context.Background(), call("x", ""), pool.CallOptions{}))
	}
	s := h.waitStats("8 calls in flight", func(s pool.Stats) bool { return s.InFlight == 8 })
	if m := inFlight(s); m["a"] != 2 || m["b"] != 6 {
		t.Fatalf("in flight %v, want a:2 b:6 (nothing prefetched while b had free slots)", m)
	}
	outs = append(outs, h.goExecute(context.Background(), call("x", ""), pool.CallOptions{}))
	s = h.waitStats("the 9th call prefetched to a", func(s pool.Stats) bool { return s.InFlight == 9 })
	if m := inFlight(s); m["a"] != 3 || m["b"] != 6 {
		t.Fatalf("in flight %v, want a:3 b:6", m)
	}
	close(block)
	for _, o := range outs {
		if r := recv(t, o); r.err != nil {
			t.Fatal(r.err)
		}
	}
}

// gated is a worker whose calls with Args {"hold":true} wait until their
// tool's channel in gate is closed, and whose other calls take their
// tool's time in sleep (the tool's own duration: 5 ms lets the pool learn
// that a tool is long, pool/serial.go).
type gated struct {
	id    string
	gate  map[string]chan struct{}
	sleep map[string]time.Duration
	fail  string // a tool whose calls fail after their sleep
}

var hold = []byte(`{"hold":true}`)

func (w *gated) ID() string                      { return w.id }
func (w *gated) Serve(ctx context.Context) error { <-ctx.Done(); return nil }
func (w *gated) Kill(string)                     {}
func (w *gated) Execute(ctx context.Context, c *worker.Call) (*worker.Result, error) {
	if string(c.Args) != string(hold) {
		time.Sleep(w.sleep[c.Tool])
		if c.Tool == w.fail {
			return nil, errors.New("the tool failed")
		}
	} else {
		select {
		case <-w.gate[c.Tool]:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return &worker.Result{JSON: []byte("1")}, nil
}
func (w *gated) ExecuteStream(context.Context, *worker.Call, func(worker.Chunk) error) error {
	return nil
}

// holdN starts n calls of tool that wait for its gate (gated).
func (h *harness) holdN(tool string, n int) []<-chan outcome {
	outs := make([]<-chan outcome, n)
	for i := range outs {
		outs[i] = h.goExecute(context.Background(), &worker.Call{Tool: tool, Args: hold}, pool.CallOptions{})
	}
	return outs
}

func waitAll(t *testing.T, outs []<-chan outcome) {
	t.Helper()
	for _, o := range outs {
		if r := recv(t, o); r.err != nil {
			t.Fatal(r.err)
		}
	}
}

// learnedLong is a pool with one gated worker (capacity 2, prefetch 2)
// that has learned "long" takes 5 ms alone; the gates of "long" and
// "short" hold their calls until closed.
func learnedLong(t *testing.T, id string) (*harness, map[string]chan struct{}) {
	h := newHarness(t, pool.Options{})
	gates := map[string]chan struct{}{"long": make(chan struct{}), "short": make(chan struct{})}
	h.p.Add(&gated{id: id, gate: gates, sleep: map[string]time.Duration{"long": 5 * time.Millisecond}}, 2)
	h.p.Ready(id, worker.Info{Prefetch: 2})
	if _, err := h.p.Execute(context.Background(), call("long", ""), pool.CallOptions{}); err != nil {
		t.Fatal(err)
	}
	return h, gates
}

// A short call is never prefetched onto a worker running calls of a tool
// known to be long: it goes to a worker whose calls end soon.
func TestPrefetchNeverQueuesBehindLongCalls(t *testing.T) {
	h, gates := learnedLong(t, "a")
	var outs []<-chan outcome
	outs = append(outs, h.holdN("long", 2)...)
	h.waitStats("a full of long calls", func(s pool.Stats) bool { return s.InFlight == 2 })
	h.p.Add(&gated{id: "b", gate: gates}, 2)
	h.p.Ready("b", worker.Info{Prefetch: 2})
	outs = append(outs, h.holdN("short", 3)...)
	s := h.waitStats("5 calls in flight", func(s pool.Stats) bool { return s.InFlight == 5 })
	if m := inFlight(s); m["a"] != 2 || m["b"] != 3 {
		t.Fatalf("in flight %v, want a:2 b:3 (the third short call prefetched to b, not behind a's long calls)", m)
	}
	close(gates["long"])
	close(gates["short"])
	waitAll(t, outs)
}

// A queued call that may not be prefetched is never passed by calls that
// may: they queue behind it, and it runs once its worker has a free slot.
func TestPrefetchPassesNoWaiter(t *testing.T) {
	h, gates := learnedLong(t, "w")
	var outs []<-chan outcome
	outs = append(outs, h.holdN("short", 3)...)
	h.waitStats("two short calls running, one prefetched", func(s pool.Stats) bool { return s.InFlight == 3 })
	outs = append(outs, h.goExecute(context.Background(), call("long", ""), pool.CallOptions{}))
	h.waitStats("the long call queued", func(s pool.Stats) bool { return s.Queued == 1 })
	outs = append(outs, h.holdN("short", 1)...)
	s := h.waitStats("the fourth short call queued", func(s pool.Stats) bool { return s.Queued == 2 || s.InFlight == 4 })
	if s.InFlight != 3 {
		t.Fatalf("in flight %d, want 3: the fourth short call passed the queued long call", s.InFlight)
	}
	close(gates["short"])
	waitAll(t, outs)
}

// fillShort holds 4 short calls on the learnedLong worker: 2 running, 2
// prefetched.
func fillShort(h *harness) []<-chan outcome {
	outs := h.holdN("short", 4)
	h.waitStats("2 short calls running, 2 prefetched", func(s pool.Stats) bool { return s.InFlight == 4 })
	return outs
}

// When a call ends on a worker over its capacity and the oldest waiter
// needs a running slot, the slot is not given to a younger waiter.
func TestPrefetchPassesNoWaiterWhenASlotFrees(t *testing.T) {
	for _, strict := range []bool{false, true} {
		t.Run(map[bool]string{false: "general", true: "strict"}[strict], func(t *testing.T) {
			h, gates := learnedLong(t, "w")
			long := call("long", "")
			var opts pool.CallOptions
			if strict {
				// Pin session s to w, then queue on w alone.
				long.SessionID = "s"
				opts.Affinity = pool.AffinityStrictQueue
				if _, err := h.p.Execute(context.Background(), long, opts); err != nil {
					t.Fatal(err)
				}
			}
			outs := fillShort(h)
			outs = append(outs, h.goExecute(context.Background(), long, opts))
			h.waitStats("the long call queued", func(s pool.Stats) bool { return s.Queued == 1 })
			outs = append(outs, h.holdN("short", 1)...)
			h.waitStats("a short call queued behind it", func(s pool.Stats) bool { return s.Queued == 2 })
			gates["short"] <- struct{}{} // one short call ends
			s := h.waitStats("the slot passed on", func(s pool.Stats) bool { return s.InFlight != 4 || s.Queued != 2 })
			if s.InFlight != 3 || s.Queued != 2 {
				t.Fatalf("in flight %d, queued %d; want 3 and 2: a younger short call was prefetched past the long one", s.InFlight, s.Queued)
			}
			close(gates["short"])
			waitAll(t, outs)
		})
	}
}

// A tool is long for prefetching whatever its calls' outcome, and a call
// of it already running counts once the pool learns it.
func TestPrefetchLearnsLongFromAnyOutcome(t *testing.T) {
	h := newHarness(t, pool.Options{})
	gates := map[string]chan struct{}{"long": make(chan struct{}), "short": make(chan struct{})}
	h.p.Add(&gated{id: "w", gate: gates, sleep: map[string]time.Duration{"long": 10 * time.Millisecond, "failing": 10 * time.Millisecond}, fail: "failing"}, 2)
	h.p.Ready("w", worker.Info{Prefetch: 2})
	var outs []<-chan outcome
	// One call of "long" runs, unknown yet; another teaches the pool.
	outs = append(outs, h.holdN("long", 1)...)
	h.waitStats("a long call running", func(s pool.Stats) bool { return s.InFlight == 1 })
	if _, err := h.p.Execute(context.Background(), call("long", ""), pool.CallOptions{}); err != nil {
		t.Fatal(err)
	}
	outs = append(outs, h.holdN("short", 1)...)
	h.waitStats("the worker at capacity", func(s pool.Stats) bool { return s.InFlight == 2 })
	third := h.holdN("short", 1)[0]
	if s := h.waitStats("the third call placed", func(s pool.Stats) bool { return s.InFlight+s.Queued == 3 }); s.InFlight != 2 {
		t.Fatalf("in flight %d: a short call was prefetched behind a running call of a tool since learned long", s.InFlight)
	}
	close(gates["long"])
	close(gates["short"])
	waitAll(t, append(outs, third))

	// A tool whose calls take 5 ms and fail is long too.
	h2 := newHarness(t, pool.Options{})
	g2 := map[string]chan struct{}{"failing": make(chan struct{}), "short": make(chan struct{})}
	h2.p.Add(&gated{id: "w", gate: g2, sleep: map[string]time.Duration{"failing": 10 * time.Millisecond}, fail: "failing"}, 2)
	h2.p.Ready("w", worker.Info{Prefetch: 2})
	if _, err := h2.p.Execute(context.Background(), call("failing", ""), pool.CallOptions{}); err == nil {
		t.Fatal("the failing tool succeeded")
	}
	outs = append(h2.holdN("failing", 1), h2.holdN("short", 1)...)
	h2.waitStats("the worker at capacity", func(s pool.Stats) bool { return s.InFlight == 2 })
	third = h2.holdN("short", 1)[0]
	if s := h2.waitStats("the third call placed", func(s pool.Stats) bool { return s.InFlight+s.Queued == 3 }); s.InFlight != 2 {
		t.Fatalf("in flight %d: a short call was prefetched behind a failing long tool's call", s.InFlight)
	}
	close(g2["failing"])
	close(g2["short"])
	for _, o := range append(outs, third) {
		recv(t, o) // the held "failing" call ends without error (held calls do not fail)
	}
}
