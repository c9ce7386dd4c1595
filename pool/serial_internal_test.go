package pool

import (
	"fmt"
	"testing"
	"time"
)

// BenchmarkSerialBookkeeping is what serial.go adds to every call of a fast
// tool: the share clock at take and release, the nil-map checks. The clock
// reads are the ones the pool takes anyway (the call's start, its end).
func BenchmarkSerialBookkeeping(b *testing.B) {
	p, err := New(Options{})
	if err != nil {
		b.Fatal(err)
	}
	ws := &workerState{capacity: 8}
	rs := [2]*callRec{{tool: "fast"}, {tool: "fast"}}
	var ts [4096]time.Time // the stamps, read beforehand as the pool does
	base := time.Now()
	for i := range ts {
		ts[i] = base.Add(time.Duration(i) * time.Microsecond)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		if i%len(ts) == 0 {
			ws.sc = shareClock{} // the stamps start over
		}
		r := rs[i&1]
		r.sr.at = ts[i%len(ts)]
		p.serialTakeLocked(r, ws)
		ws.inflight++
		p.serialReleaseLocked(r, ws, ts[(i+1)%len(ts)], true)
		ws.inflight--
	}
}

// serialHarness drives serial.go's bookkeeping directly, as the pool's
// take and release do, on a clock of its own.
type serialHarness struct {
	p   *Pool
	now time.Time
}

func newSerialHarness(t *testing.T) *serialHarness {
	t.Helper()
	h := &serialHarness{now: time.Unix(1_000_000, 0)}
	p, err := New(Options{Now: func() time.Time { return h.now }})
	if err != nil {
		t.Fatal(err)
	}
	h.p = p
	return h
}

func (h *serialHarness) take(r *callRec, ws *workerState) {
	h.p.serialTakeLocked(r, ws)
	ws.inflight++
	h.p.inflight++
	r.ws = ws
	h.p.calls.add(r)
}

func (h *serialHarness) release(r *callRec, learn bool) {
	h.p.calls.remove(r)
	h.p.serialReleaseLocked(r, r.ws, h.now, learn)
	r.ws.inflight--
	h.p.inflight--
}

// tool registers a candidate named name, as a slow call would.
func (h *serialHarness) tool(name string) *gilTool {
	gt := &gilTool{name: name, on: map[*workerState]int{}}
	if h.p.ser.tools == nil {
		h.p.ser.tools = map[string]*gilTool{}
	}
	h.p.ser.tools[name] = gt
	return gt
}

func TestSerialBatchCallCountedAcrossMarks(t *testing.T) {
	h := newSerialHarness(t)
	gt := h.tool("t")
	ws := &workerState{capacity: 8}
	far := h.now.Add(time.Hour)
	h.p.limitLocked(gt, modeSerial, far)
	batch := &callRec{tool: "t", batch: true}
	h.take(batch, ws) // counted: the tool is limited
	h.p.freeLocked(gt)
	single := &callRec{tool: "t"}
	h.take(single, ws)
	h.p.limitLocked(gt, modeSerial, far) // counts the calls in flight again
	h.release(batch, false)
	if !h.p.blockedLocked("t", ws) {
		t.Fatalf("a call of the serial tool is still running on the worker (per-worker count %d), but another may start there", gt.on[ws])
	}
	h.release(single, false)
	if h.p.blockedLocked("t", ws) || len(gt.on) != 0 {
		t.Fatalf("no call in flight, yet the per-worker count is %v", gt.on)
	}
}

func TestSerialCountsDroppedWhenFreed(t *testing.T) {
	h := newSerialHarness(t)
	gt := h.tool("t")
	ws := &workerState{capacity: 8}
	h.p.limitLocked(gt, modeSerial, h.now.Add(time.Hour))
	r := &callRec{tool: "t"}
	h.take(r, ws)
	h.p.freeLocked(gt)
	h.release(r, false)
	if len(gt.on) != 0 {
		t.Fatalf("the per-worker counts of a tool no longer limited keep %d worker(s) referenced", len(gt.on))
	}
}

// calls feeds learnLocked n calls of gt, 10 ms apart, of the given wall
// time and share in ms.
func (h *serialHarness) calls(gt *gilTool, n int, wall, share float64) {
	for range n {
		h.now = h.now.Add(10 * time.Millisecond)
		h.p.learnLocked(gt, h.now, wall*float64(time.Millisecond), share*float64(time.Millisecond))
	}
}

// The rule marks only a tool taking at least serialMinSolo alone: a
// window whose own calls alone bring the time alone below it is not judged.
func TestSerialNotMarkedBelowMinSolo(t *testing.T) {
	h := newSerialHarness(t)
	gt := h.tool("t")
	h.calls(gt, serialSamples, 5, 2.5) // long calls side by side: a probe
	h.calls(gt, serialSamples, 2.5, 2.5)
	h.calls(gt, serialSamples, 5, 2.5) // a first window: no gain
	h.calls(gt, serialSamples, 2.5, 2.5)
	if gt.mode != modeFree || gt.pending != verdictSerial {
		t.Fatalf("mode %d, pending %d after a serial window and its probe", gt.mode, gt.pending)
	}
	// The second window: its calls alone take 1.9 ms.
	h.calls(gt, 3, 4, 2)
	h.calls(gt, serialSamples-3, 1.9, 1.9)
	if gt.mode == modeSerial {
		t.Fatalf("marked serial with %.1f ms alone (below serialMinSolo)", gt.solo/float64(time.Millisecond))
	}
}

// A probe that finds the tool fast alone voids the verdict waiting for
// confirmation: a window long after may not confirm it alone.
func TestSerialFastProbeVoidsPendingVerdict(t *testing.T) {
	h := newSerialHarness(t)
	gt := h.tool("t")
	h.calls(gt, serialSamples, 5, 2.5)
	h.calls(gt, serialSamples, 2.5, 2.5)
	h.calls(gt, serialSamples, 5, 2.5) // a serial window, then a probe
	h.calls(gt, serialSamples, 1, 1)   // which finds it fast alone
	h.now = h.now.Add(serialTTL + time.Second)
	h.calls(gt, serialSamples, 5, 2.5) // long again: a new probe
	h.calls(gt, serialSamples, 2.5, 2.5)
	h.calls(gt, serialSamples, 5, 2.5) // one window, no other after a probe
	if gt.mode == modeSerial {
		t.Fatal("marked serial on one window and a verdict its probe contradicted")
	}
}

// Tool names come from callers: the table of candidates has a bound.
func TestSerialToolTableBounded(t *testing.T) {
	h := newSerialHarness(t)
	ws := &workerState{capacity: 8}
	for i := range 3 * serialMaxTools {
		r := &callRec{tool: fmt.Sprintf("t%d", i)}
		h.take(r, ws)
		h.now = h.now.Add(3 * time.Millisecond)
		h.release(r, true)
	}
	if n := len(h.p.ser.tools); n > serialMaxTools {
		t.Fatalf("%d tools in the table; want at most %d", n, serialMaxTools)
	}
	if gt := h.p.ser.tools[fmt.Sprintf("t%d", 3*serialMaxTools-1)]; gt == nil {
		t.Fatal("the newest slow tool is not learned once the table is full")
	}
}

// BenchmarkSerialOfferPastQueue is a slot's offer looking past a full
// queue of a serial tool's calls (each blocked on the worker) for a call it
// can take: what every call ending on that worker pays then.
func BenchmarkSerialOfferPastQueue(b *testing.B) {
	p, err := New(Options{})
	if err != nil {
		b.Fatal(err)
	}
	gt := &gilTool{name: "burn", on: map[*workerState]int{}}
	p.ser.tools = map[string]*gilTool{"burn": gt}
	p.limitLocked(gt, modeSerial, time.Now().Add(time.Hour))
	ws := &workerState{capacity: 8}
	gt.on[ws] = 1
	for range defaultMaxQueue {
		// Each call's name is its own string, as decoded from a request.
		p.general.push(&waiter{rec: &callRec{tool: string([]byte("burn"))}})
	}
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if p.fitLocked(p.general.head, ws) != nil {
			b.Fatal("a blocked call was offered the slot")
		}
	}
}

// A mark or probe ends on time even if none of the tool's calls succeeds
// any more (only a success is learned from).
func TestSerialLimitEndsWithoutSuccess(t *testing.T) {
	for _, m := range []serialMode{modeProbing, modeSerial} {
		h := newSerialHarness(t)
		gt := h.tool("t")
		ws := &workerState{capacity: 8}
		h.p.limitLocked(gt, m, h.now.Add(time.Second))
		r := &callRec{tool: "t"}
		h.take(r, ws)
		h.now = h.now.Add(2 * time.Second)
		h.release(r, false) // it failed
		if gt.mode != modeFree || h.p.ser.limited != 0 {
			t.Fatalf("mode %d: still mode %d (%d limited) past its end, its calls failing", m, gt.mode, h.p.ser.limited)
		}
	}
}

// With the rule off a call pays no share clock: nothing reads it.
func TestSerialOffKeepsNoClock(t *testing.T) {
	h := newSerialHarness(t)
	h.p.opts.DisableSerialTools = true
	ws := &workerState{capacity: 8}
	for range 3 * serialSamples {
		r := &callRec{tool: "slow"}
		h.take(r, ws)
		h.now = h.now.Add(10 * time.Millisecond)
		h.release(r, true)
	}
	if ws.sc != (shareClock{}) || h.p.ser.tools != nil {
		t.Fatalf("rule off: share clock %+v, tools %v; want neither kept", ws.sc, h.p.ser.tools)
	}
}

// A probe's calls one per worker say nothing of the tool: only a marked
// tool's queue timeout says it gains nothing side by side.
func TestSerialHintOnlyWhenMarked(t *testing.T) {
	h := newSerialHarness(t)
	gt := h.tool("io")
	h.p.limitLocked(gt, modeProbing, h.now.Add(serialProbeMax))
	if hint := h.p.serialHintLocked("io"); hint != "" {
		t.Fatalf("probing tool's hint: %q; want none", hint)
	}
	h.p.limitLocked(gt, modeSerial, h.now.Add(serialTTL))
	if hint := h.p.serialHintLocked("io"); hint == "" {
		t.Fatal("marked tool's hint is empty")
	}
}
