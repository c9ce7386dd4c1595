package grpcworker

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/snakepit-go/snakepit/worker"
)

// Issue 16 (4): capacity is exact. With Capacity 1, a sync call whose caller
// gave up but whose tool keeps running holds the only slot until the tool
// returns, so the next call does not run beside it. rendezvous reports the
// most calls it ever saw inside at once: 2 would mean the second call ran
// while the abandoned first one still waited for company.
func TestAbandonedSyncCallKeepsItsSlotAtCapacityOne(t *testing.T) {
	fx := startWorkerCapacity(t, 1, func(o *Options) {
		// No replacement during the test: the stuck call must be outlived
		// by the slot, not by the process.
		o.HungGrace = time.Minute
	})
	fx.waitReady(t)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	_, err := fx.w.Execute(ctx, &worker.Call{Tool: "rendezvous", Args: []byte(`{"n":2,"timeout_ms":1500}`)})
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("first call: want DeadlineExceeded, got %v", err)
	}
	ctx, cancel = context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	res, err := fx.w.Execute(ctx, &worker.Call{Tool: "rendezvous", Args: []byte(`{"n":2,"timeout_ms":1500}`)})
	if err != nil {
		t.Fatalf("second call: %v", err)
	}
	var most int
	if err := res.Decode(&most); err != nil {
		t.Fatal(err)
	}
	if most != 1 {
		t.Fatalf("rendezvous saw %d calls inside at once with Capacity 1; the abandoned call's slot was given away", most)
	}
}
