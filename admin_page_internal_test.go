package snakepit

import (
	"errors"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/snakepit-go/snakepit/pool"
	"github.com/snakepit-go/snakepit/remote"
)

// evil is an error text with every character HTML gives a meaning to.
const evil = `ImportError: cannot import name 'x' from "<adapter>" & <script>alert(1)</script>`

func renderPage(t *testing.T, st Stats, rd readiness) string {
	t.Helper()
	var b strings.Builder
	if err := statusPage().Execute(&b, newPageView("snakepit test", st, rd, 3*time.Second, time.Now())); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// The page shows every worker state, the given-up worker's error escaped,
// the reasons with their details, the chart and the agents.
func TestStatusPageRendersEveryState(t *testing.T) {
	now := time.Now()
	states := []string{pool.StateStarting, pool.StateIdle, pool.StateBusy, pool.StateExited, pool.StateFailed, pool.StateDraining}
	var ps PoolStats
	for i, s := range states {
		w := pool.WorkerStats{ID: "w" + string(rune('0'+i)), State: s, Since: now.Add(-90 * time.Second), Capacity: 2, Calls: uint64(i * 10)}
		if s == pool.StateIdle || s == pool.StateBusy {
			w.PID = 1 // not this run's: no RSS is read
		}
		if s == pool.StateFailed {
			w.LastError = evil
			ps.GivenUp = append(ps.GivenUp, GivenUpWorker{ID: w.ID, Err: errors.New(evil), RetryAt: now.Add(20 * time.Second)})
		}
		ps.PerWorker = append(ps.PerWorker, w)
	}
	ps.PerWorker = append(ps.PerWorker, pool.WorkerStats{ID: remote.WorkerID("10.0.0.7:50051"), State: pool.StateExited, Restarts: 2, LastError: "connection refused <&>"})
	ps.RestartReasons, ps.RestartDetail = map[string]int{"crash": 2}, map[string]string{"crash": "exit 1 <sig & co>"}
	ps.RecycleReasons, ps.RecycleDetail = map[string]int{"requests": 1}, map[string]string{"requests": "max requests (5) reached"}
	ps.Latency = pool.LatencyStats{Count: 6, Sum: 6 * time.Millisecond, P50: time.Millisecond, Buckets: []pool.LatencyBucket{
		{UpperBound: time.Millisecond, Count: 4}, {UpperBound: 10 * time.Millisecond, Count: 5},
	}}
	ps.Queued, ps.Capacity, ps.InFlight = 3, 8, 2
	page := renderPage(t, Stats{RunID: "run-1", Pool: ps}, readiness{State: readinessReady, Ready: true})

	for _, s := range states {
		if !regexp.MustCompile(`<tr class="worker" data-worker="w\d" data-state="` + s + `">`).MatchString(page) {
			t.Errorf("no worker row in state %s", s)
		}
	}
	for _, want := range []string{
		`<meta name="viewport" content="width=device-width, initial-scale=1">`,
		`<meta http-equiv="refresh" content="3">`,
		`<div class="givenup" data-worker="w4">`,
		`ImportError: cannot import name &#39;x&#39; from &#34;&lt;adapter&gt;&#34; &amp; &lt;script&gt;alert(1)&lt;/script&gt;`,
		`retried in 20s`,
		`<tr class="agent" data-agent="10.0.0.7:50051" data-state="exited">`,
		`lost, reconnecting`, `connection refused &lt;&amp;&gt;`,
		`data-reason="crash"`, `exit 1 &lt;sig &amp; co&gt;`, `data-reason="requests"`, `max requests (5) reached`,
		`<svg class="chart" id="latency-default" data-calls="6"`,
		`data-le="≤1ms" data-count="4"`, `data-le="≤10ms" data-count="1"`, `data-le="more" data-count="1"`,
		`<div class="card" id="queue-default" data-queued="3">`,
	} {
		if !strings.Contains(page, want) {
			t.Errorf("the page lacks %s", want)
		}
	}
	if strings.Contains(page, "<script") || strings.Contains(page, "<adapter>") || strings.Contains(page, "<sig") {
		t.Error("an error text reached the page unescaped")
	}
	// Self-contained: nothing is loaded from anywhere.
	if m := regexp.MustCompile(`(?i)(src=|https?:|@import|url\()`).FindString(page); m != "" {
		t.Errorf("the page refers to something outside it: %q", m)
	}
}

func TestStatusPageEmptyAndNotStarted(t *testing.T) {
	page := renderPage(t, Stats{RunID: "r"}, readiness{State: readinessNotStarted, Reason: "not <started>"})
	for _, want := range []string{`data-state="not_started"`, `not &lt;started&gt;`, `no calls yet`, `No local workers.`} {
		if !strings.Contains(page, want) {
			t.Errorf("the page lacks %s", want)
		}
	}
}

func TestWantsHTML(t *testing.T) {
	for accept, want := range map[string]bool{
		"": false, "*/*": false, "application/json": false, "text/html": true,
		"text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8": true,
		"application/json, text/html;q=0.5":                               false,
		"text/html;q=0.2, application/json;q=0.1":                         true,
		"text/html;q=0":             false,
		"text/html;q=bad, nonsense": false,
	} {
		if got := wantsHTML(accept); got != want {
			t.Errorf("wantsHTML(%q) = %v", accept, got)
		}
	}
}

// Every pool gets its own section, the default first, the others by name.
func TestStatusPageOneSectionPerPool(t *testing.T) {
	def := PoolStats{Stats: pool.Stats{Queued: 1}}
	embed := PoolStats{Stats: pool.Stats{Queued: 2, PerWorker: []pool.WorkerStats{{ID: "embed.w0", State: pool.StateIdle}}}}
	tok := PoolStats{Stats: pool.Stats{Queued: 3}}
	st := Stats{RunID: "r", Pool: def, Pools: map[string]PoolStats{DefaultPool: def, "tok": tok, "embed": embed}}
	page := renderPage(t, st, readiness{State: readinessReady, Ready: true})
	var at []int
	for _, want := range []string{
		`<div class="card" id="queue-default" data-queued="1">`,
		`<div class="card" id="queue-embed" data-queued="2">`,
		`<div class="card" id="queue-tok" data-queued="3">`,
	} {
		i := strings.Index(page, want)
		if i < 0 {
			t.Fatalf("the page lacks %s", want)
		}
		at = append(at, i)
	}
	if !(at[0] < at[1] && at[1] < at[2]) {
		t.Errorf("pool sections out of order (default, then by name): %v", at)
	}
	if !strings.Contains(page, `data-worker="embed.w0"`) {
		t.Error("the embed pool's worker is not listed")
	}
}

// An elastic pool's section has its scaling line; a fixed pool's has none.
func TestStatusPageScalingLine(t *testing.T) {
	at := time.Now().Add(-3 * time.Second)
	burst := PoolStats{Scaling: ScalingStats{Elastic: true, Min: 1, Max: 4, Workers: 3, Ready: 2, ScaleUps: 2,
		Last: ScalingEvent{At: at, Direction: "up", WorkerID: "burst.w2", Reason: "oldest queued call waited 312ms <x>"}}}
	def := PoolStats{Scaling: ScalingStats{Min: 2, Max: 2}}
	page := renderPage(t, Stats{RunID: "r", Pool: def, Pools: map[string]PoolStats{DefaultPool: def, "burst": burst}}, readiness{State: readinessReady, Ready: true})
	if strings.Contains(page, `id="scaling-default"`) {
		t.Error("a fixed pool has a scaling line")
	}
	for _, want := range []string{
		`<p class="muted" id="scaling-burst">Scaling: elastic 1..4 · 3 workers, 2 ready · 2 up, 0 down · last: up burst.w2 3`,
		`(oldest queued call waited 312ms &lt;x&gt;)</p>`,
	} {
		if !strings.Contains(page, want) {
			t.Errorf("page lacks %q", want)
		}
	}
}

// The queue's history is drawn as a line scaled to its deepest second.
func TestStatusPageDrawsTheQueueOverTime(t *testing.T) {
	hist := make([]int, pool.QueueHistorySeconds)
	hist[len(hist)-3], hist[len(hist)-2] = 4, 8
	page := renderPage(t, Stats{RunID: "r", Pool: PoolStats{Stats: pool.Stats{QueueHistory: hist, Queued: 2}}}, readiness{State: readinessReady, Ready: true})
	m := regexp.MustCompile(`<svg class="chart" id="queue-chart-default" data-max="8"[^>]*>\s*<line[^>]*/>\s*<polyline class="depth" fill="none" points="([^"]*)"/>`).FindStringSubmatch(page)
	if m == nil {
		t.Fatalf("no queue chart in the page")
	}
	pts := strings.Fields(m[1])
	if len(pts) != pool.QueueHistorySeconds {
		t.Fatalf("%d points, want one per second (%d)", len(pts), pool.QueueHistorySeconds)
	}
	// The deepest second reaches the top margin, an empty one the axis.
	if pts[len(pts)-2] != "590,8" || pts[len(pts)-1] != "595,80" || pts[0] != "0,80" {
		t.Fatalf("points %v … %v", pts[:2], pts[len(pts)-3:])
	}
}

// Every pool must have a worker taking calls, except an elastic one at
// MinWorkers 0; the reason names the pool when there are several.
func TestNotServingNamesThePool(t *testing.T) {
	up := PoolStats{Stats: pool.Stats{Workers: pool.WorkerCounts{Idle: 1, Total: 1}}}
	down := PoolStats{Stats: pool.Stats{Workers: pool.WorkerCounts{Starting: 1, Total: 1}}}
	zero := PoolStats{Scaling: ScalingStats{Elastic: true, Min: 0, Max: 2}}
	for _, tc := range []struct {
		st   Stats
		want string
	}{
		{Stats{Pool: up}, ""},
		{Stats{Pool: down}, "no worker is ready: 0 of 1 workers ready"},
		{Stats{Pools: map[string]PoolStats{DefaultPool: up, "burst": zero}}, ""},
		{Stats{Pools: map[string]PoolStats{DefaultPool: up, "side": down}}, "pool side: no worker is ready"},
	} {
		if got := notServing(tc.st); (tc.want == "") != (got == "") || !strings.HasPrefix(got, tc.want) {
			t.Errorf("notServing = %q, want %q…", got, tc.want)
		}
	}
}

// A named pool's remote workers ("<pool>.remote:<endpoint>") are its
// agents, shown by endpoint, not local workers.
func TestStatusPageNamedPoolAgents(t *testing.T) {
	embed := PoolStats{Stats: pool.Stats{PerWorker: []pool.WorkerStats{
		{ID: "embed.w0", State: pool.StateIdle},
		{ID: "embed." + remote.WorkerID("10.0.0.8:50051"), State: pool.StateIdle},
	}}}
	v := newPageView("t", Stats{RunID: "r", Pools: map[string]PoolStats{"embed": embed}}, readiness{}, 0, time.Now())
	pv := v.Pools[1]
	if len(pv.Agents) != 1 || pv.Agents[0].ID != "10.0.0.8:50051" || len(pv.Workers) != 1 || pv.Workers[0].ID != "embed.w0" {
		t.Fatalf("pool embed: agents %+v, workers %+v; want the agent 10.0.0.8:50051 and the worker embed.w0", pv.Agents, pv.Workers)
	}
}

// A starting App's reason counts every pool's workers, not the default's.
func TestStartingSummaryNamesEveryPool(t *testing.T) {
	def := PoolStats{Stats: pool.Stats{Workers: pool.WorkerCounts{Total: 2, Idle: 2}}}
	embed := PoolStats{Stats: pool.Stats{Workers: pool.WorkerCounts{Total: 3, Starting: 3}}}
	got := startingSummary(Stats{Pool: def, Pools: map[string]PoolStats{DefaultPool: def, "embed": embed}})
	if !strings.Contains(got, "pool default: 2 of 2 workers ready") || !strings.Contains(got, "pool embed: 0 of 3 workers ready (3 starting") {
		t.Fatalf("startingSummary = %q; want both pools' counts", got)
	}
	if got := startingSummary(Stats{Pool: def, Pools: map[string]PoolStats{DefaultPool: def}}); got != workerSummary(def.Workers) {
		t.Fatalf("one pool: %q", got)
	}
}
