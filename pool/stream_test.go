package pool_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"testing"

	"github.com/snakepit-go/snakepit/pool"
	"github.com/snakepit-go/snakepit/worker"
	"github.com/snakepit-go/snakepit/worker/fake"
)

// counter streams n chunks (n from the args, default 5), logging each send
// to log so the test can check interleaving with the consumer.
func counter(log *eventLog, failAt int) fake.Option {
	return fake.WithStreamTool("count", func(ctx context.Context, c *worker.Call, yield func(worker.Chunk) error) error {
		var a struct{ N int }
		_ = json.Unmarshal(c.Args, &a)
		if a.N == 0 {
			a.N = 5
		}
		for i := range a.N {
			if i == failAt {
				return &worker.ToolError{Tool: "count", Type: "RuntimeError", Message: "boom at " + strconv.Itoa(i)}
			}
			log.add("send " + strconv.Itoa(i))
			if err := yield(worker.Chunk{Seq: uint64(i), JSON: json.RawMessage(strconv.Itoa(i))}); err != nil {
				log.add("stopped")
				return err
			}
		}
		return nil
	})
}

type eventLog struct {
	mu sync.Mutex
	ev []string
}

func (l *eventLog) add(s string) { l.mu.Lock(); l.ev = append(l.ev, s); l.mu.Unlock() }
func (l *eventLog) get() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.ev...)
}

// Chunks arrive in order, and the worker cannot run ahead of the consumer.
func TestStreamOrderedBackpressured(t *testing.T) {
	h := newHarness(t, pool.Options{})
	log := &eventLog{}
	h.add("w1", 1, counter(log, -1))
	h.ready(1)
	var got []string
	for c, err := range h.p.ExecuteStream(context.Background(), call("count", `{"N":4}`), pool.CallOptions{}) {
		if err != nil {
			t.Fatal(err)
		}
		// The slot is held while the stream runs.
		if s := h.p.Stats(); s.InFlight != 1 {
			t.Fatalf("in flight %d during the stream", s.InFlight)
		}
		log.add("got " + string(c.JSON))
		got = append(got, string(c.JSON))
	}
	want := []string{"send 0", "got 0", "send 1", "got 1", "send 2", "got 2", "send 3", "got 3"}
	if fmt.Sprint(log.get()) != fmt.Sprint(want) {
		t.Fatalf("events %v; want %v", log.get(), want)
	}
	s := h.p.Stats()
	checkBalanced(t, s)
	if s.Outcomes[pool.OutcomeSuccess] != 1 {
		t.Fatalf("stats %+v", s)
	}
}

// Breaking out of the loop cancels the worker's stream and frees the slot.
func TestStreamBreak(t *testing.T) {
	h := newHarness(t, pool.Options{})
	log := &eventLog{}
	w := h.add("w1", 1, counter(log, -1))
	h.ready(1)
	n := 0
	for _, err := range h.p.ExecuteStream(context.Background(), call("count", `{"N":100}`), pool.CallOptions{}) {
		if err != nil {
			t.Fatal(err)
		}
		if n++; n == 2 {
			break
		}
	}
	ev := log.get()
	if ev[len(ev)-1] != "stopped" || len(ev) != 3 {
		t.Fatalf("worker events %v; want it stopped after the second chunk", ev)
	}
	s := h.p.Stats()
	checkBalanced(t, s)
	if s.Workers.Idle != 1 || w.InFlight() != 0 {
		t.Fatalf("slot not freed: %+v", s)
	}
}

// An error mid-stream comes last as (zero chunk, err).
func TestStreamErrorMidway(t *testing.T) {
	h := newHarness(t, pool.Options{})
	h.add("w1", 1, counter(&eventLog{}, 2))
	h.ready(1)
	var chunks int
	var last error
	for c, err := range h.p.ExecuteStream(context.Background(), call("count", ""), pool.CallOptions{}) {
		if last != nil {
			t.Fatal("yielded after the error")
		}
		if err != nil {
			if c.JSON != nil {
				t.Fatal("error came with a chunk")
			}
			last = err
			continue
		}
		chunks++
	}
	var te *worker.ToolError
	if chunks != 2 || !errors.As(last, &te) || te.Type != "RuntimeError" {
		t.Fatalf("%d chunks then %v", chunks, last)
	}
	if s := h.p.Stats(); s.Outcomes[pool.OutcomeToolError] != 1 {
		t.Fatalf("stats %+v", s)
	}
}

// Cancelling ctx mid-stream cancels the worker stream; the error comes last.
func TestStreamCancel(t *testing.T) {
	h := newHarness(t, pool.Options{})
	h.add("w1", 1, counter(&eventLog{}, -1))
	h.ready(1)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var last error
	n := 0
	for _, err := range h.p.ExecuteStream(ctx, call("count", `{"N":100}`), pool.CallOptions{}) {
		if err != nil {
			last = err
			continue
		}
		if n++; n == 3 {
			cancel()
		}
	}
	if n != 3 || !errors.Is(last, context.Canceled) {
		t.Fatalf("%d chunks, last err %v", n, last)
	}
	s := h.p.Stats()
	checkBalanced(t, s)
	if s.Outcomes[pool.OutcomeCancelled] != 1 {
		t.Fatalf("stats %+v", s)
	}
}

// A panic in the loop body does not leak the slot.
func TestStreamConsumerPanic(t *testing.T) {
	h := newHarness(t, pool.Options{})
	w := h.add("w1", 1, counter(&eventLog{}, -1))
	h.ready(1)
	func() {
		defer func() {
			if recover() == nil {
				t.Fatal("no panic")
			}
		}()
		for range h.p.ExecuteStream(context.Background(), call("count", ""), pool.CallOptions{}) {
			panic("consumer bug")
		}
	}()
	s := h.p.Stats()
	if s.InFlight != 0 || s.Workers.Idle != 1 || w.InFlight() != 0 {
		t.Fatalf("slot leaked: %+v", s)
	}
}

// A streaming call waits in the same queue as unary ones.
func TestStreamQueues(t *testing.T) {
	h := newHarness(t, pool.Options{})
	g := newGate()
	h.add("w1", 1, counter(&eventLog{}, -1), g.tool("block"))
	h.ready(1)
	busy := h.goExecute(context.Background(), call("block", ""), pool.CallOptions{})
	g.waitEntered(t)
	done := make(chan int, 1)
	go func() {
		n := 0
		for _, err := range h.p.ExecuteStream(context.Background(), call("count", ""), pool.CallOptions{}) {
			if err == nil {
				n++
			}
		}
		done <- n
	}()
	h.waitStats("stream queued", func(s pool.Stats) bool { return s.Queued == 1 })
	g.release <- struct{}{}
	recv(t, busy)
	if n := <-done; n != 5 {
		t.Fatalf("%d chunks", n)
	}
}
