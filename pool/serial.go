package pool

import (
	"slices"
	"time"
)

// Serial tools (issue 21). A worker takes up to Capacity calls at once,
// which pays for tools that wait (I/O, async code, C code that releases
// the GIL) but not for a CPU-bound pure-Python tool: its calls take turns
// on the process's GIL, so two side by side both end near twice their time
// alone, and the GIL hand-offs (grpcio's own threads need it too) stretch
// the tail. The pool learns, per tool, whether its calls gain anything from
// running side by side on one worker, and dispatches a tool that gains
// nothing ("serial") at most one call per worker; its other calls wait in
// the queue, FIFO, for the first worker without one, while other tools
// still use the rest of each worker's Capacity.
//
// The measure. Each worker keeps the time integral of 1/in-flight (its
// share clock): a call's share S is the part of its worker's time that was
// its own. Over a busy period the shares of a worker's calls add up to its
// busy time, whatever the order in which the GIL served them, so for a tool
// that gains nothing, Σ solo = Σ S (the work is the busy time), while for a
// tool that overlaps freely Σ solo = Σ wall. Hence, with solo the tool's
// service time alone (the median of its last calls that ran with
// S ≥ 0.9 wall),
//
//	gain = Σ (solo − S) / Σ (wall − S)  over a window of its calls
//
// is 0 for no gain and 1 for full overlap. (The mean in-flight count k̄ and
// g = k̄ / (wall/solo) give the same answer only when the overlap stays
// constant through a call; a FIFO-served GIL makes the first call look
// fully overlapped and the second worse than serial.) A CPU-bound tool
// still gains a little: the gRPC round trip of one call (~0.5–1.5 ms) runs
// while another holds the GIL.
//
// The rule. A tool is a candidate once the mean S of its calls (EWMA) is at
// least serialMinSolo: S ≈ solo for a CPU-bound tool and S < solo
// otherwise, so a trivial tool — which on a loaded machine looks CPU-bound
// at sub-ms scale and must keep the default's throughput — is not one.
// (S is wall time split among the calls in flight: on a machine with more
// processes than cores a trivial call's S can reach 1–2 ms. So a probe
// also needs serialSamples calls in a row with S ≥ serialMinSolo/2, and a
// probe that finds the tool fast alone leaves it alone for serialTTL.)
// A candidate with no recent solo is probed (recent: serialTTL, longer
// for a tool confirmed free, see serialFreeTTLMax):
// dispatched one per worker until serialSamples calls ran alone (at most
// serialProbeMax), then side by side again. Its calls are then judged in
// windows of serialSamples (the slowest call of each left out: one pause
// would decide alone), once they overlapped by at least serialOverlapMin of
// solo on average. A window's verdict counts once a window measured right
// after the next probe agrees (the load may move between a probe and its
// window; a stalled machine makes any tool look serial): two windows
// below serialGainMin mark the tool serial for serialTTL. At the end of a
// mark the tool runs side by side again and is re-measured with the solo
// its serial calls kept fresh (a tool that changed, or was misjudged, is
// not stuck); a marked tool is let go only when two windows reach
// serialGainFree.
// Options.DisableSerialTools turns the rule off.
const (
	// serialMinSolo: below this a call ends within one GIL switch interval
	// (5 ms) of holding it, and running calls one per worker buys nothing.
	serialMinSolo = 2 * time.Millisecond
	serialSamples = 8
	// serialGainMin marks a tool serial; a marked tool is let go, once
	// re-measured, only at serialGainFree (hysteresis: a tool near the
	// line does not flip at every expiry). A CPU-bound tool's gain is the
	// part of its time alone that is not spent holding the GIL (the gRPC
	// round trip, ~0.5-1.5 ms): 0.02-0.37 by window for 5 ms of pure
	// Python (test/bench BenchmarkCPUBound), so the line is at half: a
	// tool must overlap at least half its time alone to keep running side
	// by side.
	serialGainMin  = 0.5
	serialGainFree = 0.65
	// serialOverlapMin: the mean of wall − S must be at least this fraction
	// of solo before a window is judged (light load overlaps too little).
	serialOverlapMin = 0.25
	serialTTL        = 30 * time.Second
	// serialFreeTTLMax caps how long a tool found free keeps its time
	// alone: under steady load an overlapping tool never runs alone, so
	// only a probe (one call per worker, up to serialProbeMax) refreshes
	// it. Each probe that confirms it free doubles the time to the next,
	// from serialTTL; a serial verdict starts over.
	serialFreeTTLMax = 8 * serialTTL
	serialProbeMax   = 2 * time.Second
	serialAlpha      = 0.2 // EWMA weight of a new S
	// serialMaxTools bounds the table of candidates: tool names come from
	// callers (a worker declaring worker.AnyTool takes any).
	serialMaxTools = 1024
)

// verdict is what a window of calls side by side showed.
type verdict uint8

const (
	verdictNone   verdict = iota
	verdictSerial         // gained less than the line
	verdictFree
)

type serialMode uint8

const (
	modeFree    serialMode = iota // up to Capacity per worker
	modeProbing                   // one per worker, to learn the time alone
	modeSerial                    // one per worker: marked
)

// gilTool is what the pool learned of one candidate tool. Guarded by Pool.mu.
type gilTool struct {
	name      string
	on        map[*workerState]int // its calls in flight, per worker
	mode      serialMode
	until     time.Time // end of the probe or the mark
	nextProbe time.Time // no probe before (the last one failed)
	share     float64   // EWMA of S, ns
	solo      float64   // median wall of the last calls that ran alone, ns
	alone     [serialSamples]float64
	soloN     int // calls alone since the last probe or mark began
	soloAt    time.Time
	soloTTL   time.Duration         // how long solo counts as known (0: serialTTL)
	confirmed bool                  // a window confirmed free since the last probe
	win       [serialSamples]sample // the calls of the window being measured
	effN      int                   // calls in win
	pending   verdict               // the last window's, to be confirmed
	n         int                   // calls learned from
	longRun   int                   // calls in a row with S ≥ serialMinSolo/2
	marked    bool                  // the last decision was serial (for the log)
}

// serialState is the pool's part. tools is nil until a candidate appears,
// so a pool of fast tools pays one nil check per call.
type serialState struct {
	tools   map[string]*gilTool
	limited int // tools in modeProbing or modeSerial
}

// shareClock is a worker's time integral of 1/in-flight.
type shareClock struct {
	last  time.Time
	share time.Duration
}

// advance brings the integral to t (a stamp read before another update is
// taken as that update's time) and returns the time it stands at.
func (c *shareClock) advance(t time.Time, inflight int) time.Time {
	if c.last.IsZero() {
		c.last = t
		return t
	}
	d := t.Sub(c.last)
	if d <= 0 {
		return c.last
	}
	switch {
	case inflight == 1: // no division: the common case at light load
		c.share += d
	case inflight > 1:
		c.share += d / time.Duration(inflight)
	}
	c.last = t
	return t
}

// serialRec is a call's part, kept in its callRec.
type serialRec struct {
	at     time.Time // when the attempt began, if its caller read the clock
	t0     time.Time // when it took its slot
	share0 time.Duration
	gt     *gilTool
}

// serialTakeLocked starts a call's measure as it takes a slot of ws (before
// ws.inflight counts it).
func (p *Pool) serialTakeLocked(r *callRec, ws *workerState) {
	if p.opts.DisableSerialTools {
		return // no clock to keep: nothing is ever learned or limited
	}
	t := r.sr.at
	if t.IsZero() {
		t = p.now()
	}
	r.sr.t0 = ws.sc.advance(t, ws.running())
	r.sr.share0 = ws.sc.share
	if p.ser.limited > 0 {
		if gt := p.ser.tools[r.tool]; gt != nil && gt.mode != modeFree {
			gt.on[ws]++
			r.sr.gt = gt
		}
	}
}

// serialReleaseLocked ends a call's measure as it gives its slot back
// (before ws.inflight drops) and, for a call that succeeded, learns from it.
func (p *Pool) serialReleaseLocked(r *callRec, ws *workerState, now time.Time, learn bool) {
	if p.opts.DisableSerialTools {
		return
	}
	now = ws.sc.advance(now, ws.running())
	if gt := r.sr.gt; gt != nil && gt.mode != modeFree {
		if gt.on[ws]--; gt.on[ws] <= 0 {
			delete(gt.on, ws)
		}
		if !learn && now.After(gt.until) {
			// Only a success is learned from: a tool whose calls now
			// all fail must not stay one per worker for good.
			if gt.mode == modeProbing {
				p.endProbeLocked(gt, now)
			} else {
				p.freeLocked(gt)
			}
		}
	}
	if !learn {
		return
	}
	share := ws.sc.share - r.sr.share0
	if p.ser.tools == nil && share < serialMinSolo {
		return // the fast path of a pool of fast tools
	}
	gt := p.ser.tools[r.tool]
	if gt == nil {
		if share < serialMinSolo {
			return
		}
		if len(p.ser.tools) >= serialMaxTools && !p.evictToolLocked() {
			return
		}
		gt = &gilTool{name: r.tool, on: map[*workerState]int{}}
		if p.ser.tools == nil {
			p.ser.tools = map[string]*gilTool{}
		}
		p.ser.tools[r.tool] = gt
	}
	p.learnLocked(gt, now, float64(now.Sub(r.sr.t0)), float64(share))
}

// evictToolLocked makes room in a full table: it drops a tool that runs
// side by side and is not marked (the map's order picks which), so what
// the pool learned of a limited tool stays. It reports whether it did.
func (p *Pool) evictToolLocked() bool {
	for name, gt := range p.ser.tools {
		if gt.mode == modeFree && !gt.marked {
			delete(p.ser.tools, name)
			return true
		}
	}
	return false
}

func ewma(cur, x float64, first bool) float64 {
	if first {
		return x
	}
	return cur + serialAlpha*(x-cur)
}

// learnLocked takes one call's wall time and share (ns) and moves the tool
// between its modes.
func (p *Pool) learnLocked(gt *gilTool, now time.Time, wall, share float64) {
	gt.share = ewma(gt.share, share, gt.n == 0)
	gt.n++
	if share >= float64(serialMinSolo/2) {
		gt.longRun++
	} else {
		gt.longRun = 0
	}
	if gt.mode == modeFree && !gt.marked && gt.share < float64(serialMinSolo) {
		// Not (or no longer) a candidate: a fast tool whose calls were
		// slow for a moment. Once clearly fast, and no verdict pending,
		// it leaves the table (and every call of it the bookkeeping).
		if gt.n >= serialSamples && gt.share < float64(serialMinSolo/2) && !now.Before(gt.nextProbe) {
			delete(p.ser.tools, gt.name)
			if len(p.ser.tools) == 0 {
				p.ser.tools = nil
			}
		}
		return
	}
	if share >= 0.9*wall {
		gt.alone[gt.soloN%len(gt.alone)] = wall
		gt.soloN++
		gt.soloAt = now
	}
	switch gt.mode {
	case modeProbing:
		if gt.soloN >= serialSamples || now.After(gt.until) {
			p.endProbeLocked(gt, now)
		}
		return
	case modeSerial:
		if now.After(gt.until) {
			p.log.Debug("snakepit: re-measuring a serial tool side by side", "tool", gt.name)
			p.freeLocked(gt)
		}
		return
	}
	known := gt.soloN >= serialSamples && now.Sub(gt.soloAt) < max(serialTTL, gt.soloTTL)
	if known && gt.solo < float64(serialMinSolo) {
		return // fast alone: never a candidate
	}
	if !known {
		// Not before serialSamples calls: a new process's first calls are slow.
		// Nor on a few slow calls of a fast tool (a starved machine): every
		// one of the last serialSamples calls must have been long.
		if gt.n >= serialSamples && gt.longRun >= serialSamples && gt.share >= float64(serialMinSolo) && !now.Before(gt.nextProbe) {
			p.probeLocked(gt, now)
		}
		return
	}
	gt.win[gt.effN] = sample{wall: wall, share: share}
	if gt.effN++; gt.effN < len(gt.win) {
		return
	}
	gt.effN = 0
	gt.updateSolo()
	if gt.solo < float64(serialMinSolo) {
		return // its calls alone in the window were fast: never a candidate
	}
	gain, ok := windowGain(&gt.win, gt.solo)
	if !ok {
		return // too little overlap to judge
	}
	line := serialGainMin
	if gt.marked {
		line = serialGainFree
	}
	v := verdictFree
	if gain < line {
		v = verdictSerial
	}
	if v != gt.pending {
		// One window against one probe's time alone: the load may have
		// moved between the two (a stalled machine makes any tool look
		// serial). Measure alone again and judge another window.
		gt.pending = v
		p.probeLocked(gt, now)
		return
	}
	p.confirmedLocked(gt, v, gain, now)
}

// confirmedLocked acts on a verdict a second window confirmed.
func (p *Pool) confirmedLocked(gt *gilTool, v verdict, gain float64, now time.Time) {
	switch {
	case v == verdictSerial:
		if !gt.marked {
			p.log.Info("snakepit: tool runs one call per worker: its calls gain nothing side by side (CPU-bound under the GIL?)",
				"tool", gt.name, "alone", time.Duration(gt.solo), "gain", gain)
		}
		gt.marked = true
		gt.soloN = 0
		gt.soloTTL = 0
		p.limitLocked(gt, modeSerial, now.Add(serialTTL))
	default:
		if gt.marked {
			p.log.Info("snakepit: tool runs side by side again: its calls now gain from it", "tool", gt.name, "gain", gain)
			gt.marked = false
		}
		if !gt.confirmed {
			// Free again since the last probe: probe it less often.
			gt.confirmed = true
			gt.soloTTL = min(2*max(serialTTL, gt.soloTTL), serialFreeTTLMax)
		}
	}
}

// probeLocked measures the tool's time alone: one call per worker until
// serialSamples calls ran alone, at most serialProbeMax.
func (p *Pool) probeLocked(gt *gilTool, now time.Time) {
	p.log.Debug("snakepit: measuring a tool's time alone (one call per worker for a moment)", "tool", gt.name)
	gt.soloN = 0
	gt.confirmed = false
	p.limitLocked(gt, modeProbing, now.Add(serialProbeMax))
}

// endProbeLocked takes the probe's time alone and runs the tool side by
// side again.
func (p *Pool) endProbeLocked(gt *gilTool, now time.Time) {
	gt.updateSolo()
	if gt.soloN < serialSamples || gt.solo < float64(serialMinSolo) {
		// Other calls kept it company, or it is a fast tool that looked
		// slow on a busy machine: not again for a while.
		gt.nextProbe = now.Add(serialTTL)
	}
	if gt.solo < float64(serialMinSolo) {
		gt.pending = verdictNone // this probe contradicts the window before it
	}
	p.freeLocked(gt)
}

// sample is one call measured side by side, ns.
type sample struct{ wall, share float64 }

// windowGain is Σ(solo − S) / Σ(wall − S) over a window's calls but its
// slowest (one outlier — a pause, a preempted process — would decide
// alone); ok is false when the calls overlapped less than
// serialOverlapMin × solo on average.
func windowGain(w *[serialSamples]sample, solo float64) (gain float64, ok bool) {
	slowest := 0
	for i := range w {
		if w[i].wall > w[slowest].wall {
			slowest = i
		}
	}
	var num, den float64
	for i, x := range w {
		if i != slowest {
			num += solo - x.share
			den += x.wall - x.share
		}
	}
	if den < serialOverlapMin*solo*float64(len(w)-1) {
		return 0, false
	}
	return num / den, true
}

// updateSolo sets solo to the median of the last calls that ran alone;
// computed when read (at the end of a probe, at each window), not per call.
func (gt *gilTool) updateSolo() {
	if gt.soloN == 0 {
		return
	}
	var buf [serialSamples]float64
	c := buf[:copy(buf[:], gt.alone[:min(gt.soloN, len(gt.alone))])]
	slices.Sort(c)
	gt.solo = c[len(c)/2]
}

// limitLocked runs the tool one call per worker. Its calls per worker are
// counted only while it is limited (no map write per call otherwise), so
// the count starts from the calls in flight now: every one, batches too,
// as serialTakeLocked counts them (a call left out but still pointing at
// gt would take another's count with it when it ends).
func (p *Pool) limitLocked(gt *gilTool, m serialMode, until time.Time) {
	if gt.mode == modeFree {
		p.ser.limited++
		clear(gt.on)
		for r := p.calls.head; r != nil; r = r.next {
			if r.tool == gt.name {
				r.sr.gt = gt
				gt.on[r.ws]++
			}
		}
	}
	gt.mode, gt.until = m, until
}

// freeLocked lets the tool's calls run side by side again; its waiters may
// now fit workers that had one of its calls, so every worker offers.
func (p *Pool) freeLocked(gt *gilTool) {
	if gt.mode != modeFree {
		p.ser.limited--
	}
	gt.mode = modeFree
	gt.effN = 0
	clear(gt.on) // counted again from the calls in flight if limited again; keeps no removed worker
	for _, ws := range p.workers {
		p.offerLocked(ws)
	}
}

// blockedLocked: a call of tool may not take a slot of ws, because the tool
// runs one call per worker and ws has one. O(1) unless a tool is limited.
func (p *Pool) blockedLocked(tool string, ws *workerState) bool {
	if p.ser.limited == 0 {
		return false
	}
	gt := p.ser.tools[tool]
	return gt != nil && gt.mode != modeFree && gt.on[ws] > 0
}

// pickLocked is the least-loaded free worker tool may use, not avoid if
// another will do; nil if none. A worker at its capacity is picked only to
// prefetch (prefetch.go), batch: the call is a batch's request.
func (p *Pool) pickLocked(tool string, avoid *workerState, batch bool) *workerState {
	ws := p.free.head
	if ws != nil && ws != avoid && ws.inflight < ws.capacity && p.ser.limited == 0 {
		return ws // the common case: a slot of the least-loaded worker
	}
	// The list ranks every worker under its capacity first.
	var fallback *workerState
	for ; ws != nil && ws.inflight < ws.capacity; ws = ws.fnext {
		if p.blockedLocked(tool, ws) {
			continue
		}
		if ws != avoid {
			return ws
		}
		fallback = ws
	}
	if fallback != nil || ws == nil || p.general.head != nil {
		return fallback // prefetching passes no waiter
	}
	for ; ws != nil; ws = ws.fnext {
		if ws.strict.head != nil || !p.prefetchRoomLocked(ws, tool, batch) {
			continue
		}
		if ws != avoid {
			return ws
		}
		fallback = ws
	}
	return fallback
}

// fitLocked is the first waiter from w on whose call may take a slot of ws:
// a serial tool's waiter does not hold back the calls behind it. Every call
// ending on ws looks past that tool's queued calls, so a run of them costs
// a string comparison each, not two map look-ups.
func (p *Pool) fitLocked(w *waiter, ws *workerState) *waiter {
	if p.ser.limited == 0 {
		return w
	}
	var blocked *string // the last tool found blocked
	for ; w != nil; w = w.next {
		if t := w.rec.tool; blocked == nil || t != *blocked {
			if !p.blockedLocked(t, ws) {
				return w
			}
			blocked = &w.rec.tool
		}
	}
	return nil
}

// serialHintLocked completes a queue timeout's message for a tool marked
// serial: capacity does not help it, workers do. (A probe's few calls one
// per worker say nothing of the tool.)
func (p *Pool) serialHintLocked(tool string) string {
	if gt := p.ser.tools[tool]; gt != nil && gt.mode == modeSerial {
		return "; it runs one call per worker, its calls gaining nothing side by side (Stats.SerialTools): add workers, or set DisableSerialTools"
	}
	return ""
}

// serialToolsLocked lists the tools marked serial now, for Stats.
func (p *Pool) serialToolsLocked() []string {
	var out []string
	for name, gt := range p.ser.tools {
		if gt.mode == modeSerial {
			out = append(out, name)
		}
	}
	slices.Sort(out)
	return out
}
