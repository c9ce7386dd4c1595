package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/snakepit-go/snakepit"
	"github.com/snakepit-go/snakepit/grpcworker"
	"github.com/snakepit-go/snakepit/internal/testutil"
)

// loggingAdapter logs what the test asks for, from inside a tool call.
const loggingAdapter = `import logging, os, sys
from snakepit_bridge import BaseAdapter, tool

log = logging.getLogger("logtest")
LEVELS = {"DEBUG": logging.DEBUG, "INFO": logging.INFO, "WARNING": logging.WARNING,
          "ERROR": logging.ERROR, "CRITICAL": logging.CRITICAL}


class Adapter(BaseAdapter):
    @tool
    def emit(self, level: str, message: str) -> bool:
        log.log(LEVELS[level], message)
        return True

    @tool
    def fail_logged(self, message: str) -> bool:
        try:
            raise ValueError(message)
        except ValueError:
            log.exception("handling %s failed", message)
        return True

    @tool
    def leak(self) -> bool:
        # The process's initial environment still holds the run's token
        # (Python removed it from os.environ only): print it raw.
        with open("/proc/self/environ", "rb") as f:
            env = f.read().decode(errors="replace").split("\0")
        tok = [e for e in env if e.startswith("SNAKEPIT_TOKEN=")]
        print("leaking " + (tok[0] if tok else "nothing"), file=sys.stderr, flush=True)
        log.warning("leaking again %s", tok[0] if tok else "nothing")
        return bool(tok)
`

// jsonLog is a JSON slog handler's output, safe to read while written.
type jsonLog struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (j *jsonLog) Write(p []byte) (int, error) {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.buf.Write(p)
}

func (j *jsonLog) lines() []string {
	j.mu.Lock()
	defer j.mu.Unlock()
	return strings.Split(strings.TrimSpace(j.buf.String()), "\n")
}

// find returns the first record whose message contains s, decoded.
func (j *jsonLog) find(s string) map[string]any {
	for _, l := range j.lines() {
		var m map[string]any
		if json.Unmarshal([]byte(l), &m) == nil {
			if msg, _ := m["msg"].(string); strings.Contains(msg, s) {
				return m
			}
		}
	}
	return nil
}

// duplicateKeys lists keys that occur twice at the top level of a JSON object.
func duplicateKeys(line string) []string {
	dec := json.NewDecoder(strings.NewReader(line))
	if _, err := dec.Token(); err != nil {
		return []string{"(not JSON)"}
	}
	seen := map[string]bool{}
	var dup []string
	for dec.More() {
		k, err := dec.Token()
		if err != nil {
			return []string{"(bad JSON)"}
		}
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return []string{"(bad JSON)"}
		}
		if ks, _ := k.(string); seen[ks] {
			dup = append(dup, ks)
		} else {
			seen[ks] = true
		}
	}
	return dup
}

func loggingApp(t *testing.T) (*snakepit.App, *jsonLog) {
	t.Helper()
	lib := t.TempDir()
	if err := os.WriteFile(filepath.Join(lib, "logtest_adapter.py"), []byte(loggingAdapter), 0o644); err != nil {
		t.Fatal(err)
	}
	out := &jsonLog{}
	logger := slog.New(slog.NewJSONHandler(out, &slog.HandlerOptions{Level: slog.LevelDebug}))
	app := newApp(t, snakepit.Config{Workers: 1, Adapter: "logtest_adapter.Adapter", PythonPath: []string{lib}, Logger: logger})
	return app, out
}

// Issue 23 (4): each Python level arrives at its slog level, once, with
// run_id, worker_id and pid attached once and Python's prefix parsed.
func TestWorkerLogLevelsBecomeSlogLevels(t *testing.T) {
	app, out := loggingApp(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	want := map[string]string{"DEBUG": "DEBUG", "INFO": "INFO", "WARNING": "WARN", "ERROR": "ERROR", "CRITICAL": grpcworker.LevelCritical.String()}
	for py := range want {
		if _, err := app.Execute(ctx, "emit", map[string]any{"level": py, "message": "level-test " + py}); err != nil {
			t.Fatal(err)
		}
	}
	for py, slogLevel := range want {
		var rec map[string]any
		testutil.Eventually(t, 10*time.Second, "record for "+py, func() bool { rec = out.find("level-test " + py); return rec != nil })
		if rec["level"] != slogLevel || rec["msg"] != "level-test "+py || rec["logger"] != "logtest" {
			t.Errorf("%s record: %v; want level %s, the bare message and logger=logtest", py, rec, slogLevel)
		}
		if rec["run_id"] != app.RunID() || rec["worker_id"] == nil || rec["pid"] == nil || rec["request_id"] == nil {
			t.Errorf("%s record lacks run_id/worker_id/pid/request_id: %v", py, rec)
		}
	}
	if rec := out.find("level-test"); rec != nil && strings.HasPrefix(rec["msg"].(string), "DEBUG [") {
		t.Errorf("Python's prefix left in the message: %v", rec)
	}
	for _, l := range out.lines() {
		if d := duplicateKeys(l); len(d) > 0 {
			t.Errorf("record with duplicate keys %v: %s", d, l)
		}
	}
}

// A logged exception is one record: message, traceback and exception line.
func TestWorkerTracebackIsOneRecord(t *testing.T) {
	app, out := loggingApp(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := app.Execute(ctx, "fail_logged", map[string]any{"message": "tb-test"}); err != nil {
		t.Fatal(err)
	}
	var rec map[string]any
	testutil.Eventually(t, 10*time.Second, "traceback record", func() bool { rec = out.find("handling tb-test failed"); return rec != nil })
	msg, _ := rec["msg"].(string)
	if rec["level"] != "ERROR" || !strings.Contains(msg, "\nTraceback (most recent call last):\n") ||
		!strings.Contains(msg, "raise ValueError(message)") || !strings.HasSuffix(msg, "ValueError: tb-test") {
		t.Fatalf("traceback record: %v", rec)
	}
	for _, l := range out.lines() {
		if strings.Contains(l, "tb-test") && !strings.Contains(l, "handling tb-test failed") && !strings.Contains(l, `"tool"`) {
			t.Errorf("a line of the traceback became a record of its own: %s", l)
		}
	}
}

// The run's token never reaches the log, even when a tool prints it.
func TestWorkerStderrIsRedacted(t *testing.T) {
	app, out := loggingApp(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	leaked, err := snakepit.Decode[bool](app.Execute(ctx, "leak", nil))
	if err != nil || !leaked {
		t.Fatalf("leak tool: %v, %v; it must find the token to test anything", leaked, err)
	}
	testutil.Eventually(t, 10*time.Second, "both leak records", func() bool {
		return out.find("leaking SNAKEPIT_TOKEN=") != nil && out.find("leaking again SNAKEPIT_TOKEN=") != nil
	})
	for _, l := range out.lines() {
		if strings.Contains(l, "SNAKEPIT_TOKEN=") && !strings.Contains(l, "SNAKEPIT_TOKEN=[snakepit token redacted]") {
			t.Errorf("token in the log: %s", l)
		}
	}
}

// An adapter that does not import is an ERROR record, its hint included.
func TestAdapterImportErrorIsAnErrorRecord(t *testing.T) {
	out := &jsonLog{}
	logger := slog.New(slog.NewJSONHandler(out, &slog.HandlerOptions{Level: slog.LevelDebug}))
	app := buildApp(t, snakepit.Config{Workers: 1, Adapter: "no_such_module_for_logs.Adapter", StartupFailures: 1, Logger: logger})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := app.Start(ctx); err == nil {
		stopApp(t, app)
		t.Fatal("Start succeeded with an adapter that does not exist")
	}
	rec := out.find("cannot load adapter")
	if rec == nil || rec["level"] != "ERROR" || !strings.Contains(rec["msg"].(string), "\n  hint: ") || rec["stream"] != "stderr" {
		t.Fatalf("adapter import error record: %v", rec)
	}
}
