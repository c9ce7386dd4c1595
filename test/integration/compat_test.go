package integration

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/snakepit-go/snakepit"
)

// Adapters written the way Snakepit (the Elixir project) documents them
// (testdata/py/snakepit_style.py, snakepit_threaded.py), run from Go through
// real workers: docs/MIGRATING.md.

// lineLog keeps the message of every record logged (worker stderr lines
// arrive as records, "[python logger] message"), for tests that look for a
// line.
type lineLog struct {
	mu    sync.Mutex
	lines []string
}

func (l *lineLog) Enabled(context.Context, slog.Level) bool { return true }
func (l *lineLog) Handle(_ context.Context, r slog.Record) error {
	line := r.Message
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == "logger" { // a worker's record: its Python logger
			line = "[" + a.Value.String() + "] " + line
		}
		return true
	})
	l.mu.Lock()
	l.lines = append(l.lines, line)
	l.mu.Unlock()
	return nil
}
func (l *lineLog) WithAttrs([]slog.Attr) slog.Handler { return l }
func (l *lineLog) WithGroup(string) slog.Handler      { return l }

func (l *lineLog) find(parts ...string) string {
	l.mu.Lock()
	defer l.mu.Unlock()
next:
	for _, line := range l.lines {
		for _, p := range parts {
			if !strings.Contains(line, p) {
				continue next
			}
		}
		return line
	}
	return ""
}

func TestSnakepitStyleAdapter(t *testing.T) {
	logs := &lineLog{}
	app := newApp(t, snakepit.Config{Workers: 1, Adapter: "snakepit_style.LifecycleAdapter", PythonPath: healingPath(t),
		Logger: slog.New(logs)})
	ctx := ctxT(t)
	if err := app.RegisterHostTool("upper", func(_ context.Context, args json.RawMessage) (any, error) {
		var a struct{ Text string }
		if err := json.Unmarshal(args, &a); err != nil {
			return nil, err
		}
		return strings.ToUpper(a.Text), nil
	}, snakepit.ToolSpec{Name: "upper", Description: "upper-case text"}); err != nil {
		t.Fatal(err)
	}

	// Per-request lifecycle: a new, initialized instance per call; the
	// correlation id is the request id.
	first, err := snakepit.Decode[map[string]any](app.Execute(ctx, "whoami", nil, snakepit.WithSession("s1"), snakepit.WithRequestID("req-compat-1")))
	if err != nil {
		t.Fatal(err)
	}
	second, err := snakepit.Decode[map[string]any](app.Execute(ctx, "whoami", nil, snakepit.WithSession("s1")))
	if err != nil {
		t.Fatal(err)
	}
	if first["initialized"] != true || first["session_id"] != "s1" || first["correlation_id"] != "req-compat-1" || first["instance"] == second["instance"] {
		t.Fatalf("lifecycle: first %v, second %v", first, second)
	}
	events, err := snakepit.Decode[[]string](app.Execute(ctx, "events", nil, snakepit.WithSession("s1")))
	if err != nil {
		t.Fatal(err)
	}
	want := "set_session_context initialize execute_tool:whoami cleanup set_session_context initialize execute_tool:whoami cleanup set_session_context initialize execute_tool:events"
	if got := strings.Join(events, " "); got != want {
		t.Fatalf("events:\n got %s\nwant %s", got, want)
	}

	// execute_tool dispatch: declared tools, and a name it never declared.
	if v, err := snakepit.Decode[float64](app.Execute(ctx, "add", map[string]any{"a": 1, "b": 2.5})); err != nil || v != 3.5 {
		t.Fatalf("add: %v %v", v, err)
	}
	if v, err := snakepit.Decode[map[string]any](app.Execute(ctx, "undeclared_echo", map[string]any{"x": 1})); err != nil || v["echo"].(map[string]any)["x"] != 1.0 {
		t.Fatalf("undeclared_echo: %v %v", v, err)
	}
	var te *snakepit.ToolError
	if _, err := app.Execute(ctx, "boom", nil); !errors.As(err, &te) || te.Type != "ValueError" {
		t.Fatalf("boom: %v", err)
	}

	// Streaming, Snakepit's way: the caller chooses.
	stream := func(tool string, args any, opts ...snakepit.CallOption) []string {
		var out []string
		for c, err := range app.ExecuteStream(ctx, tool, args, opts...) {
			if err != nil {
				t.Fatalf("stream %s: %v", tool, err)
			}
			out = append(out, string(c.JSON))
		}
		return out
	}
	if got := strings.Join(stream("countdown", map[string]any{"n": 3}), ","); got != `{"n":3},{"n":2},{"n":1}` {
		t.Fatalf("countdown: %s", got)
	}
	if got := strings.Join(stream("stream_count", map[string]any{"n": 2}, snakepit.WithSession("s2")), ","); got != `{"i":0,"session":"s2"},{"i":1,"session":"s2"}` {
		t.Fatalf("stream_count (StreamChunk items): %s", got)
	}
	if got := strings.Join(stream("add", map[string]any{"a": 1, "b": 1}), ","); got != "2" {
		t.Fatalf("unary tool as a stream: %s", got)
	}
	if _, err := app.Execute(ctx, "countdown", map[string]any{"n": 1}); !errors.As(err, &te) || te.Type != "StreamingToolCalledUnary" {
		t.Fatalf("generator called unary: %v", err)
	}

	// Graceful serialization and binary parameters.
	weird, err := snakepit.Decode[map[string]any](app.Execute(ctx, "weird", nil))
	if err != nil {
		t.Fatal(err)
	}
	if m, _ := weird["opaque"].(map[string]any); m["__ffi_unserializable__"] != true || m["__type__"] != "snakepit_style.Opaque" {
		t.Fatalf("marker: %v", weird)
	}
	if p, _ := weird["point"].(map[string]any); p["x"] != 1.0 {
		t.Fatalf("to_dict conversion: %v", weird)
	}
	bin, err := snakepit.Decode[map[string]any](app.Execute(ctx, "binary_len", nil, snakepit.WithBinary("data", []byte{7, 1, 2})))
	if err != nil || bin["len"] != 3.0 || bin["type"] != "bytes" || bin["first"] != 7.0 {
		t.Fatalf("binary_len: %v %v", bin, err)
	}

	// call_elixir_tool reaches host tools.
	host, err := snakepit.Decode[map[string]any](app.Execute(ctx, "call_host", map[string]any{"text": "hi"}))
	if err != nil || host["listed"] != true || host["kwargs"] != "HI" || host["dict"] != "HI!" || host["proxy"] != "PROXY" {
		t.Fatalf("call_host: %v %v", host, err)
	}
	if v, err := snakepit.Decode[string](app.Execute(ctx, "call_missing", nil)); err != nil || !strings.HasPrefix(v, "ValueError: Elixir tool 'no_such_tool' not found") {
		t.Fatalf("call_missing: %q %v", v, err)
	}

	// telemetry.emit/span: log records the host's Logger receives.
	cid, err := snakepit.Decode[string](app.Execute(ctx, "emit_telemetry", map[string]any{"label": "L1"}, snakepit.WithRequestID("req-tel")))
	if err != nil || cid != "req-tel" {
		t.Fatalf("emit_telemetry: %q %v", cid, err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for logs.find(`"event":"compat.test.span.stop"`, `"correlation_id":"req-tel"`) == "" {
		if time.Now().After(deadline) {
			t.Fatalf("no telemetry line for the span's stop event")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if line := logs.find("[snakepit_bridge.telemetry] telemetry ", `"event":"compat.test.event"`, `"measurements":{"value":7}`, `"label":"L1"`); line == "" {
		t.Fatalf("no telemetry line for the event")
	}
}

func TestSnakepitStyleReadmeAndTemplateShapes(t *testing.T) {
	app := newApp(t, snakepit.Config{Workers: 1, Adapter: "snakepit_style.ReadmeAdapter", PythonPath: healingPath(t)})
	ctx := ctxT(t)
	v, err := snakepit.Decode[map[string]any](app.Execute(ctx, "predict", map[string]any{"input_data": map[string]any{"text": "go"}}))
	if err != nil || v["prediction"] != "GO" {
		t.Fatalf("predict: %v %v", v, err)
	}
	n := 0
	for _, err := range app.ExecuteStream(ctx, "batch_process", map[string]any{"items": []string{"a", "b", "c"}}) {
		if err != nil {
			t.Fatal(err)
		}
		n++
	}
	if n != 3 {
		t.Fatalf("batch_process: %d chunks", n)
	}

	tmpl := newApp(t, snakepit.Config{Workers: 1, Adapter: "snakepit_style.AsyncTemplateAdapter", PythonPath: healingPath(t)})
	h, err := snakepit.Decode[map[string]any](tmpl.Execute(ctx, "hello", map[string]any{"name": "go"}))
	if err != nil || h["hello"] != "go" || h["initialized"] != true {
		t.Fatalf("hello: %v %v", h, err)
	}
	ticks := 0
	for _, err := range tmpl.ExecuteStream(ctx, "ticks", map[string]any{"n": 4}) {
		if err != nil {
			t.Fatal(err)
		}
		ticks++
	}
	if ticks != 4 {
		t.Fatalf("ticks: %d", ticks)
	}
}

func TestSnakepitStyleThreadSafety(t *testing.T) {
	ctx := ctxT(t)
	run := func(adapter string, calls, want int) float64 {
		app := newApp(t, snakepit.Config{Workers: 1, Capacity: 4, Adapter: adapter, PythonPath: healingPath(t)})
		var wg sync.WaitGroup
		maxes := make([]float64, calls)
		errs := make([]error, calls)
		for i := range calls {
			wg.Add(1)
			go func() {
				defer wg.Done()
				v, err := snakepit.Decode[map[string]any](app.Execute(ctx, "overlap", map[string]any{"want": want, "timeout_ms": 1500}))
				maxes[i], errs[i] = v["max"].(float64), err
			}()
		}
		wg.Wait()
		peak := 0.0
		for i := range calls {
			if errs[i] != nil {
				t.Fatalf("%s: %v", adapter, errs[i])
			}
			peak = max(peak, maxes[i])
		}
		return peak
	}
	if peak := run("snakepit_threaded.ThreadedAdapter", 3, 3); peak < 3 {
		t.Fatalf("ThreadSafeAdapter with Capacity 4: at most %v calls ran at once, want 3", peak)
	}
	if peak := run("snakepit_threaded.SerialAdapter", 2, 2); peak != 1 {
		t.Fatalf("adapter without __thread_safe__: %v calls ran at once, want 1", peak)
	}
}

func TestForeignSnakepitBridgeRefused(t *testing.T) {
	dir := t.TempDir()
	pkg := filepath.Join(dir, "snakepit_bridge")
	if err := os.MkdirAll(pkg, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"__init__.py", "base_adapter.py"} {
		if err := os.WriteFile(filepath.Join(pkg, f), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	app := buildApp(t, snakepit.Config{Workers: 1, Adapter: "snakepit_style.LifecycleAdapter",
		PythonPath: append(healingPath(t), dir), StartupTimeout: 30 * time.Second})
	ctx := ctxT(t)
	err := app.Start(ctx)
	if err == nil {
		stopApp(t, app)
		t.Fatal("started with a foreign snakepit_bridge on the path")
	}
	_, _ = app.Stop(ctx)
	var se *snakepit.StartupError
	if !errors.As(err, &se) || se.Class().String() != "adapter" || !strings.Contains(err.Error(), "another snakepit_bridge package, at "+pkg) ||
		!strings.Contains(err.Error(), "status 3") {
		t.Fatalf("want an adapter StartupError (exit 3) naming %s, got %v", pkg, err)
	}
}
