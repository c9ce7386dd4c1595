package pool

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/snakepit-go/snakepit/worker"
)

// Stats is a snapshot of the pool. Counters are cumulative since New. Once
// no call is running, Requests == Succeeded + Failed.Total().
type Stats struct {
	Workers  WorkerCounts
	Queued   int // calls waiting for a slot
	InFlight int // slots taken
	// LimitQueued counts calls waiting for their tool's max_concurrency
	// (worker.ToolSpec.MaxConcurrency), before they look for a slot.
	LimitQueued int
	// Capacity is the slots of the workers in the pool, ready or not
	// (draining ones excluded): what an agent advertises to its hosts.
	Capacity int

	Requests  uint64 // calls made (retries not counted again)
	Succeeded uint64
	Failed    FailureCounts
	Retries   uint64 // extra attempts made after a crash or a vanished worker

	// Restarts counts worker lifetimes that ended with an error (crash,
	// kill, failed startup); RestartReasons splits them by reason. Planned
	// replacements are not restarts: see Recycles.
	Restarts       uint64
	RestartReasons map[string]int
	// Recycles counts make-before-break process recycles (request quota, age,
	// memory, a tool that ignored cancellation, App.Reload);
	// RecycleReasons splits them.
	Recycles       uint64
	RecycleReasons map[string]int
	// GivenUp lists the workers that failed to start too often, with their
	// last error and when they are tried again; sorted by worker id.
	GivenUp []GivenUpWorker

	Latency LatencyStats
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

// FailureCounts splits failed calls by kind.
type FailureCounts struct {
	ToolErrors     uint64 // the tool raised (worker.ErrToolFailed)
	Crashed        uint64 // the worker died under the call (worker.ErrWorkerCrashed)
	WorkerTimeouts uint64 // the worker hung past HungGrace and was killed
	QueueTimeouts  uint64 // ErrQueueTimeout
	Saturated      uint64 // ErrPoolSaturated
	Cancelled      uint64 // the caller's context ended (cancel or deadline)
	NotReady       uint64 // ErrNotReady
	Stopping       uint64 // ErrPoolStopping
	Affinity       uint64 // ErrSessionWorkerBusy, ErrSessionWorkerUnavailable
	Invalid        uint64 // ErrInvalidCall, unknown tool, invalid arguments
	Other          uint64
}

// Total is the number of failed calls.
func (f FailureCounts) Total() uint64 {
	return f.ToolErrors + f.Crashed + f.WorkerTimeouts + f.QueueTimeouts + f.Saturated +
		f.Cancelled + f.NotReady + f.Stopping + f.Affinity + f.Invalid + f.Other
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
	requests, succeeded, retries, restarts, recycles uint64
	failed                                           FailureCounts
	restartReasons, recycleReasons                   map[string]int
}

func (c *counters) record(err error) {
	if err == nil {
		c.succeeded++
		return
	}
	f := &c.failed
	// Order matters: several of these wrap a context error.
	switch {
	case errors.Is(err, ErrInvalidCall), errors.Is(err, worker.ErrUnknownTool), errors.Is(err, worker.ErrInvalidArgs):
		f.Invalid++
	case errors.Is(err, ErrPoolSaturated):
		f.Saturated++
	case errors.Is(err, ErrQueueTimeout):
		f.QueueTimeouts++
	case errors.Is(err, ErrPoolStopping):
		f.Stopping++
	case errors.Is(err, ErrSessionWorkerBusy), errors.Is(err, ErrSessionWorkerUnavailable):
		f.Affinity++
	case errors.Is(err, ErrNotReady):
		f.NotReady++
	case errors.Is(err, worker.ErrWorkerTimeout):
		f.WorkerTimeouts++
	case errors.Is(err, worker.ErrToolFailed):
		f.ToolErrors++
	case errors.Is(err, worker.ErrWorkerCrashed):
		f.Crashed++
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		f.Cancelled++
	default:
		f.Other++
	}
}

// Stats returns a snapshot.
func (p *Pool) Stats() Stats {
	limitQueued := p.gateWaiting()
	p.mu.Lock()
	s := Stats{
		Queued:         p.queued,
		LimitQueued:    limitQueued,
		InFlight:       p.inflight,
		Requests:       p.st.requests,
		Succeeded:      p.st.succeeded,
		Failed:         p.st.failed,
		Retries:        p.st.retries,
		Restarts:       p.st.restarts,
		RestartReasons: maps.Clone(p.st.restartReasons),
		Recycles:       p.st.recycles,
		RecycleReasons: maps.Clone(p.st.recycleReasons),
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

func typeName(err error) string { return fmt.Sprintf("%T", err) }

// limitReason keeps a reason usable as a map key and a metric label value:
// a reason built from a long message must not grow the map without bound.
func limitReason(r string) string {
	const maxLen = 80
	if len(r) > maxLen {
		return r[:maxLen]
	}
	return r
}
