package snakepit

import (
	"context"
	"strconv"
	"sync"

	"github.com/snakepit-go/snakepit/autoscale"
	"github.com/snakepit-go/snakepit/pool"
	"github.com/snakepit-go/snakepit/worker"
)

type (
	// ScalingStats is PoolStats.Scaling: an elastic pool's size, bounds and
	// scaling events (Elastic false for a fixed-size pool).
	ScalingStats = autoscale.Stats
	// ScalingEvent is one scaling decision, with its reason.
	ScalingEvent = autoscale.Event
)

// PoolStats is one pool's part of Stats: what its pool.Pool counts
// (workers by state, queue, counters, restarts apart from recycles,
// given-up workers, latency) and, in Scaling, what its autoscaler decided.
// Each part has one source, read at the same call.
type PoolStats struct {
	pool.Stats
	// Scaling is the pool's size and scaling events (MinWorkers/MaxWorkers);
	// for a fixed pool, Elastic false and its Workers as both bounds.
	Scaling ScalingStats
}

// newScaler builds pool pr's autoscaler (nil for a fixed-size pool). It
// manages the local workers only: remote ones follow Discovery.
func (a *App) newScaler(pr *poolRun, f worker.Factory) (*autoscale.Scaler, error) {
	pc := pr.cfg
	if !pc.elastic() {
		return nil, nil
	}
	prefix := pc.workerPrefix()
	return autoscale.New(autoscale.Options{
		Min: pc.MinWorkers, Max: pc.MaxWorkers,
		IdleTimeout: pc.IdleTimeout, ScaleUpAfter: pc.ScaleUpAfter, ScaleUpInterval: pc.ScaleUpInterval,
		FailurePause: pc.RetryGivenUpAfter, DrainGrace: a.stop.drain,
		Pool: pr.pool, Members: pr.work, Factory: f,
		Managed: func(id string) bool { return !pr.isRemote(id) },
		// The worker supervisor's naming, so added workers look like the first ones.
		NewID:   func(n int) string { return prefix + "w" + strconv.Itoa(n) },
		FirstID: pc.MinWorkers, Logger: a.poolLog(pc),
	})
}

// stats is the pool's snapshot: its counters and its scaling.
func (pr *poolRun) stats() PoolStats {
	s := PoolStats{Stats: pr.pool.Stats()}
	if pr.scale != nil {
		s.Scaling = pr.scale.Stats()
	} else {
		s.Scaling = ScalingStats{Min: pr.cfg.Workers, Max: pr.cfg.Workers}
	}
	return s
}

// anyElastic reports whether some pool has an autoscaler.
func anyElastic(pcs []PoolConfig) bool {
	for i := range pcs {
		if pcs[i].elastic() {
			return true
		}
	}
	return false
}

// scalerGroup is the tree's one "autoscale" child: every elastic pool's
// Scaler, run side by side and stopped together, so that one stop share
// (stopBudget.scaler) covers them however many pools there are.
type scalerGroup []*autoscale.Scaler

func (g scalerGroup) String() string { return "autoscale" }

// Serve implements suture.Service; a Scaler returns only when ctx ends.
func (g scalerGroup) Serve(ctx context.Context) error {
	var wg sync.WaitGroup
	for _, s := range g {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = s.Serve(ctx)
		}()
	}
	wg.Wait()
	return nil
}
