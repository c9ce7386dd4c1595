package supervisor_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/snakepit-go/snakepit/internal/testutil"
	"github.com/snakepit-go/snakepit/pool"
	"github.com/snakepit-go/snakepit/supervisor"
	"github.com/snakepit-go/snakepit/worker"
	"github.com/snakepit-go/snakepit/worker/fake"
)

func TestMain(m *testing.M) { testutil.Main(m) }

// replacing is a fake worker that can replace its "process": it holds a
// slot of the replace gate for a moment, then reports Replaced — or fails
// like a new process that cannot start.
type replacing struct {
	*fake.Worker
	spec worker.Spec
	log  *replaceLog
}

type replaceLog struct {
	mu       sync.Mutex
	fail     map[string]bool
	events   []string // "start wN", "failed wN", "done wN", in order
	now, max int
}

func (r *replacing) Recycle(ctx context.Context, reason string) error {
	select {
	case r.spec.RecycleGate <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-r.spec.RecycleGate }()
	l := r.log
	l.mu.Lock()
	l.events = append(l.events, "start "+r.spec.ID)
	l.now++
	l.max = max(l.max, l.now)
	fail := l.fail[r.spec.ID]
	l.mu.Unlock()
	time.Sleep(30 * time.Millisecond) // the new process starting
	l.mu.Lock()
	l.now--
	if fail {
		l.events = append(l.events, "failed "+r.spec.ID)
	} else {
		l.events = append(l.events, "done "+r.spec.ID)
	}
	l.mu.Unlock()
	if fail {
		return &worker.StartupError{WorkerID: r.spec.ID, Cause: errors.New("ImportError: broken on purpose")}
	}
	r.spec.Events.Recycled(r.spec.ID, worker.Info{}, reason)
	return nil
}

func startWorkers(t *testing.T, n, concurrency int, log *replaceLog) (*supervisor.Workers, *pool.Pool) {
	t.Helper()
	return startMixed(t, n, concurrency, log, func(string) bool { return true })
}

// startMixed is startWorkers where only the workers canReplace names can
// replace their process (the others are like remote workers).
func startMixed(t *testing.T, n, concurrency int, log *replaceLog, canReplace func(id string) bool) (*supervisor.Workers, *pool.Pool) {
	t.Helper()
	p, err := pool.New(pool.Options{Logger: testutil.Logger()})
	if err != nil {
		t.Fatal(err)
	}
	f := worker.FactoryFunc(func(spec worker.Spec) (worker.Worker, error) {
		if !canReplace(spec.ID) {
			return fake.New(spec), nil
		}
		return &replacing{Worker: fake.New(spec), spec: spec, log: log}, nil
	})
	w, err := supervisor.NewWorkers(supervisor.WorkersOptions{Count: n, RunID: "run-reload-test", Factory: f, Pool: p,
		RecycleConcurrency: concurrency, Logger: testutil.Logger()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Serve(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	select {
	case <-w.Ready():
	case <-time.After(10 * time.Second):
		t.Fatal("workers not ready")
	}
	return w, p
}

// Reload walks the workers in order, at most RecycleConcurrency at once,
// and stops at the first failure: replacements already under way finish,
// no further one starts, and the error names the worker and wraps its
// StartupError.
func TestReloadIsBoundedAndStopsAtTheFirstFailure(t *testing.T) {
	log := &replaceLog{fail: map[string]bool{"w2": true}}
	w, p := startWorkers(t, 6, 2, log)
	rep, err := w.Reload(context.Background())
	var re *supervisor.ReloadError
	var se *worker.StartupError
	if !errors.As(err, &re) || !errors.As(err, &se) || re.WorkerID != "w2" || re.Total != 6 {
		t.Fatalf("Reload = %v, want a ReloadError for w2 wrapping its StartupError", err)
	}
	log.mu.Lock()
	events, most := append([]string(nil), log.events...), log.max
	log.mu.Unlock()
	if most > 2 {
		t.Fatalf("%d replacements at once, want at most RecycleConcurrency 2", most)
	}
	// The fake logs "failed w2" just before its Replace returns, and Reload
	// learns of the failure just after: in that window the other of the 2
	// lanes may take one more worker, never more.
	failed := false
	late := 0
	started := map[string]bool{}
	for _, e := range events {
		if e == "failed w2" {
			failed = true
		}
		if id, ok := strings.CutPrefix(e, "start "); ok {
			started[id] = true
			if failed {
				late++
			}
		}
	}
	if late > 1 {
		t.Fatalf("%d replacements started after w2 had failed: %v", late, events)
	}
	var want []string
	for _, id := range []string{"w0", "w1", "w3", "w4", "w5"} {
		if started[id] {
			want = append(want, id) // begun before the failure: it finishes
		}
	}
	if got := fmt.Sprint(rep.Recycled); got != fmt.Sprint(want) {
		t.Fatalf("replaced %s, want every other worker begun before w2 failed, %v (events %v)", got, want, events)
	}
	if s := p.Stats(); s.RecycleReasons[supervisor.ReloadReason] != len(rep.Recycled) || s.Restarts != 0 {
		t.Fatalf("stats %+v: want one reload recycle per replaced worker, no restart", s)
	}

	// Fixed: the next reload replaces all six.
	log.mu.Lock()
	log.fail = nil
	log.mu.Unlock()
	if rep, err := w.Reload(context.Background()); err != nil || len(rep.Recycled) != 6 {
		t.Fatalf("second Reload = %+v, %v; want all 6 replaced", rep, err)
	}
}

// Workers that cannot replace a process (remote ones) do not stop a reload
// of those that can; they are listed apart.
func TestReloadReplacesWhatItCanAndListsTheRest(t *testing.T) {
	log := &replaceLog{}
	w, _ := startMixed(t, 4, 1, log, func(id string) bool { return id != "w1" && id != "w3" })
	rep, err := w.Reload(context.Background())
	if err != nil {
		t.Fatalf("Reload = %v; workers that cannot replace must not fail the others", err)
	}
	if fmt.Sprint(rep.Recycled) != "[w0 w2]" || fmt.Sprint(rep.NotRecyclable) != "[w1 w3]" {
		t.Fatalf("report %+v; want w0, w2 replaced and w1, w3 not replaceable", rep)
	}

	none, _ := startMixed(t, 2, 1, log, func(string) bool { return false })
	rep, err = none.Reload(context.Background())
	if !errors.Is(err, supervisor.ErrReloadUnsupported) || len(rep.NotRecyclable) != 2 {
		t.Fatalf("Reload with no replaceable worker = %+v, %v; want ErrReloadUnsupported", rep, err)
	}
}
