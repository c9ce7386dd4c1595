package pool_test

import (
	"context"
	"testing"

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
// capacity while callers queue, and never more.
func TestPrefetchSendsUpToKBeyondCapacity(t *testing.T) {
	h := newHarness(t, pool.Options{})
	w := &infoWorker{id: "w", block: make(chan struct{})}
	h.p.Add(w, 2)
	h.p.Ready("w", worker.Info{Prefetch: 2})
	var outs []<-chan outcome
	for range 6 {
		outs = append(outs, h.goExecute(context.Background(), call("x", ""), pool.CallOptions{}))
	}
	h.waitStats("4 calls on the worker (2 + 2 prefetched), 2 queued in the pool",
		func(s pool.Stats) bool { return s.InFlight == 4 && s.Queued == 2 })
	close(w.block)
	for _, o := range outs {
		if r := recv(t, o); r.err != nil {
			t.Fatal(r.err)
		}
	}
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

// A worker that reports no prefetch gets its capacity and no more (the
// contract of every worker type that does not ask for it).
func TestNoPrefetchMeansCapacityExactly(t *testing.T) {
	h := newHarness(t, pool.Options{})
	w := &infoWorker{id: "w", block: make(chan struct{})}
	h.p.Add(w, 2)
	h.p.Ready("w", worker.Info{Prefetch: 0})
	var outs []<-chan outcome
	for range 4 {
		outs = append(outs, h.goExecute(context.Background(), call("x", ""), pool.CallOptions{}))
	}
	h.waitStats("2 in flight, 2 queued", func(s pool.Stats) bool { return s.InFlight == 2 && s.Queued == 2 })
	close(w.block)
	for _, o := range outs {
		if r := recv(t, o); r.err != nil {
			t.Fatal(r.err)
		}
	}
}
