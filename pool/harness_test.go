package pool_test

import (
	"context"
	"encoding/json"
	"errors"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/snakepit-go/snakepit/pool"
	"github.com/snakepit-go/snakepit/worker"
	"github.com/snakepit-go/snakepit/worker/fake"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// harness runs fake workers the way the supervisor will: built with
// Spec.Events = the pool, added, then served in a restart loop.
type harness struct {
	t      *testing.T
	p      *pool.Pool
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

func newHarness(t *testing.T, opts pool.Options) *harness {
	t.Helper()
	p, err := pool.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	h := &harness{t: t, p: p, ctx: ctx, cancel: cancel}
	t.Cleanup(h.close)
	return h
}

// close stops the pool, then every worker lifetime, and waits for them.
func (h *harness) close() {
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = h.p.Stop(sctx)
	h.cancel()
	h.wg.Wait()
}

type workerOpt struct {
	capacity    int
	giveUpAfter int // startup failures in a row before WorkerFailed
	opts        []fake.Option
}

// add builds, adds and starts a worker; it does not wait for readiness.
func (h *harness) add(id string, capacity int, opts ...fake.Option) *fake.Worker {
	return h.addWith(id, workerOpt{capacity: capacity, opts: opts})
}

func (h *harness) addWith(id string, o workerOpt) *fake.Worker {
	w := fake.New(worker.Spec{ID: id, Capacity: o.capacity, Events: h.p}, o.opts...)
	h.p.Add(w, o.capacity)
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		fails := 0
		for h.ctx.Err() == nil {
			err := w.Serve(h.ctx)
			if h.ctx.Err() != nil {
				return
			}
			if errors.Is(err, worker.ErrStartup) {
				fails++
				if o.giveUpAfter > 0 && fails >= o.giveUpAfter {
					h.p.WorkerFailed(w.ID(), err, time.Time{})
					return
				}
				continue
			}
			fails = 0
		}
	}()
	return w
}

// ready adds workers and waits until all are ready.
func (h *harness) ready(n int) {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := h.p.WaitReady(ctx, n); err != nil {
		h.t.Fatal(err)
	}
}

// waitFor polls observable state until cond holds (never a fixed sleep as
// synchronisation).
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(500 * time.Microsecond)
	}
}

func (h *harness) waitStats(what string, cond func(pool.Stats) bool) pool.Stats {
	h.t.Helper()
	var s pool.Stats
	waitFor(h.t, what, func() bool { s = h.p.Stats(); return cond(s) })
	return s
}

func call(tool string, args string) *worker.Call {
	c := &worker.Call{Tool: tool}
	if args != "" {
		c.Args = json.RawMessage(args)
	}
	return c
}

// whoami answers with the serving worker's id.
func whoami(id string) fake.Option {
	return fake.WithTool("whoami", func(context.Context, *worker.Call) (*worker.Result, error) {
		return &worker.Result{JSON: json.RawMessage(`"` + id + `"`)}, nil
	})
}

// gate is a tool that blocks until released (or its ctx ends), reporting
// entry, so a test can hold slots deterministically.
type gate struct {
	entered chan string // receives call.RequestID on entry
	release chan struct{}
}

func newGate() *gate {
	return &gate{entered: make(chan string, 1024), release: make(chan struct{}, 1024)}
}

func (g *gate) tool(name string) fake.Option {
	return fake.WithTool(name, func(ctx context.Context, c *worker.Call) (*worker.Result, error) {
		g.entered <- c.RequestID
		select {
		case <-g.release:
			return &worker.Result{JSON: json.RawMessage(`"` + c.RequestID + `"`)}, nil
		case <-ctx.Done():
			return nil, context.Cause(ctx)
		}
	})
}

func (g *gate) waitEntered(t *testing.T) string {
	t.Helper()
	select {
	case id := <-g.entered:
		return id
	case <-time.After(5 * time.Second):
		t.Fatal("no call entered the gate")
		return ""
	}
}

type outcome struct {
	res *worker.Result
	err error
}

// goExecute runs Execute in the background.
func (h *harness) goExecute(ctx context.Context, c *worker.Call, o pool.CallOptions) <-chan outcome {
	ch := make(chan outcome, 1)
	go func() {
		res, err := h.p.Execute(ctx, c, o)
		ch <- outcome{res, err}
	}()
	return ch
}

func recv(t *testing.T, ch <-chan outcome) outcome {
	t.Helper()
	select {
	case o := <-ch:
		return o
	case <-time.After(5 * time.Second):
		t.Fatal("call did not return")
		return outcome{}
	}
}

func resultString(t *testing.T, r *worker.Result) string {
	t.Helper()
	var s string
	if err := r.Decode(&s); err != nil {
		t.Fatal(err)
	}
	return s
}

// checkBalanced asserts the stats add up once nothing runs.
func checkBalanced(t *testing.T, s pool.Stats) {
	t.Helper()
	if s.InFlight != 0 || s.Queued != 0 {
		t.Errorf("in flight %d, queued %d; want 0, 0", s.InFlight, s.Queued)
	}
	var sum uint64
	for _, n := range s.Outcomes {
		sum += n
	}
	if s.Requests != sum || len(s.Outcomes) != len(pool.Outcomes()) {
		t.Errorf("requests %d != %d, the sum of the outcomes %v", s.Requests, sum, s.Outcomes)
	}
}
