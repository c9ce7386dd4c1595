package integration

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/snakepit-go/snakepit"
)

const textStatsAdapter = "snakepit_bridge.examples.textstats.TextStatsAdapter"

// poolLoad calls pool until stop and keeps every failure.
type poolLoad struct {
	stop     chan struct{}
	wg       sync.WaitGroup
	ok, made atomic.Int64
	mu       sync.Mutex
	failures []error
}

func startPoolLoad(t *testing.T, p *snakepit.Pool, callers int, tool string, args map[string]any) *poolLoad {
	l := &poolLoad{stop: make(chan struct{})}
	ctx := ctxT(t)
	for range callers {
		l.wg.Go(func() {
			for {
				select {
				case <-l.stop:
					return
				default:
				}
				l.made.Add(1)
				if _, err := p.Execute(ctx, tool, args); err != nil {
					l.mu.Lock()
					l.failures = append(l.failures, err)
					l.mu.Unlock()
				} else {
					l.ok.Add(1)
				}
			}
		})
	}
	return l
}

func (l *poolLoad) finish() (ok int64, failures []error) {
	close(l.stop)
	l.wg.Wait()
	return l.ok.Load(), l.failures
}

// Two pools with different adapters under one App: calls are routed by
// pool, each pool reports its own tools, stats and metrics, host tools
// work from a named pool, and reloading one pool replaces only its
// processes while the other keeps serving every call.
func TestTwoPoolsWithDifferentAdapters(t *testing.T) {
	ad := newVersionedAdapter(t, "v1")
	reg := prometheus.NewRegistry()
	cfg := ad.config(snakepit.Config{Workers: 2, Metrics: reg})
	cfg.Pools = []snakepit.PoolConfig{{Name: "text", Workers: 1, Adapter: textStatsAdapter}}
	app := newApp(t, cfg)
	ctx := ctxT(t)
	text := app.Pool("text")

	// Routed by pool: each has its adapter's tools only.
	if v, err := snakepit.Decode[string](app.Execute(ctx, "version", nil)); err != nil || v != "v1" {
		t.Fatalf("version = %q, %v", v, err)
	}
	res, err := snakepit.Decode[map[string]any](text.Execute(ctx, "analyze", map[string]any{"text": "a great and happy day"}))
	if err != nil || res["sentiment"] == nil {
		t.Fatalf("analyze = %v, %v", res, err)
	}
	if _, err := app.Execute(ctx, "analyze", map[string]any{"text": "x"}); !errors.Is(err, snakepit.ErrUnknownTool) {
		t.Fatalf("analyze on the default pool: %v", err)
	}
	if _, err := text.Execute(ctx, "version", nil); !errors.Is(err, snakepit.ErrUnknownTool) {
		t.Fatalf("version on pool text: %v", err)
	}
	if _, err := app.Pool("txt").Execute(ctx, "analyze", nil); !errors.Is(err, snakepit.ErrUnknownPool) {
		t.Fatalf("unknown pool: %v", err)
	}
	hasTool := func(specs []snakepit.ToolSpec, name string) bool {
		return slices.ContainsFunc(specs, func(s snakepit.ToolSpec) bool { return s.Name == name })
	}
	if !hasTool(app.Tools(), "version") || hasTool(app.Tools(), "analyze") || !hasTool(text.Tools(), "analyze") || hasTool(text.Tools(), "version") {
		t.Fatal("Tools are not per pool")
	}
	// Worker ids: one registry and one bridge, the named pool's prefixed.
	if n := len(workerProcs(t, app, "text.w0")); n != 1 {
		t.Fatalf("%d processes of worker text.w0", n)
	}
	textPID := workerProcs(t, app, "text.w0")[0].PID

	// Reload the default pool (new code) under load on pool text.
	ad.write(t, "v2")
	l := startPoolLoad(t, text, 4, "analyze", map[string]any{"text": "bugs crash the build"})
	rep, err := app.Pool(snakepit.DefaultPool).Reload(ctx)
	ok, failures := l.finish()
	if err != nil || !slices.Equal(rep.Recycled, []string{"w0", "w1"}) {
		t.Fatalf("Reload(default) = %+v, %v", rep, err)
	}
	if len(failures) > 0 || ok == 0 {
		t.Fatalf("pool text during the default pool's reload: %d ok, failures %v", ok, failures)
	}
	if vs := versions(t, app, 6); vs["v2"] != 6 {
		t.Fatalf("versions after the reload: %v", vs)
	}
	if pids := workerProcs(t, app, "text.w0"); len(pids) != 1 || pids[0].PID != textPID {
		t.Fatalf("pool text's process changed: %+v (was %d)", pids, textPID)
	}

	// And the other way round: pool text reloads, the default pool serves.
	l = startPoolLoad(t, app.Pool(snakepit.DefaultPool), 4, "sleep", map[string]any{"ms": 10})
	rep, err = text.Reload(ctx)
	defOK, failures := l.finish()
	if err != nil || !slices.Equal(rep.Recycled, []string{"text.w0"}) {
		t.Fatalf("Reload(text) = %+v, %v", rep, err)
	}
	if len(failures) > 0 || defOK == 0 {
		t.Fatalf("the default pool during pool text's reload: %d ok, failures %v", defOK, failures)
	}

	// Stats and metrics, per pool.
	s := app.Stats()
	dp, tp := s.Pools[snakepit.DefaultPool], s.Pools["text"]
	if dp.RecycleReasons["reload"] != 2 || tp.RecycleReasons["reload"] != 1 {
		t.Fatalf("reload recycles: default %d, text %d", dp.RecycleReasons["reload"], tp.RecycleReasons["reload"])
	}
	// text: 1 analyze + 1 unknown tool + the load; default: the rest.
	if want := uint64(2 + ok); tp.Requests != want {
		t.Fatalf("pool text counted %d calls; %d were made", tp.Requests, want)
	}
	if s.Pool.Requests != dp.Requests || dp.Requests < uint64(defOK) {
		t.Fatalf("default pool counted %d calls (Stats.Pool %d); its load alone made %d", dp.Requests, s.Pool.Requests, defOK)
	}
	got := map[string]float64{}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "snakepit_worker_recycles_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			var pool, reason string
			for _, lp := range m.GetLabel() {
				switch lp.GetName() {
				case "pool":
					pool = lp.GetValue()
				case "reason":
					reason = lp.GetValue()
				}
			}
			if reason == "reload" {
				got[pool] = m.GetCounter().GetValue()
			}
		}
	}
	if got["default"] != 2 || got["text"] != 1 {
		t.Fatalf("snakepit_worker_recycles_total{reason=reload} by pool = %v", got)
	}

	// App.Reload reloads every pool, one after the other.
	rep, err = app.Reload(ctx)
	if err != nil || !slices.Equal(rep.Recycled, []string{"w0", "w1", "text.w0"}) {
		t.Fatalf("App.Reload = %+v, %v", rep, err)
	}
}

// Host tools and sessions are the App's: a named pool's workers reach
// the one bridge (their worker ids are registered there like the default
// pool's), and see the same session store.
func TestNamedPoolReachesHostToolsAndSessions(t *testing.T) {
	cfg := snakepit.Config{Workers: 1}
	cfg.Pools = []snakepit.PoolConfig{{Name: "side", Workers: 1}}
	app := buildApp(t, cfg)
	err := app.RegisterHostTool("twice", func(ctx context.Context, args json.RawMessage) (any, error) {
		var in struct{ N float64 }
		if err := json.Unmarshal(args, &in); err != nil {
			return nil, err
		}
		call, _ := snakepit.HostCallFrom(ctx)
		return map[string]any{"twice": 2 * in.N, "caller": call.WorkerID}, nil
	}, snakepit.ToolSpec{Name: "twice"})
	if err != nil {
		t.Fatal(err)
	}
	if err := app.Start(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stopApp(t, app) })
	ctx := ctxT(t)
	if _, err := app.Sessions().Create("shared", nil, 0); err != nil {
		t.Fatal(err)
	}
	pools := []*snakepit.Pool{app.Pool(snakepit.DefaultPool), app.Pool("side")}
	for _, p := range pools {
		want := "w0"
		if p.Name() != snakepit.DefaultPool {
			want = p.Name() + ".w0"
		}
		v, err := snakepit.Decode[map[string]any](p.Execute(ctx, "call_host", map[string]any{"name": "twice", "args": map[string]any{"n": 21}}))
		if err != nil || v["twice"] != 42.0 || v["caller"] != want {
			t.Fatalf("pool %s: host tool = %v, %v; want 42 from %s", p.Name(), v, err, want)
		}
		info, err := snakepit.Decode[map[string]any](p.Execute(ctx, "worker_info", nil, snakepit.WithSession("shared")))
		if err != nil || info["worker_id"] != want {
			t.Fatalf("pool %s: worker_info = %v, %v; want worker_id %s", p.Name(), info, err, want)
		}
		if ok, err := snakepit.Decode[bool](p.Execute(ctx, "session_valid", nil, snakepit.WithSession("shared"))); err != nil || !ok {
			t.Fatalf("pool %s: session_valid = %v, %v", p.Name(), ok, err)
		}
	}
	app.Sessions().Delete("shared")
	for _, p := range pools {
		if ok, err := snakepit.Decode[bool](p.Execute(ctx, "session_valid", nil, snakepit.WithSession("shared"))); err != nil || ok {
			t.Fatalf("pool %s: session_valid after Delete = %v, %v; want false", p.Name(), ok, err)
		}
	}
}
