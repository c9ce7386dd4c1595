package snakepit_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/thejerf/suture/v4"
	"go.opentelemetry.io/otel/trace"

	"github.com/snakepit-go/snakepit"
	"github.com/snakepit-go/snakepit/internal/testutil"
	"github.com/snakepit-go/snakepit/worker"
	"github.com/snakepit-go/snakepit/worker/fake"
)

func TestMain(m *testing.M) { testutil.Main(m) }

func fakeConfig(t *testing.T, f *fake.Factory, workers int) snakepit.Config {
	return snakepit.Config{
		Workers:       workers,
		WorkerFactory: f,
		RegistryPath:  filepath.Join(t.TempDir(), "r.db"),
		Logger:        testutil.Logger(),
	}
}

func TestConfigRejectsBadValues(t *testing.T) {
	for name, cfg := range map[string]snakepit.Config{
		"negative workers":  {Workers: -1},
		"min ready > count": {Workers: 2, MinReady: 3},
		"negative capacity": {Capacity: -2},
		"negative grace":    {StopGrace: -time.Second},
		"negative queue":    {MaxQueue: -1},
		"bad adapter":       {Adapter: "not a class path"},
		"negative rss":      {RecycleAboveRSS: -1},
		"tiny rss":          {RecycleAboveRSS: 1 << 20},
		"negative mem poll": {MemoryCheckInterval: -time.Second},
		"negative affinity": {SessionAffinityTTL: -time.Second},
	} {
		if name != "bad adapter" {
			cfg.WorkerFactory = &fake.Factory{}
		}
		if _, err := snakepit.New(cfg); !errors.Is(err, snakepit.ErrInvalidConfig) {
			t.Errorf("%s: New(%+v) = %v; want ErrInvalidConfig", name, cfg, err)
		}
	}
}

func TestCustomWorkerTypeThroughConfig(t *testing.T) {
	f := &fake.Factory{Options: []fake.Option{fake.WithTool("echo", fake.Echo)}}
	app, err := snakepit.New(fakeConfig(t, f, 3))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := app.Reload(ctx); !errors.Is(err, snakepit.ErrNotStarted) {
		t.Fatalf("Reload before Start: %v, want ErrNotStarted", err)
	}
	if err := app.Start(ctx); err != nil {
		t.Fatal(err)
	}
	res, err := app.Execute(ctx, "echo", map[string]any{"x": 1})
	if err != nil || string(res.JSON) != `{"x":1}` {
		t.Fatalf("echo = %v, %v", res, err)
	}
	if _, err := app.Execute(ctx, "nope", nil); !errors.Is(err, snakepit.ErrUnknownTool) {
		t.Fatalf("unknown tool: %v", err)
	}
	if _, err := app.Execute(ctx, "echo", nil, snakepit.WithAffinity(snakepit.Affinity(7))); err == nil {
		t.Fatal("bad affinity mode accepted")
	}
	if _, err := app.Execute(ctx, "echo", nil, snakepit.WithQueueTimeout(-time.Second)); !errors.Is(err, snakepit.ErrInvalidConfig) {
		t.Fatalf("negative queue timeout: %v", err)
	}
	if n := len(f.Workers()); n != 3 {
		t.Fatalf("factory built %d workers, want 3", n)
	}
	if _, err := app.Reload(ctx); !errors.Is(err, snakepit.ErrReloadUnsupported) {
		t.Fatalf("Reload with a worker type that cannot replace its process: %v, want ErrReloadUnsupported", err)
	}
	rep, err := app.Stop(ctx)
	if err != nil {
		t.Fatal(err)
	}
	order := []string{}
	for _, c := range rep.Children {
		order = append(order, c.Child)
	}
	want := []string{"workers", "bridge", "cleanup", "registry"}
	if len(order) != len(want) {
		t.Fatalf("stop order %v, want %v", order, want)
	}
	for i := range want {
		if order[i] != want[i] {
			t.Fatalf("stop order %v, want %v", order, want)
		}
	}
	for _, w := range f.Workers() {
		if w.IsReady() {
			t.Fatalf("worker %s still ready after Stop", w.ID())
		}
	}
	if _, err := app.Reload(ctx); !errors.Is(err, snakepit.ErrPoolStopping) {
		t.Fatalf("Reload after Stop: %v, want ErrPoolStopping", err)
	}
}

func TestAppEmbedsInAUsersSupervisionTree(t *testing.T) {
	f := &fake.Factory{Options: []fake.Option{fake.WithTool("echo", fake.Echo)}}
	app, err := snakepit.New(fakeConfig(t, f, 2))
	if err != nil {
		t.Fatal(err)
	}
	parent := suture.NewSimple("users-service")
	parent.Add(app)
	ctx, cancel := context.WithCancel(context.Background())
	done := parent.ServeBackground(ctx)
	wctx, wcancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer wcancel()
	if err := app.WaitReady(wctx); err != nil {
		t.Fatal(err)
	}
	if _, err := app.Execute(wctx, "echo", nil); err != nil {
		t.Fatal(err)
	}
	cancel()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("parent supervisor did not stop")
	}
	for _, w := range f.Workers() {
		if w.IsReady() {
			t.Fatalf("worker %s still ready after the parent stopped", w.ID())
		}
	}
}

func TestStartFailsWhenNoWorkerCanStart(t *testing.T) {
	f := &fake.Factory{Options: []fake.Option{fake.WithFailStart(errors.New("ImportError: nope"), 0)}}
	app, err := snakepit.New(fakeConfig(t, f, 2))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	err = app.Start(ctx)
	if err == nil || !errors.Is(err, snakepit.ErrStartup) {
		t.Fatalf("want a startup error, got %v", err)
	}
}

func TestCallerTraceContextReachesTheWorker(t *testing.T) {
	meta := func(_ context.Context, c *worker.Call) (*worker.Result, error) {
		b, err := json.Marshal(c.Metadata)
		return &worker.Result{JSON: b}, err
	}
	f := &fake.Factory{Options: []fake.Option{fake.WithTool("meta", meta)}}
	app, err := snakepit.New(fakeConfig(t, f, 1))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := app.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer app.Stop(ctx)

	ts, err := trace.ParseTraceState("vendor=1")
	if err != nil {
		t.Fatal(err)
	}
	sc := trace.NewSpanContext(trace.SpanContextConfig{
		TraceID:    trace.TraceID{0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6, 0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e, 0x47, 0x36},
		SpanID:     trace.SpanID{0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7},
		TraceFlags: trace.FlagsSampled,
		TraceState: ts,
		Remote:     true,
	})
	got, err := snakepit.Decode[map[string]string](app.Execute(trace.ContextWithRemoteSpanContext(ctx, sc), "meta", nil))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "tracestate": "vendor=1"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("metadata = %v; want %v", got, want)
	}
	if got, err := snakepit.Decode[map[string]string](app.Execute(ctx, "meta", nil)); err != nil || len(got) != 0 {
		t.Fatalf("without a span: %v, %v; want no metadata", got, err)
	}
}
