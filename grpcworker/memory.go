package grpcworker

import (
	"time"

	"github.com/snakepit-go/snakepit/internal/proc"
)

// memoryWatch is RecycleAboveRSS: every MemoryCheckInterval (jittered per
// period) the current process's tree memory is compared with the limit —
// its cgroup's anon + file_mapped (memory.stat; page cache is not counted)
// where the memory controller accounts it and the worker is in that cgroup
// (every descendant, wherever it went), else the tree RSS of the worker
// and its descendants from /proc.
type memoryWatch struct {
	limit int64
	every time.Duration
	t     *time.Timer
	// off: this lifetime is not watched (no limit, or a fresh process
	// already above it, which a recycle would not cure).
	off bool
}

func (w *Worker) newMemoryWatch(lt *lifetime) *memoryWatch {
	m := &memoryWatch{limit: w.f.opts.RecycleAboveRSS, every: w.f.opts.MemoryCheckInterval}
	m.restart(w, lt)
	return m
}

// restart watches a new lifetime.
func (m *memoryWatch) restart(w *Worker, lt *lifetime) {
	m.off = m.limit <= 0
	if !m.off {
		if rss, err := treeMemory(lt); err == nil && rss >= m.limit {
			m.off = true
			w.log.Warn("a freshly started worker process is already above RecycleAboveRSS; not recycling it for memory (raise the limit)",
				"pid", lt.p.PID(), "rss_bytes", rss, "limit_bytes", m.limit)
		}
	}
	m.reset()
}

func (m *memoryWatch) reset() {
	m.stop()
	if !m.off {
		m.t = time.NewTimer(jittered(m.every))
	}
}

func (m *memoryWatch) stop() {
	if m.t != nil {
		m.t.Stop()
		m.t = nil
	}
}

func (m *memoryWatch) c() <-chan time.Time {
	if m.t == nil {
		return nil
	}
	return m.t.C
}

// over measures lt's process tree and reports whether it exceeds the limit.
func (m *memoryWatch) over(w *Worker, lt *lifetime) bool {
	rss, err := treeMemory(lt)
	if err != nil || rss <= m.limit {
		return false
	}
	w.log.Info("worker process tree above RecycleAboveRSS; recycling it", "pid", lt.p.PID(), "rss_bytes", rss, "limit_bytes", m.limit)
	return true
}

// treeMemory is the memory of lt's process and all its descendants.
func treeMemory(lt *lifetime) (int64, error) {
	if b, ok := lt.p.CgroupMemory(); ok {
		return b, nil
	}
	return proc.TreeRSS(lt.p.PID())
}
