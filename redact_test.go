package snakepit

import (
	"context"
	"encoding/json"
	"fmt"
	"github.com/snakepit-go/snakepit/internal/testutil"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/thejerf/suture/v4"

	"github.com/snakepit-go/snakepit/internal/auth"
)

// tee sends every record, with every attribute, to all its handlers.
type tee []slog.Handler

func (t tee) Enabled(context.Context, slog.Level) bool { return true }
func (t tee) Handle(ctx context.Context, r slog.Record) error {
	for _, h := range t {
		_ = h.Handle(ctx, r.Clone())
	}
	return nil
}
func (t tee) WithAttrs(as []slog.Attr) slog.Handler {
	out := make(tee, len(t))
	for i, h := range t {
		out[i] = h.WithAttrs(as)
	}
	return out
}
func (t tee) WithGroup(name string) slog.Handler {
	out := make(tee, len(t))
	for i, h := range t {
		out[i] = h.WithGroup(name)
	}
	return out
}

// watched reports when the App's Serve returned, also after the parent
// gave up waiting for it.
type watched struct {
	*App
	returned chan error
}

func (w watched) Serve(ctx context.Context) error {
	err := w.App.Serve(ctx)
	w.returned <- err
	return err
}

// Scenario 6: an App in a user's suture tree is formatted by suture (its
// stop-timeout event names the service, with %#v when it has no String), by
// the user's logs and debug prints. None of it may carry the run's token:
// not the logs (text and JSON, every attribute), not suture's events, not
// any fmt verb applied to the App, its Config, Stats, factory or bridge.
func TestTokenAppearsInNoLogEventOrFormattedValue(t *testing.T) {
	var text, js testutil.Buffer
	opts := &slog.HandlerOptions{Level: slog.LevelDebug, AddSource: true}
	log := slog.New(tee{slog.NewTextHandler(&text, opts), slog.NewJSONHandler(&js, opts)})
	cfg := Config{Workers: 2, RegistryPath: filepath.Join(t.TempDir(), "r.db"), Logger: log}
	app, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	token := auth.Reveal(app.token)
	if len(token) < 20 {
		t.Fatalf("the App's token %q is not a generated one", token)
	}

	var evMu sync.Mutex
	var events []string
	parent := suture.New("users-tree", suture.Spec{
		// Tiny, so the parent gives up on the App's stop and formats it in
		// an EventStopTimeout, as it would after a too-slow stop.
		Timeout: time.Millisecond,
		EventHook: func(e suture.Event) {
			evMu.Lock()
			defer evMu.Unlock()
			events = append(events, fmt.Sprintf("%v | %+v | %#v | %s | %v", e, e, e, e.String(), e.Map()))
		},
	})
	w := watched{app, make(chan error, 1)}
	parent.Add(w)
	ctx, cancel := context.WithCancel(context.Background())
	parentDone := parent.ServeBackground(ctx)

	cctx, ccancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer ccancel()
	if err := app.WaitReady(cctx); err != nil {
		t.Fatal(err)
	}
	if _, err := app.Execute(cctx, "echo", map[string]any{"x": 1}, WithSession("s-1")); err != nil {
		t.Fatal(err)
	}
	if _, err := app.Execute(cctx, "fail", map[string]any{"message": "expected"}); err == nil {
		t.Fatal("fail did not fail")
	}
	for _, err := range app.ExecuteStream(cctx, "stream_count", map[string]any{"n": 3}) {
		if err != nil {
			t.Fatal(err)
		}
	}

	var dumps []string
	r := app.cur.Load()
	values := []any{app, w, cfg, app.cfg, app.Stats(), app.pools[0].factory, app.bridge, r.pools[0].work, r.pools[0].pool, r.tree, r.reg, r.clean}
	if lf, ok := app.pools[0].factory.(*lateFactory); ok {
		values = append(values, lf.base, *lf.base)
	}
	for _, s := range r.pools[0].work.Starters() {
		values = append(values, s, s.Worker())
	}
	// The App formats through String/GoString, so it is safe to format
	// live; its parts are dumped by reflection, which reads their atomics
	// plainly, so they are formatted once everything has stopped (below).
	for _, verb := range []string{"%v", "%+v", "%#v", "%s"} {
		dumps = append(dumps, fmt.Sprintf(verb, app))
	}
	stats, err := json.Marshal(app.Stats())
	if err != nil {
		t.Fatal(err)
	}
	dumps = append(dumps, string(stats))
	log.Info("user logs the app", "app", app, "config", cfg, "stats", app.Stats(), "factory", app.pools[0].factory, "bridge", app.bridge)

	cancel()
	select {
	case <-parentDone:
	case <-time.After(60 * time.Second):
		t.Fatal("the parent supervisor did not return")
	}
	select {
	case <-w.returned:
	case <-time.After(60 * time.Second):
		t.Fatal("the App's Serve did not return after the parent stopped")
	}

	for _, v := range values {
		for _, verb := range []string{"%v", "%+v", "%#v", "%s"} {
			dumps = append(dumps, fmt.Sprintf(verb, v))
		}
	}
	evMu.Lock()
	evs := strings.Join(events, "\n")
	evMu.Unlock()
	if !strings.Contains(evs, app.String()) {
		t.Fatalf("no suture event names the App (want a stop-timeout event): %s", evs)
	}
	for what, out := range map[string]string{"text logs": text.String(), "JSON logs": js.String(), "suture events": evs, "formatted values": strings.Join(dumps, "\n")} {
		if out == "" {
			t.Fatalf("%s: nothing captured", what)
		}
		if i := strings.Index(out, token); i >= 0 {
			t.Fatalf("the token appears in the %s: …%s…", what, out[max(0, i-200):min(len(out), i+len(token)+20)])
		}
	}
}
