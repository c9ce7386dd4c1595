package remote_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/snakepit-go/snakepit"
	"github.com/snakepit-go/snakepit/discovery"
	"github.com/snakepit-go/snakepit/internal/testutil"
)

// TestBatchToolThroughAnAgent: a batch tool's declaration reaches the host
// through an agent (App.Tools), and its calls work there. The host sends
// them one by one (a remote worker takes no batches); the agent's own pool
// batches them for its workers.
func TestBatchToolThroughAnAgent(t *testing.T) {
	tokenFile := writeToken(t)
	port := commonPort(t, "127.0.0.1")
	var f fleet
	f.add(startAgent(t, "127.0.0.1", port, tokenFile, 1, "--adapter", "snakepit_bridge.examples.batching.BatchingAdapter"))
	app := startHost(t, discovery.DNS{Name: serviceName, Port: port, Resolver: &f}, time.Second, tokenFile)
	testutil.Eventually(t, 15*time.Second, "the remote worker ready", func() bool { return ready(app) == 1 })
	var spec snakepit.ToolSpec
	for _, s := range app.Tools() {
		if s.Name == "double" {
			spec = s
		}
	}
	if spec.BatchMaxSize != 32 || spec.BatchMaxWait != 2*time.Millisecond || len(spec.Parameters) != 1 || spec.Parameters[0].Type != "float" {
		t.Fatalf("double through an agent: %+v; want BatchMaxSize 32, BatchMaxWait 2ms, x: float", spec)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	for i := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			v, err := snakepit.Decode[float64](app.Execute(ctx, "double", map[string]any{"x": i}))
			if err != nil || v != float64(2*i) {
				t.Errorf("double(%d) = %v, %v", i, v, err)
			}
		}()
	}
	wg.Wait()
	if s := app.Stats().Pool; s.Batches.Count != 0 || s.Outcomes["success"] != 16 {
		t.Errorf("host stats: batches %+v, outcomes %v; want 16 successes sent unbatched", s.Batches, s.Outcomes)
	}
}
