package lifecycle

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/thejerf/suture/v4"

	"github.com/snakepit-go/snakepit"
	"github.com/snakepit-go/snakepit/internal/proc"
)

// Guarantee: an App embedded in the user's own suture tree stops in order
// when that tree's context ends: when the user's supervisor has finished
// stopping, no process of the run is alive.
func TestEmbeddedAppStopsInOrderWithItsParentSupervisor(t *testing.T) {
	in := newInstance(t, snakepit.Config{Workers: 2})
	root := suture.New("user-root", suture.Spec{Timeout: 30 * time.Second})
	root.Add(in.App)
	ctx, cancel := context.WithCancel(context.Background())
	var rootErr error
	done := make(chan struct{})
	go func() {
		rootErr = <-root.ServeBackground(ctx)
		close(done)
	}()
	t.Cleanup(func() { cancel(); <-done })

	must(t, in.WaitReady(ctxFor(t, 60*time.Second)))
	kids := spawnGrandchildren(t, in, 2, inGroup)
	if n := len(workerProcs(t, in.RunID())); n != 2 {
		t.Fatalf("%d workers, want 2", n)
	}

	cancel()
	select {
	case <-done:
		if rootErr != nil && !errors.Is(rootErr, context.Canceled) {
			t.Errorf("user root ended with %v", rootErr)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("the user's supervisor did not stop within 60 s")
	}
	if left, _ := proc.FindByRunID(in.RunID()); len(left) > 0 {
		t.Errorf("processes of the run alive right after the parent supervisor stopped: %+v", left)
	}
	for _, k := range kids {
		if k.alive() && proc.CarriesRunID(k.PID, in.RunID()) {
			t.Errorf("grandchild %d alive", k.PID)
		}
	}
}

// Guarantee: a Start abandoned half-way (its context cancelled while worker
// processes exist but are not ready) stops what it started: when Start
// returns, no process of the run is alive, nothing is left in the registry,
// and no start failure was logged — a requested stop is not a failure.
func TestCancelledStartLeavesNoProcess(t *testing.T) {
	for attempt := 1; ; attempt++ {
		in := newInstance(t, snakepit.Config{Workers: 4})
		ctx, cancel := context.WithCancel(context.Background())
		sawProcess := make(chan bool, 1)
		go func() {
			defer cancel()
			deadline := time.Now().Add(30 * time.Second)
			for time.Now().Before(deadline) && ctx.Err() == nil {
				if ps, _ := proc.FindByRunID(in.RunID()); len(ps) > 0 {
					sawProcess <- true
					return
				}
				time.Sleep(2 * time.Millisecond)
			}
			sawProcess <- false
		}()
		err := in.Start(ctx)
		cancel()
		if err == nil {
			// Became ready before the cancellation landed: try again.
			in.stop(t)
			if attempt == 3 {
				t.Fatal("three Starts became ready before a cancellation 2 ms after their first process appeared")
			}
			continue
		}
		if !<-sawProcess {
			t.Fatalf("Start failed before any worker process appeared: %v", err)
		}
		if !errors.Is(err, context.Canceled) {
			t.Errorf("Start = %v, want context.Canceled", err)
		}
		if left, _ := proc.FindByRunID(in.RunID()); len(left) > 0 {
			t.Errorf("processes of the run alive right after the cancelled Start returned: %+v", left)
		}
		if runs, recs := registryContents(t, in.path); len(runs) != 0 || len(recs) != 0 {
			t.Errorf("registry after the cancelled start: runs %+v, records %+v; want none", runs, recs)
		}
		return
	}
}
