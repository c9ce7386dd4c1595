package grpcworker

import (
	"os"
	"path/filepath"
	"testing"
)

// An adapter that declares snakepit_thread_safe = False runs one call at a
// time whatever the host asked for, and its worker says so at Ready: the
// pool takes worker.Info.Capacity and sends it no more than one call.
func TestNotThreadSafeAdapterReportsCapacityOne(t *testing.T) {
	lib := t.TempDir()
	src := `from snakepit_bridge import BaseAdapter, tool


class Serial(BaseAdapter):
    snakepit_thread_safe = False

    @tool
    def ping(self) -> str:
        return "pong"
`
	if err := os.WriteFile(filepath.Join(lib, "serial_adapter.py"), []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	fx := startWorkerCapacity(t, 8, func(o *Options) {
		o.PythonPath = []string{lib}
		o.Adapter = "serial_adapter.Serial"
	})
	fx.waitReady(t)
	fx.ev.mu.Lock()
	got := fx.ev.info.Capacity
	fx.ev.mu.Unlock()
	if got != 1 {
		t.Fatalf("Ready reported capacity %d; want 1 for an adapter that is not thread-safe", got)
	}
}
