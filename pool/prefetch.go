package pool

import (
	"slices"
	"time"
)

// Prefetch (issue 21). A worker that reports worker.Info.Prefetch = k
// accepts up to k calls beyond its capacity and holds them in order: the
// snakepit Python worker queues them for the next of its threads to finish
// a tool call, so that thread takes the next call at once instead of
// sleeping through the host's round trip (release the slot, wake a queued
// caller, send its request). With more callers than capacity this is what
// raw gRPC clients get for free, and what the default Config gave away at
// C = 32 (docs/BENCHMARKS.md).
//
// A call committed to one worker's queue cannot move to another worker
// that frees up first, so a call is prefetched only where that costs
// nothing and pays:
//   - only when no worker it could use has a free slot: the free list
//     ranks every worker under its capacity ahead of every worker over it
//     (rank), so dispatch still takes the least-loaded worker first;
//   - only when no call waits in the general queue nor for that worker
//     (strict affinity): an older waiter, whatever its tool, is never
//     passed by prefetching (when a slot frees, offerLocked serves the
//     oldest waiter that fits: a waiter that may not be prefetched stops
//     the worker's prefetching until it drains below its capacity and the
//     waiter gets a running slot);
//   - only a call of a tool whose calls take less than serialMinSolo of a
//     worker's time (serial.go's measure, an EWMA taken here from every
//     call that ran, whatever its outcome: longTools), nor limited by the
//     serial rule, and not a batch;
//   - only to a worker all of whose calls in flight are such calls (long
//     counts the others, including calls that began before their tool was
//     found long): it then waits behind calls that end soon;
//   - at most k calls beyond its capacity per worker, k as it reports, at
//     most maxPrefetchPerSlot per slot.
//
// Options.DisableSerialTools turns prefetching off with the measure.
//
// A prefetched call is in flight for everything else (Stats' InFlight,
// draining, the caller's deadline). The share clock counts only the calls
// a worker runs (at most its capacity). A prefetched call starts, as far as
// the pool can tell, when one of its worker's running calls ends (the
// worker runs them in order): only then does its measure for the serial
// rule begin, so the rule keeps learning under sustained load.

// maxPrefetchPerSlot bounds what a worker's report may ask for: the
// snakepit Python worker reports exactly this many per slot
// (PREFETCH_PER_SLOT in python/snakepit_bridge/_threads.py). A prefetched
// call is past the pool's queue (MaxQueue, QueueTimeout) and fails with
// its worker, so a worker type reporting more gets no more.
const maxPrefetchPerSlot = 4

// rank orders the free list: the in-flight calls of a worker under its
// capacity, and past every such worker those that are over it, by how
// many they hold beyond it.
func (ws *workerState) rank() int {
	if ws.inflight < ws.capacity {
		return ws.inflight
	}
	return 1<<30 + ws.inflight - ws.capacity
}

// room: ws may take another call of some tool (free list membership).
func (ws *workerState) room() bool { return ws.inflight < ws.capacity+ws.prefetch }

// running is how many of ws's calls run (the others wait in the worker).
func (ws *workerState) running() int { return min(ws.inflight, ws.capacity) }

// prefetchableLocked: calls of tool are short enough to wait in a worker
// (see above).
func (p *Pool) prefetchableLocked(tool string) bool {
	if p.opts.DisableSerialTools {
		return false
	}
	if share, ok := p.longTools[tool]; ok && share >= float64(serialMinSolo) {
		return false
	}
	if p.ser.limited > 0 {
		if gt := p.ser.tools[tool]; gt != nil && gt.mode != modeFree {
			return false
		}
	}
	return true
}

// prefetchRoomLocked: ws, at or over its capacity, may hold one more call
// of tool (batch: the call is a batch's request).
func (p *Pool) prefetchRoomLocked(ws *workerState, tool string, batch bool) bool {
	return ws.inflight < ws.capacity+ws.prefetch && ws.long == 0 && !batch && p.prefetchableLocked(tool)
}

// prefetchTakeLocked notes r taking a slot of ws (before ws.inflight
// counts it); nothing to do for a worker that takes no prefetch.
func (p *Pool) prefetchTakeLocked(r *callRec, ws *workerState) {
	if ws.prefetch == 0 {
		return
	}
	if r.long = r.batch || !p.prefetchableLocked(r.tool); r.long {
		ws.long++
	}
	if ws.inflight >= ws.capacity {
		r.prefetched = true
		ws.pf = append(ws.pf, r)
	}
}

// prefetchReleaseLocked notes r giving its slot of ws back at now (after
// serial.go's release, which brought the share clock to now; before
// ws.inflight drops). A call that ran is measured, whatever its outcome (a
// long tool that fails is still long). A running call that ends lets the
// oldest prefetched call of ws start: its measure begins.
func (p *Pool) prefetchReleaseLocked(r *callRec, ws *workerState, now time.Time) {
	if r.long {
		ws.long--
	}
	if r.prefetched {
		if i := slices.Index(ws.pf, r); i >= 0 {
			ws.pf = slices.Delete(ws.pf, i, i+1)
		}
		return
	}
	if ws.prefetch > 0 && !p.opts.DisableSerialTools {
		p.noteShareLocked(r.tool, ws.sc.share-r.sr.share0)
	}
	if len(ws.pf) == 0 {
		return
	}
	next := ws.pf[0]
	ws.pf = slices.Delete(ws.pf, 0, 1)
	next.prefetched = false
	next.sr.t0, next.sr.share0 = now, ws.sc.share
}

// noteShareLocked learns from a call of tool that ran with share S of its
// worker's time. A tool enters longTools with its first call of S ≥
// serialMinSolo, then follows the EWMA of its calls' S (one slow call of a
// fast tool, a pause, costs it a few calls' prefetch, not more), and
// leaves below half the line. Found long, its calls in flight count as
// long from now on: nothing more is prefetched behind them.
func (p *Pool) noteShareLocked(tool string, share time.Duration) {
	cur, ok := p.longTools[tool]
	if !ok {
		if share < serialMinSolo {
			return // the fast path of a pool of fast tools
		}
		if len(p.longTools) >= serialMaxTools {
			// Tool names come from callers: the table is bounded.
			for t, s := range p.longTools {
				if s < float64(serialMinSolo) {
					delete(p.longTools, t)
				}
			}
			if len(p.longTools) >= serialMaxTools {
				return
			}
		}
		if p.longTools == nil {
			p.longTools = map[string]float64{}
		}
		p.longTools[tool] = float64(share)
		p.countLongLocked(tool)
		return
	}
	next := ewma(cur, float64(share), false)
	switch {
	case next < float64(serialMinSolo)/2:
		delete(p.longTools, tool)
	default:
		p.longTools[tool] = next
		if cur < float64(serialMinSolo) && next >= float64(serialMinSolo) {
			p.countLongLocked(tool)
		}
	}
}

// countLongLocked counts tool's calls in flight as long.
func (p *Pool) countLongLocked(tool string) {
	for c := p.calls.head; c != nil; c = c.next {
		if c.tool == tool && !c.long && c.ws != nil && c.ws.prefetch > 0 {
			c.long = true
			c.ws.long++
		}
	}
}
