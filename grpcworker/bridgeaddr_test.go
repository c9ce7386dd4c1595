package grpcworker

import (
	"slices"
	"sync/atomic"
	"testing"

	"github.com/snakepit-go/snakepit/internal/auth"
	"github.com/snakepit-go/snakepit/worker"
)

// A Worker value lives across restarts (its Starter reuses it), so binding
// the bridge address when the worker is built would send every restarted
// process to a bridge that may have moved. Each process start must read the
// address afresh.
func TestRestartedWorkerUsesTheBridgeAddressOfItsStart(t *testing.T) {
	f, err := NewFactory(Options{Adapter: "snakepit_bridge.examples.showcase.ShowcaseAdapter", Token: auth.NewToken(), PackageDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	var addr atomic.Value
	addr.Store("127.0.0.1:1111")
	w, err := f.With(func() string { return addr.Load().(string) }).NewWorker(worker.Spec{ID: "w0", RunID: "r", Events: &recorder{}})
	if err != nil {
		t.Fatal(err)
	}
	bridgeArg := func() string {
		args := w.(*Worker).command().Args
		i := slices.Index(args, "--bridge-address")
		if i < 0 || i+1 >= len(args) {
			t.Fatalf("argv %q carries no --bridge-address", args)
		}
		return args[i+1]
	}
	if got := bridgeArg(); got != "127.0.0.1:1111" {
		t.Fatalf("first start got bridge %q, want 127.0.0.1:1111", got)
	}
	addr.Store("127.0.0.1:2222") // the bridge restarted on another port
	if got := bridgeArg(); got != "127.0.0.1:2222" {
		t.Fatalf("a start after the bridge moved got %q, want the new address 127.0.0.1:2222", got)
	}
}
