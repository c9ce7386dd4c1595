package pool

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/snakepit-go/snakepit/worker"
	"github.com/snakepit-go/snakepit/worker/fake"
)

// handoffFixture: one worker of capacity 1 whose "block" tool holds its
// slot until released.
type handoffFixture struct {
	p       *Pool
	w       *fake.Worker
	entered chan struct{}
	release chan struct{}
}

func newHandoffFixture(t *testing.T) *handoffFixture {
	t.Helper()
	p, err := New(Options{})
	if err != nil {
		t.Fatal(err)
	}
	f := &handoffFixture{p: p, entered: make(chan struct{}, 16), release: make(chan struct{}, 16)}
	f.w = fake.New(worker.Spec{ID: "w1", Capacity: 1, Events: p},
		fake.WithTool("block", func(ctx context.Context, _ *worker.Call) (*worker.Result, error) {
			f.entered <- struct{}{}
			select {
			case <-f.release:
			case <-ctx.Done():
				return nil, ctx.Err()
			}
			return &worker.Result{JSON: json.RawMessage(`"done"`)}, nil
		}),
		fake.WithTool("echo", fake.Echo))
	p.Add(f.w, 1)
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan struct{})
	go func() { defer close(served); _ = f.w.Serve(ctx) }()
	t.Cleanup(func() {
		testHookWoke = nil
		cancel()
		<-served
	})
	wctx, wcancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer wcancel()
	if err := p.WaitReady(wctx, 1); err != nil {
		t.Fatal(err)
	}
	return f
}

func (f *handoffFixture) stats(t *testing.T, what string, cond func(Stats) bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond(f.p.Stats()) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s: %+v", what, f.p.Stats())
		}
		time.Sleep(200 * time.Microsecond)
	}
}

type result struct {
	res *worker.Result
	err error
}

func (f *handoffFixture) goCall(ctx context.Context, tool string, qt time.Duration) chan result {
	ch := make(chan result, 1)
	go func() {
		res, err := f.p.Execute(ctx, &worker.Call{Tool: tool}, CallOptions{QueueTimeout: qt})
		ch <- result{res, err}
	}()
	return ch
}

// The exact interleaving of the original's bug, forced: the waiter's queue
// timer fires, and before the waiter can act on it a slot is handed to it.
// The hand-off must win: the call runs and is never answered ErrQueueTimeout.
func TestHandoffBeatsQueueTimeout(t *testing.T) {
	f := newHandoffFixture(t)
	holder := f.goCall(context.Background(), "block", 0)
	<-f.entered

	woke, proceed := make(chan struct{}), make(chan struct{})
	testHookWoke = func(timedOut bool) {
		if timedOut {
			close(woke)
			<-proceed
		}
	}
	waiter := f.goCall(context.Background(), "echo", time.Millisecond)
	<-woke // its timer fired; it has not taken the lock yet

	f.release <- struct{}{}
	if r := <-holder; r.err != nil {
		t.Fatal(r.err)
	}
	// The freed slot went straight to the (still queued) waiter.
	f.stats(t, "hand-off", func(s Stats) bool { return s.Queued == 0 && s.InFlight == 1 })
	close(proceed)

	r := <-waiter
	if r.err != nil {
		t.Fatalf("handed-over call answered %v", r.err)
	}
	if f.w.Calls() != 2 {
		t.Fatalf("worker ran %d calls; want 2", f.w.Calls())
	}
	s := f.p.Stats()
	if s.InFlight != 0 || s.Outcomes[OutcomeQueueTimeout] != 0 || s.Outcomes[OutcomeSuccess] != 2 {
		t.Fatalf("stats %+v", s)
	}
}

// The caller giving up at the moment of the hand-off passes the slot on to
// the next waiter instead of leaking it.
func TestHandoffToCancelledWaiterPassesSlotOn(t *testing.T) {
	f := newHandoffFixture(t)
	holder := f.goCall(context.Background(), "block", 0)
	<-f.entered

	woke, proceed := make(chan struct{}), make(chan struct{})
	testHookWoke = func(timedOut bool) {
		select {
		case <-woke:
		default:
			close(woke)
			<-proceed
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	gone := f.goCall(ctx, "echo", 0)
	f.stats(t, "first waiter queued", func(s Stats) bool { return s.Queued == 1 })
	next := f.goCall(context.Background(), "echo", 0)
	f.stats(t, "second waiter queued", func(s Stats) bool { return s.Queued == 2 })
	cancel()
	<-woke // the cancelled waiter woke; it has not taken the lock yet

	f.release <- struct{}{}
	if r := <-holder; r.err != nil {
		t.Fatal(r.err)
	}
	f.stats(t, "hand-off to the cancelled waiter", func(s Stats) bool { return s.Queued == 1 && s.InFlight == 1 })
	close(proceed)

	if r := <-gone; !errors.Is(r.err, context.Canceled) {
		t.Fatalf("cancelled waiter: %v", r.err)
	}
	if r := <-next; r.err != nil {
		t.Fatalf("next waiter: %v", r.err)
	}
	s := f.p.Stats()
	if s.InFlight != 0 || s.Queued != 0 || s.Outcomes[OutcomeCancelled] != 1 || s.Outcomes[OutcomeSuccess] != 2 {
		t.Fatalf("stats %+v", s)
	}
}
