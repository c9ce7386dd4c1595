package pool

import "time"

// Load is what an autoscaler needs of the pool, read under one lock: the
// general queue (calls that any worker could take: adding a worker helps
// them) and each worker's state and use.
type Load struct {
	// Queued counts the calls waiting for any worker (strict-affinity
	// waiters, which only their session's worker can serve, excluded) and,
	// while no worker has a free slot, the calls prefetched into a worker
	// that has not started them yet (doc.go, "Prefetch"): they then wait
	// because every worker is busy.
	Queued int
	// OldestWait is how long the oldest of them has waited (0: none).
	OldestWait time.Duration
	Workers    []WorkerLoad
}

// WorkerLoad is one worker in a Load.
type WorkerLoad struct {
	ID       string
	State    WorkerState
	InFlight int
	Capacity int
	// Calls counts the slots taken on this worker since it was added: an
	// unchanged count with nothing in flight means it served nothing since.
	Calls uint64
}

// WorkerState is a worker's state in a Load.
type WorkerState uint8

// The states of WorkerLoad.State.
const (
	WorkerStarting WorkerState = iota // added or starting a lifetime
	WorkerReady
	WorkerExited   // between lifetimes; its restarter decides
	WorkerFailed   // given up (retried later by its supervisor)
	WorkerDraining // retired: leaving the pool
)

// Load returns a snapshot of the queue and the workers, O(workers).
func (p *Pool) Load() Load {
	p.mu.Lock()
	defer p.mu.Unlock()
	l := Load{Queued: p.generalLenLocked(), OldestWait: p.queueWaitLocked(), Workers: make([]WorkerLoad, 0, len(p.workers))}
	free := false
	for _, ws := range p.workers {
		l.Workers = append(l.Workers, WorkerLoad{ID: ws.id, State: ws.loadState(), InFlight: ws.inflight, Capacity: ws.capacity, Calls: ws.calls})
		free = free || (ws.usable() && ws.inflight < ws.capacity)
	}
	if free {
		// A worker has a free slot: the pool is not short of workers,
		// whatever waits in a busy one (a stalled call's prefetched calls
		// cannot move, and a new worker would not take them either).
		return l
	}
	now := p.now()
	for _, ws := range p.workers {
		if len(ws.pf) > 0 {
			l.Queued += len(ws.pf)
			l.OldestWait = max(l.OldestWait, now.Sub(ws.pf[0].sr.t0)) // not started: t0 is when it was sent
		}
	}
	return l
}

// generalLenLocked counts the general queue's waiters (p.queued includes
// the strict ones). O(queued); called by Load, on the autoscaler's tick.
func (p *Pool) generalLenLocked() int {
	n := 0
	for w := p.general.head; w != nil; w = w.next {
		n++
	}
	return n
}

// queueWaitLocked is how long the oldest call of the general queue has
// waited, 0 when it is empty.
func (p *Pool) queueWaitLocked() time.Duration {
	if w := p.general.head; w != nil {
		return max(p.now().Sub(w.since), 0)
	}
	return 0
}

// RetireIdle retires worker id only if it is ready, has nothing in flight,
// took no call since the caller saw calls slots taken (WorkerLoad.Calls)
// and no session is pinned to it: decided under the pool's lock, so no
// call can slip onto it between the autoscaler's look and the retirement.
// It reports whether it retired the worker; the caller then stops and
// Removes it (supervisor.Workers.RemoveWorker does both).
func (p *Pool) RetireIdle(id string, calls uint64) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	ws := p.workers[id]
	if ws == nil || !ws.usable() || ws.inflight > 0 || ws.calls != calls || p.now().Before(ws.pinnedUntil) {
		return false
	}
	p.retireLocked(ws)
	return true
}

func (ws *workerState) loadState() WorkerState {
	switch {
	case ws.draining:
		return WorkerDraining
	case ws.state == stReady:
		return WorkerReady
	case ws.state == stExited:
		return WorkerExited
	case ws.state == stFailed:
		return WorkerFailed
	}
	return WorkerStarting
}
