package pool_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/snakepit-go/snakepit/pool"
	"github.com/snakepit-go/snakepit/worker"
	"github.com/snakepit-go/snakepit/worker/fake"
)

// PerWorker follows each worker through its states and counts its calls,
// restarts and recycles.
func TestStatsPerWorker(t *testing.T) {
	h := newHarness(t, pool.Options{})
	before := time.Now()
	w1 := h.add("w1", 2, fake.WithTool("echo", fake.Echo), fake.WithPID(4242))
	h.addWith("w2", workerOpt{capacity: 1, giveUpAfter: 1, opts: []fake.Option{fake.WithFailStart(errors.New("no <module> & such"), 0)}})
	h.add("w3", 1, fake.WithReadyDelay(time.Hour))
	h.ready(1)
	for range 3 {
		if _, err := h.p.Execute(context.Background(), call("echo", ""), pool.CallOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	s := h.waitStats("w2 failed", func(s pool.Stats) bool { return s.Workers.Failed == 1 })
	if len(s.PerWorker) != 3 {
		t.Fatalf("PerWorker = %+v", s.PerWorker)
	}
	w := s.PerWorker[0]
	if w.ID != "w1" || w.State != pool.StateIdle || w.PID != 4242 || w.Calls != 3 || w.Capacity != 2 || w.InFlight != 0 || w.Since.Before(before) {
		t.Errorf("w1 = %+v", w)
	}
	if w := s.PerWorker[1]; w.ID != "w2" || w.State != pool.StateFailed || w.PID != 0 || w.Restarts != 1 || w.LastError == "" {
		t.Errorf("w2 = %+v", w)
	}
	if w := s.PerWorker[2]; w.ID != "w3" || w.State != pool.StateStarting {
		t.Errorf("w3 = %+v", w)
	}

	readySince := s.PerWorker[0].Since
	h.p.Recycled("w1", worker.Info{PID: 4343, Tools: []worker.ToolSpec{{Name: "echo"}}}, worker.RecycleRequests)
	s = h.p.Stats()
	if w := s.PerWorker[0]; w.Recycles != 1 || w.PID != 4343 || w.State != pool.StateIdle || w.Since.Before(readySince) {
		t.Errorf("w1 after a recycle = %+v", w)
	}

	w1.Crash()
	s = h.waitStats("w1 restarted", func(s pool.Stats) bool {
		w := s.PerWorker[0]
		return w.Restarts == 1 && w.State == pool.StateIdle
	})
	if w := s.PerWorker[0]; w.Recycles != 1 || w.Calls != 3 || w.LastError == "" {
		t.Errorf("w1 after a crash = %+v", w)
	}
}
