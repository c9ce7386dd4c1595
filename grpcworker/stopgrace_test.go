package grpcworker

import (
	"context"
	"testing"
	"time"

	"github.com/snakepit-go/snakepit/internal/proc"
	"github.com/snakepit-go/snakepit/internal/testutil"
	"github.com/snakepit-go/snakepit/worker"
)

func TestPythonStopGraceLeavesRoomBeforeTheKill(t *testing.T) {
	for _, g := range []time.Duration{time.Millisecond, time.Second, 2 * time.Second, time.Minute} {
		if p := PythonStopGrace(g); p <= 0 || p >= g {
			t.Errorf("PythonStopGrace(%s) = %s, want strictly between 0 and it", g, p)
		}
	}
}

// Issue 16 (6): Python's stop grace comes from StopGrace. With StopGrace
// 1.4 s the Python default (1.5 s) would outlast the host's patience and
// the worker would die by SIGKILL mid-stop; derived from StopGrace, Python
// cancels its stuck call in time, runs teardown and exits 0 by itself.
func TestPythonStopGraceFollowsStopGraceAndTheWorkerExitsByItself(t *testing.T) {
	fx := startWorker(t, func(o *Options) { o.StopGrace = 1400 * time.Millisecond })
	fx.waitReady(t)
	lt := fx.w.current()
	env, err := proc.Environ(lt.p.PID())
	if err != nil {
		t.Fatal(err)
	}
	if !contains(env, "SNAKEPIT_STOP_GRACE_S=1.05") {
		t.Fatalf("worker environment lacks SNAKEPIT_STOP_GRACE_S=1.05 (3/4 of StopGrace 1.4 s)")
	}
	// A sync call that ignores cancellation is in flight when the stop comes.
	go func() {
		_, _ = fx.w.Execute(context.Background(), &worker.Call{Tool: "stubborn_sleep", Args: []byte(`{"ms":20000}`)})
	}()
	testutil.Eventually(t, 10*time.Second, "the stubborn call running", func() bool {
		res, err := fx.w.Execute(context.Background(), &worker.Call{Tool: "counters"})
		var c struct {
			Calls int `json:"calls"`
		}
		return err == nil && res.Decode(&c) == nil && c.Calls >= 2
	})
	if err := fx.stop(t); err != nil {
		t.Fatalf("Serve: %v", err)
	}
	if code, sig := lt.p.ExitStatus(); code != 0 || sig != 0 {
		t.Fatalf("worker ended with code %d signal %q; want a clean exit 0 within StopGrace", code, sig)
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// Issue 18 (3): Python's server and host channel take their message limit
// from MaxMessageBytes (they used a fixed 256 MiB).
func TestPythonMessageLimitFollowsMaxMessageBytes(t *testing.T) {
	fx := startWorker(t, func(o *Options) { o.MaxMessageBytes = 3 << 20 })
	fx.waitReady(t)
	env, err := proc.Environ(fx.w.current().p.PID())
	if err != nil {
		t.Fatal(err)
	}
	if !contains(env, "SNAKEPIT_MAX_MESSAGE_BYTES=3145728") {
		t.Fatalf("worker environment lacks SNAKEPIT_MAX_MESSAGE_BYTES=3145728")
	}
}
