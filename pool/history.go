package pool

import "time"

// QueueHistorySeconds is how far back Stats.QueueHistory reaches.
const QueueHistorySeconds = 120

// queueHistory keeps the queue's depth over the last QueueHistorySeconds,
// one value per second: the deepest the queue got in that second. It is
// written where the depth changes (under Pool.mu), so it costs nothing
// while nothing queues and needs no sampler goroutine; a second in which
// the depth did not change reads as the depth it had.
type queueHistory struct {
	sec   [QueueHistorySeconds]int64 // the unix second a slot holds, 0 if none yet
	max   [QueueHistorySeconds]int   // the deepest in that second
	start [QueueHistorySeconds]int   // the depth that second began with
	depth int                        // the depth after the latest change
}

func (h *queueHistory) note(now time.Time, depth int) {
	s := now.Unix()
	i := int(s % QueueHistorySeconds)
	if h.sec[i] != s {
		h.sec[i], h.start[i], h.max[i] = s, h.depth, h.depth
	}
	h.max[i] = max(h.max[i], depth)
	h.depth = depth
}

// series is the depth per second, oldest first, the last value being the
// second of now. Read backwards: a second nobody wrote had the depth the
// next written second began with (or, after the last change, the current
// depth).
func (h *queueHistory) series(now time.Time) []int {
	out := make([]int, QueueHistorySeconds)
	s := now.Unix()
	carry := h.depth
	for k := len(out) - 1; k >= 0; k, s = k-1, s-1 {
		if i := int(s % QueueHistorySeconds); h.sec[i] == s {
			out[k], carry = h.max[i], h.start[i]
		} else {
			out[k] = carry
		}
	}
	return out
}
