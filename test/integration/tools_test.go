package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/snakepit-go/snakepit"
	"github.com/snakepit-go/snakepit/internal/proc"
	"github.com/snakepit-go/snakepit/internal/testutil"
)

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestEveryToolKindOnFourWorkers(t *testing.T) {
	app := newApp(t, snakepit.Config{Workers: 4})
	ctx := ctxT(t)

	if v, err := snakepit.Decode[string](app.Execute(ctx, "ping", nil)); err != nil || v != "pong" {
		t.Fatalf("ping = %q, %v", v, err)
	}
	if v, err := snakepit.Decode[float64](app.Execute(ctx, "add", map[string]any{"a": 2, "b": 3.5})); err != nil || v != 5.5 {
		t.Fatalf("add = %v, %v", v, err)
	}
	echo, err := snakepit.Decode[map[string]any](app.Execute(ctx, "echo", map[string]any{"x": 1, "nested": map[string]any{"y": []any{"a", true}}}))
	if err != nil || echo["x"] != 1.0 || echo["nested"].(map[string]any)["y"].([]any)[1] != true {
		t.Fatalf("echo = %v, %v", echo, err)
	}
	if v, err := snakepit.Decode[float64](app.Execute(ctx, "sleep", map[string]any{"ms": 10})); err != nil || v != 10 {
		t.Fatalf("sleep = %v, %v", v, err)
	}
	res, err := app.Execute(ctx, "none", nil)
	if err != nil || string(res.JSON) != "null" {
		t.Fatalf("none = %+v, %v", res, err)
	}
	blob := []byte{0, 1, 2, 255, 'x'}
	res, err = app.Execute(ctx, "bytes_echo", nil, snakepit.WithBinary("data", blob))
	if err != nil || !bytes.Equal(res.Binary, blob) {
		t.Fatalf("bytes_echo = %+v, %v", res, err)
	}

	// Concurrent calls spread over all four workers.
	var mu sync.Mutex
	pids := map[float64]bool{}
	var wg sync.WaitGroup
	for i := 0; i < 4; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; j < 10; j++ {
				// sleep keeps each worker busy so the next call lands elsewhere
				if _, err := app.Execute(ctx, "sleep", map[string]any{"ms": 30}); err != nil {
					t.Errorf("sleep: %v", err)
					return
				}
				info, err := snakepit.Decode[map[string]any](app.Execute(ctx, "worker_info", nil))
				if err != nil {
					t.Errorf("worker_info: %v", err)
					return
				}
				mu.Lock()
				pids[info["pid"].(float64)] = true
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if len(pids) < 2 {
		t.Fatalf("concurrent calls reached %d distinct worker processes, want several", len(pids))
	}

	var chunks []int
	for c, err := range app.ExecuteStream(ctx, "stream_count", map[string]any{"n": 6}) {
		if err != nil {
			t.Fatalf("stream_count: %v", err)
		}
		var v struct{ I int }
		if err := json.Unmarshal(c.JSON, &v); err != nil {
			t.Fatal(err)
		}
		chunks = append(chunks, v.I)
	}
	for i, v := range chunks {
		if v != i+1 {
			t.Fatalf("chunks out of order: %v", chunks)
		}
	}
	if len(chunks) != 6 {
		t.Fatalf("got %d chunks, want 6", len(chunks))
	}

	names := map[string]bool{}
	for _, ts := range app.Tools() {
		names[ts.Name] = true
	}
	for _, want := range []string{"ping", "echo", "add", "sleep", "fail", "crash", "hang", "stream_count", "worker_info", "spawn_child"} {
		if !names[want] {
			t.Errorf("tool %q missing from App.Tools()", want)
		}
	}
}

func TestPythonExceptionArrivesAsTypedError(t *testing.T) {
	app := newApp(t, snakepit.Config{Workers: 1})
	_, err := app.Execute(ctxT(t), "fail", map[string]any{"message": "it broke"})
	var te *snakepit.ToolError
	if !errors.As(err, &te) {
		t.Fatalf("want *ToolError, got %T %v", err, err)
	}
	if !errors.Is(err, snakepit.ErrToolFailed) || te.Type != "ValueError" || te.Message != "it broke" {
		t.Fatalf("ToolError = %+v", te)
	}
	if !strings.Contains(te.Traceback, "ValueError") || !strings.Contains(te.Traceback, "Traceback") {
		t.Fatalf("traceback does not look like Python's: %q", te.Traceback)
	}
	// The worker survives its tool's exception.
	if _, err := app.Execute(ctxT(t), "ping", nil); err != nil {
		t.Fatalf("ping after exception: %v", err)
	}
}

func workerPID(t *testing.T, app *snakepit.App) int {
	t.Helper()
	info, err := snakepit.Decode[map[string]any](app.Execute(ctxT(t), "worker_info", nil))
	if err != nil {
		t.Fatalf("worker_info: %v", err)
	}
	return int(info["pid"].(float64))
}

func TestCrashFailsTheCallAndTheWorkerComesBackWithANewPID(t *testing.T) {
	app := newApp(t, snakepit.Config{Workers: 1})
	pid1 := workerPID(t, app)
	_, err := app.Execute(ctxT(t), "crash", map[string]any{"code": 7})
	if !errors.Is(err, snakepit.ErrWorkerCrashed) {
		t.Fatalf("want ErrWorkerCrashed, got %v", err)
	}
	var ce *snakepit.CrashError
	if !errors.As(err, &ce) || ce.ExitCode != 7 || ce.PID != pid1 {
		t.Fatalf("CrashError = %+v, want exit code 7 of pid %d", ce, pid1)
	}
	var pid2 int
	testutil.Eventually(t, 20*time.Second, "worker restarted", func() bool {
		info, err := snakepit.Decode[map[string]any](app.Execute(ctxT(t), "worker_info", nil))
		if err != nil {
			return false
		}
		pid2 = int(info["pid"].(float64))
		return pid2 != pid1
	})
	if proc.Alive(pid1) {
		t.Fatalf("crashed worker %d still alive", pid1)
	}
	if app.Stats().Pool.Restarts < 1 {
		t.Fatalf("stats do not count the restart: %+v", app.Stats().Pool)
	}
}

func TestStopLeavesNoProcessIncludingGrandchildren(t *testing.T) {
	app := buildApp(t, snakepit.Config{Workers: 2})
	ctx := ctxT(t)
	if err := app.Start(ctx); err != nil {
		t.Fatal(err)
	}
	child, err := snakepit.Decode[map[string]any](app.Execute(ctx, "spawn_child", map[string]any{"seconds": 120}))
	if err != nil {
		stopApp(t, app)
		t.Fatalf("spawn_child: %v", err)
	}
	cpid := int(child["pid"].(float64))
	// The kernel publishes a new program's environ a moment after the
	// parent's Popen returns: poll rather than sample once.
	deadline := time.Now().Add(2 * time.Second)
	for !proc.CarriesRunID(cpid, app.RunID()) && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if !proc.CarriesRunID(cpid, app.RunID()) {
		stopApp(t, app)
		t.Fatalf("grandchild %d does not carry the run id", cpid)
	}
	if n := len(testutil.RunIDProcesses(t, app.RunID())); n != 3 {
		t.Errorf("want 2 workers + 1 grandchild carrying the run id, found %d", n)
	}
	stopApp(t, app)
	if proc.CarriesRunID(cpid, app.RunID()) {
		t.Fatalf("grandchild %d survived Stop", cpid)
	}
}

func TestTextStatsAdapterLoadsItsModelOncePerWorker(t *testing.T) {
	app := newApp(t, snakepit.Config{Workers: 1, Adapter: "snakepit_bridge.examples.textstats.TextStatsAdapter"})
	ctx := ctxT(t)
	for i := 0; i < 3; i++ {
		if _, err := app.Execute(ctx, "analyze", map[string]any{"text": "the quick brown fox is happy and great"}); err != nil {
			t.Fatalf("analyze: %v", err)
		}
	}
	info, err := snakepit.Decode[map[string]any](app.Execute(ctx, "model_info", nil))
	if err != nil {
		t.Fatal(err)
	}
	if info["load_count"] != 1.0 {
		t.Fatalf("model loaded %v times, want once per worker: %v", info["load_count"], info)
	}
}

// A call's request id reaches the tool: the caller's, or one the App made.
func TestRequestIDReachesPython(t *testing.T) {
	app := newApp(t, snakepit.Config{Workers: 1})
	info := func(opts ...snakepit.CallOption) string {
		t.Helper()
		got, err := snakepit.Decode[map[string]any](app.Execute(ctxT(t), "worker_info", nil, opts...))
		if err != nil {
			t.Fatal(err)
		}
		id, _ := got["request_id"].(string)
		return id
	}
	if id := info(snakepit.WithRequestID("req-42")); id != "req-42" {
		t.Errorf("request_id = %q; want the caller's req-42", id)
	}
	a, b := info(), info()
	if a == "" || b == "" || a == b {
		t.Errorf("generated request ids %q, %q; want two distinct non-empty ids", a, b)
	}
	if _, err := app.Execute(ctxT(t), "worker_info", nil, snakepit.WithRequestID("bad\nid")); !errors.Is(err, snakepit.ErrInvalidConfig) {
		t.Errorf("a request id with a newline: %v; want ErrInvalidConfig", err)
	}
}
