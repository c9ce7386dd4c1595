package proctest

import (
	"bytes"
	"log/slog"
	"sync"
	"testing"
)

// LogBuf collects log output for assertions; safe for concurrent writers.
type LogBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *LogBuf) Write(p []byte) (int, error) { l.mu.Lock(); defer l.mu.Unlock(); return l.b.Write(p) }
func (l *LogBuf) String() string              { l.mu.Lock(); defer l.mu.Unlock(); return l.b.String() }

// Logger returns a debug-level logger into a buffer that is printed only
// when the test fails.
func Logger(t testing.TB) (*slog.Logger, *LogBuf) {
	buf := &LogBuf{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("log:\n%s", buf)
		}
	})
	return slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug})), buf
}
