package snakepit_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/snakepit-go/snakepit"
	"github.com/snakepit-go/snakepit/worker"
	"github.com/snakepit-go/snakepit/worker/fake"
)

func spanAttrs(s sdktrace.ReadOnlySpan) map[attribute.Key]attribute.Value {
	m := map[attribute.Key]attribute.Value{}
	for _, kv := range s.Attributes() {
		m[kv.Key] = kv.Value
	}
	return m
}

// tracedApp is a started App over fake workers whose spans go to the
// returned recorder.
func tracedApp(t *testing.T, workers int, opts ...fake.Option) (*snakepit.App, *tracetest.SpanRecorder, trace.Tracer) {
	t.Helper()
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	cfg := fakeConfig(t, &fake.Factory{Options: opts}, workers)
	cfg.TracerProvider = tp
	cfg.Instance = "spans"
	app, err := snakepit.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := app.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = app.Stop(context.Background()) })
	return app, rec, tp.Tracer("test")
}

// Issue 23 (5): one client span per call, the caller's span its parent and
// itself the parent Python sees in the call's traceparent.
func TestExecuteSpan(t *testing.T) {
	meta := func(_ context.Context, c *worker.Call) (*worker.Result, error) {
		b, err := json.Marshal(c.Metadata)
		return &worker.Result{JSON: b}, err
	}
	app, rec, tr := tracedApp(t, 1, fake.WithTool("meta", meta))
	ctx, parent := tr.Start(context.Background(), "caller")
	got, err := snakepit.Decode[map[string]string](app.Execute(ctx, "meta", nil))
	parent.End()
	if err != nil {
		t.Fatal(err)
	}
	var spans []sdktrace.ReadOnlySpan
	for _, s := range rec.Ended() {
		if s.Name() == "snakepit.Execute" {
			spans = append(spans, s)
		}
	}
	if len(spans) != 1 {
		t.Fatalf("%d snakepit.Execute spans, want 1", len(spans))
	}
	s := spans[0]
	if s.SpanKind() != trace.SpanKindClient || s.Parent().SpanID() != parent.SpanContext().SpanID() || s.SpanContext().TraceID() != parent.SpanContext().TraceID() {
		t.Errorf("span kind %s, parent %s: want a client span under the caller's %s", s.SpanKind(), s.Parent().SpanID(), parent.SpanContext().SpanID())
	}
	want := fmt.Sprintf("00-%s-%s-01", s.SpanContext().TraceID(), s.SpanContext().SpanID())
	if got["traceparent"] != want {
		t.Errorf("the worker got traceparent %q; want the snakepit span as parent: %q", got["traceparent"], want)
	}
	a := spanAttrs(s)
	if a["snakepit.tool"].AsString() != "meta" || a["snakepit.pool"].AsString() != snakepit.DefaultPool || a["snakepit.worker"].AsString() == "" ||
		a["snakepit.attempt"].AsInt64() != 0 || a["snakepit.outcome"].AsString() != string(snakepit.OutcomeSuccess) || a["snakepit.request_id"].AsString() == "" {
		t.Errorf("attributes %v", a)
	}
	if w, ok := a["snakepit.queue_wait"]; !ok || w.AsFloat64() < 0 {
		t.Errorf("queue wait %v", w)
	}
	if s.Status().Code == codes.Error {
		t.Errorf("status %v for a successful call", s.Status())
	}
}

func TestExecuteSpanOnFailureAndRetry(t *testing.T) {
	var n atomic.Int32
	flaky := func(context.Context, *worker.Call) (*worker.Result, error) {
		if n.Add(1) == 1 {
			return nil, fmt.Errorf("gone before it ran: %w", worker.ErrWorkerUnavailable)
		}
		return &worker.Result{JSON: []byte(`1`)}, nil
	}
	boom := func(context.Context, *worker.Call) (*worker.Result, error) {
		return nil, &worker.ToolError{Tool: "boom", Type: "ValueError", Message: "no"}
	}
	app, rec, _ := tracedApp(t, 2, fake.WithTool("flaky", flaky), fake.WithTool("boom", boom))
	ctx := context.Background()
	if _, err := app.Execute(ctx, "flaky", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := app.Execute(ctx, "boom", nil); err == nil {
		t.Fatal("boom succeeded")
	}
	if _, err := app.Execute(ctx, "no-such-tool", nil); err == nil {
		t.Fatal("an unknown tool succeeded")
	}
	byTool := map[string]sdktrace.ReadOnlySpan{}
	for _, s := range rec.Ended() {
		byTool[spanAttrs(s)["snakepit.tool"].AsString()] = s
	}
	f := byTool["flaky"]
	if f == nil || spanAttrs(f)["snakepit.attempt"].AsInt64() != 1 || len(f.Events()) != 2 || f.Status().Code == codes.Error {
		t.Fatalf("retried call's span: %+v", f)
	}
	if w0, w1 := f.Events()[0].Attributes, f.Events()[1].Attributes; fmt.Sprint(w0) == fmt.Sprint(w1) {
		t.Errorf("both attempts report the same worker: %v", w0)
	}
	for _, tool := range []string{"boom", "no-such-tool"} {
		s := byTool[tool]
		if s == nil || s.Status().Code != codes.Error || s.Status().Description == "" || spanAttrs(s)["snakepit.outcome"].AsString() == string(snakepit.OutcomeSuccess) {
			t.Errorf("%s: span %+v; want status error and its outcome", tool, s)
		}
	}
	if got := spanAttrs(byTool["boom"])["snakepit.outcome"].AsString(); got != string(snakepit.OutcomeToolError) {
		t.Errorf("boom's outcome %q, want %q", got, snakepit.OutcomeToolError)
	}
}

func TestExecuteStreamSpan(t *testing.T) {
	count := func(_ context.Context, c *worker.Call, yield func(worker.Chunk) error) error {
		for i := range 3 {
			if err := yield(worker.Chunk{JSON: []byte(fmt.Sprint(i))}); err != nil {
				return err
			}
		}
		return errors.New("stream broke")
	}
	app, rec, _ := tracedApp(t, 1, fake.WithStreamTool("count", count))
	seq := app.ExecuteStream(context.Background(), "count", nil)
	if n := len(rec.Ended()); n != 0 {
		t.Fatalf("%d spans before the stream was read", n)
	}
	var last error
	for _, err := range seq {
		last = err
	}
	if last == nil {
		t.Fatal("the stream's failure was not yielded")
	}
	ended := rec.Ended()
	if len(ended) != 1 || ended[0].Name() != "snakepit.ExecuteStream" || ended[0].Status().Code != codes.Error ||
		spanAttrs(ended[0])["snakepit.tool"].AsString() != "count" || spanAttrs(ended[0])["snakepit.worker"].AsString() == "" {
		t.Fatalf("stream spans: %+v", ended)
	}
}

// BenchmarkExecuteTracing: the span's cost per call over a fake worker,
// without an SDK (the global no-op provider) and with a recording one.
func BenchmarkExecuteTracing(b *testing.B) {
	echo := func(context.Context, *worker.Call) (*worker.Result, error) {
		return &worker.Result{JSON: []byte(`1`)}, nil
	}
	for _, recording := range []bool{false, true} {
		name := "noop"
		if recording {
			name = "recording"
		}
		b.Run(name, func(b *testing.B) {
			cfg := snakepit.Config{Workers: 1, WorkerFactory: &fake.Factory{Options: []fake.Option{fake.WithTool("echo", echo)}},
				RegistryPath: b.TempDir() + "/r.db", Logger: slog.New(slog.DiscardHandler)}
			if recording {
				// Recording spans, exported nowhere: the span's own cost.
				tp := sdktrace.NewTracerProvider()
				defer func() { _ = tp.Shutdown(context.Background()) }()
				cfg.TracerProvider = tp
			}
			app, err := snakepit.New(cfg)
			if err != nil {
				b.Fatal(err)
			}
			ctx := context.Background()
			if err := app.Start(ctx); err != nil {
				b.Fatal(err)
			}
			defer func() { _, _ = app.Stop(ctx) }()
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				if _, err := app.Execute(ctx, "echo", nil); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// Without Config.TracerProvider the global provider is used, also when the
// application installs it after New.
func TestExecuteSpanFromTheGlobalProvider(t *testing.T) {
	app, err := snakepit.New(fakeConfig(t, &fake.Factory{Options: []fake.Option{fake.WithTool("echo", fake.Echo)}}, 1))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := app.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer func() { _, _ = app.Stop(ctx) }()
	if _, err := app.Execute(ctx, "echo", nil); err != nil {
		t.Fatal(err)
	}
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	defer func() { _ = tp.Shutdown(ctx) }()
	otel.SetTracerProvider(tp)
	defer otel.SetTracerProvider(noop.NewTracerProvider())
	if _, err := app.Execute(ctx, "echo", nil); err != nil {
		t.Fatal(err)
	}
	if ended := rec.Ended(); len(ended) != 1 || ended[0].Name() != "snakepit.Execute" {
		t.Fatalf("spans after otel.SetTracerProvider: %v", ended)
	}
}
