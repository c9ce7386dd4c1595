package pool_test

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/snakepit-go/snakepit/internal/testutil"
	"github.com/snakepit-go/snakepit/pool"
	"github.com/snakepit-go/snakepit/worker"
	"github.com/snakepit-go/snakepit/worker/fake"
)

// A consumer whose loop body is slow holds the chunk; the worker waits on
// it. That time must not make a healthy worker look hung.
func TestSlowStreamConsumerIsNotWorkerTime(t *testing.T) {
	h := newHarness(t, pool.Options{HungGrace: 30 * time.Millisecond})
	w := h.add("w1", 1, counter(&eventLog{}, -1))
	h.ready(1)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	var last error
	for _, err := range h.p.ExecuteStream(ctx, call("count", `{"N":3}`), pool.CallOptions{}) {
		if err != nil {
			last = err
			break
		}
		time.Sleep(100 * time.Millisecond) // the scenario: a slow loop body, 5× HungGrace
	}
	if errors.Is(last, worker.ErrWorkerTimeout) {
		t.Fatalf("a slow consumer got the worker declared hung: %v", last)
	}
	if k := w.Kills(); len(k) != 0 {
		t.Fatalf("the worker was killed for the consumer's own time: %q", k)
	}
	if s := h.p.Stats(); s.Restarts != 0 || s.Outcomes[pool.OutcomeWorkerTimeout] != 0 {
		t.Fatalf("stats %+v", s)
	}
}

// The watchdog still fires when the worker, not the consumer, holds the
// stream past its deadline.
func TestStreamWorkerHungBetweenChunksIsKilled(t *testing.T) {
	h := newHarness(t, pool.Options{HungGrace: 30 * time.Millisecond})
	release := make(chan struct{})
	w := h.add("w1", 1, fake.WithStreamTool("stall", func(ctx context.Context, c *worker.Call, yield func(worker.Chunk) error) error {
		if err := yield(worker.Chunk{JSON: json.RawMessage("1")}); err != nil {
			return err
		}
		<-release // ignores ctx, like native code that never checks
		return nil
	}))
	defer close(release)
	h.ready(1)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	go func() {
		for range h.p.ExecuteStream(ctx, call("stall", ""), pool.CallOptions{}) {
		}
	}()
	waitFor(t, "the stalled stream's worker killed", func() bool { return len(w.Kills()) == 1 })
}

// blocker is a worker type with a bug the pool must survive: its calls
// ignore their context and outlive the lifetime they started on.
type blocker struct {
	spec    worker.Spec
	release chan struct{}
	mu      sync.Mutex
	kills   []string
}

func (b *blocker) ID() string { return b.spec.ID }
func (b *blocker) Serve(ctx context.Context) error {
	b.spec.Events.Starting(b.spec.ID)
	b.spec.Events.Ready(b.spec.ID, worker.Info{})
	<-ctx.Done()
	b.spec.Events.Exited(b.spec.ID, nil)
	return nil
}
func (b *blocker) Execute(context.Context, *worker.Call) (*worker.Result, error) {
	<-b.release
	return nil, &worker.CrashError{WorkerID: b.spec.ID, ExitCode: 1}
}
func (b *blocker) ExecuteStream(context.Context, *worker.Call, func(worker.Chunk) error) error {
	return worker.ErrWorkerUnavailable
}
func (b *blocker) Kill(reason string) { b.mu.Lock(); b.kills = append(b.kills, reason); b.mu.Unlock() }

func TestHungWatchdogNeverKillsANewerLifetime(t *testing.T) {
	logs := &testutil.Buffer{}
	h := newHarness(t, pool.Options{HungGrace: 20 * time.Millisecond, Logger: slog.New(slog.NewTextHandler(logs, nil))})
	b := &blocker{spec: worker.Spec{ID: "w1", Events: h.p}, release: make(chan struct{})}
	h.p.Add(b, 1)
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = b.Serve(ctx); close(done) }()
	defer func() { stop(); <-done }()
	h.ready(1)

	cctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	res := make(chan error, 1)
	go func() { _, err := h.p.Execute(cctx, call("x", ""), pool.CallOptions{}); res <- err }()
	waitFor(t, "call in flight", func() bool { return h.p.Stats().InFlight == 1 })
	// The call's lifetime ends and a new one becomes ready before the
	// watchdog fires; the stuck call still has not returned.
	h.p.Exited("w1", &worker.CrashError{WorkerID: "w1", ExitCode: 1})
	h.p.Starting("w1")
	h.p.Ready("w1", worker.Info{})
	waitFor(t, "the watchdog to look at the stuck call", func() bool {
		return strings.Contains(logs.String(), "outlived its worker's lifetime")
	})
	b.mu.Lock()
	kills := append([]string(nil), b.kills...)
	b.mu.Unlock()
	if len(kills) != 0 {
		t.Fatalf("the watchdog killed the new lifetime for a call of the old one: %q", kills)
	}
	close(b.release)
	if err := <-res; !errors.Is(err, worker.ErrWorkerCrashed) {
		t.Fatalf("the stuck call: %v", err)
	}
}

func TestReplacedWorkerStaysReadyLosesSessionsAndCountsAsRecycle(t *testing.T) {
	h, _, ws := affinityHarness(t, pool.Options{})
	first, _ := h.who("s", pool.AffinityHint)
	info := worker.Info{Tools: []worker.ToolSpec{{Name: "whoami"}, {Name: "block"}}}
	h.p.Recycled(first, info, worker.RecycleRequests)
	s := h.p.Stats()
	if s.Workers.Idle != len(ws) || s.Recycles != 1 || s.RecycleReasons[worker.RecycleRequests] != 1 || s.Restarts != 0 {
		t.Fatalf("after Replaced: workers %+v, recycles %d %v, restarts %d", s.Workers, s.Recycles, s.RecycleReasons, s.Restarts)
	}
	if _, err := h.who("s", pool.AffinityStrictFailFast); !errors.Is(err, pool.ErrSessionWorkerUnavailable) {
		t.Fatalf("a session of the replaced process must not stick to the new one: %v", err)
	}
	// A break-before-make recycle reported through Exited counts the same.
	h.p.Exited(first, &worker.RecycledError{WorkerID: first, Reason: worker.RecycleAge})
	if s := h.p.Stats(); s.Recycles != 2 || s.Restarts != 0 {
		t.Fatalf("RecycledError counted as restart: %+v", s)
	}
}

func TestGivenUpWorkerMarshalsItsErrorAsText(t *testing.T) {
	b, err := json.Marshal(pool.GivenUpWorker{ID: "w1", Err: errors.New("No module named 'x'"), RetryAt: time.Unix(0, 0).UTC()})
	if err != nil || string(b) != `{"id":"w1","error":"No module named 'x'","retry_at":"1970-01-01T00:00:00Z"}` {
		t.Fatalf("%s, %v", b, err)
	}
}
