package snakepit

import (
	"strings"

	"github.com/snakepit-go/snakepit/autoscale"
	"github.com/snakepit-go/snakepit/remote"
)

type (
	// ScalingStats is Stats.Scaling: an elastic pool's size, bounds and
	// scaling events (Elastic false for a fixed-size pool).
	ScalingStats = autoscale.Stats
	// ScalingEvent is one scaling decision, with its reason.
	ScalingEvent = autoscale.Event
)

// newScaler builds run r's autoscaler (nil for a fixed-size pool). It
// manages the local workers only: remote ones follow Discovery.
func (a *App) newScaler(r *run) (*autoscale.Scaler, error) {
	cfg := a.cfg
	if !cfg.elastic() {
		return nil, nil
	}
	return autoscale.New(autoscale.Options{
		Min: cfg.MinWorkers, Max: cfg.MaxWorkers,
		IdleTimeout: cfg.IdleTimeout, ScaleUpAfter: cfg.ScaleUpAfter, ScaleUpInterval: cfg.ScaleUpInterval,
		FailurePause: cfg.RetryGivenUpAfter, DrainGrace: a.stop.drain,
		Pool: r.pool, Members: r.work, Factory: a.factory,
		Managed: func(id string) bool { return !strings.HasPrefix(id, remote.IDPrefix) },
		FirstID: cfg.MinWorkers, Logger: a.log,
	})
}

// scalingStats is the run's scaler's snapshot, or, for a fixed pool, its
// fixed size as both bounds.
func (r *run) scalingStats(cfg Config) ScalingStats {
	if r.scale != nil {
		return r.scale.Stats()
	}
	return ScalingStats{Min: cfg.Workers, Max: cfg.Workers}
}
