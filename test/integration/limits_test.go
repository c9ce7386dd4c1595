package integration

import (
	"context"
	"errors"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/snakepit-go/snakepit"
	"github.com/snakepit-go/snakepit/internal/testutil"
)

// The showcase adapter declares @tool(max_concurrency=1) on exclusive and
// @tool(timeout=0.5) on bounded_sleep; the host enforces both.
func TestToolLimitsDeclaredInPythonAreEnforcedAcrossThePool(t *testing.T) {
	app := newApp(t, snakepit.Config{Workers: 3, Capacity: 2})
	specs := map[string]snakepit.ToolSpec{}
	for _, s := range app.Tools() {
		specs[s.Name] = s
	}
	if s := specs["exclusive"]; s.MaxConcurrency != 1 {
		t.Fatalf("exclusive spec %+v; want MaxConcurrency 1 from @tool(max_concurrency=1)", s)
	}
	if s := specs["bounded_sleep"]; s.Timeout != 500*time.Millisecond {
		t.Fatalf("bounded_sleep spec %+v; want Timeout 500ms from @tool(timeout=0.5)", s)
	}

	// 6 slots in the pool, one for the tool: the calls' intervals, measured
	// inside Python, never overlap.
	type span struct{ Start, End float64 }
	var (
		mu    sync.Mutex
		spans []span
		wg    sync.WaitGroup
	)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s, err := snakepit.Decode[span](app.Execute(ctx, "exclusive", map[string]any{"ms": 40}))
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			spans = append(spans, s)
			mu.Unlock()
		}()
	}
	wg.Wait()
	if len(spans) != 6 {
		t.Fatalf("%d of 6 calls succeeded", len(spans))
	}
	sort.Slice(spans, func(i, j int) bool { return spans[i].Start < spans[j].Start })
	for i := 1; i < len(spans); i++ {
		if spans[i].Start < spans[i-1].End {
			t.Fatalf("calls %d and %d of a max_concurrency=1 tool overlapped: %+v", i-1, i, spans)
		}
	}

	// The declared timeout is the deadline of a call that has none...
	_, err := app.Execute(context.Background(), "bounded_sleep", map[string]any{"ms": 20000})
	var te *snakepit.ToolTimeoutError
	if !errors.As(err, &te) || !errors.Is(err, context.DeadlineExceeded) || te.Timeout != 500*time.Millisecond {
		t.Fatalf("bounded_sleep without a deadline: %v; want a *ToolTimeoutError of 500ms", err)
	}
	// ... and the caller's own deadline wins over it.
	long, cancelLong := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancelLong()
	if ms, err := snakepit.Decode[int](app.Execute(long, "bounded_sleep", map[string]any{"ms": 800})); err != nil || ms != 800 {
		t.Fatalf("bounded_sleep with the caller's 20 s deadline: %v, %v", ms, err)
	}
}

func TestCallerTraceContextReachesPythonAndItsLogs(t *testing.T) {
	var logs testutil.Buffer
	app := newApp(t, snakepit.Config{Workers: 1, Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	ts, err := trace.ParseTraceState("vendor=abc")
	if err != nil {
		t.Fatal(err)
	}
	tid, _ := trace.TraceIDFromHex("4bf92f3577b34da6a3ce929d0e0e4736")
	sid, _ := trace.SpanIDFromHex("00f067aa0ba902b7")
	sc := trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: sid, TraceFlags: trace.FlagsSampled, TraceState: ts, Remote: true})
	ctx, cancel := context.WithTimeout(trace.ContextWithRemoteSpanContext(context.Background(), sc), 20*time.Second)
	defer cancel()

	got, err := snakepit.Decode[map[string]string](app.Execute(ctx, "trace_context", nil))
	if err != nil {
		t.Fatal(err)
	}
	if got["traceparent"] != "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01" || got["tracestate"] != "vendor=abc" ||
		got["trace_id"] != tid.String() || got["span_id"] != sid.String() {
		t.Fatalf("Python saw %v", got)
	}
	testutil.Eventually(t, 10*time.Second, "the tool's log line carrying the trace id", func() bool {
		for _, line := range strings.Split(logs.String(), "\n") {
			if strings.Contains(line, "trace_context called") && strings.Contains(line, "trace_id="+tid.String()) && strings.Contains(line, "span_id="+sid.String()) {
				return true
			}
		}
		return false
	})

	// Without a span the tool sees none, and nothing is made up.
	got, err = snakepit.Decode[map[string]string](app.Execute(context.Background(), "trace_context", nil))
	if err != nil || got["traceparent"] != "" || got["trace_id"] != "" {
		t.Fatalf("without a span: %v, %v", got, err)
	}
}
