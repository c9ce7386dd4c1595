package fake_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/snakepit-go/snakepit/worker"
	"github.com/snakepit-go/snakepit/worker/fake"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// recorder is a worker.Events that logs what it hears.
type recorder struct {
	mu     sync.Mutex
	events []string
	infos  []worker.Info
	errs   []error
	ch     chan string
}

func newRecorder() *recorder { return &recorder{ch: make(chan string, 100)} }

func (r *recorder) log(s string) {
	r.mu.Lock()
	r.events = append(r.events, s)
	r.mu.Unlock()
	r.ch <- s
}
func (r *recorder) Starting(id string) { r.log("starting " + id) }
func (r *recorder) Ready(id string, info worker.Info) {
	r.mu.Lock()
	r.infos = append(r.infos, info)
	r.mu.Unlock()
	r.log("ready " + id)
}
func (r *recorder) Exited(id string, err error) {
	r.mu.Lock()
	r.errs = append(r.errs, err)
	r.mu.Unlock()
	r.log("exited " + id)
}

func (r *recorder) Recycled(id string, _ worker.Info, reason string) {
	r.log("replaced " + id)
}

func (r *recorder) expect(t *testing.T, want string) {
	t.Helper()
	select {
	case got := <-r.ch:
		if got != want {
			t.Fatalf("event %q; want %q", got, want)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("no event; want %q", want)
	}
}

func (r *recorder) lastErr() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.errs[len(r.errs)-1]
}

// serve runs one lifetime in the background.
func serve(ctx context.Context, w *fake.Worker) <-chan error {
	ch := make(chan error, 1)
	go func() { ch <- w.Serve(ctx) }()
	return ch
}

func get(t *testing.T, ch <-chan error) error {
	t.Helper()
	select {
	case err := <-ch:
		return err
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not return")
		return nil
	}
}

func TestLifecycle(t *testing.T) {
	ev := newRecorder()
	w := fake.New(worker.Spec{ID: "w1", Events: ev}, fake.WithPID(42),
		fake.WithTool("echo", fake.Echo), fake.WithStreamTool("count", nil), fake.WithHangingTool("hang"))
	if _, err := w.Execute(context.Background(), &worker.Call{Tool: "echo"}); !errors.Is(err, worker.ErrWorkerUnavailable) {
		t.Fatalf("before Serve: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := serve(ctx, w)
	ev.expect(t, "starting w1")
	ev.expect(t, "ready w1")
	info := ev.infos[0]
	if info.PID != 42 || fmt.Sprint(info.Tools) != fmt.Sprint([]worker.ToolSpec{{Name: "count", SupportsStreaming: true}, {Name: "echo"}, {Name: "hang"}}) {
		t.Fatalf("info %+v", info)
	}
	res, err := w.Execute(context.Background(), &worker.Call{Tool: "echo", Args: json.RawMessage(`{"a":1}`)})
	if err != nil || string(res.JSON) != `{"a":1}` {
		t.Fatalf("echo: %v %v", res, err)
	}
	var ute *worker.UnknownToolError
	if _, err := w.Execute(context.Background(), &worker.Call{Tool: "nope"}); !errors.As(err, &ute) || len(ute.Available) != 3 {
		t.Fatalf("unknown tool: %v", err)
	}
	if err := w.Serve(ctx); err == nil {
		t.Fatal("second concurrent Serve accepted")
	}
	cancel()
	if err := get(t, done); err != nil {
		t.Fatalf("Serve after stop = %v; want nil", err)
	}
	ev.expect(t, "exited w1")
	if ev.lastErr() != nil || w.IsReady() || w.Lifetimes() != 1 {
		t.Fatalf("exit err %v, ready %v", ev.lastErr(), w.IsReady())
	}
}

func TestCrashFailsInFlightCalls(t *testing.T) {
	ev := newRecorder()
	entered := make(chan struct{})
	w := fake.New(worker.Spec{ID: "w1", Events: ev}, fake.WithTool("wait", func(ctx context.Context, _ *worker.Call) (*worker.Result, error) {
		close(entered)
		<-ctx.Done()
		return nil, ctx.Err()
	}))
	done := serve(context.Background(), w)
	ev.expect(t, "starting w1")
	ev.expect(t, "ready w1")
	callErr := make(chan error, 1)
	go func() { _, err := w.Execute(context.Background(), &worker.Call{Tool: "wait"}); callErr <- err }()
	<-entered
	w.Crash()
	err := <-callErr
	var ce *worker.CrashError
	if !errors.As(err, &ce) || ce.ExitCode != 1 || ce.WorkerID != "w1" {
		t.Fatalf("in-flight call: %v", err)
	}
	serr := get(t, done)
	if !errors.Is(serr, worker.ErrWorkerCrashed) {
		t.Fatalf("Serve = %v", serr)
	}
	ev.expect(t, "exited w1")
	if !errors.Is(ev.lastErr(), worker.ErrWorkerCrashed) || w.InFlight() != 0 {
		t.Fatalf("Exited(%v)", ev.lastErr())
	}
}

func TestKillReleasesHungCall(t *testing.T) {
	ev := newRecorder()
	w := fake.New(worker.Spec{ID: "w1", Events: ev}, fake.WithHangingTool("hang"))
	done := serve(context.Background(), w)
	ev.expect(t, "starting w1")
	ev.expect(t, "ready w1")
	ctx, cancel := context.WithTimeout(context.Background(), time.Millisecond)
	defer cancel()
	callErr := make(chan error, 1)
	go func() { _, err := w.Execute(ctx, &worker.Call{Tool: "hang"}); callErr <- err }()
	<-ctx.Done()
	for w.InFlight() == 0 {
		time.Sleep(100 * time.Microsecond) // polling observable state
	}
	select {
	case err := <-callErr:
		t.Fatalf("hanging call returned on its deadline: %v", err)
	default:
	}
	w.Kill("hung")
	var ce *worker.CrashError
	if err := <-callErr; !errors.As(err, &ce) || ce.Signal != syscall.SIGKILL || ce.Reason != "hung" {
		t.Fatalf("after Kill: %v", err)
	}
	if err := get(t, done); !errors.As(err, &ce) {
		t.Fatalf("Serve = %v", err)
	}
	if k := w.Kills(); len(k) != 1 || k[0] != "hung" {
		t.Fatalf("kills %q", k)
	}
}

func TestFailStartThenRecover(t *testing.T) {
	ev := newRecorder()
	boom := errors.New("ImportError: no module named x")
	w := fake.New(worker.Spec{ID: "w1", Events: ev}, fake.WithFailStart(boom, 2), fake.WithReadyDelay(time.Millisecond))
	for i := range 2 {
		err := w.Serve(context.Background())
		var se *worker.StartupError
		if !errors.As(err, &se) || !errors.Is(err, boom) || !errors.Is(err, worker.ErrStartup) {
			t.Fatalf("lifetime %d: %v", i+1, err)
		}
		ev.expect(t, "starting w1")
		ev.expect(t, "exited w1")
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := serve(ctx, w)
	ev.expect(t, "starting w1")
	ev.expect(t, "ready w1")
	cancel()
	if err := get(t, done); err != nil {
		t.Fatal(err)
	}
	ev.expect(t, "exited w1")
	if w.Lifetimes() != 3 {
		t.Fatalf("lifetimes %d", w.Lifetimes())
	}
}

func TestStopDuringReadyDelay(t *testing.T) {
	ev := newRecorder()
	w := fake.New(worker.Spec{ID: "w1", Events: ev}, fake.WithReadyDelay(time.Hour))
	ctx, cancel := context.WithCancel(context.Background())
	done := serve(ctx, w)
	ev.expect(t, "starting w1")
	cancel()
	if err := get(t, done); err != nil {
		t.Fatal(err)
	}
	ev.expect(t, "exited w1")
}

func TestCapacityViolationIsLoud(t *testing.T) {
	ev := newRecorder()
	release := make(chan struct{})
	entered := make(chan struct{}, 2)
	w := fake.New(worker.Spec{ID: "w1", Capacity: 1, Events: ev}, fake.WithTool("wait", func(ctx context.Context, _ *worker.Call) (*worker.Result, error) {
		entered <- struct{}{}
		<-release
		return &worker.Result{}, nil
	}))
	ctx, cancel := context.WithCancel(context.Background())
	done := serve(ctx, w)
	ev.expect(t, "starting w1")
	ev.expect(t, "ready w1")
	first := make(chan error, 1)
	go func() { _, err := w.Execute(context.Background(), &worker.Call{Tool: "wait"}); first <- err }()
	<-entered
	if _, err := w.Execute(context.Background(), &worker.Call{Tool: "wait"}); err == nil || !strings.Contains(err.Error(), "capacity") {
		t.Fatalf("second call over capacity: %v", err)
	}
	close(release)
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	cancel()
	get(t, done)
}

func TestStream(t *testing.T) {
	ev := newRecorder()
	w := fake.New(worker.Spec{ID: "w1", Events: ev}, fake.WithStreamTool("count", func(ctx context.Context, _ *worker.Call, yield func(worker.Chunk) error) error {
		for i := range 5 {
			if err := yield(worker.Chunk{Seq: uint64(i)}); err != nil {
				return err
			}
		}
		return nil
	}))
	ctx, cancel := context.WithCancel(context.Background())
	done := serve(ctx, w)
	ev.expect(t, "starting w1")
	ev.expect(t, "ready w1")
	var seqs []uint64
	if err := w.ExecuteStream(context.Background(), &worker.Call{Tool: "count"}, func(c worker.Chunk) error {
		seqs = append(seqs, c.Seq)
		return nil
	}); err != nil || fmt.Sprint(seqs) != "[0 1 2 3 4]" {
		t.Fatalf("%v %v", seqs, err)
	}
	stop := errors.New("enough")
	n := 0
	err := w.ExecuteStream(context.Background(), &worker.Call{Tool: "count"}, func(worker.Chunk) error {
		if n++; n == 2 {
			return stop
		}
		return nil
	})
	if !errors.Is(err, stop) || n != 2 {
		t.Fatalf("stopped stream: %v after %d", err, n)
	}
	cancel()
	get(t, done)
}

func TestFactory(t *testing.T) {
	f := &fake.Factory{
		Options: []fake.Option{fake.WithTool("echo", fake.Echo)},
		PerWorker: func(spec worker.Spec) []fake.Option {
			if spec.ID == "w2" {
				return []fake.Option{fake.WithFailStart(errors.New("bad"), 0)}
			}
			return nil
		},
	}
	var _ worker.Factory = f
	for _, id := range []string{"w1", "w2"} {
		if _, err := f.NewWorker(worker.Spec{ID: id, Events: newRecorder()}); err != nil {
			t.Fatal(err)
		}
	}
	if len(f.Workers()) != 2 || f.Worker("w2") == nil || f.Worker("w3") != nil {
		t.Fatal("factory does not remember its workers")
	}
	if err := f.Worker("w2").Serve(context.Background()); !errors.Is(err, worker.ErrStartup) {
		t.Fatalf("w2: %v", err)
	}
}

// Calls, crashes and restarts racing each other: run under -race.
func TestConcurrentCrashes(t *testing.T) {
	ev := &countingEvents{}
	w := fake.New(worker.Spec{ID: "w1", Capacity: 0, Events: ev}, fake.WithTool("echo", fake.Echo))
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for ctx.Err() == nil {
			_ = w.Serve(ctx)
		}
	}()
	var callers sync.WaitGroup
	for range 8 {
		callers.Add(1)
		go func() {
			defer callers.Done()
			for range 500 {
				_, err := w.Execute(context.Background(), &worker.Call{Tool: "echo"})
				if err != nil && !errors.Is(err, worker.ErrWorkerUnavailable) && !errors.Is(err, worker.ErrWorkerCrashed) {
					t.Error(err)
					return
				}
			}
		}()
	}
	for range 50 {
		w.Crash()
		time.Sleep(100 * time.Microsecond) // spacing crashes out, not synchronising
	}
	callers.Wait()
	cancel()
	wg.Wait()
	ev.mu.Lock()
	defer ev.mu.Unlock()
	if ev.starting != ev.exited || ev.ready > ev.starting {
		t.Fatalf("events starting %d ready %d exited %d", ev.starting, ev.ready, ev.exited)
	}
}

type countingEvents struct {
	mu                      sync.Mutex
	starting, ready, exited int
}

func (c *countingEvents) Starting(string)                      { c.mu.Lock(); c.starting++; c.mu.Unlock() }
func (c *countingEvents) Ready(string, worker.Info)            { c.mu.Lock(); c.ready++; c.mu.Unlock() }
func (c *countingEvents) Exited(string, error)                 { c.mu.Lock(); c.exited++; c.mu.Unlock() }
func (c *countingEvents) Recycled(string, worker.Info, string) {}
