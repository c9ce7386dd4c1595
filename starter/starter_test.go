package starter

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/snakepit-go/snakepit/internal/testutil"
	"github.com/snakepit-go/snakepit/worker"
	"github.com/snakepit-go/snakepit/worker/fake"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type events struct {
	mu     sync.Mutex
	starts int
	ready  int
	exits  []error
}

func (e *events) Starting(string) { e.mu.Lock(); e.starts++; e.mu.Unlock() }
func (e *events) Ready(string, worker.Info) {
	e.mu.Lock()
	e.ready++
	e.mu.Unlock()
}
func (e *events) Exited(_ string, err error) {
	e.mu.Lock()
	e.exits = append(e.exits, err)
	e.mu.Unlock()
}
func (e *events) counts() (int, int, int) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.starts, e.ready, len(e.exits)
}

func run(t *testing.T, s *Starter) func() {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = s.Serve(ctx); close(done) }()
	return func() {
		cancel()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatal("starter did not stop")
		}
	}
}

func TestCrashedWorkerIsRestarted(t *testing.T) {
	f := &fake.Factory{}
	ev := &events{}
	s, err := New(f, worker.Spec{ID: "w0", Events: ev}, Options{InitialBackoff: 10 * time.Millisecond, Logger: testutil.Logger()})
	if err != nil {
		t.Fatal(err)
	}
	stop := run(t, s)
	defer stop()
	testutil.Eventually(t, 5*time.Second, "first ready", func() bool { _, r, _ := ev.counts(); return r == 1 })
	f.Worker("w0").Crash()
	testutil.Eventually(t, 5*time.Second, "restarted and ready again", func() bool { _, r, _ := ev.counts(); return r == 2 })
	if s.Restarts() != 1 {
		t.Fatalf("Restarts() = %d, want 1", s.Restarts())
	}
}

func TestGivesUpAfterConsecutiveStartupFailures(t *testing.T) {
	f := &fake.Factory{Options: []fake.Option{fake.WithFailStart(errors.New("no module named x"), 0)}}
	ev := &events{}
	gaveUp := make(chan error, 1)
	s, err := New(f, worker.Spec{ID: "w0", Events: ev}, Options{
		InitialBackoff: 5 * time.Millisecond, StartupFailures: 3, Logger: testutil.Logger(),
		OnGiveUp: func(id string, err error) { gaveUp <- err },
	})
	if err != nil {
		t.Fatal(err)
	}
	stop := run(t, s)
	defer stop()
	select {
	case err := <-gaveUp:
		if !errors.Is(err, worker.ErrStartup) {
			t.Fatalf("gave up with %v, want a startup error", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("starter never gave up")
	}
	starts, _, _ := ev.counts()
	if starts != 3 {
		t.Fatalf("%d start attempts, want exactly 3 (no restart storm)", starts)
	}
}

func TestBackoffDoublesAndResetsAfterReady(t *testing.T) {
	f := &fake.Factory{Options: []fake.Option{fake.WithFailStart(errors.New("flaky"), 2)}}
	ev := &events{}
	s, err := New(f, worker.Spec{ID: "w0", Events: ev}, Options{InitialBackoff: 40 * time.Millisecond, StartupFailures: 5, Logger: testutil.Logger()})
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	stop := run(t, s)
	defer stop()
	testutil.Eventually(t, 5*time.Second, "ready after two failed starts", func() bool { _, r, _ := ev.counts(); return r == 1 })
	// Two failures wait 40 ms and 80 ms (±20%): at least 96 ms in all.
	if el := time.Since(t0); el < 96*time.Millisecond {
		t.Fatalf("ready after %s; backoff was not applied", el)
	}
}

func TestGateBoundsConcurrentStarts(t *testing.T) {
	gate := make(chan struct{}, 1)
	f := &fake.Factory{Options: []fake.Option{fake.WithReadyDelay(30 * time.Millisecond)}}
	var stops []func()
	var evs []*events
	for _, id := range []string{"w0", "w1", "w2"} {
		ev := &events{}
		evs = append(evs, ev)
		s, err := New(f, worker.Spec{ID: id, Events: ev}, Options{Gate: gate, Logger: testutil.Logger()})
		if err != nil {
			t.Fatal(err)
		}
		stops = append(stops, run(t, s))
	}
	defer func() {
		for _, s := range stops {
			s()
		}
	}()
	maxStarting := 0
	testutil.Eventually(t, 5*time.Second, "all ready", func() bool {
		starting, ready := 0, 0
		for _, ev := range evs {
			s, r, _ := ev.counts()
			starting += s - r
			ready += r
		}
		maxStarting = max(maxStarting, starting)
		return ready == 3
	})
	if maxStarting > 1 {
		t.Fatalf("%d workers were starting at once through a gate of 1", maxStarting)
	}
}
