package pool

// Prefetch (issue 21). A worker that reports worker.Info.Prefetch = k
// accepts up to k calls beyond its capacity and holds them in order: the
// snakepit Python worker queues them for the next of its threads to finish
// a call, so that thread takes the next call at once instead of sleeping
// through the host's round trip (release the slot, wake a queued caller,
// send its request). With more callers than capacity this is what raw
// gRPC clients get for free, and what the default Config gave away at
// C = 32 (docs/BENCHMARKS.md).
//
// A call committed to one worker's queue cannot move to another that
// frees up first, so prefetching is held to where it costs nothing and
// pays:
//   - only while no worker it could use has a free slot: the free list
//     ranks workers under capacity ahead of every worker over it (rank),
//     so dispatch still takes the least-loaded worker first;
//   - only for tools the pool has not seen take serialMinSolo or more of a
//     worker's time (serial.go's measure): a call that waits behind short
//     calls waits a fraction of a millisecond, and the round trip it saves
//     matters only next to calls that short. Tools the rule limits (one
//     call per worker) are never prefetched. With Options.DisableSerialTools
//     the pool measures nothing, and every tool may be prefetched;
//   - at most k calls per worker, k at most its capacity.
//
// A prefetched call is in flight for everything else (Stats' InFlight,
// draining, the caller's deadline), but the share clock counts only the
// calls a worker runs (at most its capacity), and the serial rule does not
// learn from a prefetched call, whose time includes its wait.

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

// roomForLocked: a call of tool may take a slot of ws now, as far as
// capacity and prefetch go (blockedLocked has the serial rule's say).
func (p *Pool) roomForLocked(tool string, ws *workerState) bool {
	if ws.inflight < ws.capacity {
		return true
	}
	return ws.inflight < ws.capacity+ws.prefetch && p.prefetchableLocked(tool)
}

// prefetchableLocked: calls of tool are short enough to wait in a worker.
func (p *Pool) prefetchableLocked(tool string) bool {
	if p.opts.DisableSerialTools || p.ser.tools == nil {
		return true
	}
	gt := p.ser.tools[tool]
	return gt == nil || (gt.mode == modeFree && gt.share < float64(serialMinSolo))
}
