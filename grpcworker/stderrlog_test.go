package grpcworker

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/snakepit-go/snakepit/internal/testutil"
)

// captured records every record a logger handles.
type captured struct {
	mu   sync.Mutex
	recs []slog.Record
}

func (c *captured) Enabled(context.Context, slog.Level) bool { return true }
func (c *captured) Handle(_ context.Context, r slog.Record) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.recs = append(c.recs, r.Clone())
	return nil
}
func (c *captured) WithAttrs([]slog.Attr) slog.Handler { return c }
func (c *captured) WithGroup(string) slog.Handler      { return c }

func (c *captured) all() []slog.Record {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]slog.Record(nil), c.recs...)
}

func attrs(r slog.Record) map[string]string {
	m := map[string]string{}
	r.Attrs(func(a slog.Attr) bool { m[a.Key] = a.Value.String(); return true })
	return m
}

func feed(s *stderrLog, text string) {
	for _, l := range strings.Split(strings.TrimSuffix(text, "\n"), "\n") {
		s.Line(l)
	}
}

func TestStderrLogGroupsRecords(t *testing.T) {
	c := &captured{}
	s := newStderrLog(slog.New(c), "s3cr3t-token-value")
	feed(s, `INFO [worker=w0 pid=7 request_id=r1 trace_id=t1 span_id=s1] snakepit_bridge.worker: ready
ERROR [worker=w0 pid=7] my.mod: handling failed
| Traceback (most recent call last):
|   File "x.py", line 1, in f
| ValueError: bad
printed by a tool with s3cr3t-token-value in it
Traceback (most recent call last):
  File "y.py", line 2, in <module>
ImportError: no module named z

During handling of the above exception, another exception occurred:
RuntimeError: worse
/a/b.py:3: DeprecationWarning: old
  warnings.warn("old")
snakepit: cannot load adapter 'x.A': ModuleNotFoundError: No module named 'x'
  hint: is the module on PYTHONPATH?
snakepit: adapter 'x.A' failed in setup(): ValueError: v
Traceback (most recent call last):
  File "a.py", line 1, in setup
ValueError: v
CRITICAL [worker=w0 pid=7] x: the end`)
	s.Close()
	type want struct {
		level slog.Level
		msg   string
	}
	wants := []want{
		{slog.LevelInfo, "ready"},
		{slog.LevelError, "handling failed\nTraceback (most recent call last):\n  File \"x.py\", line 1, in f\nValueError: bad"},
		{slog.LevelInfo, "printed by a tool with [snakepit token redacted] in it"},
		{slog.LevelError, "Traceback (most recent call last):\n  File \"y.py\", line 2, in <module>\nImportError: no module named z\n\nDuring handling of the above exception, another exception occurred:\nRuntimeError: worse"},
		{slog.LevelWarn, "/a/b.py:3: DeprecationWarning: old\n  warnings.warn(\"old\")"},
		{slog.LevelError, "snakepit: cannot load adapter 'x.A': ModuleNotFoundError: No module named 'x'\n  hint: is the module on PYTHONPATH?"},
		{slog.LevelError, "snakepit: adapter 'x.A' failed in setup(): ValueError: v\nTraceback (most recent call last):\n  File \"a.py\", line 1, in setup\nValueError: v"},
		{LevelCritical, "the end"},
	}
	got := c.all()
	if len(got) != len(wants) {
		for _, r := range got {
			t.Logf("%s %q", r.Level, r.Message)
		}
		t.Fatalf("%d records, want %d", len(got), len(wants))
	}
	for i, w := range wants {
		if got[i].Level != w.level || got[i].Message != w.msg {
			t.Errorf("record %d: %s %q; want %s %q", i, got[i].Level, got[i].Message, w.level, w.msg)
		}
	}
	a := attrs(got[0])
	if a["request_id"] != "r1" || a["trace_id"] != "t1" || a["span_id"] != "s1" || a["logger"] != "snakepit_bridge.worker" || a["stream"] != "stderr" {
		t.Errorf("attributes of the first record: %v", a)
	}
	if _, ok := a["worker"]; ok {
		t.Errorf("worker= from the prefix kept as an attribute (the logger has worker_id): %v", a)
	}
}

// A record's last line must not wait for the next record: a quiet moment
// emits it.
func TestStderrLogFlushesWhenQuiet(t *testing.T) {
	c := &captured{}
	s := newStderrLog(slog.New(c))
	defer s.Close()
	feed(s, "ERROR [worker=w0 pid=7] m: boom\n| line two")
	testutil.Eventually(t, 10*time.Second, "record emitted after the quiet period", func() bool { return len(c.all()) == 1 })
	if got := c.all()[0].Message; got != "boom\nline two" {
		t.Fatalf("message %q", got)
	}
}

// Beyond maxRecordBytes a record goes on in a further record: bounded,
// and no line lost.
func TestStderrLogBoundsRecordSize(t *testing.T) {
	c := &captured{}
	s := newStderrLog(slog.New(c))
	s.Line("ERROR [worker=w0 pid=7] m: big")
	line := strings.Repeat("x", 1000)
	n := 3 * maxRecordBytes / len(line)
	for range n {
		s.Line(continuation + line)
	}
	s.Close()
	total := 0
	for i, r := range c.all() {
		if len(r.Message) > maxRecordBytes {
			t.Errorf("record %d is %d bytes, over %d", i, len(r.Message), maxRecordBytes)
		}
		if r.Level != slog.LevelError {
			t.Errorf("record %d at %s, want ERROR like the record it continues", i, r.Level)
		}
		total += strings.Count(r.Message, line)
	}
	if len(c.all()) < 3 || total != n {
		t.Fatalf("%d records with %d of %d lines", len(c.all()), total, n)
	}
}

func TestPythonLevelFollowsTheLogger(t *testing.T) {
	for level, want := range map[slog.Level]string{slog.LevelDebug: "DEBUG", slog.LevelInfo: "INFO", slog.LevelWarn: "WARNING", slog.LevelError: "ERROR", slog.LevelError + 8: "CRITICAL"} {
		log := slog.New(slog.NewTextHandler(nil, &slog.HandlerOptions{Level: level}))
		if got := pythonLevel(log); got != want {
			t.Errorf("logger at %s: SNAKEPIT_LOG_LEVEL=%s, want %s", level, got, want)
		}
	}
}
