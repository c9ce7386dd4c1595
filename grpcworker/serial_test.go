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
	got, pf := fx.ev.info.Capacity, fx.ev.info.Prefetch
	fx.ev.mu.Unlock()
	if got != 1 || pf != 4 {
		t.Fatalf("Ready reported capacity %d, prefetch %d; want 1 and 4 (four per slot) for an adapter that is not thread-safe", got, pf)
	}
}

// The sync server holds tool calls beyond its capacity for its next free
// thread, and says how many at Ready; the grpc.aio server runs async tools
// without such a queue, so it reports none and gets its capacity only.
func TestWorkerReportsPrefetchOnlyForTheSyncServer(t *testing.T) {
	for flavour, want := range map[string]int{"sync": 4 * 3, "aio": 0} { // four calls per slot
		t.Run(flavour, func(t *testing.T) {
			fx := startWorkerCapacity(t, 3, func(o *Options) {
				o.Env = map[string]string{"SNAKEPIT_SERVER": flavour}
			})
			fx.waitReady(t)
			fx.ev.mu.Lock()
			pf := fx.ev.info.Prefetch
			fx.ev.mu.Unlock()
			if pf != want {
				t.Fatalf("Ready reported prefetch %d; want %d for the %s server", pf, want, flavour)
			}
		})
	}
}
