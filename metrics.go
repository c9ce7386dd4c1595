package snakepit

import (
	"slices"
	"strings"
	"sync"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"
)

// Restart reasons become label values, and a reason may carry a tool name or
// an error text: their cardinality is capped.
const (
	// maxReasonLen is the longest reason label value, in characters.
	maxReasonLen = 80
	// maxReasons is how many distinct reason values are exported; later
	// ones are counted under reason="other".
	maxReasons = 32
	// otherReason is the overflow bucket of the reason label.
	otherReason = "other"
)

// NewCollector returns a prometheus.Collector that exports app's Stats.
// Everything is read from App.Stats at scrape time, so calls pay nothing for
// it. Config.Metrics registers one for you; use NewCollector to register it
// elsewhere (an admin server's private registry, say), and Unregister a
// fresh NewCollector(app) to drop the series once the App is gone.
//
// Counters (cumulative since New):
//
//	snakepit_requests_total                          calls made (retries not counted again)
//	snakepit_requests_succeeded_total                calls that returned a result
//	snakepit_requests_failed_total{kind}             failed calls: tool_error, crashed, worker_timeout,
//	                                                 queue_timeout, saturated, cancelled, not_ready,
//	                                                 stopping, affinity, invalid, other
//	snakepit_retries_total                           extra attempts after a crash or a vanished worker
//	snakepit_worker_restarts_total                   worker lifetimes that ended with an error
//	snakepit_worker_restarts_by_reason_total{reason} the same split by reason: at most 32 values
//	                                                 of at most 80 characters, the rest under "other"
//	snakepit_worker_recycles_total{reason}           make-before-break process recycles (request quota, maximum
//	                                                 age, tool ignored cancellation), not restarts
//	snakepit_orphans_reaped_total                    processes of earlier runs the startup reaper stopped
//
// Gauges:
//
//	snakepit_workers{state}                    workers by state: starting, idle, busy, exited, failed
//	snakepit_queue_depth                       calls waiting for a worker
//	snakepit_in_flight                         calls running on a worker
//	snakepit_call_latency_max_seconds          the slowest call that reached a worker since New
//
// Histogram:
//
//	snakepit_call_duration_seconds             latency of every call that reached a worker, queueing
//	                                           included, in buckets from 0.5 ms to 60 s; aggregate
//	                                           across instances and take quantiles with
//	                                           histogram_quantile(0.99, rate(..._bucket[5m]))
//
// The histogram replaced the sliding-window quantile gauges of earlier
// versions: those could not be aggregated nor rated. Stats().Pool.Latency
// still has the window's P50/P90/P99 for in-process use.
//
// No series carries the run id, which changes at every start. When
// Config.Instance is set, every series carries it as the constant label
// instance; note that a Prometheus server scraping with honor_labels: false
// (its default) keeps its own target label and renames this one
// exported_instance. Several Apps registered with one Registerer must each
// set a distinct Instance (or each get their own
// prometheus.WrapRegistererWith labels): otherwise the registration of the
// second one fails, either as a duplicate or for label names that differ.
func NewCollector(app *App) prometheus.Collector {
	var cl prometheus.Labels
	if app.cfg.Instance != "" {
		cl = prometheus.Labels{"instance": app.cfg.Instance}
	}
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc(name, help, labels, cl)
	}
	return &collector{
		app: app,

		requests:       d("snakepit_requests_total", "Calls made (retries are not counted again)."),
		succeeded:      d("snakepit_requests_succeeded_total", "Calls that returned a result."),
		failed:         d("snakepit_requests_failed_total", "Calls that failed, by kind of failure.", "kind"),
		retries:        d("snakepit_retries_total", "Extra attempts made after a worker crashed or vanished under a call."),
		restarts:       d("snakepit_worker_restarts_total", "Worker lifetimes that ended with an error (crash, kill, failed start); planned recycles are not counted here."),
		recycles:       d("snakepit_worker_recycles_total", "Worker process recycles (make-before-break), by reason (request quota, maximum age, tool ignored cancellation, ...).", "reason"),
		restartReasons: d("snakepit_worker_restarts_by_reason_total", "Worker lifetimes that ended with an error, by reason (at most 32 reasons, the rest under \"other\").", "reason"),
		reaped:         d("snakepit_orphans_reaped_total", "Processes left by earlier runs that the startup reaper stopped (recorded workers and their descendants)."),

		workers:    d("snakepit_workers", "Workers by state.", "state"),
		queue:      d("snakepit_queue_depth", "Calls waiting for a worker."),
		inFlight:   d("snakepit_in_flight", "Calls running on a worker."),
		duration:   d("snakepit_call_duration_seconds", "Latency of the calls that reached a worker, queueing included."),
		latencyMax: d("snakepit_call_latency_max_seconds", "Latency of the slowest call that reached a worker since start, queueing included."),

		admitted: map[string]bool{},
	}
}

type collector struct {
	app *App

	requests, succeeded, failed, retries, restarts, restartReasons, recycles, reaped *prometheus.Desc
	workers, queue, inFlight, duration, latencyMax                                   *prometheus.Desc

	mu sync.Mutex
	// admitted holds the reason values exported under their own name. A
	// value once admitted stays admitted, and one turned away once stays in
	// "other", so every series, "other" included, only ever grows.
	admitted map[string]bool
}

// Describe implements prometheus.Collector.
func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{
		c.requests, c.succeeded, c.failed, c.retries, c.restarts, c.restartReasons, c.recycles, c.reaped,
		c.workers, c.queue, c.inFlight, c.duration, c.latencyMax,
	} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *collector) Collect(ch chan<- prometheus.Metric) {
	s := c.app.Stats()
	p := s.Pool
	emit := func(d *prometheus.Desc, t prometheus.ValueType, v float64, labels ...string) {
		m, err := prometheus.NewConstMetric(d, t, v, labels...)
		if err != nil {
			m = prometheus.NewInvalidMetric(d, err)
		}
		ch <- m
	}
	counter := func(d *prometheus.Desc, v float64, labels ...string) {
		emit(d, prometheus.CounterValue, v, labels...)
	}
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		emit(d, prometheus.GaugeValue, v, labels...)
	}

	counter(c.requests, float64(p.Requests))
	counter(c.succeeded, float64(p.Succeeded))
	f := p.Failed
	for _, k := range []struct {
		kind string
		n    uint64
	}{
		{"tool_error", f.ToolErrors},
		{"crashed", f.Crashed},
		{"worker_timeout", f.WorkerTimeouts},
		{"queue_timeout", f.QueueTimeouts},
		{"saturated", f.Saturated},
		{"cancelled", f.Cancelled},
		{"not_ready", f.NotReady},
		{"stopping", f.Stopping},
		{"affinity", f.Affinity},
		{"invalid", f.Invalid},
		{"other", f.Other},
	} {
		counter(c.failed, float64(k.n), k.kind)
	}
	counter(c.retries, float64(p.Retries))
	counter(c.restarts, float64(p.Restarts))
	for _, r := range c.reasons(p.RestartReasons) {
		counter(c.restartReasons, float64(r.n), r.reason)
	}
	for _, r := range c.reasons(p.RecycleReasons) {
		counter(c.recycles, float64(r.n), r.reason)
	}
	counter(c.reaped, float64(s.Reap.Reaped+s.Reap.Descendants))

	w := p.Workers
	gauge(c.workers, float64(w.Starting), "starting")
	gauge(c.workers, float64(w.Idle), "idle")
	gauge(c.workers, float64(w.Busy), "busy")
	gauge(c.workers, float64(w.Exited), "exited")
	gauge(c.workers, float64(w.Failed), "failed")
	gauge(c.workers, float64(w.Draining), "draining")
	gauge(c.queue, float64(p.Queued))
	gauge(c.inFlight, float64(p.InFlight))
	l := p.Latency
	buckets := make(map[float64]uint64, len(l.Buckets))
	for _, b := range l.Buckets {
		buckets[b.UpperBound.Seconds()] = b.Count
	}
	h, err := prometheus.NewConstHistogram(c.duration, l.Count, l.Sum.Seconds(), buckets)
	if err != nil {
		h = prometheus.NewInvalidMetric(c.duration, err)
	}
	ch <- h
	gauge(c.latencyMax, l.Max.Seconds())
}

type reasonCount struct {
	reason string
	n      int
}

// reasons folds the pool's restart reasons into at most maxReasons label
// values plus "other", in a stable order.
func (c *collector) reasons(raw map[string]int) []reasonCount {
	counts := make(map[string]int, len(raw))
	for r, n := range raw {
		counts[reasonLabel(r)] += n
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	// Admit new values the most frequent first, then by name, so which
	// ones make the cut does not depend on map iteration.
	fresh := make([]string, 0, len(counts))
	for r := range counts {
		if r != otherReason && !c.admitted[r] {
			fresh = append(fresh, r)
		}
	}
	slices.SortFunc(fresh, func(a, b string) int {
		if d := counts[b] - counts[a]; d != 0 {
			return d
		}
		return strings.Compare(a, b)
	})
	for _, r := range fresh {
		if len(c.admitted) >= maxReasons {
			break
		}
		c.admitted[r] = true
	}
	out := make([]reasonCount, 0, min(len(counts), maxReasons+1))
	other := 0
	for r, n := range counts {
		if c.admitted[r] {
			out = append(out, reasonCount{r, n})
		} else {
			other += n
		}
	}
	slices.SortFunc(out, func(a, b reasonCount) int { return strings.Compare(a.reason, b.reason) })
	if other > 0 {
		out = append(out, reasonCount{otherReason, other})
	}
	return out
}

// reasonLabel makes a reason a valid, bounded label value.
func reasonLabel(r string) string {
	r = strings.ToValidUTF8(r, "\uFFFD")
	if r == "" {
		return "unknown"
	}
	if utf8.RuneCountInString(r) <= maxReasonLen {
		return r
	}
	n := 0
	for i := range r {
		if n == maxReasonLen {
			return r[:i]
		}
		n++
	}
	return r
}
