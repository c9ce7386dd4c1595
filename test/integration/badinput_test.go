package integration

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/snakepit-go/snakepit"
)

func TestUnknownAdapterFailsStartQuicklyQuotingImportError(t *testing.T) {
	app := buildApp(t, snakepit.Config{Workers: 2, Adapter: "no_such_module.Adapter"})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	t0 := time.Now()
	err := app.Start(ctx)
	took := time.Since(t0)
	if err == nil {
		stopApp(t, app)
		t.Fatal("Start succeeded with an unknown adapter module")
	}
	if !errors.Is(err, snakepit.ErrStartup) {
		t.Errorf("want ErrStartup, got %v", err)
	}
	msg := err.Error()
	if !strings.Contains(msg, "no_such_module") || !strings.Contains(msg, "ModuleNotFoundError") {
		t.Errorf("error does not name the module and quote the ImportError:\n%s", msg)
	}
	if took > 20*time.Second {
		t.Errorf("Start took %s to fail", took)
	}
	// Start failed, so the App stopped itself; nothing may be left.
	if _, err := app.Stop(ctx); err != nil && !errors.Is(err, snakepit.ErrStartup) {
		t.Logf("Stop after failed start: %v", err)
	}
}

func TestPythonNotFoundNamesWhatWasTried(t *testing.T) {
	_, err := snakepit.New(snakepit.Config{Python: "/nonexistent/python3"})
	if !errors.Is(err, snakepit.ErrPythonNotFound) {
		t.Fatalf("want ErrPythonNotFound, got %v", err)
	}
	if !strings.Contains(err.Error(), "/nonexistent/python3") || !strings.Contains(err.Error(), "SNAKEPIT_PYTHON") {
		t.Fatalf("error should list what was tried and how to fix it:\n%v", err)
	}
}

func TestUnknownToolListsAvailableTools(t *testing.T) {
	app := newApp(t, snakepit.Config{Workers: 1})
	_, err := app.Execute(ctxT(t), "no_such_tool", nil)
	if !errors.Is(err, snakepit.ErrUnknownTool) {
		t.Fatalf("want ErrUnknownTool, got %v", err)
	}
	if !strings.Contains(err.Error(), "ping") || !strings.Contains(err.Error(), "stream_count") {
		t.Fatalf("error should list the available tools: %v", err)
	}
}

func TestArgumentsThatCannotBeEncodedFailBeforeSending(t *testing.T) {
	app := newApp(t, snakepit.Config{Workers: 1})
	before := app.Stats().Pool
	bad := []any{make(chan int), []int{1, 2}, "just a string", map[string]any{"f": func() {}},
		// Pre-encoded and malformed: the one validation pass (jsonvalid) refuses them.
		json.RawMessage(`{"a":`), []byte(`{"a":1,}`), json.RawMessage("{\"a\":\"\x01\"}"), json.RawMessage(`{"a":01}`)}
	for _, args := range bad {
		_, err := app.Execute(ctxT(t), "echo", args)
		if !errors.Is(err, snakepit.ErrInvalidArgs) {
			t.Errorf("args %T %v: want ErrInvalidArgs, got %v", args, args, err)
		}
	}
	// Refused before dispatch, yet each counted once, as invalid_args.
	after := app.Stats().Pool
	n := uint64(len(bad))
	if after.Requests != before.Requests+n || after.Outcomes[snakepit.OutcomeInvalidArgs] != before.Outcomes[snakepit.OutcomeInvalidArgs]+n {
		t.Fatalf("%d refused calls: requests %d → %d, invalid_args %d → %d; want each up by %d", n,
			before.Requests, after.Requests, before.Outcomes[snakepit.OutcomeInvalidArgs], after.Outcomes[snakepit.OutcomeInvalidArgs], n)
	}
	if after.Workers.Busy != 0 || len(after.RestartReasons) != 0 {
		t.Fatalf("a refused call disturbed the worker: %+v", after.Workers)
	}
}

func TestOversizedMessageIsAClearError(t *testing.T) {
	app := newApp(t, snakepit.Config{Workers: 1, MaxMessageBytes: 64 << 10})
	big := strings.Repeat("x", 128<<10)
	_, err := app.Execute(ctxT(t), "echo", map[string]any{"s": big})
	if !errors.Is(err, snakepit.ErrMessageTooLarge) || !strings.Contains(err.Error(), "MaxMessageBytes") {
		t.Fatalf("want ErrMessageTooLarge naming MaxMessageBytes, got %v", err)
	}
	if _, err := app.Execute(ctxT(t), "ping", nil); err != nil {
		t.Fatalf("worker unusable after an oversized message: %v", err)
	}
}
