package snakepit_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/snakepit-go/snakepit"
	"github.com/snakepit-go/snakepit/discovery"
	"github.com/snakepit-go/snakepit/internal/testutil"
	"github.com/snakepit-go/snakepit/remote"
	"github.com/snakepit-go/snakepit/worker"
	"github.com/snakepit-go/snakepit/worker/fake"
)

// The rules of a pool's configuration, for named pools and the top-level
// (default pool) fields alike, with the name of the pool in the error.
func TestPoolConfigValidation(t *testing.T) {
	f := &fake.Factory{}
	for _, tc := range []struct {
		name  string
		pools []snakepit.PoolConfig
		want  string // in the error; "" means valid
	}{
		{"two named pools", []snakepit.PoolConfig{{Name: "embed"}, {Name: "tok_2-x"}}, ""},
		{"empty name", []snakepit.PoolConfig{{}}, "1 to 32 characters"},
		{"long name", []snakepit.PoolConfig{{Name: strings.Repeat("a", 33)}}, "1 to 32 characters"},
		{"dot in name", []snakepit.PoolConfig{{Name: "a.b"}}, "use letters, digits"},
		{"slash in name", []snakepit.PoolConfig{{Name: "a/b"}}, "use letters, digits"},
		{"leading digit", []snakepit.PoolConfig{{Name: "1a"}}, "starting with a letter"},
		{"label-breaking name", []snakepit.PoolConfig{{Name: `a"b`}}, "use letters, digits"},
		{"duplicate", []snakepit.PoolConfig{{Name: "embed"}, {Name: "embed"}}, `Pools[1]: the name "embed" is taken`},
		{"default is reserved", []snakepit.PoolConfig{{Name: snakepit.DefaultPool}}, `the name "default" is taken`},
		{"negative workers", []snakepit.PoolConfig{{Name: "embed", Workers: -1}}, `pool "embed": Workers is -1`},
		{"min ready above workers", []snakepit.PoolConfig{{Name: "embed", Workers: 1, MinReady: 2}}, `pool "embed": MinReady 2`},
		{"bad adapter", []snakepit.PoolConfig{{Name: "embed", Adapter: "nope"}}, `pool "embed": Adapter`},
		{"negative queue timeout", []snakepit.PoolConfig{{Name: "embed", QueueTimeout: -time.Second}}, `pool "embed": QueueTimeout is negative`},
		{"tiny rss", []snakepit.PoolConfig{{Name: "embed", RecycleAboveRSS: 1}}, `pool "embed": RecycleAboveRSS`},
		{"tiny messages", []snakepit.PoolConfig{{Name: "embed", MaxMessageBytes: 10}}, `pool "embed": MaxMessageBytes`},
	} {
		cfg := fakeConfig(t, f, 1)
		cfg.Pools = tc.pools
		_, err := snakepit.New(cfg)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: %v", tc.name, err)
		case tc.want != "" && (!errors.Is(err, snakepit.ErrInvalidConfig) || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s: New = %v; want ErrInvalidConfig containing %q", tc.name, err, tc.want)
		}
	}
	// The top-level MinReady goes with the top-level size only: a named
	// pool of its own size, smaller or elastic from zero, is valid.
	cfg := fakeConfig(t, f, 8)
	cfg.MinReady = 4
	cfg.Pools = []snakepit.PoolConfig{{Name: "small", Workers: 2}, {Name: "el", MinWorkers: 0, MaxWorkers: 2}, {Name: "same"}}
	if _, err := snakepit.New(cfg); err != nil {
		t.Errorf("top-level MinReady beside pools of their own size: %v", err)
	}
	// A named pool inherits the top-level values, so a bad top-level value
	// is reported once, for the default pool, without a pool name.
	cfg = fakeConfig(t, f, 1)
	cfg.QueueTimeout = -time.Second
	cfg.Pools = []snakepit.PoolConfig{{Name: "embed"}}
	if _, err := snakepit.New(cfg); err == nil || !strings.HasPrefix(err.Error(), snakepit.ErrInvalidConfig.Error()+": QueueTimeout") {
		t.Errorf("negative top-level QueueTimeout: %v", err)
	}
}

// twoPools starts an App with a default pool of fake "echo" workers and a
// pool "embed" of fake "embed" workers, built by their own factories.
func twoPools(t *testing.T, def, embed *fake.Factory, reg prometheus.Registerer) *snakepit.App {
	t.Helper()
	cfg := fakeConfig(t, def, 2)
	cfg.Metrics = reg
	cfg.Pools = []snakepit.PoolConfig{{Name: "embed", Workers: 1, Capacity: 3, WorkerFactory: embed}}
	app, err := snakepit.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := app.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if _, err := app.Stop(ctx); err != nil {
			t.Error(err)
		}
	})
	return app
}

func TestPoolsRouteCallsAndKeepTheirOwnStats(t *testing.T) {
	def := &fake.Factory{Options: []fake.Option{fake.WithTool("echo", fake.Echo)}}
	embed := &fake.Factory{Options: []fake.Option{fake.WithTool("embed", fake.Echo)}}
	reg := prometheus.NewPedanticRegistry()
	app := twoPools(t, def, embed, reg)
	ctx := context.Background()

	if got := app.PoolNames(); !slices.Equal(got, []string{"default", "embed"}) {
		t.Fatalf("PoolNames = %v", got)
	}
	// Worker ids: unprefixed in the default pool, "<pool>." in the others.
	var ids []string
	for _, w := range append(def.Workers(), embed.Workers()...) {
		ids = append(ids, w.ID())
	}
	if !slices.Equal(ids, []string{"w0", "w1", "embed.w0"}) {
		t.Fatalf("worker ids = %v", ids)
	}
	if _, err := app.Execute(ctx, "echo", nil); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if _, err := app.Pool("embed").Execute(ctx, "embed", map[string]int{"x": 1}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := app.Execute(ctx, "embed", nil); !errors.Is(err, snakepit.ErrUnknownTool) {
		t.Fatalf("embed on the default pool: %v; want ErrUnknownTool", err)
	}
	if _, err := app.Pool("embed").Execute(ctx, "echo", nil); !errors.Is(err, snakepit.ErrUnknownTool) {
		t.Fatalf("echo on pool embed: %v; want ErrUnknownTool", err)
	}
	for name, pool := range map[string]*snakepit.Pool{"default": app.Pool(snakepit.DefaultPool), "embed": app.Pool("embed")} {
		if err := pool.Err(); err != nil {
			t.Fatal(err)
		}
		if err := pool.WaitReady(ctx); err != nil {
			t.Fatalf("%s: WaitReady: %v", name, err)
		}
		if pool.Name() != name || len(pool.Tools()) != 1 {
			t.Fatalf("%s: Name %q, Tools %v", name, pool.Name(), pool.Tools())
		}
	}

	s := app.Stats()
	if len(s.Pools) != 2 || s.Pool.Requests != 2 || s.Pools["default"].Requests != 2 || s.Pools["embed"].Requests != 4 {
		t.Fatalf("requests: Pool %d, Pools %v", s.Pool.Requests, map[string]uint64{"default": s.Pools["default"].Requests, "embed": s.Pools["embed"].Requests})
	}
	if c := s.Pools["embed"].Capacity; c != 3 {
		t.Fatalf("embed capacity %d; want 3 (its own Capacity)", c)
	}
	if got := app.Pool("embed").Stats().Requests; got != 4 {
		t.Fatalf("Pool(embed).Stats().Requests = %d", got)
	}

	// The metrics: the same numbers, split by the pool label.
	want := map[string]float64{"default": 1, "embed": 3}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	seen := 0
	for _, mf := range mfs {
		if mf.GetName() == "snakepit_orphans_reaped_total" {
			if l := mf.GetMetric()[0].GetLabel(); len(l) != 0 {
				t.Errorf("the App-wide reaper counter has labels %v", l)
			}
			continue
		}
		for _, m := range mf.GetMetric() {
			pool, outcome := "", ""
			for _, l := range m.GetLabel() {
				switch l.GetName() {
				case "pool":
					pool = l.GetValue()
				case "outcome":
					outcome = l.GetValue()
				}
			}
			if pool == "" {
				t.Fatalf("%s has no pool label", mf.GetName())
			}
			if mf.GetName() == "snakepit_requests_total" && outcome == "success" {
				seen++
				if v := m.GetCounter().GetValue(); v != want[pool] {
					t.Errorf("requests{pool=%q,outcome=success} = %v; want %v", pool, v, want[pool])
				}
			}
		}
	}
	if seen != 2 {
		t.Fatalf("%d success series; want one per pool", seen)
	}
}

func TestUnknownPoolSaysWhichExist(t *testing.T) {
	app := twoPools(t, &fake.Factory{}, &fake.Factory{}, nil)
	ctx := context.Background()
	p := app.Pool("embedd")
	var upe *snakepit.UnknownPoolError
	if err := p.Err(); !errors.As(err, &upe) || !errors.Is(err, snakepit.ErrUnknownPool) || !slices.Equal(upe.Pools, []string{"default", "embed"}) {
		t.Fatalf("Err = %v", err)
	}
	if !strings.Contains(upe.Error(), `"embedd"`) || !strings.Contains(upe.Error(), "default, embed") {
		t.Fatalf("message %q does not name the pool and the pools", upe.Error())
	}
	if _, err := p.Execute(ctx, "echo", nil); !errors.Is(err, snakepit.ErrUnknownPool) {
		t.Fatalf("Execute: %v", err)
	}
	for _, err := range p.ExecuteStream(ctx, "echo", nil) {
		if !errors.Is(err, snakepit.ErrUnknownPool) {
			t.Fatalf("ExecuteStream: %v", err)
		}
	}
	if _, err := p.Reload(ctx); !errors.Is(err, snakepit.ErrUnknownPool) {
		t.Fatalf("Reload: %v", err)
	}
	if err := p.WaitReady(ctx); !errors.Is(err, snakepit.ErrUnknownPool) {
		t.Fatalf("WaitReady: %v", err)
	}
	if p.Tools() != nil || p.Stats().Requests != 0 {
		t.Fatal("an unknown pool has tools or stats")
	}
	// Reload of every pool when no worker can recycle: unsupported, with
	// every worker of every pool listed.
	rep, err := app.Reload(ctx)
	if !errors.Is(err, snakepit.ErrReloadUnsupported) || !slices.Equal(rep.NotRecyclable, []string{"w0", "w1", "embed.w0"}) {
		t.Fatalf("Reload = %+v, %v", rep, err)
	}
}

// A named pool that cannot start fails the App's start like the default
// pool would, naming the pool; the default pool's workers are stopped too.
func TestAFailedPoolFailsTheStart(t *testing.T) {
	broken := &fake.Factory{Options: []fake.Option{fake.WithFailStart(errors.New("no model file"), 0)}}
	cfg := fakeConfig(t, &fake.Factory{}, 1)
	cfg.StartupFailures = 1
	cfg.Pools = []snakepit.PoolConfig{{Name: "embed", Workers: 1, WorkerFactory: broken}}
	app, err := snakepit.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	err = app.Start(ctx)
	var se *snakepit.StartError
	if !errors.As(err, &se) || se.Child != "workers of pool embed" || !strings.Contains(err.Error(), "no model file") {
		t.Fatalf("Start = %v; want the *StartError of pool embed", err)
	}
	if err := app.WaitReady(ctx); !errors.As(err, &se) {
		t.Fatalf("WaitReady after the failed start: %v", err)
	}
	if _, err := app.Stop(ctx); !errors.As(err, &se) {
		t.Fatalf("Stop = %v; want the start error", err)
	}
}

// Session affinity is per pool: a session whose worker in one pool is
// busy is not held back in another pool, under the strictest mode.
func TestSessionAffinityIsPerPool(t *testing.T) {
	release := make(chan struct{})
	hold := func(ctx context.Context, _ *worker.Call) (*worker.Result, error) {
		select {
		case <-release:
		case <-ctx.Done():
		}
		return &worker.Result{JSON: []byte("{}")}, nil
	}
	def := &fake.Factory{Options: []fake.Option{fake.WithTool("hold", hold), fake.WithTool("echo", fake.Echo)}}
	embed := &fake.Factory{Options: []fake.Option{fake.WithTool("echo", fake.Echo)}}
	cfg := fakeConfig(t, def, 1)
	cfg.Capacity = 1
	cfg.Pools = []snakepit.PoolConfig{{Name: "embed", Workers: 1, WorkerFactory: embed}}
	app, err := snakepit.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := app.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if _, err := app.Stop(ctx); err != nil {
			t.Error(err)
		}
	}()
	strict := []snakepit.CallOption{snakepit.WithSession("s1"), snakepit.WithAffinity(snakepit.AffinityStrictFailFast)}
	if _, err := app.Execute(ctx, "echo", nil, strict...); err != nil {
		t.Fatal(err)
	}
	held := make(chan error, 1)
	go func() {
		_, err := app.Execute(ctx, "hold", nil, strict...)
		held <- err
	}()
	testutil.Eventually(t, 10*time.Second, "the session's default-pool worker busy", func() bool {
		return app.Stats().Pool.InFlight == 1
	})
	if _, err := app.Execute(ctx, "echo", nil, strict...); !errors.Is(err, snakepit.ErrSessionWorkerBusy) {
		t.Fatalf("second call in the default pool: %v; want ErrSessionWorkerBusy", err)
	}
	for range 2 {
		if _, err := app.Pool("embed").Execute(ctx, "echo", nil, strict...); err != nil {
			t.Fatalf("the same session in pool embed: %v", err)
		}
	}
	close(release)
	if err := <-held; err != nil {
		t.Fatal(err)
	}
}

// The pools share the workers child's one share of the stop budget: they
// drain and stop side by side, so calls that ignore cancellation in two
// pools still let the App stop within StopTimeout (one after the other,
// the second would overrun the workers child's bound).
func TestPoolsStopTogetherInsideStopTimeout(t *testing.T) {
	const stopTimeout = 5 * time.Second
	hang := []fake.Option{fake.WithHangingTool("hang")}
	cfg := fakeConfig(t, &fake.Factory{Options: hang}, 1)
	cfg.StopTimeout = stopTimeout
	cfg.StopGrace = 100 * time.Millisecond
	cfg.Pools = []snakepit.PoolConfig{{Name: "embed", Workers: 1, WorkerFactory: &fake.Factory{Options: hang}}}
	app, err := snakepit.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := app.Start(ctx); err != nil {
		t.Fatal(err)
	}
	calls := make(chan error, 2)
	for _, p := range []*snakepit.Pool{app.Pool(snakepit.DefaultPool), app.Pool("embed")} {
		go func() {
			_, err := p.Execute(ctx, "hang", nil)
			calls <- err
		}()
	}
	testutil.Eventually(t, 10*time.Second, "a call in flight in each pool", func() bool {
		s := app.Stats()
		return s.Pools["default"].InFlight == 1 && s.Pools["embed"].InFlight == 1
	})
	began := time.Now()
	rep, err := app.Stop(ctx)
	took := time.Since(began)
	if err != nil {
		t.Fatal(err)
	}
	if took > stopTimeout {
		t.Fatalf("Stop took %s; StopTimeout is %s", took, stopTimeout)
	}
	for _, c := range rep.Children {
		if c.Err != nil {
			t.Errorf("child %s overran its stop bound: %v", c.Child, c.Err)
		}
	}
	for range 2 {
		if err := <-calls; err == nil {
			t.Error("a hanging call succeeded")
		}
	}
}

// The App is ready only once every pool has its MinReady workers: a slow
// named pool holds Start back, and each pool's WaitReady sees its own.
func TestAppIsReadyWhenEveryPoolIs(t *testing.T) {
	slow := &fake.Factory{Options: []fake.Option{fake.WithTool("echo", fake.Echo), fake.WithReadyDelay(300 * time.Millisecond)}}
	cfg := fakeConfig(t, &fake.Factory{Options: []fake.Option{fake.WithTool("echo", fake.Echo)}}, 1)
	cfg.Pools = []snakepit.PoolConfig{{Name: "slow", Workers: 2, MinReady: 2, WorkerFactory: slow}}
	app, err := snakepit.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := app.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if _, err := app.Stop(ctx); err != nil {
			t.Error(err)
		}
	}()
	if idle := app.Stats().Pools["slow"].Workers.Idle; idle != 2 {
		t.Fatalf("Start returned with %d of pool slow's 2 workers ready", idle)
	}
	if err := app.Pool("slow").WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
}

// A pool with no worker (elastic at MinWorkers 0) is running with nothing
// to reload: it neither fails Reload nor stops App.Reload before the pools
// after it.
func TestReloadWithAnElasticPoolAtZero(t *testing.T) {
	f := &fake.Factory{Options: []fake.Option{fake.WithTool("echo", fake.Echo)}}
	cfg := fakeConfig(t, f, 1)
	cfg.Pools = []snakepit.PoolConfig{
		{Name: "el", WorkerFactory: f, MinWorkers: 0, MaxWorkers: 2},
		{Name: "embed", WorkerFactory: f, Workers: 1},
	}
	app, err := snakepit.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := app.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer func() { _, _ = app.Stop(context.Background()) }()
	if err := app.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	rep, err := app.Pool("el").Reload(ctx)
	if err != nil || len(rep.Recycled)+len(rep.Skipped)+len(rep.NotRecyclable) != 0 {
		t.Fatalf("Pool(el).Reload = %+v, %v; want an empty report, nil", rep, err)
	}
	rep, err = app.Reload(ctx)
	if !errors.Is(err, snakepit.ErrReloadUnsupported) || !slices.Equal(rep.NotRecyclable, []string{"w0", "embed.w0"}) {
		t.Fatalf("Reload = %+v, %v; want every fake worker listed, ErrReloadUnsupported", rep, err)
	}
}

// Pool(name).WaitReady of a pool fed by agents waits for its first
// discovery poll, like App.WaitReady.
func TestPoolWaitReadyWaitsForTheFirstPoll(t *testing.T) {
	tf := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tf, []byte(strings.Repeat("t", 44)), 0o600); err != nil {
		t.Fatal(err)
	}
	polled, gate := make(chan struct{}), make(chan struct{})
	var once sync.Once
	src := discovery.SourceFunc(func(ctx context.Context) ([]string, error) {
		once.Do(func() { close(polled) })
		select {
		case <-gate:
			return nil, nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	})
	cfg := fakeConfig(t, &fake.Factory{}, 1)
	cfg.Remote = remote.Options{TokenFile: tf}
	cfg.Pools = []snakepit.PoolConfig{{Name: "agents", Discovery: src}}
	app, err := snakepit.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	started := make(chan error, 1)
	go func() { started <- app.Start(ctx) }()
	defer func() { _, _ = app.Stop(context.Background()) }()
	select {
	case <-polled:
	case <-ctx.Done():
		t.Fatal("the source was never polled")
	}
	short, stop := context.WithTimeout(ctx, 300*time.Millisecond)
	defer stop()
	if err := app.Pool("agents").WaitReady(short); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("WaitReady before the first poll = %v; want the context's deadline", err)
	}
	close(gate)
	if err := app.Pool("agents").WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-started; err != nil {
		t.Fatal(err)
	}
}

// "<pool>." prefixes the named pools' ids: AddWorker refuses an id with a
// '.', as it refuses an empty one.
func TestAddWorkerRefusesANamedPoolsPrefix(t *testing.T) {
	f := &fake.Factory{}
	cfg := fakeConfig(t, f, 1)
	cfg.Pools = []snakepit.PoolConfig{{Name: "embed", Workers: 1}}
	app, err := snakepit.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"", "embed.w9", "embed.remote:10.0.0.1:7070"} {
		if err := app.AddWorker(id, f); !errors.Is(err, snakepit.ErrInvalidWorker) || !errors.Is(err, snakepit.ErrInvalidConfig) {
			t.Errorf("AddWorker(%q) = %v; want ErrInvalidWorker", id, err)
		}
	}
	// A dot elsewhere is fine (a remote worker's id carries its address).
	for _, id := range []string{"w9", "remote:10.0.0.1:7070", "embedder.w1"} {
		if err := app.AddWorker(id, f); !errors.Is(err, snakepit.ErrNotServing) {
			t.Errorf("AddWorker(%q) before Start = %v; want ErrNotServing", id, err)
		}
	}
}
