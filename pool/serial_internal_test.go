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
