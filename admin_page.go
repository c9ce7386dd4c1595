package snakepit

import (
	_ "embed"
	"fmt"
	"html/template"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/snakepit-go/snakepit/internal/proc"
	"github.com/snakepit-go/snakepit/pool"
	"github.com/snakepit-go/snakepit/remote"
)

//go:embed admin_status.tmpl
var statusPageText string

// statusPage is the HTML status page; html/template escapes every value
// (error texts carry <, > and &).
var statusPage = sync.OnceValue(func() *template.Template {
	// Parsed on first use, not at init: every program that imports
	// snakepit would pay for it, most never serve the page.
	return template.Must(template.New("status").Parse(statusPageText))
})

// pageView is what the status page template renders.
type pageView struct {
	Title     string
	RunID     string
	Readiness readiness
	Refresh   int // seconds; 0: no self-refresh
	Generated string
	Pools     []poolView
	Reap      ReapReport
}

// poolView is one pool's section; the page repeats it per pool.
type poolView struct {
	Name                                    string
	Counts                                  pool.WorkerCounts
	States                                  []stateCount // the non-empty ones
	Queued, LimitQueued, InFlight, Capacity int
	// LoadPct and QueuePct size the load bar: slots taken, and waiters
	// beyond them, as percentages of their sum or of the capacity.
	LoadPct, QueuePct int
	Requests          uint64
	Retries           uint64
	Outcomes          []countView
	Restarts          uint64
	RestartReasons    []reasonView
	Recycles          uint64
	RecycleReasons    []reasonView
	Workers           []workerView // local workers
	Agents            []workerView // remote workers, one per agent
	GivenUp           []givenUpView
	Latency           latencyView
	Queue             queueView
	// Scaling is an elastic pool's line (bounds, size, last event); "" for
	// a fixed pool.
	Scaling string
}

// stateCount is a worker state and how many workers are in it.
type stateCount struct {
	State string
	N     int
}

type countView struct {
	Name  string
	Count uint64
}

type reasonView struct {
	Reason        string
	Count         int
	Detail        string // the latest such event's text
	DetailSummary string // its first line
}

type workerView struct {
	ID, State, Health string
	PID               string
	Uptime            string // time in State; for idle and busy, the process's uptime
	Serving           bool   // idle or busy: Uptime is the process's
	Calls             uint64
	InFlight          int
	Capacity          int
	RSS               string
	Restarts          int
	Recycles          int
	LastError         string
	ErrorSummary      string // LastError's first line
}

type givenUpView struct {
	ID, Err, RetryAt string
}

type latencyView struct {
	Count                uint64
	P50, P90, P99, Max   string
	Mean                 string
	Bars                 []barView
	Width, Height, AxisY int
	LabelY               int
	Empty                bool
}

type barView struct {
	X, Y, W, H     int
	TextX, CountY  int
	LabelY         int
	Label, Tooltip string
	Count          uint64
}

func newPageView(title string, st Stats, rd readiness, refresh time.Duration, now time.Time) pageView {
	v := pageView{
		Title: title, RunID: st.RunID, Readiness: rd, Reap: st.Reap,
		Generated: now.UTC().Format("2006-01-02 15:04:05 UTC"),
	}
	if refresh > 0 {
		v.Refresh = int((refresh + time.Second - 1) / time.Second)
	}
	v.Pools = append(v.Pools, newPoolView(DefaultPool, "", st.Pool, st.RunID, now))
	for _, name := range slices.Sorted(maps.Keys(st.Pools)) {
		if name != DefaultPool {
			pc := PoolConfig{Name: name}
			v.Pools = append(v.Pools, newPoolView(name, pc.workerPrefix(), st.Pools[name], st.RunID, now))
		}
	}
	return v
}

// newPoolView renders one pool, whose worker ids start with idPrefix
// (its remote workers' with idPrefix+remote.IDPrefix): the page is a list
// of these.
func newPoolView(name, idPrefix string, ps PoolStats, runID string, now time.Time) poolView {
	v := poolView{
		Name: name, Counts: ps.Workers, Queued: ps.Queued, LimitQueued: ps.LimitQueued,
		InFlight: ps.InFlight, Capacity: ps.Capacity, Requests: ps.Requests, Retries: ps.Retries,
		Restarts: ps.Restarts, Recycles: ps.Recycles,
		RestartReasons: reasons(ps.RestartReasons, ps.RestartDetail),
		RecycleReasons: reasons(ps.RecycleReasons, ps.RecycleDetail),
		Latency:        newLatencyView(ps.Latency),
		Queue:          newQueueView(ps.QueueHistory),
		Scaling:        scalingLine(ps.Scaling, now),
	}
	w := ps.Workers
	for _, sc := range []stateCount{
		{pool.StateIdle, w.Idle}, {pool.StateBusy, w.Busy}, {pool.StateStarting, w.Starting},
		{pool.StateExited, w.Exited}, {pool.StateFailed, w.Failed}, {pool.StateDraining, w.Draining},
	} {
		if sc.N > 0 {
			v.States = append(v.States, sc)
		}
	}
	total := max(ps.Capacity, ps.InFlight+ps.Queued+ps.LimitQueued, 1)
	v.LoadPct = 100 * ps.InFlight / total
	v.QueuePct = min(100-v.LoadPct, 100*(ps.Queued+ps.LimitQueued)/total)
	for _, o := range slices.Sorted(maps.Keys(ps.Outcomes)) {
		if n := ps.Outcomes[o]; n > 0 {
			v.Outcomes = append(v.Outcomes, countView{string(o), n})
		}
	}
	for _, w := range ps.PerWorker {
		ep, isRemote := strings.CutPrefix(w.ID, idPrefix+remote.IDPrefix)
		wv := newWorkerView(w, isRemote, runID, now)
		if isRemote {
			wv.ID = ep
			v.Agents = append(v.Agents, wv)
		} else {
			v.Workers = append(v.Workers, wv)
		}
	}
	for _, g := range ps.GivenUp {
		gv := givenUpView{ID: g.ID, RetryAt: "not retried"}
		if g.Err != nil {
			gv.Err = g.Err.Error()
		}
		if !g.RetryAt.IsZero() {
			gv.RetryAt = "retried in " + roundDuration(g.RetryAt.Sub(now))
		}
		v.GivenUp = append(v.GivenUp, gv)
	}
	return v
}

// scalingLine is an elastic pool's bounds, size and latest event in one
// line, "" for a fixed pool.
func scalingLine(s ScalingStats, now time.Time) string {
	if !s.Elastic {
		return ""
	}
	line := fmt.Sprintf("elastic %d..%d · %d workers, %d ready · %d up, %d down", s.Min, s.Max, s.Workers, s.Ready, s.ScaleUps, s.ScaleDowns)
	if s.PausedUntil.After(now) {
		line += " · growth paused for " + roundDuration(s.PausedUntil.Sub(now))
	}
	if e := s.Last; !e.At.IsZero() {
		line += fmt.Sprintf(" · last: %s %s %s ago (%s)", e.Direction, e.WorkerID, roundDuration(now.Sub(e.At)), e.Reason)
	}
	return line
}

// agentHealth names a remote worker's state as its agent's health.
var agentHealth = map[string]string{
	pool.StateIdle: "healthy", pool.StateBusy: "healthy", pool.StateStarting: "connecting",
	pool.StateExited: "lost, reconnecting", pool.StateFailed: "unreachable, given up", pool.StateDraining: "leaving",
}

func newWorkerView(w pool.WorkerStats, isRemote bool, runID string, now time.Time) workerView {
	v := workerView{
		ID: w.ID, State: w.State, Health: agentHealth[w.State], PID: "–", RSS: "–", Uptime: "–",
		Calls: w.Calls, InFlight: w.InFlight, Capacity: w.Capacity,
		Restarts: w.Restarts, Recycles: w.Recycles, LastError: w.LastError, ErrorSummary: firstLine(w.LastError),
	}
	v.Serving = w.State == pool.StateIdle || w.State == pool.StateBusy
	if !w.Since.IsZero() {
		v.Uptime = roundDuration(now.Sub(w.Since))
	}
	if w.PID > 0 {
		v.PID = fmt.Sprint(w.PID)
		// Only a process that carries this run's id is read: a pid that
		// exited meanwhile may already name another process.
		if !isRemote && proc.CarriesRunID(w.PID, runID) {
			if rss, err := proc.RSS(w.PID); err == nil {
				v.RSS = formatBytes(rss)
			}
		}
	}
	return v
}

func reasons(counts map[string]int, detail map[string]string) []reasonView {
	var out []reasonView
	for _, r := range slices.Sorted(maps.Keys(counts)) {
		if n := counts[r]; n > 0 {
			out = append(out, reasonView{Reason: r, Count: n, Detail: detail[r], DetailSummary: firstLine(detail[r])})
		}
	}
	return out
}

// firstLine is s up to its first line break, shortened to what a table
// cell shows; the page has the whole text one click away.
func firstLine(s string) string {
	line, _, cut := strings.Cut(s, "\n")
	if r := []rune(line); len(r) > 110 {
		line, cut = string(r[:110]), true
	}
	if cut {
		line += " …"
	}
	return line
}

// Chart geometry, in SVG user units (the SVG scales to the page's width).
const (
	chartW, chartH      = 640, 220
	chartTop            = 18 // room for the counts above the bars
	chartAxis           = 170
	chartLeft, chartGap = 40, 4
)

// newLatencyView draws the histogram: one bar per bucket (not cumulative),
// the last for calls slower than the largest bound.
func newLatencyView(l pool.LatencyStats) latencyView {
	v := latencyView{
		Count: l.Count, P50: roundDuration(l.P50), P90: roundDuration(l.P90), P99: roundDuration(l.P99),
		Max: roundDuration(l.Max), Mean: "–", Width: chartW, Height: chartH, AxisY: chartAxis,
		Empty: l.Count == 0,
	}
	if l.Count > 0 {
		v.Mean = roundDuration(l.Sum / time.Duration(l.Count))
	}
	counts := make([]uint64, 0, len(l.Buckets)+1)
	labels := make([]string, 0, len(l.Buckets)+1)
	var prev uint64
	for _, b := range l.Buckets {
		counts = append(counts, b.Count-prev)
		labels = append(labels, "≤"+shortDuration(b.UpperBound))
		prev = b.Count
	}
	if l.Count >= prev {
		counts = append(counts, l.Count-prev)
		labels = append(labels, "more")
	}
	peak := uint64(1)
	for _, c := range counts {
		peak = max(peak, c)
	}
	slot := (chartW - chartLeft) / max(len(counts), 1)
	for i, c := range counts {
		h := int(uint64(chartAxis-chartTop) * c / peak)
		if c > 0 {
			h = max(h, 2)
		}
		x := chartLeft + i*slot
		v.Bars = append(v.Bars, barView{
			X: x, Y: chartAxis - h, W: slot - chartGap, H: h, TextX: x + (slot-chartGap)/2, CountY: chartAxis - h - 4, LabelY: chartAxis + 14,
			Label: labels[i], Count: c, Tooltip: fmt.Sprintf("%s: %d calls", labels[i], c),
		})
	}
	return v
}

// roundDuration prints d to a precision a reader needs: ms below a
// second, s below a minute, then m and h.
func roundDuration(d time.Duration) string {
	switch {
	case d <= 0:
		return "0"
	case d < time.Millisecond:
		return d.Round(time.Microsecond).String()
	case d < time.Second:
		return d.Round(10 * time.Microsecond).String()
	case d < 10*time.Second:
		return d.Round(10 * time.Millisecond).String()
	case d < time.Minute:
		return d.Round(100 * time.Millisecond).String()
	case d < time.Hour:
		return d.Round(time.Second).String()
	default:
		return d.Round(time.Minute).String()
	}
}

func shortDuration(d time.Duration) string {
	if d < time.Second {
		return strings.TrimSuffix(fmt.Sprintf("%gms", float64(d)/float64(time.Millisecond)), ".0")
	}
	return fmt.Sprintf("%gs", d.Seconds())
}

func formatBytes(n int64) string {
	const mib = 1 << 20
	if n < mib {
		return fmt.Sprintf("%d KiB", n>>10)
	}
	return fmt.Sprintf("%.1f MiB", float64(n)/mib)
}

// queueView draws Stats.QueueHistory: the queue's depth per second as a
// line over the last two minutes, scaled to its deepest point.
type queueView struct {
	Width, Height, AxisY int
	Points               string // the polyline's "x,y x,y …"
	Max, Seconds         int
}

func newQueueView(series []int) queueView {
	const step, height, top = 5, 80, 8
	v := queueView{Width: max(len(series)-1, 1) * step, Height: height + 4, AxisY: height, Seconds: len(series)}
	for _, d := range series {
		v.Max = max(v.Max, d)
	}
	scale := float64(height-top) / float64(max(v.Max, 1))
	var b strings.Builder
	for i, d := range series {
		if i > 0 {
			b.WriteByte(' ')
		}
		fmt.Fprintf(&b, "%d,%d", i*step, height-int(float64(d)*scale+0.5))
	}
	v.Points = b.String()
	return v
}
