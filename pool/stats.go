package pool

import (
	"encoding/json"
	"maps"
	"slices"
	"strings"
	"time"
)

// Stats is a snapshot of the pool. Counters are cumulative since New. Once
// no call is running, Requests is the sum of Outcomes.
type Stats struct {
	Workers WorkerCounts
	Queued  int // calls waiting for a slot
	// QueueWait is how long the oldest call waiting for any worker has
	// waited (0: none waits). The autoscaler grows on Load, which also
	// counts calls prefetched into busy workers (doc.go, "Prefetch").
	QueueWait time.Duration
	InFlight  int // slots taken
	// QueueHistory is the queue's depth per second over the last
	// QueueHistorySeconds, oldest first: the deepest it got in each second.
	QueueHistory []int
	// LimitQueued counts calls waiting for their tool's max_concurrency
	// (worker.ToolSpec.MaxConcurrency), before they look for a slot.
	LimitQueued int
	// Capacity is the slots of the workers in the pool, ready or not
	// (draining ones excluded): what an agent advertises to its hosts.
	Capacity int

	// Requests counts calls made (retries not counted again), refused ones
	// included; Outcomes splits them by how they ended (OutcomeOf), with
	// every outcome present, zero or not.
	Requests uint64
	Outcomes map[Outcome]uint64
	Retries  uint64 // extra attempts made after a crash or a vanished worker

	// Restarts counts worker lifetimes that ended with an error (crash,
	// kill, failed startup); RestartReasons splits them by reason, one of
	// RestartReasons(). Planned replacements are not restarts: see Recycles.
	Restarts       uint64
	RestartReasons map[string]int
	// Recycles counts make-before-break process recycles; RecycleReasons
	// splits them by reason, one of worker.RecycleReasons().
	Recycles       uint64
	RecycleReasons map[string]int
	// RestartDetail and RecycleDetail hold, by reason, the text of the
	// latest restart's error and of the latest recycle's reason: the free
	// text the bounded reasons leave out.
	RestartDetail map[string]string
	RecycleDetail map[string]string
	// GivenUp lists the workers that failed to start too often, with their
	// last error and when they are tried again; sorted by worker id.
	GivenUp []GivenUpWorker
	// PerWorker describes each worker, sorted by id.
	PerWorker []WorkerStats

	Latency LatencyStats
	// Batches is the histogram of the sizes of the batches sent for batch
	// tools (worker.ToolSpec.BatchMaxSize), retried ones again.
	Batches BatchStats
	// SerialTools lists, sorted, the tools the pool runs at most one call
	// per worker now, having measured that their calls gain nothing side
	// by side (CPU-bound under the GIL; see Options.DisableSerialTools).
	SerialTools []string
}

// BatchStats is a histogram of batch sizes, cumulative as Prometheus has
// it; Count is the batches sent, Calls the calls they carried.
type BatchStats struct {
	Buckets []BatchBucket
	Count   uint64
	Calls   uint64
}

// BatchBucket counts the batches of at most UpperBound calls.
type BatchBucket struct {
	UpperBound int
	Count      uint64
}

// Worker states in WorkerStats.State, as WorkerCounts splits them.
const (
	StateStarting = "starting"
	StateIdle     = "idle"
	StateBusy     = "busy"
	StateExited   = "exited"
	StateFailed   = "failed"
	StateDraining = "draining"
)

// WorkerStats is one worker as the pool sees it. Memory is not here: the
// pool knows no processes (read it from PID when the worker is local).
type WorkerStats struct {
	ID    string
	State string // one of the State constants
	// Since is when the worker entered State; for idle and busy, when its
	// current process became ready (its uptime).
	Since time.Time
	PID   int // the current process's pid, 0 when none is ready or it has none (remote)
	// Capacity and InFlight are its slots and those taken.
	Capacity, InFlight int
	// Calls counts the attempts sent to it, across its lifetimes; a batch
	// of calls (a batch tool's) counts once.
	Calls uint64
	// Restarts counts its lifetimes that ended with an error, Recycles its
	// planned process replacements; LastError is the latest error that
	// ended a lifetime or made the supervisor give up ("" if none).
	Restarts, Recycles int
	LastError          string
}

// WorkerCounts splits the workers by state.
type WorkerCounts struct {
	Total    int
	Starting int // added or starting a lifetime, not ready yet
	Idle     int // ready, no call in flight
	Busy     int // ready, at least one call in flight
	Exited   int // between lifetimes (its restarter decides what next)
	Failed   int // the supervisor gave up on it
	Draining int // being removed: no new calls, in-flight ones finishing
}

// GivenUpWorker is a worker resting after too many failed starts.
type GivenUpWorker struct {
	ID      string
	Err     error
	RetryAt time.Time // zero: not retried
}

// MarshalJSON writes the error as its message (an error value has no JSON
// form of its own), for /status and other JSON dumps of Stats.
func (g GivenUpWorker) MarshalJSON() ([]byte, error) {
	msg := ""
	if g.Err != nil {
		msg = g.Err.Error()
	}
	return json.Marshal(struct {
		ID      string    `json:"id"`
		Err     string    `json:"error"`
		RetryAt time.Time `json:"retry_at"`
	}{g.ID, msg, g.RetryAt})
}

// LatencyStats covers the calls that reached a worker, from the call to its
// return (queueing included). Percentiles are over the most recent
// latencyWindow (4096) calls; Max is over all calls.
type LatencyStats struct {
	Samples       int
	P50, P90, P99 time.Duration
	Max           time.Duration
	// Buckets is the histogram of every such call since New, cumulative as
	// Prometheus has it; Count and Sum cover all calls, the slowest too.
	Buckets []LatencyBucket
	Count   uint64
	Sum     time.Duration
}

// LatencyBucket counts the calls that took at most UpperBound.
type LatencyBucket struct {
	UpperBound time.Duration
	Count      uint64
}

// latencyBounds are the histogram's upper bounds: from 0.5 ms (a trivial
// Python call takes ~0.3 ms) to 60 s.
var latencyBounds = [...]time.Duration{
	500 * time.Microsecond, time.Millisecond, 2500 * time.Microsecond, 5 * time.Millisecond,
	10 * time.Millisecond, 25 * time.Millisecond, 50 * time.Millisecond, 100 * time.Millisecond,
	250 * time.Millisecond, 500 * time.Millisecond, time.Second, 2500 * time.Millisecond,
	5 * time.Second, 10 * time.Second, 30 * time.Second, 60 * time.Second,
}

type counters struct {
	requests, retries, restarts, recycles uint64
	outcomes                              map[Outcome]uint64
	restartReasons, recycleReasons        map[string]int
	restartDetail, recycleDetail          map[string]string
}

func newCounters() counters {
	c := counters{
		outcomes:       make(map[Outcome]uint64, len(outcomes)),
		restartReasons: map[string]int{}, recycleReasons: map[string]int{},
		restartDetail: map[string]string{}, recycleDetail: map[string]string{},
	}
	for _, o := range outcomes {
		c.outcomes[o] = 0
	}
	return c
}

// record counts how a call ended; its request was counted when it began.
func (c *counters) record(err error) { c.outcomes[OutcomeOf(err)]++ }

// Stats returns a snapshot.
func (p *Pool) Stats() Stats {
	limitQueued := p.gateWaiting()
	p.mu.Lock()
	s := Stats{
		Queued:         p.queued,
		QueueWait:      p.queueWaitLocked(),
		LimitQueued:    limitQueued,
		QueueHistory:   p.qhist.series(p.now()),
		InFlight:       p.inflight,
		Requests:       p.st.requests,
		Outcomes:       maps.Clone(p.st.outcomes),
		Retries:        p.st.retries,
		Restarts:       p.st.restarts,
		RestartReasons: maps.Clone(p.st.restartReasons),
		Recycles:       p.st.recycles,
		RecycleReasons: maps.Clone(p.st.recycleReasons),
		RestartDetail:  maps.Clone(p.st.restartDetail),
		RecycleDetail:  maps.Clone(p.st.recycleDetail),
	}
	// Sorted by id before the copy: swapping pointers is cheaper than
	// swapping WorkerStats (Stats runs at every metrics scrape).
	var buf [32]*workerState
	order := buf[:0]
	for _, ws := range p.workers {
		order = append(order, ws)
	}
	slices.SortFunc(order, func(a, b *workerState) int { return strings.Compare(a.id, b.id) })
	s.PerWorker = make([]WorkerStats, len(order))
	for i, ws := range order {
		s.PerWorker[i] = ws.statsLocked()
	}
	for _, ws := range p.workers {
		s.Workers.Total++
		if ws.draining {
			s.Workers.Draining++
			continue
		}
		s.Capacity += ws.capacity
		switch ws.state {
		case stStarting:
			s.Workers.Starting++
		case stReady:
			if ws.inflight > 0 {
				s.Workers.Busy++
			} else {
				s.Workers.Idle++
			}
		case stExited:
			s.Workers.Exited++
		case stFailed:
			s.Workers.Failed++
			s.GivenUp = append(s.GivenUp, GivenUpWorker{ID: ws.id, Err: ws.lastErr, RetryAt: ws.retryAt})
		}
	}
	n := int(min(p.latN, latencyWindow))
	window := make([]time.Duration, n)
	copy(window, p.lat[:n])
	s.Latency.Max = p.latMax
	s.Latency.Count, s.Latency.Sum = p.latN, p.latSum
	s.Latency.Buckets = make([]LatencyBucket, len(latencyBounds))
	var cum uint64
	for i, b := range latencyBounds {
		cum += p.latBuckets[i]
		s.Latency.Buckets[i] = LatencyBucket{UpperBound: b, Count: cum}
	}
	s.Batches = p.batchStatsLocked()
	s.SerialTools = p.serialToolsLocked()
	p.mu.Unlock()

	slices.SortFunc(s.GivenUp, func(a, b GivenUpWorker) int { return strings.Compare(a.ID, b.ID) })
	s.Latency.Samples = n
	if n > 0 {
		slices.Sort(window)
		pct := func(q int) time.Duration { return window[(n*q+99)/100-1] }
		s.Latency.P50, s.Latency.P90, s.Latency.P99 = pct(50), pct(90), pct(99)
	}
	return s
}

// statsLocked is ws for Stats; the caller holds Pool.mu.
func (ws *workerState) statsLocked() WorkerStats {
	st := StateExited
	switch {
	case ws.draining:
		st = StateDraining
	case ws.state == stStarting:
		st = StateStarting
	case ws.state == stReady && ws.inflight > 0:
		st = StateBusy
	case ws.state == stReady:
		st = StateIdle
	case ws.state == stFailed:
		st = StateFailed
	}
	out := WorkerStats{
		ID: ws.id, State: st, Since: ws.since, PID: ws.pid, Capacity: ws.capacity, InFlight: ws.inflight,
		Calls: ws.calls, Restarts: ws.restarts, Recycles: ws.recycles,
	}
	if ws.lastErr != nil {
		out.LastError = ws.lastErr.Error()
	}
	return out
}
