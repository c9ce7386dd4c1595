package lifecycle

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/thejerf/suture/v4"

	"github.com/snakepit-go/snakepit"
	"github.com/snakepit-go/snakepit/internal/testutil"
)

// ignoresSIGTERM reads the process's ignored-signal mask.
func ignoresSIGTERM(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "SigIgn:"); ok {
			mask, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			return err == nil && mask&(1<<(15-1)) != 0
		}
	}
	return false
}

// Scenario 8: the App's whole stop fits in Config.StopTimeout even in the
// worst case — every worker busy with a call that ignores cancellation, in
// a process that ignores SIGTERM — so a parent supervisor with suture's
// default 10 s Timeout never returns while a process of the run is alive.
// (StopGrace 5 s: with separately chosen inner timeouts the drain alone
// took StopGrace and the SIGTERM grace another, 10 s in all.)
func TestEmbeddedWorstCaseStopFitsInParentsDefaultTimeout(t *testing.T) {
	cfg := withLifecycleAdapter(t, snakepit.Config{Workers: 2, StopGrace: 5 * time.Second, StopTimeout: 9500 * time.Millisecond})
	in := newInstanceLogging(t, cfg, newQuietRecordingLogger)
	parent := suture.NewSimple("embedder") // suture's default Timeout
	parent.Add(in.App)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	parentDone := parent.ServeBackground(ctx)
	wctx, wcancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer wcancel()
	if err := in.WaitReady(wctx); err != nil {
		t.Fatal(err)
	}

	var calls sync.WaitGroup
	for range cfg.Workers {
		calls.Go(func() { _, _ = in.Execute(wctx, "stubborn", map[string]any{"seconds": 60}) })
	}
	waitFor(t, 20*time.Second, "both workers to ignore SIGTERM with a call in flight", func() bool {
		ps := workerProcs(t, in.RunID())
		n := 0
		for _, p := range ps {
			if ignoresSIGTERM(p.PID) {
				n++
			}
		}
		return n == cfg.Workers && in.Stats().Pool.InFlight == cfg.Workers
	})

	begin := time.Now()
	cancel()
	select {
	case err := <-parentDone:
		took := time.Since(begin)
		// At once, no polling: the parent's return is the embedder's signal
		// that everything it supervised is gone.
		if left := testutil.RunIDProcesses(t, in.RunID()); len(left) > 0 {
			t.Fatalf("the parent returned after %s (err %v) with %d process(es) of the run alive: %+v", took, err, len(left), left)
		}
		if took >= 10*time.Second {
			t.Errorf("the stop took %s; suture's default Timeout is 10 s", took)
		}
		t.Logf("worst-case stop took %s", took)
	case <-time.After(60 * time.Second):
		t.Fatal("the parent supervisor did not return")
	}
	calls.Wait()
}
