package snakepit

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/snakepit-go/snakepit/autoscale"
	"github.com/snakepit-go/snakepit/pool"
	"github.com/snakepit-go/snakepit/worker"
)

// NewCollector returns a prometheus.Collector that exports app's Stats.
// Everything is read from App.Stats at scrape time, so calls pay nothing for
// it. Config.Metrics registers one for you; use NewCollector to register it
// elsewhere (an admin server's private registry, say), and Unregister a
// fresh NewCollector(app) to drop the series once the App is gone.
//
// Every series but snakepit_orphans_reaped_total (the App's reaper) is per
// pool and carries the label pool: DefaultPool for the top-level pool, the
// PoolConfig name for the others. Sum over it for the App's totals, e.g.
// sum without (pool) (rate(snakepit_requests_total[5m])).
//
// Counters (cumulative since New):
//
//	snakepit_requests_total{outcome}                 calls made (retries not counted again), refused ones
//	                                                 included, each under the one Outcome that ended it
//	                                                 (OutcomeOf): every value of pool.Outcomes() is exported
//	snakepit_retries_total                           extra attempts after a crash or a vanished worker
//	snakepit_worker_restarts_total                   worker lifetimes that ended with an error
//	snakepit_worker_restarts_by_reason_total{reason} the same split by reason, one of pool.RestartReasons()
//	snakepit_worker_recycles_total{reason}           make-before-break process recycles, not restarts, by
//	                                                 reason, one of worker.RecycleReasons()
//	snakepit_orphans_reaped_total                    processes of earlier runs the startup reaper stopped
//	snakepit_scale_events_total{direction}           workers an elastic pool added (up) and removed (down)
//
// The label values are fixed sets, so every series exists from the first
// scrape, at zero. Error texts are not label values: Stats().Pool's
// RestartDetail and RecycleDetail keep the latest one of each reason.
//
// Gauges:
//
//	snakepit_workers{state}                    workers by state: starting, idle, busy, exited, failed, draining
//	snakepit_queue_depth                       calls waiting for a worker
//	snakepit_in_flight                         calls running on a worker
//	snakepit_call_latency_max_seconds          the slowest call that reached a worker since New
//	snakepit_queue_wait_seconds                how long the oldest call waiting for a worker has waited
//	                                           (0: none waits): what an elastic pool grows on, and the
//	                                           signal to scale agents on (docs/SCALING.md, HPA)
//	snakepit_pool_workers_desired              the local workers the pool aims at: an elastic pool's
//	                                           current decision, a fixed pool's Workers
//	snakepit_pool_workers_min, _max            an elastic pool's bounds (both Workers when fixed)
//
// Histogram:
//
//	snakepit_call_duration_seconds             latency of every call that reached a worker, queueing
//	                                           included, in buckets from 0.5 ms to 60 s; aggregate
//	                                           across instances and take quantiles with
//	                                           histogram_quantile(0.99, rate(..._bucket[5m]))
//	snakepit_batch_size                        calls per request sent to a batch tool (@tool(batch=...)),
//	                                           buckets 1, 2, 4, ... 1024
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

		requests:       d("snakepit_requests_total", "Calls made (retries are not counted again), by pool and how they ended.", "pool", "outcome"),
		retries:        d("snakepit_retries_total", "Extra attempts made after a worker crashed or vanished under a call.", "pool"),
		restarts:       d("snakepit_worker_restarts_total", "Worker lifetimes that ended with an error (crash, kill, failed start); planned recycles are not counted here.", "pool"),
		recycles:       d("snakepit_worker_recycles_total", "Worker process recycles (make-before-break), by reason.", "pool", "reason"),
		restartReasons: d("snakepit_worker_restarts_by_reason_total", "Worker lifetimes that ended with an error, by reason.", "pool", "reason"),
		reaped:         d("snakepit_orphans_reaped_total", "Processes left by earlier runs that the startup reaper stopped (recorded workers and their descendants)."),

		workers:    d("snakepit_workers", "Workers by state.", "pool", "state"),
		queue:      d("snakepit_queue_depth", "Calls waiting for a worker.", "pool"),
		inFlight:   d("snakepit_in_flight", "Calls running on a worker.", "pool"),
		duration:   d("snakepit_call_duration_seconds", "Latency of the calls that reached a worker, queueing included.", "pool"),
		latencyMax: d("snakepit_call_latency_max_seconds", "Latency of the slowest call that reached a worker since start, queueing included.", "pool"),
		batchSize:  d("snakepit_batch_size", "Calls per request sent to a batch tool.", "pool"),

		queueWait:   d("snakepit_queue_wait_seconds", "How long the oldest call waiting for a worker has waited (0: none waits).", "pool"),
		desired:     d("snakepit_pool_workers_desired", "Local workers the pool aims at (an elastic pool's decision, a fixed pool's size).", "pool"),
		minWorkers:  d("snakepit_pool_workers_min", "An elastic pool's lower bound (a fixed pool's size).", "pool"),
		maxWorkers:  d("snakepit_pool_workers_max", "An elastic pool's upper bound (a fixed pool's size).", "pool"),
		scaleEvents: d("snakepit_scale_events_total", "Workers an elastic pool added (up) or removed (down).", "pool", "direction"),
	}
}

type collector struct {
	app *App

	requests, retries, restarts, restartReasons, recycles, reaped *prometheus.Desc
	workers, queue, inFlight, duration, latencyMax, batchSize     *prometheus.Desc
	queueWait, desired, minWorkers, maxWorkers, scaleEvents       *prometheus.Desc
}

// Describe implements prometheus.Collector.
func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{
		c.requests, c.retries, c.restarts, c.restartReasons, c.recycles, c.reaped,
		c.workers, c.queue, c.inFlight, c.duration, c.latencyMax, c.batchSize,
		c.queueWait, c.desired, c.minWorkers, c.maxWorkers, c.scaleEvents,
	} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *collector) Collect(ch chan<- prometheus.Metric) {
	s := c.app.Stats()
	e := emitter{ch}
	e.emit(c.reaped, prometheus.CounterValue, float64(s.Reap.Reaped+s.Reap.Descendants))
	for name, p := range s.Pools {
		c.collectPool(e, name, p)
	}
}

// emitter sends const metrics, an invalid one for a bad label set.
type emitter struct{ ch chan<- prometheus.Metric }

func (e emitter) emit(d *prometheus.Desc, t prometheus.ValueType, v float64, labels ...string) {
	m, err := prometheus.NewConstMetric(d, t, v, labels...)
	if err != nil {
		m = prometheus.NewInvalidMetric(d, err)
	}
	e.ch <- m
}

// collectPool emits one pool's series, each labelled with its name.
func (c *collector) collectPool(e emitter, name string, p PoolStats) {
	counter := func(d *prometheus.Desc, v float64, labels ...string) {
		e.emit(d, prometheus.CounterValue, v, append([]string{name}, labels...)...)
	}
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		e.emit(d, prometheus.GaugeValue, v, append([]string{name}, labels...)...)
	}
	for _, o := range pool.Outcomes() {
		counter(c.requests, float64(p.Outcomes[o]), string(o))
	}
	counter(c.retries, float64(p.Retries))
	counter(c.restarts, float64(p.Restarts))
	for _, r := range pool.RestartReasons() {
		counter(c.restartReasons, float64(p.RestartReasons[r]), r)
	}
	for _, r := range worker.RecycleReasons() {
		counter(c.recycles, float64(p.RecycleReasons[r]), r)
	}
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
	h, err := prometheus.NewConstHistogram(c.duration, l.Count, l.Sum.Seconds(), buckets, name)
	if err != nil {
		h = prometheus.NewInvalidMetric(c.duration, err)
	}
	e.ch <- h
	gauge(c.latencyMax, l.Max.Seconds())
	bs := make(map[float64]uint64, len(p.Batches.Buckets))
	for _, b := range p.Batches.Buckets {
		bs[float64(b.UpperBound)] = b.Count
	}
	bh, err := prometheus.NewConstHistogram(c.batchSize, p.Batches.Count, float64(p.Batches.Calls), bs, name)
	if err != nil {
		bh = prometheus.NewInvalidMetric(c.batchSize, err)
	}
	e.ch <- bh

	sc := p.Scaling
	gauge(c.queueWait, p.QueueWait.Seconds())
	desired := sc.Workers
	if !sc.Elastic {
		desired = sc.Min
	}
	gauge(c.desired, float64(desired))
	gauge(c.minWorkers, float64(sc.Min))
	gauge(c.maxWorkers, float64(sc.Max))
	counter(c.scaleEvents, float64(sc.ScaleUps), string(autoscale.Up))
	counter(c.scaleEvents, float64(sc.ScaleDowns), string(autoscale.Down))
}
