package starter

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"syscall"
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
func (e *events) Recycled(string, worker.Info, string) {}
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
	if s.restartCount() != 1 {
		t.Fatalf("Restarts() = %d, want 1", s.restartCount())
	}
}

func TestGivesUpAfterConsecutiveStartupFailures(t *testing.T) {
	f := &fake.Factory{Options: []fake.Option{fake.WithFailStart(errors.New("no module named x"), 0)}}
	ev := &events{}
	gaveUp := make(chan error, 1)
	s, err := New(f, worker.Spec{ID: "w0", Events: ev}, Options{
		InitialBackoff: 5 * time.Millisecond, StartupFailures: 3, Logger: testutil.Logger(),
		OnGiveUp: func(id string, err error, _ time.Time) { gaveUp <- err },
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

// scripted is a worker type whose lifetimes follow a script: each entry is
// what one Serve does. It talks to the Starter only through the public
// contract, like a user's worker type.
type scripted struct {
	spec   worker.Spec
	mu     sync.Mutex
	script []func(ctx context.Context, spec worker.Spec) error
	n      int
}

func (w *scripted) ID() string { return w.spec.ID }
func (w *scripted) Serve(ctx context.Context) error {
	w.mu.Lock()
	step := w.script[min(w.n, len(w.script)-1)]
	w.n++
	w.mu.Unlock()
	return step(ctx, w.spec)
}
func (w *scripted) lifetimes() int { w.mu.Lock(); defer w.mu.Unlock(); return w.n }
func (w *scripted) Execute(context.Context, *worker.Call) (*worker.Result, error) {
	return nil, worker.ErrWorkerUnavailable
}
func (w *scripted) ExecuteStream(context.Context, *worker.Call, func(worker.Chunk) error) error {
	return worker.ErrWorkerUnavailable
}
func (w *scripted) Kill(string) {}

func newScripted(t *testing.T, ev worker.Events, opts Options, script ...func(context.Context, worker.Spec) error) (*Starter, *scripted) {
	t.Helper()
	var w *scripted
	f := worker.FactoryFunc(func(spec worker.Spec) (worker.Worker, error) {
		w = &scripted{spec: spec, script: script}
		return w, nil
	})
	opts.Logger = testutil.Logger()
	s, err := New(f, worker.Spec{ID: "w0", Events: ev}, opts)
	if err != nil {
		t.Fatal(err)
	}
	return s, w
}

// killedBeforeHandshake is a start ended by SIGKILL from outside (the OOM
// killer, an operator, a chaos test).
func killedBeforeHandshake(_ context.Context, spec worker.Spec) error {
	spec.Events.Starting(spec.ID)
	err := &worker.StartupError{WorkerID: spec.ID, Cause: errors.New("the process was killed by SIGKILL before its handshake"), Signal: syscall.SIGKILL}
	spec.Events.Exited(spec.ID, err)
	return err
}

func readyUntilStopped(ctx context.Context, spec worker.Spec) error {
	spec.Events.Starting(spec.ID)
	spec.Events.Ready(spec.ID, worker.Info{})
	<-ctx.Done()
	spec.Events.Exited(spec.ID, nil)
	return nil
}

func TestOutsideKillsDuringStartupAreNotBrokenStarts(t *testing.T) {
	ev := &events{}
	var gaveUp sync.Mutex
	gave := 0
	script := []func(context.Context, worker.Spec) error{}
	for range 6 { // twice the give-up budget
		script = append(script, killedBeforeHandshake)
	}
	script = append(script, readyUntilStopped)
	s, w := newScripted(t, ev, Options{InitialBackoff: 5 * time.Millisecond, StartupFailures: 3,
		OnGiveUp: func(string, error, time.Time) { gaveUp.Lock(); gave++; gaveUp.Unlock() }}, script...)
	stop := run(t, s)
	defer stop()
	testutil.Eventually(t, 5*time.Second, "ready after six outside kills", func() bool { _, r, _ := ev.counts(); return r == 1 })
	gaveUp.Lock()
	defer gaveUp.Unlock()
	if gave != 0 || w.lifetimes() != 7 {
		t.Fatalf("gave up %d times after %d lifetimes; outside kills must not spend the start budget", gave, w.lifetimes())
	}
}

func TestCrashSignalDuringStartupCountsAsBrokenStart(t *testing.T) {
	segv := func(_ context.Context, spec worker.Spec) error {
		spec.Events.Starting(spec.ID)
		err := &worker.StartupError{WorkerID: spec.ID, Cause: errors.New("segfault while importing"), Signal: syscall.SIGSEGV}
		spec.Events.Exited(spec.ID, err)
		return err
	}
	gaveUp := make(chan struct{}, 1)
	s, w := newScripted(t, &events{}, Options{InitialBackoff: 5 * time.Millisecond, StartupFailures: 3, RetryGivenUpAfter: time.Hour,
		OnGiveUp: func(string, error, time.Time) { gaveUp <- struct{}{} }}, segv)
	stop := run(t, s)
	defer stop()
	select {
	case <-gaveUp:
	case <-time.After(5 * time.Second):
		t.Fatal("a worker whose start segfaults was never given up")
	}
	if n := w.lifetimes(); n != 3 {
		t.Fatalf("%d starts before giving up, want 3", n)
	}
}

func TestGivenUpWorkerIsRetriedAfterTheLongBackoff(t *testing.T) {
	broken := func(_ context.Context, spec worker.Spec) error {
		spec.Events.Starting(spec.ID)
		err := &worker.StartupError{WorkerID: spec.ID, Cause: errors.New("No module named 'x'")}
		spec.Events.Exited(spec.ID, err)
		return err
	}
	ev := &events{}
	type giveUp struct {
		at, retryAt time.Time
	}
	gaveUp := make(chan giveUp, 4)
	const pause = 300 * time.Millisecond
	s, _ := newScripted(t, ev, Options{InitialBackoff: 5 * time.Millisecond, StartupFailures: 3, RetryGivenUpAfter: pause,
		OnGiveUp: func(_ string, _ error, retryAt time.Time) { gaveUp <- giveUp{time.Now(), retryAt} }},
		broken, broken, broken, readyUntilStopped) // the environment is fixed after the give-up
	stop := run(t, s)
	defer stop()
	var g giveUp
	select {
	case g = <-gaveUp:
	case <-time.After(5 * time.Second):
		t.Fatal("never gave up")
	}
	if d := g.retryAt.Sub(g.at); d < pause-10*time.Millisecond || d > pause+50*time.Millisecond {
		t.Fatalf("OnGiveUp announced a retry in %s, want %s", d, pause)
	}
	testutil.Eventually(t, 5*time.Second, "the given-up worker heals once its environment is fixed", func() bool {
		_, r, _ := ev.counts()
		return r == 1
	})
	if !time.Now().After(g.retryAt) {
		t.Fatal("retried before the announced time")
	}
}

func TestFailureBeforeStartingAfterAReadyLifetimeCountsAsBrokenStart(t *testing.T) {
	crashAfterReady := func(_ context.Context, spec worker.Spec) error {
		spec.Events.Starting(spec.ID)
		spec.Events.Ready(spec.ID, worker.Info{})
		err := &worker.CrashError{WorkerID: spec.ID, ExitCode: 1}
		spec.Events.Exited(spec.ID, err)
		return err
	}
	// A custom worker type that fails before it even reports Starting.
	noStart := func(context.Context, worker.Spec) error { return errors.New("cannot dial") }
	gaveUp := make(chan struct{}, 1)
	s, w := newScripted(t, &events{}, Options{InitialBackoff: 5 * time.Millisecond, StartupFailures: 3, RetryGivenUpAfter: time.Hour,
		OnGiveUp: func(string, error, time.Time) { gaveUp <- struct{}{} }}, crashAfterReady, noStart)
	stop := run(t, s)
	defer stop()
	select {
	case <-gaveUp:
	case <-time.After(5 * time.Second):
		t.Fatal("failures before Starting were taken for crashes of a ready worker; never gave up")
	}
	if n := w.lifetimes(); n != 4 {
		t.Fatalf("%d lifetimes before giving up, want 1 ready + 3 failed", n)
	}
}

// spawnShort is a start that failed because the host ran out of file
// descriptors while spawning; the worker type leaves the kind to the cause.
func spawnShort(_ context.Context, spec worker.Spec) error {
	spec.Events.Starting(spec.ID)
	err := &worker.StartupError{WorkerID: spec.ID, Cause: fmt.Errorf("snakepit: cannot start python3: %w", &os.SyscallError{Syscall: "pipe2", Err: syscall.EMFILE})}
	spec.Events.Exited(spec.ID, err)
	return err
}

// spawnShortPlain is the same from a worker type returning a bare error.
func spawnShortPlain(_ context.Context, spec worker.Spec) error {
	spec.Events.Starting(spec.ID)
	err := fmt.Errorf("fork/exec: %w", syscall.EAGAIN)
	spec.Events.Exited(spec.ID, err)
	return err
}

func TestHostResourceShortageIsNotABrokenStart(t *testing.T) {
	ev := &events{}
	var mu sync.Mutex
	gave := 0
	script := []func(context.Context, worker.Spec) error{}
	for i := range 6 { // twice the give-up budget
		script = append(script, []func(context.Context, worker.Spec) error{spawnShort, spawnShortPlain}[i%2])
	}
	script = append(script, readyUntilStopped)
	const initial, most = 5 * time.Millisecond, 40 * time.Millisecond
	s, w := newScripted(t, ev, Options{InitialBackoff: initial, MaxBackoff: most, StartupFailures: 3,
		OnGiveUp: func(string, error, time.Time) { mu.Lock(); gave++; mu.Unlock() }}, script...)
	began := time.Now()
	stop := run(t, s)
	defer stop()
	testutil.Eventually(t, 10*time.Second, "ready after six starts short of file descriptors", func() bool { _, r, _ := ev.counts(); return r == 1 })
	took := time.Since(began)
	mu.Lock()
	defer mu.Unlock()
	if gave != 0 || w.lifetimes() != 7 {
		t.Fatalf("gave up %d times after %d lifetimes; a host resource shortage must not spend the start budget", gave, w.lifetimes())
	}
	// The retries back off (10, 20, 40, 40, 40, 40 ms, each at least 80%
	// of that after jitter) instead of spinning against the limit.
	if low := time.Duration(0.8 * float64(10+20+4*40) * float64(time.Millisecond)); took < low {
		t.Fatalf("six retries took %s; with backoff they take at least %s", took, low)
	}
}

func TestNegativeOptionsAreRejectedNotDefaulted(t *testing.T) {
	for _, o := range []Options{
		{InitialBackoff: -1}, {MaxBackoff: -1}, {StartupFailures: -1}, {RetryGivenUpAfter: -1}, {StopTimeout: -1},
	} {
		_, err := New(&fake.Factory{}, worker.Spec{ID: "w0", Events: &events{}}, o)
		if !errors.Is(err, worker.ErrInvalidConfig) {
			t.Errorf("starter.New(%+v) = %v; want ErrInvalidConfig", o, err)
		}
	}
}
