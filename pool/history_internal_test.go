package pool

import (
	"testing"
	"time"
)

func TestQueueHistoryKeepsTheDeepestPerSecondAndCarriesQuietSeconds(t *testing.T) {
	var h queueHistory
	t0 := time.Unix(1_000_000, 0)
	at := func(sec int, ms int) time.Time {
		return t0.Add(time.Duration(sec)*time.Second + time.Duration(ms)*time.Millisecond)
	}
	h.note(at(0, 100), 1)
	h.note(at(0, 200), 3)
	h.note(at(0, 300), 2) // second 0: deepest 3, ends at 2
	h.note(at(4, 0), 5)   // seconds 1-3 quiet at 2; second 4: 5
	h.note(at(4, 500), 0) // ends at 0
	got := h.series(at(6, 0))
	want := []int{3, 2, 2, 2, 5, 0, 0} // seconds 0..6
	tail := got[len(got)-len(want):]
	for i := range want {
		if tail[i] != want[i] {
			t.Fatalf("series tail %v, want %v", tail, want)
		}
	}
	for _, v := range got[:len(got)-len(want)] {
		if v != 0 {
			t.Fatalf("before the first call the queue was empty: %v", got)
		}
	}
	// Long after, a queue that stayed at 4 reads 4 throughout, even though
	// every slot written is older than the window.
	h.note(at(10, 0), 4)
	got = h.series(at(10+3*QueueHistorySeconds, 0))
	for _, v := range got {
		if v != 4 {
			t.Fatalf("a queue quiet at 4 reads %v", got)
		}
	}
	if len(got) != QueueHistorySeconds {
		t.Fatalf("%d values, want %d", len(got), QueueHistorySeconds)
	}
}
