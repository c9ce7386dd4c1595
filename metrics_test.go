package snakepit

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	promtest "github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/snakepit-go/snakepit/internal/testutil"
	"github.com/snakepit-go/snakepit/pool"
	"github.com/snakepit-go/snakepit/worker"
	"github.com/snakepit-go/snakepit/worker/fake"
)

// startMetricsApp starts an App of fake workers whose collector is
// registered with a fresh registry.
func startMetricsApp(t *testing.T, workers int, instance string) (*App, *fake.Factory, *prometheus.Registry) {
	t.Helper()
	f := &fake.Factory{Options: []fake.Option{
		fake.WithTool("echo", fake.Echo),
		fake.WithTool("boom", func(context.Context, *worker.Call) (*worker.Result, error) {
			return nil, &worker.ToolError{Tool: "boom", Type: "ValueError", Message: "boom"}
		}),
		fake.WithTool("wait", func(ctx context.Context, _ *worker.Call) (*worker.Result, error) {
			<-ctx.Done()
			return nil, ctx.Err()
		}),
	}}
	reg := prometheus.NewRegistry()
	app, err := New(Config{
		Workers:       workers,
		WorkerFactory: f,
		RegistryPath:  filepath.Join(t.TempDir(), "r.db"),
		Instance:      instance,
		Metrics:       reg,
		Logger:        testutil.Logger(),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := app.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if _, err := app.Stop(ctx); err != nil {
			t.Errorf("Stop: %v", err)
		}
	})
	return app, f, reg
}

func TestMetricsReflectCalls(t *testing.T) {
	app, _, reg := startMetricsApp(t, 2, "")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for i := range 3 {
		if _, err := app.Execute(ctx, "echo", map[string]any{"i": i}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := app.Execute(ctx, "nope", nil); !errors.Is(err, ErrUnknownTool) {
		t.Fatalf("unknown tool: %v", err)
	}
	if _, err := app.Execute(ctx, "boom", nil); !errors.Is(err, ErrToolFailed) {
		t.Fatalf("boom: %v", err)
	}
	// Arguments that are not a JSON object are refused before the pool,
	// and still counted.
	if _, err := app.Execute(ctx, "echo", []int{1, 2}); !errors.Is(err, ErrInvalidArgs) {
		t.Fatalf("array args: %v", err)
	}
	// A context already done is rejected as an invalid call, counted as
	// cancelled: that is what ended it ...
	done, cancelDone := context.WithCancel(ctx)
	cancelDone()
	if _, err := app.Execute(done, "echo", nil); !errors.Is(err, pool.ErrInvalidCall) {
		t.Fatalf("call with a done context: %v", err)
	}
	// ... as is one cancelled while it runs.
	running, cancelRunning := context.WithCancel(ctx)
	stop := time.AfterFunc(20*time.Millisecond, cancelRunning)
	defer stop.Stop()
	if _, err := app.Execute(running, "wait", nil); !errors.Is(err, context.Canceled) {
		t.Fatalf("call cancelled while running: %v", err)
	}

	// Wait for the pool to settle (the last call's slot is released).
	testutil.Eventually(t, 5*time.Second, "both workers idle", func() bool {
		return app.Stats().Pool.Workers.Idle == 2
	})

	const want = `
# HELP snakepit_requests_total Calls made (retries are not counted again), by pool and how they ended.
# TYPE snakepit_requests_total counter
snakepit_requests_total{outcome="affinity",pool="default"} 0
snakepit_requests_total{outcome="cancelled",pool="default"} 2
snakepit_requests_total{outcome="crashed",pool="default"} 0
snakepit_requests_total{outcome="deadline",pool="default"} 0
snakepit_requests_total{outcome="invalid_args",pool="default"} 2
snakepit_requests_total{outcome="message_too_large",pool="default"} 0
snakepit_requests_total{outcome="not_ready",pool="default"} 0
snakepit_requests_total{outcome="other",pool="default"} 0
snakepit_requests_total{outcome="queue_timeout",pool="default"} 0
snakepit_requests_total{outcome="saturated",pool="default"} 0
snakepit_requests_total{outcome="stopping",pool="default"} 0
snakepit_requests_total{outcome="success",pool="default"} 3
snakepit_requests_total{outcome="tool_error",pool="default"} 1
snakepit_requests_total{outcome="tool_timeout",pool="default"} 0
snakepit_requests_total{outcome="worker_timeout",pool="default"} 0
# HELP snakepit_workers Workers by state.
# TYPE snakepit_workers gauge
snakepit_workers{pool="default",state="busy"} 0
snakepit_workers{pool="default",state="draining"} 0
snakepit_workers{pool="default",state="exited"} 0
snakepit_workers{pool="default",state="failed"} 0
snakepit_workers{pool="default",state="idle"} 2
snakepit_workers{pool="default",state="starting"} 0
# HELP snakepit_queue_depth Calls waiting for a worker.
# TYPE snakepit_queue_depth gauge
snakepit_queue_depth{pool="default"} 0
# HELP snakepit_in_flight Calls running on a worker.
# TYPE snakepit_in_flight gauge
snakepit_in_flight{pool="default"} 0
# HELP snakepit_orphans_reaped_total Processes left by earlier runs that the startup reaper stopped (recorded workers and their descendants).
# TYPE snakepit_orphans_reaped_total counter
snakepit_orphans_reaped_total 0
`
	if err := promtest.GatherAndCompare(reg, strings.NewReader(want),
		"snakepit_requests_total",
		"snakepit_workers", "snakepit_queue_depth", "snakepit_in_flight", "snakepit_orphans_reaped_total",
	); err != nil {
		t.Fatal(err)
	}

	// Latency: three quantiles and a max, no run id anywhere, no instance
	// label when Config.Instance is empty.
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, mf := range mfs {
		names[mf.GetName()] = true
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if lp.GetName() == "instance" || lp.GetName() == "run_id" || strings.Contains(lp.GetValue(), app.RunID()) {
					t.Errorf("%s carries label %s=%q", mf.GetName(), lp.GetName(), lp.GetValue())
				}
			}
			if mf.GetName() == "snakepit_call_duration_seconds" {
				h := m.GetHistogram()
				if h.GetSampleCount() == 0 || h.GetSampleSum() <= 0 || len(h.GetBucket()) != 16 {
					t.Errorf("duration histogram after calls: count %d, sum %v, %d buckets", h.GetSampleCount(), h.GetSampleSum(), len(h.GetBucket()))
				}
				if b := h.GetBucket(); len(b) > 0 && b[len(b)-1].GetCumulativeCount() > h.GetSampleCount() {
					t.Errorf("cumulative count %d above the sample count %d", b[len(b)-1].GetCumulativeCount(), h.GetSampleCount())
				}
			}
		}
	}
	for _, n := range []string{
		"snakepit_retries_total", "snakepit_worker_restarts_total", "snakepit_call_duration_seconds", "snakepit_call_latency_max_seconds",
	} {
		if !names[n] {
			t.Errorf("metric %s missing", n)
		}
	}
	problems, err := promtest.GatherAndLint(reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint: %s: %s", p.Metric, p.Text)
	}
}

func TestMetricsRestartsAndInstanceLabel(t *testing.T) {
	app, f, reg := startMetricsApp(t, 1, "metrics-test")
	f.Workers()[0].Crash()
	testutil.Eventually(t, 10*time.Second, "the crashed worker restarted", func() bool {
		s := app.Stats().Pool
		return s.Restarts == 1 && s.Workers.Idle == 1
	})
	const want = `
# HELP snakepit_worker_restarts_total Worker lifetimes that ended with an error (crash, kill, failed start); planned recycles are not counted here.
# TYPE snakepit_worker_restarts_total counter
snakepit_worker_restarts_total{instance="metrics-test",pool="default"} 1
# HELP snakepit_worker_restarts_by_reason_total Worker lifetimes that ended with an error, by reason.
# TYPE snakepit_worker_restarts_by_reason_total counter
snakepit_worker_restarts_by_reason_total{instance="metrics-test",pool="default",reason="agent_lost"} 0
snakepit_worker_restarts_by_reason_total{instance="metrics-test",pool="default",reason="crashed"} 1
snakepit_worker_restarts_by_reason_total{instance="metrics-test",pool="default",reason="health"} 0
snakepit_worker_restarts_by_reason_total{instance="metrics-test",pool="default",reason="hung"} 0
snakepit_worker_restarts_by_reason_total{instance="metrics-test",pool="default",reason="killed"} 0
snakepit_worker_restarts_by_reason_total{instance="metrics-test",pool="default",reason="other"} 0
snakepit_worker_restarts_by_reason_total{instance="metrics-test",pool="default",reason="startup"} 0
# HELP snakepit_workers Workers by state.
# TYPE snakepit_workers gauge
snakepit_workers{instance="metrics-test",pool="default",state="busy"} 0
snakepit_workers{instance="metrics-test",pool="default",state="draining"} 0
snakepit_workers{instance="metrics-test",pool="default",state="exited"} 0
snakepit_workers{instance="metrics-test",pool="default",state="failed"} 0
snakepit_workers{instance="metrics-test",pool="default",state="idle"} 1
snakepit_workers{instance="metrics-test",pool="default",state="starting"} 0
`
	if err := promtest.GatherAndCompare(reg, strings.NewReader(want),
		"snakepit_worker_restarts_total", "snakepit_worker_restarts_by_reason_total", "snakepit_workers"); err != nil {
		t.Fatal(err)
	}
	// Before any call the histogram is empty, not absent.
	if n := promtest.CollectAndCount(NewCollector(app), "snakepit_call_duration_seconds"); n != 1 {
		t.Errorf("%d duration histograms before any call, want 1", n)
	}
}

func TestMetricsRegistrationErrorFailsNew(t *testing.T) {
	reg := prometheus.NewRegistry()
	cfg := func() Config {
		return Config{
			Workers:       1,
			WorkerFactory: &fake.Factory{},
			RegistryPath:  filepath.Join(t.TempDir(), "r.db"),
			Metrics:       reg,
			Logger:        testutil.Logger(),
		}
	}
	first := cfg()
	first.Instance = "first"
	if _, err := New(first); err != nil {
		t.Fatal(err)
	}
	_, err := New(first)
	var are prometheus.AlreadyRegisteredError
	if !errors.As(err, &are) {
		t.Fatalf("second App with the same Instance on one Registerer: New returned %v, want an AlreadyRegisteredError", err)
	}
	// Label names must agree across a Registerer: no Instance next to one.
	if _, err := New(cfg()); err == nil {
		t.Fatal("an App without Instance registered next to one with an Instance")
	}
	second := cfg()
	second.Instance = "second"
	if _, err := New(second); err != nil {
		t.Fatalf("a distinct Instance should register: %v", err)
	}
}
