package integration

import (
	"testing"
	"time"

	"github.com/snakepit-go/snakepit"
	"github.com/snakepit-go/snakepit/internal/proc"
	"github.com/snakepit-go/snakepit/internal/testutil"
)

// Guarantee (issue 10, item 2): a worker whose process tree grows past
// RecycleAboveRSS is replaced, make-before-break, with reason "memory" —
// whether the worker itself grew or a process it started did — and no
// call fails meanwhile.
func TestWorkerAboveRecycleAboveRSSIsReplaced(t *testing.T) {
	const limit = 160 << 20
	code := newVersionedAdapter(t, "v1")
	app := newApp(t, code.config(snakepit.Config{Workers: 2, RecycleAboveRSS: limit, MemoryCheckInterval: 200 * time.Millisecond}))
	for _, p := range workerProcs(t, app, "") {
		rss, err := proc.TreeRSS(p.PID)
		if err != nil || rss >= limit {
			t.Fatalf("a fresh worker's tree RSS is %d bytes (%v); the test needs it below %d", rss, err, limit)
		}
		t.Logf("fresh worker %d: tree RSS %.1f MiB", p.PID, float64(rss)/(1<<20))
	}
	l := startLoad(t, app, 4, t.TempDir()+"/records")

	grow := func(tool string, mb int) *snakepit.Result {
		t.Helper()
		before := app.Stats().Pool.RecycleReasons["memory"]
		res, err := app.Execute(ctxT(t), tool, map[string]any{"mb": mb})
		if err != nil {
			t.Fatalf("%s: %v", tool, err)
		}
		begun := time.Now()
		testutil.Eventually(t, 20*time.Second, "the grown worker replaced for memory", func() bool {
			return app.Stats().Pool.RecycleReasons["memory"] == before+1
		})
		t.Logf("%s(%d MiB): replaced for memory %s after the call returned (check every 200 ms)", tool, mb, time.Since(begun).Round(time.Millisecond))
		return res
	}
	grow("hold_memory", 200)
	kid, err := snakepit.Decode[map[string]int](grow("hold_memory_in_child", 200), nil)
	if err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 20*time.Second, "the grandchild holding the memory gone with its worker", func() bool { return !proc.Alive(kid["pid"]) })

	ok, failures := l.finish()
	if len(failures) > 0 {
		t.Fatalf("%d of %d calls failed across memory recycles; first: %v", len(failures), ok+int64(len(failures)), failures[0])
	}
	s := app.Stats().Pool
	if s.Restarts != 0 || s.RecycleReasons["memory"] != 2 || s.Recycles != 2 {
		t.Fatalf("want exactly 2 recycles for memory and no restart: %+v", s)
	}
	testutil.Eventually(t, 20*time.Second, "the grown processes gone, 2 workers left", func() bool {
		for _, p := range workerProcs(t, app, "") {
			if rss, err := proc.TreeRSS(p.PID); err == nil && rss >= limit {
				return false
			}
		}
		return len(workerProcs(t, app, "")) == 2
	})
}
