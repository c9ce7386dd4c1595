package snakepit_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	promtest "github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/snakepit-go/snakepit"
	"github.com/snakepit-go/snakepit/internal/testutil"
	"github.com/snakepit-go/snakepit/worker/fake"
)

// A named elastic pool beside a fixed default pool: each pool has its own
// Scaler (or none), so only the named pool grows and shrinks, only under
// its own load, and its stats and metrics carry its name.
func TestElasticNamedPoolBesideAFixedDefault(t *testing.T) {
	gDef, gBurst := newGate(), newGate()
	defer gDef.open()
	defer gBurst.open()
	fixed := &fake.Factory{Options: []fake.Option{fake.WithTool("hold", gDef.tool)}}
	burst := &fake.Factory{Options: []fake.Option{fake.WithTool("hold", gBurst.tool)}}
	reg := prometheus.NewRegistry()
	app := startElastic(t, fixed, snakepit.Config{Workers: 2, Capacity: 1, Metrics: reg,
		Pools: []snakepit.PoolConfig{{Name: "burst", WorkerFactory: burst, MinWorkers: 1, MaxWorkers: 3,
			ScaleUpAfter: 20 * time.Millisecond, ScaleUpInterval: 20 * time.Millisecond, IdleTimeout: 300 * time.Millisecond}}})
	pools := func() (def, b snakepit.PoolStats) {
		s := app.Stats()
		return s.Pools[snakepit.DefaultPool], s.Pools["burst"]
	}

	// Calls that wait in the default pool make no pool grow.
	waitDef := callAsync(app, 4, "hold")
	testutil.Eventually(t, 20*time.Second, "calls waiting in the default pool for 10 ScaleUpAfter", func() bool {
		def, _ := pools()
		return def.Queued == 2 && def.QueueWait >= 200*time.Millisecond
	})
	def, b := pools()
	if def.Scaling.Elastic || def.Scaling.Min != 2 || def.Scaling.Max != 2 || def.Workers.Total != 2 {
		t.Errorf("default pool %+v with %d workers: want fixed at 2", def.Scaling, def.Workers.Total)
	}
	if b.Scaling.ScaleUps != 0 || b.Workers.Total != 1 || len(burst.Workers()) != 1 {
		t.Errorf("burst pool grew on the default pool's queue: %+v, %d workers", b.Scaling, b.Workers.Total)
	}

	// Its own load grows the named pool to its MaxWorkers; the default stays.
	waitBurst := callPoolAsync(app.Pool("burst"), 3, "hold")
	testutil.Eventually(t, 20*time.Second, "the burst pool grown to 3 busy workers", func() bool {
		_, b := pools()
		return b.Workers.Busy == 3 && b.Scaling.ScaleUps == 2
	})
	def, b = pools()
	if def.Workers.Total != 2 || len(fixed.Workers()) != 2 {
		t.Errorf("default pool has %d workers (%d built) after the burst pool grew; want 2", def.Workers.Total, len(fixed.Workers()))
	}
	if !b.Scaling.Elastic || b.Scaling.Min != 1 || b.Scaling.Max != 3 || !strings.HasPrefix(b.Scaling.Last.WorkerID, "burst.w") {
		t.Errorf("burst pool scaling %+v: want elastic 1..3, its last worker named burst.w<n>", b.Scaling)
	}
	if h := app.Pool("burst").Stats().Scaling; h.ScaleUps != 2 || h.Max != 3 {
		t.Errorf("App.Pool(\"burst\").Stats().Scaling = %+v; want what Stats().Pools has", h)
	}
	const want = `
# HELP snakepit_pool_workers_desired Local workers the pool aims at (an elastic pool's decision, a fixed pool's size).
# TYPE snakepit_pool_workers_desired gauge
snakepit_pool_workers_desired{pool="burst"} 3
snakepit_pool_workers_desired{pool="default"} 2
# HELP snakepit_pool_workers_max An elastic pool's upper bound (a fixed pool's size).
# TYPE snakepit_pool_workers_max gauge
snakepit_pool_workers_max{pool="burst"} 3
snakepit_pool_workers_max{pool="default"} 2
# HELP snakepit_scale_events_total Workers an elastic pool added (up) or removed (down).
# TYPE snakepit_scale_events_total counter
snakepit_scale_events_total{direction="down",pool="burst"} 0
snakepit_scale_events_total{direction="down",pool="default"} 0
snakepit_scale_events_total{direction="up",pool="burst"} 2
snakepit_scale_events_total{direction="up",pool="default"} 0
`
	if err := promtest.GatherAndCompare(reg, strings.NewReader(want), "snakepit_pool_workers_desired", "snakepit_pool_workers_max", "snakepit_scale_events_total"); err != nil {
		t.Error(err)
	}

	// Released, the named pool shrinks back to its MinWorkers while the
	// default pool's calls still wait: its size does not move.
	gBurst.open()
	noErrors(t, waitBurst())
	testutil.Eventually(t, 20*time.Second, "the burst pool back to 1 worker", func() bool {
		_, b := pools()
		return b.Workers.Total == 1 && b.Scaling.ScaleDowns == 2 && readyFakes(burst) == 1
	})
	if def, _ := pools(); def.Workers.Total != 2 || def.Scaling.ScaleDowns != 0 || def.Queued != 2 {
		t.Errorf("default pool: %d workers, %d queued, %+v; want 2 workers, its 2 calls still waiting", def.Workers.Total, def.Queued, def.Scaling)
	}
	gDef.open()
	noErrors(t, waitDef())
}

// The size is inherited as one setting, the elastic tuning only by an
// elastic pool, and a named pool's elastic mistakes name the pool.
func TestElasticPoolsConfig(t *testing.T) {
	fact := &fake.Factory{}
	for name, c := range map[string]struct {
		cfg              snakepit.Config
		wantErr          string // "" for a valid Config
		pool             string
		elastic          bool
		minW, maxW, work int
	}{
		"fixed beside an elastic default": {cfg: snakepit.Config{MinWorkers: 1, MaxWorkers: 3, IdleTimeout: time.Second,
			Pools: []snakepit.PoolConfig{{Name: "f", Workers: 2}}}, pool: "f", minW: 2, maxW: 2},
		"elastic beside a fixed default": {cfg: snakepit.Config{Workers: 2, IdleTimeout: time.Second,
			Pools: []snakepit.PoolConfig{{Name: "e", MaxWorkers: 2}}}, pool: "e", elastic: true, minW: 0, maxW: 2},
		"the default's bounds inherited": {cfg: snakepit.Config{MinWorkers: 1, MaxWorkers: 3,
			Pools: []snakepit.PoolConfig{{Name: "e"}}}, pool: "e", elastic: true, minW: 1, maxW: 3, work: 1},
		"tuning on a fixed named pool": {cfg: snakepit.Config{Pools: []snakepit.PoolConfig{{Name: "f", Workers: 2, IdleTimeout: time.Second}}},
			wantErr: `pool "f": MinWorkers, IdleTimeout`},
		"equal bounds in a named pool": {cfg: snakepit.Config{Pools: []snakepit.PoolConfig{{Name: "e", MinWorkers: 3, MaxWorkers: 3}}},
			wantErr: `pool "e": MinWorkers 3 must be at least 0 and below MaxWorkers 3`},
	} {
		c.cfg.WorkerFactory, c.cfg.RegistryPath = fact, t.TempDir()+"/r.db"
		app, err := snakepit.New(c.cfg)
		if c.wantErr != "" {
			if !errors.Is(err, snakepit.ErrInvalidConfig) || !strings.Contains(err.Error(), c.wantErr) {
				t.Errorf("%s: New = %v; want ErrInvalidConfig saying %q", name, err, c.wantErr)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: New = %v", name, err)
			continue
		}
		s := app.Pool(c.pool).Stats().Scaling
		if s.Elastic != c.elastic || s.Min != c.minW || s.Max != c.maxW || s.Workers != c.work {
			t.Errorf("%s: pool %q scaling %+v; want elastic %v, %d..%d, %d workers", name, c.pool, s, c.elastic, c.minW, c.maxW, c.work)
		}
	}
}

// Two elastic pools: one tree child runs both scalers and stops first,
// within its share, before the pools' workers; each pool grew on its own.
func TestElasticPoolsStopBeforeTheirWorkers(t *testing.T) {
	g := newGate()
	defer g.open()
	fa := &fake.Factory{Options: []fake.Option{fake.WithTool("hold", g.tool)}}
	fb := &fake.Factory{Options: []fake.Option{fake.WithTool("hold", g.tool)}}
	cfg := fakeConfig(t, fa, 0)
	cfg.MinWorkers, cfg.MaxWorkers, cfg.Capacity, cfg.ScaleUpAfter, cfg.ScaleUpInterval = 1, 2, 1, 20*time.Millisecond, 20*time.Millisecond
	cfg.Pools = []snakepit.PoolConfig{{Name: "b", WorkerFactory: fb, MinWorkers: 1, MaxWorkers: 3}}
	app, err := snakepit.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := app.Start(ctx); err != nil {
		t.Fatal(err)
	}
	waitA, waitB := callAsync(app, 2, "hold"), callPoolAsync(app.Pool("b"), 3, "hold")
	testutil.Eventually(t, 20*time.Second, "both pools at their MaxWorkers", func() bool {
		s := app.Stats()
		return s.Pools[snakepit.DefaultPool].Workers.Busy == 2 && s.Pools["b"].Workers.Busy == 3
	})
	if s := app.Stats(); s.Pool.Scaling.ScaleUps != 1 || s.Pools["b"].Scaling.ScaleUps != 2 || len(fa.Workers()) != 2 || len(fb.Workers()) != 3 {
		t.Errorf("scale-ups %d and %d, %d and %d workers built; want 1 and 2, 2 and 3", s.Pool.Scaling.ScaleUps, s.Pools["b"].Scaling.ScaleUps, len(fa.Workers()), len(fb.Workers()))
	}
	g.open()
	noErrors(t, waitA())
	noErrors(t, waitB())
	rep, err := app.Stop(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var order []string
	for _, c := range rep.Children {
		order = append(order, c.Child)
		if c.Child == "autoscale" && c.Err != nil {
			t.Errorf("the scalers' stop %+v: want it within its share (an overrun is suture.ErrTimeout)", c)
		}
	}
	if len(order) < 2 || order[0] != "autoscale" || order[1] != "workers" {
		t.Errorf("stop order %v: want the one autoscale child first, then the workers", order)
	}
}
