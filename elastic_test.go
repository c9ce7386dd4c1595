package snakepit_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	promtest "github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/snakepit-go/snakepit"
	"github.com/snakepit-go/snakepit/internal/testutil"
	"github.com/snakepit-go/snakepit/worker"
	"github.com/snakepit-go/snakepit/worker/fake"
)

// gate is a tool that holds its calls until released: load that stays.
type gate struct {
	once    sync.Once
	release chan struct{}
}

func newGate() *gate { return &gate{release: make(chan struct{})} }

func (g *gate) open() { g.once.Do(func() { close(g.release) }) }

func (g *gate) tool(ctx context.Context, _ *worker.Call) (*worker.Result, error) {
	select {
	case <-g.release:
		return &worker.Result{JSON: []byte(`"ok"`)}, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func startElastic(t *testing.T, f *fake.Factory, cfg snakepit.Config) *snakepit.App {
	t.Helper()
	base := fakeConfig(t, f, 0)
	cfg.WorkerFactory, cfg.RegistryPath, cfg.Logger = base.WorkerFactory, base.RegistryPath, base.Logger
	app, err := snakepit.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := app.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if _, err := app.Stop(context.Background()); err != nil {
			t.Errorf("Stop: %v", err)
		}
	})
	return app
}

// callAsync makes n calls of tool in the background; wait returns their errors.
func callAsync(app *snakepit.App, n int, tool string) (wait func() []error) {
	return callPoolAsync(app.Pool(snakepit.DefaultPool), n, tool)
}

// callPoolAsync is callAsync on pool p.
func callPoolAsync(p *snakepit.Pool, n int, tool string) (wait func() []error) {
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			_, errs[i] = p.Execute(ctx, tool, nil, snakepit.WithQueueTimeout(20*time.Second))
		}()
	}
	return func() []error { wg.Wait(); return errs }
}

func noErrors(t *testing.T, errs []error) {
	t.Helper()
	for i, err := range errs {
		if err != nil {
			t.Errorf("call %d: %v", i, err)
		}
	}
}

func readyFakes(f *fake.Factory) int {
	n := 0
	for _, w := range f.Workers() {
		if w.IsReady() {
			n++
		}
	}
	return n
}

// Calls that keep waiting grow the pool one worker per ScaleUpInterval, up
// to MaxWorkers and no further.
func TestElasticGrowsOnSustainedWaitAtABoundedRate(t *testing.T) {
	g := newGate()
	f := &fake.Factory{Options: []fake.Option{fake.WithTool("hold", g.tool)}}
	const interval = 300 * time.Millisecond
	app := startElastic(t, f, snakepit.Config{MinWorkers: 1, MaxWorkers: 4, Capacity: 1,
		ScaleUpAfter: 50 * time.Millisecond, ScaleUpInterval: interval, IdleTimeout: time.Hour})
	defer g.open()
	wait := callAsync(app, 8, "hold")

	var ups []time.Time
	testutil.Eventually(t, 20*time.Second, "the pool grown to MaxWorkers", func() bool {
		s := app.Stats().Pool.Scaling
		if int(s.ScaleUps) > len(ups) {
			if int(s.ScaleUps) != len(ups)+1 {
				t.Fatalf("missed a scale-up event (%d seen, %d counted): poll faster", len(ups), s.ScaleUps)
			}
			ups = append(ups, s.Last.At)
		}
		return s.ScaleUps == 3 && app.Stats().Pool.Workers.Busy == 4
	})
	for i := 1; i < len(ups); i++ {
		if gap := ups[i].Sub(ups[i-1]); gap < interval {
			t.Errorf("scale-ups %d and %d %s apart; ScaleUpInterval is %s", i-1, i, gap, interval)
		}
	}
	// Calls still wait, but the pool is at its maximum: no further worker.
	time.Sleep(3 * interval)
	s := app.Stats()
	if s.Pool.Scaling.ScaleUps != 3 || s.Pool.Workers.Total != 4 || s.Pool.Scaling.Workers != 4 {
		t.Errorf("beyond MaxWorkers: %d scale-ups, %d workers (scaler says %d)", s.Pool.Scaling.ScaleUps, s.Pool.Workers.Total, s.Pool.Scaling.Workers)
	}
	if s.Pool.QueueWait < 3*interval {
		t.Errorf("QueueWait %s with 4 calls waiting for %s", s.Pool.QueueWait, 3*interval)
	}
	if s.Pool.Scaling.Last.Direction != "up" || s.Pool.Scaling.Last.Reason == "" {
		t.Errorf("last event %+v: want an up event with its reason", s.Pool.Scaling.Last)
	}
	g.open()
	noErrors(t, wait())
}

// Idle workers go after IdleTimeout, each with nothing in flight, down to
// MinWorkers and never below.
func TestElasticShrinksIdleWorkersNeverBelowMin(t *testing.T) {
	g := newGate()
	f := &fake.Factory{Options: []fake.Option{fake.WithTool("hold", g.tool), fake.WithTool("echo", fake.Echo)}}
	const idle = 300 * time.Millisecond
	app := startElastic(t, f, snakepit.Config{MinWorkers: 1, MaxWorkers: 3, Capacity: 1,
		ScaleUpAfter: 20 * time.Millisecond, ScaleUpInterval: 20 * time.Millisecond, IdleTimeout: idle})
	wait := callAsync(app, 3, "hold")
	testutil.Eventually(t, 20*time.Second, "3 busy workers", func() bool { return app.Stats().Pool.Workers.Busy == 3 })
	g.open()
	noErrors(t, wait())

	// A light load of one caller at a time keeps one worker in use: ties go
	// to the most recently used worker, so the others become idle.
	stop := make(chan struct{})
	light := make(chan error, 1)
	go func() {
		for {
			select {
			case <-stop:
				light <- nil
				return
			default:
			}
			if _, err := app.Execute(context.Background(), "echo", nil); err != nil {
				light <- err
				return
			}
			time.Sleep(time.Millisecond)
		}
	}()
	testutil.Eventually(t, 20*time.Second, "back to MinWorkers", func() bool {
		s := app.Stats()
		return s.Pool.Scaling.Workers == 1 && s.Pool.Workers.Total == 1 && s.Pool.Scaling.ScaleDowns == 2
	})
	close(stop)
	if err := <-light; err != nil {
		t.Fatalf("a call failed while the pool shrank: %v", err)
	}
	time.Sleep(3 * idle) // idle now, but at MinWorkers
	s := app.Stats()
	if s.Pool.Workers.Total != 1 || s.Pool.Scaling.ScaleDowns != 2 || readyFakes(f) != 1 {
		t.Errorf("below MinWorkers: %d workers, %d scale-downs, %d fake workers ready", s.Pool.Workers.Total, s.Pool.Scaling.ScaleDowns, readyFakes(f))
	}
	if s.Pool.Scaling.Last.Direction != "down" {
		t.Errorf("last event %+v: want a down event", s.Pool.Scaling.Last)
	}
	if n := s.Pool.Outcomes[snakepit.OutcomeSuccess]; n != s.Pool.Requests {
		t.Errorf("%d of %d calls succeeded", n, s.Pool.Requests)
	}
}

// MinWorkers 0: the App is ready with no worker, the first call starts one
// and is served by it, and the pool goes back to zero when idle.
func TestElasticFromZeroServesTheFirstCall(t *testing.T) {
	f := &fake.Factory{Options: []fake.Option{fake.WithTool("echo", fake.Echo), fake.WithReadyDelay(200 * time.Millisecond)}}
	reg := prometheus.NewRegistry()
	app := startElastic(t, f, snakepit.Config{MinWorkers: 0, MaxWorkers: 2, IdleTimeout: 300 * time.Millisecond, Metrics: reg})
	if n := app.Stats().Pool.Workers.Total; n != 0 {
		t.Fatalf("%d workers at start with MinWorkers 0", n)
	}
	// Shorter than the worker's start: a queue timeout, not "not ready".
	_, err := app.Execute(context.Background(), "echo", nil, snakepit.WithQueueTimeout(20*time.Millisecond))
	if !errors.Is(err, snakepit.ErrQueueTimeout) {
		t.Fatalf("call with a queue timeout shorter than a start: %v; want ErrQueueTimeout", err)
	}
	if _, err := app.Execute(context.Background(), "echo", nil, snakepit.WithQueueTimeout(10*time.Second)); err != nil {
		t.Fatalf("first call: %v", err)
	}
	if s := app.Stats().Pool.Scaling; s.ScaleUps != 1 || s.Min != 0 || s.Max != 2 || !s.Elastic {
		t.Errorf("scaling stats %+v: want one scale-up, bounds 0..2", s)
	}
	testutil.Eventually(t, 20*time.Second, "back to zero workers", func() bool {
		s := app.Stats()
		return s.Pool.Workers.Total == 0 && s.Pool.Scaling.Workers == 0 && readyFakes(f) == 0
	})
	const want = `
# HELP snakepit_pool_workers_desired Local workers the pool aims at (an elastic pool's decision, a fixed pool's size).
# TYPE snakepit_pool_workers_desired gauge
snakepit_pool_workers_desired{pool="default"} 0
# HELP snakepit_pool_workers_max An elastic pool's upper bound (a fixed pool's size).
# TYPE snakepit_pool_workers_max gauge
snakepit_pool_workers_max{pool="default"} 2
# HELP snakepit_pool_workers_min An elastic pool's lower bound (a fixed pool's size).
# TYPE snakepit_pool_workers_min gauge
snakepit_pool_workers_min{pool="default"} 0
# HELP snakepit_queue_wait_seconds How long the oldest call waiting for a worker has waited (0: none waits).
# TYPE snakepit_queue_wait_seconds gauge
snakepit_queue_wait_seconds{pool="default"} 0
# HELP snakepit_scale_events_total Workers an elastic pool added (up) or removed (down).
# TYPE snakepit_scale_events_total counter
snakepit_scale_events_total{direction="down",pool="default"} 1
snakepit_scale_events_total{direction="up",pool="default"} 1
`
	if err := promtest.GatherAndCompare(reg, strings.NewReader(want), "snakepit_pool_workers_desired", "snakepit_pool_workers_max",
		"snakepit_pool_workers_min", "snakepit_queue_wait_seconds", "snakepit_scale_events_total"); err != nil {
		t.Error(err)
	}
}

// A worker that cannot start is given up once; growth pauses instead of
// starting worker after worker.
func TestElasticFailedStartPausesGrowth(t *testing.T) {
	boom := errors.New("adapter import failed")
	f := &fake.Factory{Options: []fake.Option{fake.WithTool("echo", fake.Echo), fake.WithFailStart(boom, 0)}}
	app := startElastic(t, f, snakepit.Config{MinWorkers: 0, MaxWorkers: 3, StartupFailures: 1, RetryGivenUpAfter: time.Hour,
		ScaleUpAfter: 10 * time.Millisecond, ScaleUpInterval: 10 * time.Millisecond, IdleTimeout: time.Hour})
	for i := range 5 {
		_, err := app.Execute(context.Background(), "echo", nil, snakepit.WithQueueTimeout(2*time.Second))
		if i == 0 && !errors.Is(err, boom) {
			t.Fatalf("first call: %v; want the start error", err)
		}
		if err == nil {
			t.Fatal("a call succeeded on a worker that cannot start")
		}
	}
	// The calls learn of the give-up from the pool; the scaler at its next tick.
	testutil.Eventually(t, 10*time.Second, "the failed start counted", func() bool { return app.Stats().Pool.Scaling.FailedStarts == 1 })
	s := app.Stats().Pool.Scaling
	if s.ScaleUps != 1 || !s.PausedUntil.After(time.Now()) || len(f.Workers()) != 1 {
		t.Errorf("after a failed start: %+v, %d workers built; want one scale-up, growth paused", s, len(f.Workers()))
	}
}

func TestElasticConfigIsValidated(t *testing.T) {
	for name, cfg := range map[string]snakepit.Config{
		"workers and max":     {Workers: 2, MaxWorkers: 4},
		"min not below max":   {MinWorkers: 4, MaxWorkers: 4},
		"negative min":        {MinWorkers: -1, MaxWorkers: 4},
		"min without max":     {MinWorkers: 2},
		"idle without max":    {IdleTimeout: time.Second},
		"negative idle":       {MaxWorkers: 2, IdleTimeout: -time.Second},
		"min ready above min": {MinWorkers: 1, MaxWorkers: 3, MinReady: 2},
	} {
		cfg.WorkerFactory = &fake.Factory{}
		if _, err := snakepit.New(cfg); !errors.Is(err, snakepit.ErrInvalidConfig) {
			t.Errorf("%s: New = %v; want ErrInvalidConfig", name, err)
		}
	}
}
