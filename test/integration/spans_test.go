package integration

import (
	"context"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/snakepit-go/snakepit"
)

// Issue 23 (5): the Python tool runs under the App's client span: its
// traceparent names that span, in the caller's trace.
func TestPythonSeesTheClientSpanAsParent(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	defer func() { _ = tp.Shutdown(context.Background()) }()
	app := newApp(t, snakepit.Config{Workers: 1, TracerProvider: tp})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ctx, parent := tp.Tracer("test").Start(ctx, "caller")
	got, err := snakepit.Decode[map[string]string](app.Execute(ctx, "trace_context", nil))
	parent.End()
	if err != nil {
		t.Fatal(err)
	}
	var call sdktrace.ReadOnlySpan
	for _, s := range rec.Ended() {
		if s.Name() == "snakepit.Execute" {
			call = s
		}
	}
	if call == nil {
		t.Fatal("no snakepit.Execute span")
	}
	if got["trace_id"] != parent.SpanContext().TraceID().String() || got["span_id"] != call.SpanContext().SpanID().String() {
		t.Fatalf("Python saw trace %s span %s; want the caller's trace %s and the snakepit span %s as parent",
			got["trace_id"], got["span_id"], parent.SpanContext().TraceID(), call.SpanContext().SpanID())
	}
	if call.Parent().SpanID() != parent.SpanContext().SpanID() {
		t.Fatalf("the snakepit span's parent is %s, want the caller's %s", call.Parent().SpanID(), parent.SpanContext().SpanID())
	}
}
