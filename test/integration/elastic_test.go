package integration

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/snakepit-go/snakepit"
	"github.com/snakepit-go/snakepit/internal/testutil"
)

// stepDoc: with SNAKEPIT_ELASTIC_STEP_DOC=path (make elastic-step), the load
// step runs its long variant and writes its table into that file, between
// the elasticStepBegin and elasticStepEnd markers.
const (
	elasticStepBegin = "<!-- elastic-step:begin -->"
	elasticStepEnd   = "<!-- elastic-step:end -->"
)

// stepPlan is one variant of the load step.
type stepPlan struct {
	low, high   time.Duration // how long 1 caller runs first, 32 callers after reaching Max
	idle        time.Duration // IdleTimeout
	sampleEvery time.Duration
}

func elasticStepPlan() (stepPlan, string) {
	if doc := os.Getenv("SNAKEPIT_ELASTIC_STEP_DOC"); doc != "" {
		return stepPlan{low: 5 * time.Second, high: 20 * time.Second, idle: 5 * time.Second, sampleEvery: time.Second}, doc
	}
	return stepPlan{low: time.Second, high: 2 * time.Second, idle: 2 * time.Second, sampleEvery: 250 * time.Millisecond}, ""
}

// stepSample is one row of the load step's table.
type stepSample struct {
	at                     time.Duration
	callers                int
	ready, starting, total int
	queued                 int
	wait                   time.Duration
	ups, downs             uint64
	okCalls, failedCalls   int64
}

// caller pool of the load step: n goroutines calling sleep(ms) until told to
// stop; resize changes n.
type stepCallers struct {
	app      *snakepit.App
	ok, fail atomic.Int64
	firstErr atomic.Value
	mu       sync.Mutex
	stops    []chan struct{}
	wg       sync.WaitGroup
	tool     string
	args     func(c, n int) map[string]any
	opts     []snakepit.CallOption
}

func (s *stepCallers) n() int { s.mu.Lock(); defer s.mu.Unlock(); return len(s.stops) }

func (s *stepCallers) resize(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for len(s.stops) > n {
		last := len(s.stops) - 1
		close(s.stops[last])
		s.stops = s.stops[:last]
	}
	for len(s.stops) < n {
		stop := make(chan struct{})
		c := len(s.stops)
		s.stops = append(s.stops, stop)
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
				_, err := s.app.Execute(ctx, s.tool, s.args(c, i), s.opts...)
				cancel()
				if err != nil {
					s.fail.Add(1)
					s.firstErr.CompareAndSwap(nil, err)
				} else {
					s.ok.Add(1)
				}
			}
		}()
	}
}

// sampler records a stepSample every d until stopped.
func sampleSteps(app *snakepit.App, c *stepCallers, d time.Duration) (stop func() []stepSample) {
	var out []stepSample
	done := make(chan struct{})
	finished := make(chan struct{})
	t0 := time.Now()
	take := func() {
		s := app.Stats()
		w := s.Pool.Workers
		out = append(out, stepSample{at: time.Since(t0), callers: c.n(), ready: w.Idle + w.Busy, starting: w.Starting + w.Exited,
			total: s.Pool.Scaling.Workers, queued: s.Pool.Queued, wait: s.Pool.QueueWait, ups: s.Pool.Scaling.ScaleUps, downs: s.Pool.Scaling.ScaleDowns,
			okCalls: c.ok.Load(), failedCalls: c.fail.Load()})
	}
	go func() {
		defer close(finished)
		tick := time.NewTicker(d)
		defer tick.Stop()
		for {
			take()
			select {
			case <-done:
				take()
				return
			case <-tick.C:
			}
		}
	}()
	return func() []stepSample { close(done); <-finished; return out }
}

func stepTable(samples []stepSample) string {
	var b strings.Builder
	b.WriteString("| t (s) | callers | ready | starting | workers (scaler) | queued | oldest wait | scale-ups | scale-downs | calls ok | failed |\n")
	b.WriteString("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, s := range samples {
		fmt.Fprintf(&b, "| %.1f | %d | %d | %d | %d | %d | %s | %d | %d | %d | %d |\n", s.at.Seconds(), s.callers, s.ready, s.starting,
			s.total, s.queued, s.wait.Round(time.Millisecond), s.ups, s.downs, s.okCalls, s.failedCalls)
	}
	return b.String()
}

// TestElasticLoadStep: 1 caller, then 32, then 1 again, against an elastic
// pool of 1..4 Python workers. The pool grows to 4 under the step, every
// call succeeds, and once the step is over the pool is back to 1 after
// IdleTimeout. The table of workers over time is logged (and, with
// SNAKEPIT_ELASTIC_STEP_DOC, written into docs/SCALING.md).
func TestElasticLoadStep(t *testing.T) {
	t.Parallel() // long and mostly waiting: runs beside the other long tests, for make test's time
	plan, doc := elasticStepPlan()
	const minW, maxW = 1, 4
	app := newApp(t, snakepit.Config{MinWorkers: minW, MaxWorkers: maxW, IdleTimeout: plan.idle,
		ScaleUpAfter: 100 * time.Millisecond, ScaleUpInterval: 300 * time.Millisecond, QueueTimeout: 30 * time.Second})
	c := &stepCallers{app: app, tool: "sleep", args: func(int, int) map[string]any { return map[string]any{"ms": 50} }}
	stop := sampleSteps(app, c, plan.sampleEvery)

	c.resize(1)
	time.Sleep(plan.low) // the load's shape: a phase of this length
	c.resize(32)
	var grewIn time.Duration
	t0 := time.Now()
	testutil.Eventually(t, 90*time.Second, "4 ready workers under 32 callers", func() bool {
		w := app.Stats().Pool.Workers
		grewIn = time.Since(t0)
		return w.Idle+w.Busy == maxW
	})
	time.Sleep(plan.high)
	c.resize(1)
	t1 := time.Now()
	var shrankIn time.Duration
	testutil.Eventually(t, 90*time.Second, "back to MinWorkers after IdleTimeout", func() bool {
		s := app.Stats()
		shrankIn = time.Since(t1)
		return s.Pool.Scaling.Workers == minW && s.Pool.Workers.Total == minW
	})
	time.Sleep(plan.sampleEvery) // one more row at Min
	c.resize(0)
	c.wg.Wait()
	samples := stop()
	table := stepTable(samples)
	s := app.Stats()
	summary := fmt.Sprintf("Min %d, Max %d, IdleTimeout %s, ScaleUpAfter 100ms, ScaleUpInterval 300ms, tool sleep(50 ms), capacity 8: "+
		"4 ready %s after the step to 32 callers, back to %d %s after the step down (IdleTimeout %s); %d calls, %d failed; %d scale-ups, %d scale-downs",
		minW, maxW, plan.idle, grewIn.Round(100*time.Millisecond), minW, shrankIn.Round(100*time.Millisecond), plan.idle,
		c.ok.Load()+c.fail.Load(), c.fail.Load(), s.Pool.Scaling.ScaleUps, s.Pool.Scaling.ScaleDowns)
	t.Logf("ELASTIC-STEP: %s\n%s", summary, table)
	if n := c.fail.Load(); n > 0 {
		t.Errorf("%d calls failed; first: %v", n, c.firstErr.Load())
	}
	if s.Pool.Scaling.ScaleUps < maxW-minW || s.Pool.Scaling.ScaleDowns < maxW-minW {
		t.Errorf("%d scale-ups, %d scale-downs; want at least %d of each", s.Pool.Scaling.ScaleUps, s.Pool.Scaling.ScaleDowns, maxW-minW)
	}
	if shrankIn < plan.idle {
		t.Errorf("back to Min %s after the step down, before IdleTimeout %s", shrankIn, plan.idle)
	}
	if doc != "" {
		writeStepDoc(t, doc, summary, table)
	}
}

func writeStepDoc(t *testing.T, path, summary, table string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	text := string(b)
	i, j := strings.Index(text, elasticStepBegin), strings.Index(text, elasticStepEnd)
	if i < 0 || j < i {
		t.Fatalf("%s has no %s … %s section to write the table into", path, elasticStepBegin, elasticStepEnd)
	}
	body := fmt.Sprintf("%s\n_Measured by `make elastic-step` on %s (a shared, loaded VM: timings are indicative)._ %s\n\n%s%s",
		elasticStepBegin, time.Now().UTC().Format("2006-01-02"), summary, table, elasticStepEnd)
	text = text[:i] + body + text[j+len(elasticStepEnd):]
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestElasticChaos: an elastic pool of 1..4 Python workers grows under 32
// idempotent callers and shrinks under one, while a random worker process of
// ours is SIGKILLed every 300 ms in both phases. No call fails, every
// success really ran, the pool is back to Min after the chaos, and the
// App's stop leaves nothing behind (newApp's cleanup checks).
func TestElasticChaos(t *testing.T) {
	t.Parallel() // long and mostly waiting: runs beside the other long tests, for make test's time
	const minW, maxW = 1, 4
	record := t.TempDir() + "/ran.txt"
	app := newApp(t, snakepit.Config{MinWorkers: minW, MaxWorkers: maxW, IdleTimeout: time.Second, Adapter: healingAdapter, PythonPath: healingPath(t),
		ScaleUpAfter: 100 * time.Millisecond, ScaleUpInterval: 200 * time.Millisecond, QueueTimeout: 30 * time.Second,
		Env: map[string]string{"HEALING_SETUP_S": "0.2"}})
	c := &stepCallers{app: app, tool: "record", opts: []snakepit.CallOption{snakepit.Idempotent()},
		args: func(c, n int) map[string]any {
			return map[string]any{"id": fmt.Sprintf("c%d-%d", c, n), "path": record}
		}}
	rng := rand.New(rand.NewPCG(3, 4))
	kills := 0
	chaos := func(until func() bool, limit time.Duration) {
		tick := time.NewTicker(300 * time.Millisecond)
		defer tick.Stop()
		end := time.Now().Add(limit)
		for !until() && time.Now().Before(end) {
			<-tick.C
			if ps := workerProcs(t, app, ""); len(ps) > 0 && signalIfOurs(app, ps[rng.IntN(len(ps))], syscall.SIGKILL) {
				kills++
			}
		}
	}
	// Scale-up under kills: until the scaler has added its 3 workers (and 3 s more).
	c.resize(32)
	var upAt time.Time
	chaos(func() bool {
		if upAt.IsZero() && app.Stats().Pool.Scaling.ScaleUps >= maxW-minW {
			upAt = time.Now()
		}
		return !upAt.IsZero() && time.Since(upAt) > 3*time.Second
	}, 60*time.Second)
	upKills := kills
	// Scale-down under kills: one caller, 4 s of kills while idle workers leave.
	c.resize(1)
	chaos(func() bool { return false }, 4*time.Second)
	c.resize(0)
	c.wg.Wait()
	testutil.Eventually(t, 60*time.Second, "back to MinWorkers after the chaos", func() bool {
		s := app.Stats()
		return s.Pool.Scaling.Workers == minW && s.Pool.Workers.Total == minW && s.Pool.Workers.Idle == minW
	})
	s := app.Stats()
	t.Logf("elastic chaos: %d kills (%d while growing); %d calls ok, %d failed; %d scale-ups, %d scale-downs, %d restarts, %d retries",
		kills, upKills, c.ok.Load(), c.fail.Load(), s.Pool.Scaling.ScaleUps, s.Pool.Scaling.ScaleDowns, s.Pool.Restarts, s.Pool.Retries)
	if n := c.fail.Load(); n > 0 {
		t.Errorf("%d idempotent calls failed; first: %v", n, c.firstErr.Load())
	}
	if s.Pool.Scaling.ScaleUps < maxW-minW || s.Pool.Scaling.ScaleDowns == 0 {
		t.Errorf("%d scale-ups, %d scale-downs: the chaos did not cover both directions", s.Pool.Scaling.ScaleUps, s.Pool.Scaling.ScaleDowns)
	}
	if upKills < 2 || kills-upKills < 4 {
		t.Errorf("%d kills while growing, %d while shrinking: the chaos did not happen", upKills, kills-upKills)
	}
	ran, err := os.ReadFile(record)
	if err != nil {
		t.Fatal(err)
	}
	if lines := strings.Count(string(ran), "\n"); int64(lines) < c.ok.Load() {
		t.Errorf("%d calls succeeded but only %d ran", c.ok.Load(), lines)
	}
}

// TestElasticReloadWhileShrinking: rolling reloads run while idle workers
// are being removed. A worker removed mid-recycle is reported as skipped
// (its lifetime ended), never as a failed reload; no call fails; the pool
// ends at Min with nothing left after Stop.
func TestElasticReloadWhileShrinking(t *testing.T) {
	const minW, maxW = 1, 3
	app := newApp(t, snakepit.Config{MinWorkers: minW, MaxWorkers: maxW, Capacity: 1, IdleTimeout: 500 * time.Millisecond,
		ScaleUpAfter: 50 * time.Millisecond, ScaleUpInterval: 100 * time.Millisecond, QueueTimeout: 30 * time.Second})
	c := &stepCallers{app: app, tool: "sleep", args: func(int, int) map[string]any { return map[string]any{"ms": 100} }}
	c.resize(6)
	testutil.Eventually(t, 90*time.Second, "3 ready workers", func() bool {
		w := app.Stats().Pool.Workers
		return w.Idle+w.Busy == maxW
	})
	c.resize(1)
	reloads, skipped := 0, 0
	deadline := time.Now().Add(90 * time.Second)
	for {
		s := app.Stats()
		if s.Pool.Scaling.ScaleDowns >= maxW-minW && s.Pool.Workers.Total == minW {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("not back to Min within 90 s: %+v", s.Pool.Scaling)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		rep, err := app.Reload(ctx)
		cancel()
		if err != nil {
			t.Fatalf("Reload while the pool shrinks: %v (report %+v)", err, rep)
		}
		reloads++
		skipped += len(rep.Skipped)
	}
	c.resize(0)
	c.wg.Wait()
	t.Logf("%d reloads while shrinking (%d workers skipped: removed or restarting); %d calls ok, %d failed", reloads, skipped, c.ok.Load(), c.fail.Load())
	if n := c.fail.Load(); n > 0 {
		t.Errorf("%d calls failed; first: %v", n, c.firstErr.Load())
	}
	if reloads == 0 {
		t.Error("no reload overlapped the shrink")
	}
}
