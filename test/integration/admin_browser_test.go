package integration

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/snakepit-go/snakepit"
	"github.com/snakepit-go/snakepit/agent"
	"github.com/snakepit-go/snakepit/internal/testutil"
	"github.com/snakepit-go/snakepit/pool"
	"github.com/snakepit-go/snakepit/remote"
	"github.com/snakepit-go/snakepit/worker"
	"github.com/snakepit-go/snakepit/worker/fake"
)

// screenshotEnv, set to 1, makes TestStatusPageInABrowser also take the
// screenshots in docs/ (status-page.png, status-page-phone.png) and write
// them there. Without it the test only checks the DOM: each Chromium run
// costs seconds, many more on a loaded machine.
const screenshotEnv = "SNAKEPIT_UPDATE_SCREENSHOTS"

// demoStatusApp runs an App whose status page has something in every
// section: Python workers with calls of varied latency, one recycled for
// memory, one restarted after a crash, one busy, a worker given up with a
// Python-like startup error (its text carries < > & and quotes), and two
// agents: one serving, one unreachable. It returns the App and the two
// agents' addresses.
func demoStatusApp(t *testing.T) (app *snakepit.App, live, dead string) {
	t.Helper()
	tok, live := startTestAgent(t)
	dead = unusedAddr(t)
	code := newVersionedAdapter(t, "v1")
	app = newApp(t, code.config(snakepit.Config{
		// Given-up workers are not retried while the test looks at them.
		Workers: 3, Capacity: 2, Instance: "demo", StartupFailures: 1, RetryGivenUpAfter: 10 * time.Minute,
		RecycleAboveRSS: 160 << 20, MemoryCheckInterval: 200 * time.Millisecond,
	}))
	ctx := ctxT(t)

	var wg sync.WaitGroup
	for c := range 4 {
		wg.Go(func() {
			for i := range 15 {
				ms := []int{0, 1, 2, 4, 8, 15, 30, 70}[(c+i)%8]
				if _, err := app.Execute(ctx, "sleep", map[string]any{"ms": ms}); err != nil {
					t.Errorf("sleep %d ms: %v", ms, err)
				}
			}
		})
	}
	wg.Wait()

	if _, err := app.Execute(ctx, "hold_memory", map[string]any{"mb": 200}); err != nil {
		t.Fatalf("hold_memory: %v", err)
	}
	testutil.Eventually(t, 30*time.Second, "a worker recycled for memory", func() bool {
		return app.Stats().Pool.RecycleReasons[snakepit.RecycleMemory] == 1
	})
	if _, err := app.Execute(ctx, "crash", map[string]any{"code": 3}); !errors.Is(err, snakepit.ErrWorkerCrashed) {
		t.Fatalf("crash: %v; want ErrWorkerCrashed", err)
	}
	testutil.Eventually(t, 30*time.Second, "the crashed worker back", func() bool {
		w := app.Stats().Pool.Workers
		return w.Idle+w.Busy == 3
	})

	broken := &fake.Factory{Options: []fake.Option{fake.WithFailStart(&worker.StartupError{
		WorkerID: "w3", Cause: errors.New(`the adapter failed to import: ModuleNotFoundError: No module named 'torch'`),
		Stderr: []string{
			"Traceback (most recent call last):",
			`  File "<frozen importlib._bootstrap>", line 1204, in _gcd_import`,
			`  File "/srv/app/model_adapter.py", line 3, in <module>`,
			"    import torch  # needs CUDA >= 12 & cuDNN",
			"ModuleNotFoundError: No module named 'torch'",
		},
		Hint: "install the adapter's dependencies into the worker's Python",
	}, 0)}}
	if err := app.AddWorker("w3", broken); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 30*time.Second, "w3 given up", func() bool { return app.Stats().Pool.Workers.Failed == 1 })

	// Agents join after the calls above, which must run on local workers.
	rf, err := remote.NewFactory(remote.Options{TokenFile: tok, StartupTimeout: 2 * time.Second, Logger: testutil.Logger()})
	if err != nil {
		t.Fatal(err)
	}
	for _, ep := range []string{live, dead} {
		if err := app.AddWorker(remote.WorkerID(ep), rf.For(ep)); err != nil {
			t.Fatal(err)
		}
	}
	testutil.Eventually(t, 30*time.Second, "one agent serving, one given up", func() bool {
		w := app.Stats().Pool.Workers
		return w.Idle+w.Busy == 4 && w.Failed == 2
	})

	// One call in flight while the page is rendered: a busy worker.
	busyCtx, cancelBusy := context.WithCancel(context.Background())
	busyDone := make(chan struct{})
	go func() {
		defer close(busyDone)
		_, _ = app.Execute(busyCtx, "sleep", map[string]any{"ms": 120000})
	}()
	t.Cleanup(func() { cancelBusy(); <-busyDone })
	testutil.Eventually(t, 10*time.Second, "a worker busy", func() bool { return app.Stats().Pool.Workers.Busy == 1 })
	return app, live, dead
}

// startTestAgent serves an App of one Python worker as an agent on
// loopback; it returns the token file and the agent's address.
func startTestAgent(t *testing.T) (tokenFile, addr string) {
	t.Helper()
	tokenFile = filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte("status-page-test-token-0123456789\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	agentApp := newApp(t, snakepit.Config{Workers: 1})
	srv, err := agent.Listen(agentApp, agent.Options{Listen: "127.0.0.1:0", TokenFile: tokenFile, Logger: testutil.Logger()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-served; err != nil {
			t.Errorf("agent Serve: %v", err)
		}
	})
	return tokenFile, srv.Addr()
}

// unusedAddr is a loopback address nothing listens on.
func unusedAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	if err := ln.Close(); err != nil {
		t.Fatal(err)
	}
	return addr
}

// The status page in a real browser: headless Chromium loads /status (its
// Accept header asks for HTML) from a running App, and the DOM it built
// shows every worker with its state, the given-up worker's error as text,
// the reasons, and the latency chart.
func TestStatusPageInABrowser(t *testing.T) {
	t.Parallel() // long and mostly waiting: runs beside the other long tests, for make test's time
	chromium := findChromium(t)
	app, live, dead := demoStatusApp(t)
	srv := httptest.NewServer(snakepit.AdminHandler(app, snakepit.AdminOptions{}))
	t.Cleanup(srv.Close)

	dom := string(runChromium(t, chromium, "--dump-dom", srv.URL+"/status"))
	if !strings.Contains(dom, `id="readiness"`) {
		t.Fatalf("Chromium did not render the status page; DOM:\n%s", dom)
	}
	st := app.Stats().Pool
	checkDOM(t, dom, st)
	checkAgents(t, dom, live, dead)

	if os.Getenv(screenshotEnv) != "1" {
		return
	}
	dir := t.TempDir()
	for name, size := range map[string]string{"status-page.png": "1280,1900", "status-page-phone.png": "412,2400"} {
		path := filepath.Join(dir, name)
		runChromium(t, chromium, "--screenshot="+path, "--window-size="+size, srv.URL+"/status.html")
		png, err := os.ReadFile(path)
		if err != nil || !bytes.HasPrefix(png, []byte("\x89PNG\r\n\x1a\n")) || len(png) < 20<<10 {
			t.Fatalf("screenshot %s: %d bytes, %v", name, len(png), err)
		}
		if err := os.WriteFile(filepath.Join("..", "..", "docs", name), png, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("wrote docs/%s (%d bytes)", name, len(png))
	}
}

func checkDOM(t *testing.T, dom string, st snakepit.PoolStats) {
	t.Helper()
	if !strings.Contains(dom, `data-state="ready" data-ready="true"`) {
		t.Error("the readiness badge does not say ready")
	}
	rows := regexp.MustCompile(`(?s)<tr class="worker" data-worker="(w\d)" data-state="([a-z_]+)">(.*?)</tr>`).FindAllStringSubmatch(dom, -1)
	states := map[string]string{}
	for _, r := range rows {
		states[r[1]] = r[2]
		if r[2] == "idle" || r[2] == "busy" {
			if !strings.Contains(r[3], " MiB</td>") {
				t.Errorf("worker %s shows no RSS: %s", r[1], r[3])
			}
		}
	}
	// One call is in flight: on a local worker or on the live agent.
	busy := strings.Count(dom, `data-state="busy"><td class="mono">`)
	for _, id := range []string{"w0", "w1", "w2"} {
		if states[id] != "idle" && states[id] != "busy" {
			t.Errorf("worker %s is %q on the page; want idle or busy (rows: %v)", id, states[id], states)
		}
	}
	if busy != 1 || states["w3"] != "failed" || len(rows) != 4 {
		t.Errorf("rows %v, %d busy in all; want w0-w2 idle or busy, w3 failed, one busy worker or agent", states, busy)
	}
	givenUp := regexp.MustCompile(`(?s)<div class="givenup" data-worker="w3">.*?</div>`).FindString(dom)
	for _, want := range []string{
		"No module named 'torch'", `File "&lt;frozen importlib._bootstrap&gt;"`, "in &lt;module&gt;", "CUDA &gt;= 12 &amp; cuDNN",
	} {
		if !strings.Contains(givenUp, want) {
			t.Errorf("the given-up section lacks %q:\n%s", want, givenUp)
		}
	}
	for _, want := range []string{
		`data-kind="recycle" data-reason="memory"`, `data-kind="restart" data-reason="crashed"`, `data-kind="restart" data-reason="startup"`,
	} {
		if !strings.Contains(dom, want) {
			t.Errorf("the reasons table lacks %s", want)
		}
	}
	chart := regexp.MustCompile(`(?s)<svg class="chart" id="latency-default" data-calls="(\d+)".*?</svg>`).FindStringSubmatch(dom)
	if chart == nil {
		t.Fatal("no latency chart on the page")
	}
	counts := regexp.MustCompile(`<g class="bucket" data-le="[^"]+" data-count="(\d+)">`).FindAllStringSubmatch(chart[0], -1)
	bars := strings.Count(chart[0], `<rect class="bar"`)
	var sum uint64
	for _, c := range counts {
		n, _ := strconv.ParseUint(c[1], 10, 64)
		sum += n
	}
	calls, _ := strconv.ParseUint(chart[1], 10, 64)
	if len(counts) != 17 || bars != 17 || sum != calls || calls < 60 || calls > st.Latency.Count {
		t.Errorf("chart: %d buckets, %d bars, %d calls in the buckets of %d (Stats: %d); want 17, 17, all of ≥ 60",
			len(counts), bars, sum, calls, st.Latency.Count)
	}
	q := regexp.MustCompile(`<polyline class="depth" fill="none" points="([^"]*)"`).FindStringSubmatch(dom)
	if q == nil || len(strings.Fields(q[1])) != pool.QueueHistorySeconds {
		t.Errorf("no queue chart with one point per second on the page: %q", q)
	}
}

// checkAgents: the live agent is healthy (idle or busy), the unreachable
// one given up with its connection error.
func checkAgents(t *testing.T, dom, live, dead string) {
	t.Helper()
	rows := regexp.MustCompile(`(?s)<tr class="agent" data-agent="([^"]+)" data-state="([a-z_]+)">(.*?)</tr>`).FindAllStringSubmatch(dom, -1)
	got := map[string][]string{}
	for _, r := range rows {
		got[r[1]] = r[2:]
	}
	if r := got[live]; r == nil || (r[0] != "idle" && r[0] != "busy") || !strings.Contains(r[1], ">healthy<") {
		t.Errorf("live agent %s: %v", live, r)
	}
	if r := got[dead]; r == nil || r[0] != "failed" || !strings.Contains(r[1], ">unreachable, given up<") || !strings.Contains(r[1], "<details>") {
		t.Errorf("unreachable agent %s: %v", dead, r)
	}
	if len(rows) != 2 {
		t.Errorf("%d agent rows; want 2", len(rows))
	}
}
