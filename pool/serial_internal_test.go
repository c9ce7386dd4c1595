package pool

import (
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
