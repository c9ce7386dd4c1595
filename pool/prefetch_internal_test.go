package pool

import (
	"testing"
	"time"
)

// Only calls of tools not seen taking serialMinSolo or more, and not
// limited by the serial rule, wait in a worker beyond its capacity.
func TestPrefetchOnlyShortTools(t *testing.T) {
	p, err := New(Options{})
	if err != nil {
		t.Fatal(err)
	}
	ws := &workerState{capacity: 2, prefetch: 2, inflight: 2}
	p.ser.tools = map[string]*gilTool{
		"slow":    {name: "slow", mode: modeFree, share: float64(3 * time.Millisecond)},
		"quick":   {name: "quick", mode: modeFree, share: float64(time.Millisecond)},
		"limited": {name: "limited", mode: modeSerial, share: float64(time.Millisecond)},
	}
	for tool, want := range map[string]bool{"never-seen": true, "quick": true, "slow": false, "limited": false} {
		if got := p.roomForLocked(tool, ws); got != want {
			t.Errorf("at capacity, roomFor(%q) = %v, want %v", tool, got, want)
		}
	}
	ws.inflight = 1
	if !p.roomForLocked("slow", ws) {
		t.Error("under capacity, a slow tool found no room")
	}
	ws.inflight = 4
	if p.roomForLocked("never-seen", ws) {
		t.Error("a worker holding capacity + prefetch calls took another")
	}
	p.opts.DisableSerialTools = true
	ws.inflight = 2
	if !p.roomForLocked("slow", ws) {
		t.Error("with DisableSerialTools nothing is measured, so every tool may be prefetched")
	}
}
