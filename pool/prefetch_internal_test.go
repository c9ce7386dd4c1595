package pool

import (
	"testing"
	"time"
)

// A worker at its capacity holds one more call only for a call of a tool
// not seen taking serialMinSolo or more, not limited by the serial rule,
// not a batch, and only while every call it has is such a call.
func TestPrefetchRoom(t *testing.T) {
	p, err := New(Options{})
	if err != nil {
		t.Fatal(err)
	}
	ws := &workerState{capacity: 2, prefetch: 2, inflight: 2}
	p.ser.tools = map[string]*gilTool{
		"quick":   {name: "quick", mode: modeFree, share: float64(time.Millisecond)},
		"limited": {name: "limited", mode: modeSerial, share: float64(time.Millisecond)},
	}
	p.ser.limited = 1
	p.longTools = map[string]float64{"slow": float64(3 * time.Millisecond), "was-slow": float64(time.Millisecond)}
	for tool, want := range map[string]bool{"never-seen": true, "quick": true, "slow": false, "was-slow": true, "limited": false} {
		if got := p.prefetchRoomLocked(ws, tool, false); got != want {
			t.Errorf("prefetchRoom(%q) = %v, want %v", tool, got, want)
		}
	}
	if p.prefetchRoomLocked(ws, "quick", true) {
		t.Error("a batch's request was prefetched")
	}
	ws.long = 1
	if p.prefetchRoomLocked(ws, "quick", false) {
		t.Error("a call was prefetched behind a call of a tool that may not be")
	}
	ws.long, ws.inflight = 0, 4
	if p.prefetchRoomLocked(ws, "quick", false) {
		t.Error("a worker holding capacity + prefetch calls took another")
	}
	ws.inflight = 2
	p.opts.DisableSerialTools = true
	if p.prefetchRoomLocked(ws, "never-seen", false) {
		t.Error("with DisableSerialTools nothing is measured, so nothing may be prefetched")
	}
}

// A prefetched call's measure starts when a running call of its worker
// ends (the worker runs its calls in order), and only then.
func TestPrefetchedCallStartsWhenARunningCallEnds(t *testing.T) {
	h := newSerialHarness(t)
	ws := &workerState{capacity: 1, prefetch: 1}
	run, queued := &callRec{tool: "t"}, &callRec{tool: "t"}
	h.take(run, ws)
	h.now = h.now.Add(time.Millisecond)
	h.p.prefetchTakeLocked(queued, ws) // what takeLocked does, after serialTakeLocked
	h.take(queued, ws)
	if !queued.prefetched || len(ws.pf) != 1 {
		t.Fatalf("the second call on a worker of capacity 1 is not prefetched: %+v", ws.pf)
	}
	h.now = h.now.Add(4 * time.Millisecond)
	h.p.prefetchReleaseLocked(run, ws, h.now)
	if queued.prefetched || len(ws.pf) != 0 || !queued.sr.t0.Equal(h.now) {
		t.Fatalf("the prefetched call did not start when the running one ended: prefetched=%v t0=%v", queued.prefetched, queued.sr.t0)
	}
}
