package snakepit_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/snakepit-go/snakepit"
	"github.com/snakepit-go/snakepit/internal/testutil"
	"github.com/snakepit-go/snakepit/worker"
	"github.com/snakepit-go/snakepit/worker/fake"
)

// serveAdmin serves AdminHandler(app) on a loopback test server.
func serveAdmin(t *testing.T, app *snakepit.App) string {
	t.Helper()
	srv := httptest.NewServer(snakepit.AdminHandler(app, snakepit.AdminOptions{}))
	t.Cleanup(srv.Close)
	return srv.URL
}

var adminClient = &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 10 * time.Second}

// adminGet fetches url with an Accept header ("" for none).
func adminGet(t *testing.T, url, accept string) (int, string, http.Header) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	resp, err := adminClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(body), resp.Header
}

type adminStatus struct {
	Readiness struct {
		State  string
		Ready  bool
		Reason string
	}
	snakepit.Stats
}

func getStatus(t *testing.T, base string) adminStatus {
	t.Helper()
	code, body, hdr := adminGet(t, base+"/status", "")
	if code != 200 || !strings.HasPrefix(hdr.Get("Content-Type"), "application/json") {
		t.Fatalf("/status: %d %s %q", code, hdr.Get("Content-Type"), body)
	}
	var st adminStatus
	if err := json.Unmarshal([]byte(body), &st); err != nil {
		t.Fatalf("/status is not JSON: %v\n%s", err, body)
	}
	return st
}

// checkReadyz asserts /readyz's code and that its body names state.
func checkReadyz(t *testing.T, base string, code int, state string) {
	t.Helper()
	got, body, _ := adminGet(t, base+"/readyz", "")
	want := "not ready: " + state + ": "
	if code == 200 {
		want = "ready"
	}
	if got != code || !strings.HasPrefix(body, want) {
		t.Errorf("/readyz = %d %q; want %d %q…", got, body, code, want)
	}
	if st := getStatus(t, base); st.Readiness.State != state || st.Readiness.Ready != (code == 200) {
		t.Errorf("/status readiness = %+v; want %s", st.Readiness, state)
	}
}

func TestAdminStatusJSON(t *testing.T) {
	f := &fake.Factory{Options: []fake.Option{fake.WithTool("echo", fake.Echo), fake.WithPID(4242)}}
	app, err := snakepit.New(fakeConfig(t, f, 2))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := app.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = app.Stop(context.Background()) })
	base := serveAdmin(t, app)
	for range 3 {
		if _, err := app.Execute(ctx, "echo", map[string]any{"x": 1}); err != nil {
			t.Fatal(err)
		}
	}
	testutil.Eventually(t, 10*time.Second, "both workers idle", func() bool { return app.Stats().Pool.Workers.Idle == 2 })

	if code, body, _ := adminGet(t, base+"/healthz", ""); code != 200 || strings.TrimSpace(body) != "ok" {
		t.Errorf("/healthz: %d %q", code, body)
	}
	checkReadyz(t, base, 200, "ready")
	st := getStatus(t, base)
	if st.RunID != app.RunID() || st.Pool.Requests != 3 || st.Pool.Outcomes[snakepit.OutcomeSuccess] != 3 || st.Pool.Workers.Idle != 2 || st.Readiness.Reason != "" {
		t.Errorf("/status = %+v", st)
	}
	var calls uint64
	for _, w := range st.Pool.PerWorker {
		if w.State != "idle" || w.PID != 4242 || w.Since.IsZero() || w.Capacity < 1 {
			t.Errorf("/status worker %+v", w)
		}
		calls += w.Calls
	}
	if len(st.Pool.PerWorker) != 2 || calls != 3 {
		t.Errorf("/status PerWorker = %+v; want 2 workers, 3 calls in all", st.Pool.PerWorker)
	}

	// A browser's Accept gets the page; ?format decides regardless.
	browser := "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
	for _, c := range []struct{ path, accept, want string }{
		{"/status", browser, "text/html"},
		{"/status", "*/*", "application/json"},
		{"/status", "application/json, text/html;q=0.5", "application/json"},
		{"/status?format=json", browser, "application/json"},
		{"/status?format=html", "", "text/html"},
		{"/status.html", "", "text/html"},
	} {
		if code, _, hdr := adminGet(t, base+c.path, c.accept); code != 200 || !strings.HasPrefix(hdr.Get("Content-Type"), c.want) {
			t.Errorf("GET %s (Accept %q): %d %s; want %s", c.path, c.accept, code, hdr.Get("Content-Type"), c.want)
		}
	}
	if code, _, _ := adminGet(t, base+"/metrics", ""); code != http.StatusNotFound {
		t.Errorf("/metrics: %d; the handler registers no metrics", code)
	}
	resp, err := adminClient.Post(base+"/readyz", "text/plain", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST /readyz: %d", resp.StatusCode)
	}
}

// not started → starting → stopping, on an App run by Serve (as a parent
// supervisor would), and ready → stopping with Start/Stop.
func TestAdminReadinessTransitions(t *testing.T) {
	f := &fake.Factory{Options: []fake.Option{fake.WithTool("echo", fake.Echo), fake.WithReadyDelay(time.Hour)}}
	app, err := snakepit.New(fakeConfig(t, f, 1))
	if err != nil {
		t.Fatal(err)
	}
	base := serveAdmin(t, app)
	checkReadyz(t, base, 503, "not_started")
	if code, _, _ := adminGet(t, base+"/healthz", ""); code != 200 {
		t.Errorf("/healthz before Start: %d", code)
	}

	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- app.Serve(ctx) }()
	testutil.Eventually(t, 10*time.Second, "the worker starting", func() bool { return app.Stats().Pool.Workers.Starting == 1 })
	checkReadyz(t, base, 503, "starting")
	cancel()
	select {
	case err := <-served:
		if err != nil {
			t.Fatalf("Serve: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Serve did not return within 30 s of its context's end")
	}
	checkReadyz(t, base, 503, "stopping")

	f2 := &fake.Factory{Options: []fake.Option{fake.WithTool("echo", fake.Echo)}}
	app2, err := snakepit.New(fakeConfig(t, f2, 1))
	if err != nil {
		t.Fatal(err)
	}
	base2 := serveAdmin(t, app2)
	sctx, scancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer scancel()
	if err := app2.Start(sctx); err != nil {
		t.Fatal(err)
	}
	checkReadyz(t, base2, 200, "ready")
	// Ready, but no worker takes calls: /readyz says so.
	if err := app2.RemoveWorker(sctx, "w0"); err != nil {
		t.Fatal(err)
	}
	checkReadyz(t, base2, 503, "ready")
	if _, body, _ := adminGet(t, base2+"/readyz", ""); !strings.Contains(body, "no worker is ready: 0 of 0 workers ready") {
		t.Errorf("/readyz without workers: %q", body)
	}
	if _, err := app2.Stop(sctx); err != nil {
		t.Fatal(err)
	}
	checkReadyz(t, base2, 503, "stopping")
}

// A start that fails is "failed" with the start error as the reason.
func TestAdminReadinessFailedStart(t *testing.T) {
	boom := errors.New("ImportError: no module named <adapter> & co")
	f := &fake.Factory{Options: []fake.Option{fake.WithFailStart(boom, 0)}}
	cfg := fakeConfig(t, f, 1)
	cfg.StartupFailures = 1
	app, err := snakepit.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	base := serveAdmin(t, app)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := app.Start(ctx); !errors.Is(err, snakepit.ErrStartup) && !errors.Is(err, snakepit.ErrNotReady) {
		t.Fatalf("Start = %v; want the start error", err)
	}
	t.Cleanup(func() { _, _ = app.Stop(context.Background()) })
	checkReadyz(t, base, 503, "failed")
	if st := getStatus(t, base); !strings.Contains(st.Readiness.Reason, boom.Error()) {
		t.Errorf("readiness reason %q lacks the startup error", st.Readiness.Reason)
	}
	_, page, _ := adminGet(t, base+"/status.html", "")
	if !strings.Contains(page, `data-state="failed"`) || !strings.Contains(page, "no module named &lt;adapter&gt; &amp; co") {
		t.Errorf("the page lacks the failed state or the escaped error:\n%s", page)
	}
}

// A worker that becomes ready after Start still counts; one given up while
// another serves leaves the App ready, and the page says why it was given up.
func TestAdminPageGivenUpWorker(t *testing.T) {
	f := &fake.Factory{
		Options: []fake.Option{fake.WithTool("echo", fake.Echo)},
		PerWorker: func(spec worker.Spec) []fake.Option {
			if spec.ID == "w1" {
				return []fake.Option{fake.WithFailStart(errors.New(`cannot import "x" <from y> & z`), 0)}
			}
			return nil
		},
	}
	cfg := fakeConfig(t, f, 2)
	cfg.MinReady, cfg.StartupFailures = 1, 1
	app, err := snakepit.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := app.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = app.Stop(context.Background()) })
	base := serveAdmin(t, app)
	testutil.Eventually(t, 10*time.Second, "one worker given up", func() bool { return app.Stats().Pool.Workers.Failed == 1 })
	checkReadyz(t, base, 200, "ready")
	_, page, _ := adminGet(t, base+"/status", "text/html")
	for _, want := range []string{
		`<tr class="worker" data-worker="w0" data-state="idle">`,
		`<tr class="worker" data-worker="w1" data-state="failed">`,
		`<div class="givenup" data-worker="w1">`,
		`cannot import &#34;x&#34; &lt;from y&gt; &amp; z`,
	} {
		if !strings.Contains(page, want) {
			t.Errorf("the page lacks %q", want)
		}
	}
	if strings.Contains(page, "<from y>") {
		t.Error("the page carries the error text unescaped")
	}
}

func TestAdminHandlerNilApp(t *testing.T) {
	srv := httptest.NewServer(snakepit.AdminHandler(nil, snakepit.AdminOptions{}))
	defer srv.Close()
	if code, body, _ := adminGet(t, srv.URL+"/readyz", ""); code != http.StatusInternalServerError || !strings.Contains(body, "nil *App") {
		t.Errorf("/readyz of a nil App: %d %q", code, body)
	}
}

func TestAdminPageRefresh(t *testing.T) {
	app, err := snakepit.New(fakeConfig(t, &fake.Factory{}, 1))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		refresh time.Duration
		want    string
	}{
		{0, `<meta http-equiv="refresh" content="5">`},
		{30 * time.Second, `<meta http-equiv="refresh" content="30">`},
		{300 * time.Millisecond, `<meta http-equiv="refresh" content="1">`},
		{-1, ""},
	} {
		srv := httptest.NewServer(snakepit.AdminHandler(app, snakepit.AdminOptions{Refresh: c.refresh}))
		_, page, hdr := adminGet(t, srv.URL+"/status.html", "")
		srv.Close()
		if got := strings.Contains(page, `http-equiv="refresh"`); got != (c.want != "") || !strings.Contains(page, c.want) {
			t.Errorf("Refresh %s: the page's refresh is not %q", c.refresh, c.want)
		}
		if csp := hdr.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'none'") {
			t.Errorf("Content-Security-Policy = %q", csp)
		}
	}
}

// Mount the operator endpoints under /admin/ of your own mux, beside your
// Prometheus registry's /metrics, on a listener only operators reach.
func ExampleAdminHandler() {
	app, err := snakepit.New(snakepit.Config{Adapter: "my_adapter.MyAdapter"})
	if err != nil {
		return
	}
	mux := http.NewServeMux()
	mux.Handle("/admin/", http.StripPrefix("/admin", snakepit.AdminHandler(app, snakepit.AdminOptions{Refresh: 10 * time.Second})))
	srv := &http.Server{Addr: "127.0.0.1:9090", Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.ListenAndServe() }()
	// /admin/healthz, /admin/readyz, /admin/status (JSON, or the page in a
	// browser) and /admin/status.html now answer for app.
}

// An elastic pool at MinWorkers 0 serves with no worker (its next call
// starts one): the App is ready.
func TestAdminReadyWithAnElasticPoolAtZero(t *testing.T) {
	f := &fake.Factory{Options: []fake.Option{fake.WithTool("echo", fake.Echo)}}
	cfg := fakeConfig(t, f, 1)
	cfg.Pools = []snakepit.PoolConfig{{Name: "burst", WorkerFactory: f, MinWorkers: 0, MaxWorkers: 2}}
	app, err := snakepit.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	base := serveAdmin(t, app)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := app.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer func() { _, _ = app.Stop(context.Background()) }()
	checkReadyz(t, base, 200, "ready")
}
