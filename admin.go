package snakepit

import (
	"encoding/json"
	"fmt"
	"maps"
	"mime"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/snakepit-go/snakepit/pool"
)

// DefaultAdminRefresh is how often the status page reloads itself unless
// AdminOptions.Refresh says otherwise.
const DefaultAdminRefresh = 5 * time.Second

// AdminOptions configures AdminHandler. The zero value is ready to use.
type AdminOptions struct {
	// Refresh is how often the HTML status page reloads itself: 0 means
	// DefaultAdminRefresh, a negative value never. Whole seconds; a value
	// below one second counts as one.
	Refresh time.Duration
}

// The App's readiness states, in the order a run goes through them; /readyz
// and /status report them.
const (
	readinessNotStarted = "not_started" // neither Start nor a parent's Serve yet
	readinessStarting   = "starting"    // started, not every child ready yet
	readinessReady      = "ready"       // the tree is ready
	readinessFailed     = "failed"      // the start failed (*StartError); a parent's restart starts afresh
	readinessStopping   = "stopping"    // stopping or stopped
)

// readiness is what /readyz answers and /status shows.
type readiness struct {
	// State is one of not_started, starting, ready, failed, stopping.
	State string
	// Ready is /readyz's answer: State is ready and at least one worker
	// takes calls.
	Ready bool
	// Reason says why not ("" when Ready): the start error for failed.
	Reason string `json:",omitempty"`
}

// readiness reads the App's state. A started App is ready only while a
// worker takes calls: a pool whose every worker is restarting cannot serve.
func (a *App) readiness(st Stats) readiness {
	r := a.cur.Load()
	a.mu.Lock()
	stopped := a.stopped
	a.mu.Unlock()
	switch {
	case !a.running.Load():
		return readiness{State: readinessNotStarted, Reason: "the app has not been started (Start, or Serve by a supervisor)"}
	case r.failure() != nil:
		return readiness{State: readinessFailed, Reason: r.failure().Error()}
	case stopped || isClosed(r.stopping):
		return readiness{State: readinessStopping, Reason: "the app is stopping or stopped"}
	case !isClosed(r.tree.Ready()):
		return readiness{State: readinessStarting, Reason: "the app is starting: " + startingSummary(st)}
	}
	if why := notServing(st); why != "" {
		return readiness{State: readinessReady, Reason: why}
	}
	return readiness{State: readinessReady, Ready: true}
}

// notServing says which pool has no worker taking calls ("" when every
// pool serves). An elastic pool scaled to zero serves: its next call
// starts a worker.
func notServing(st Stats) string {
	pools := st.Pools
	if pools == nil {
		pools = map[string]PoolStats{DefaultPool: st.Pool}
	}
	for _, name := range slices.Sorted(maps.Keys(pools)) {
		ps := pools[name]
		if w := ps.Workers; w.Idle+w.Busy == 0 && !(ps.Scaling.Elastic && ps.Scaling.Min == 0) {
			if len(pools) > 1 {
				return "pool " + name + ": no worker is ready: " + workerSummary(w)
			}
			return "no worker is ready: " + workerSummary(w)
		}
	}
	return ""
}

// startingSummary is every pool's worker counts ("pool name: ..." each
// when there are named pools), as notServing names them.
func startingSummary(st Stats) string {
	if len(st.Pools) <= 1 {
		return workerSummary(st.Pool.Workers)
	}
	parts := make([]string, 0, len(st.Pools))
	for _, name := range slices.Sorted(maps.Keys(st.Pools)) {
		parts = append(parts, "pool "+name+": "+workerSummary(st.Pools[name].Workers))
	}
	return strings.Join(parts, "; ")
}

func workerSummary(w pool.WorkerCounts) string {
	return fmt.Sprintf("%d of %d workers ready (%d starting, %d exited, %d given up, %d draining)",
		w.Idle+w.Busy, w.Total, w.Starting, w.Exited, w.Failed, w.Draining)
}

func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// AdminHandler serves an App's operator endpoints, for a mux of your own
// (http.StripPrefix mounts it under a path; every link it writes is
// relative):
//
//	GET /healthz      200 "ok" while the process serves HTTP (liveness)
//	GET /readyz       200 "ready" when the App is started, ready, and every
//	                  pool has a worker taking calls (an elastic pool at
//	                  MinWorkers 0 needs none); otherwise 503
//	                  "not ready: STATE: reason", STATE one of not_started,
//	                  starting, ready (no worker takes calls), failed (the
//	                  start error follows), stopping
//	GET /status       JSON: Stats plus "Readiness" {State, Ready, Reason};
//	                  a request whose Accept prefers text/html (a browser)
//	                  gets the status page instead (?format=json or
//	                  ?format=html decides regardless of Accept)
//	GET /status.html  the status page: per pool, workers with state, pid,
//	                  uptime, calls, in flight, RSS, restarts, recycles and
//	                  last error; given-up workers with their startup error;
//	                  restart and recycle reasons; queue depth over the
//	                  last two minutes and a latency
//	                  histogram; remote agents and their health. One
//	                  self-contained page (no script, no external asset)
//	                  that reloads itself every AdminOptions.Refresh.
//
// It registers no metrics: add NewCollector(app) to your own Prometheus
// registry (or set Config.Metrics) and serve that. The endpoints have no
// authentication and show error texts and pids: serve them on a loopback or
// otherwise protected listener. The handler may be built before Start; it
// follows the App through its runs.
func AdminHandler(app *App, opts AdminOptions) http.Handler {
	if app == nil {
		return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			plainText(w, http.StatusInternalServerError, "snakepit: AdminHandler was given a nil *App; pass the App that snakepit.New returned")
		})
	}
	h := &adminHandler{app: app, refresh: opts.Refresh}
	switch {
	case h.refresh == 0:
		h.refresh = DefaultAdminRefresh
	case h.refresh > 0 && h.refresh < time.Second:
		h.refresh = time.Second
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { plainText(w, http.StatusOK, "ok") })
	mux.HandleFunc("GET /readyz", h.readyz)
	mux.HandleFunc("GET /status", h.status)
	mux.HandleFunc("GET /status.html", h.page)
	return mux
}

type adminHandler struct {
	app     *App
	refresh time.Duration
}

func (h *adminHandler) readyz(w http.ResponseWriter, _ *http.Request) {
	rd := h.app.readiness(h.app.Stats())
	if !rd.Ready {
		plainText(w, http.StatusServiceUnavailable, "not ready: "+rd.State+": "+rd.Reason)
		return
	}
	plainText(w, http.StatusOK, "ready")
}

// statusJSON is /status: Stats' fields with the readiness beside them.
type statusJSON struct {
	Readiness readiness
	Stats
}

func (h *adminHandler) status(w http.ResponseWriter, r *http.Request) {
	if f := r.URL.Query().Get("format"); f == "html" || (f != "json" && wantsHTML(r.Header.Get("Accept"))) {
		h.page(w, r)
		return
	}
	st := h.app.Stats()
	body, err := json.MarshalIndent(statusJSON{Readiness: h.app.readiness(st), Stats: st}, "", "  ")
	if err != nil {
		http.Error(w, "snakepit: encoding the status: "+err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_, _ = w.Write(append(body, '\n'))
}

// wantsHTML: the Accept header ranks text/html above application/json (a
// browser's does; curl's */* and a client asking for JSON do not).
func wantsHTML(accept string) bool {
	html, js := -1.0, -1.0
	for part := range strings.SplitSeq(accept, ",") {
		mt, params, err := mime.ParseMediaType(strings.TrimSpace(part))
		if err != nil {
			continue
		}
		q := 1.0
		if v, ok := params["q"]; ok {
			if q, err = strconv.ParseFloat(v, 64); err != nil {
				continue
			}
		}
		switch mt {
		case "text/html", "application/xhtml+xml":
			html = max(html, q)
		case "application/json":
			js = max(js, q)
		}
	}
	return html > 0 && html > js
}

func (h *adminHandler) page(w http.ResponseWriter, _ *http.Request) {
	st := h.app.Stats()
	title := "snakepit"
	if h.app.cfg.Instance != "" {
		title += " " + h.app.cfg.Instance
	}
	v := newPageView(title, st, h.app.readiness(st), h.refresh, time.Now())
	var b strings.Builder
	if err := statusPage().Execute(&b, v); err != nil {
		http.Error(w, "snakepit: rendering the status page: "+err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	// The page is self-contained: forbid anything it does not carry.
	w.Header().Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	_, _ = w.Write([]byte(b.String()))
}

func plainText(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_, _ = fmt.Fprintln(w, msg)
}
