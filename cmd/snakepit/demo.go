package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/snakepit-go/snakepit"
	"github.com/snakepit-go/snakepit/internal/proc"
)

// demo is a newcomer's first run: every kind of call against real Python
// workers, then a stop that is checked for survivors.
type demo struct {
	out       io.Writer
	app       *snakepit.App
	mu        sync.Mutex
	latencies []time.Duration
	calls     int
	failures  []string
}

func cmdDemo(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var pf poolFlags
	pf.register(fs, 4)
	burst := fs.Int("burst", 400, "calls in the concurrent burst")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	cfg := pf.config(stderr)
	if pf.instance == "" && pf.registry == "" {
		cfg.Instance = "demo"
	}
	app, err := snakepit.New(cfg)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	d := &demo{out: stdout, app: app}
	fmt.Fprintf(stdout, "snakepit demo: run id %s, %d workers, adapter %s\n", app.RunID(), pf.workers, pf.adapter)
	t0 := time.Now()
	// Ctrl-C ends the calls early but still runs the ordered stop below.
	sigCtx, stopSignals := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stopSignals()
	ctx, cancel := context.WithTimeout(sigCtx, 2*time.Minute)
	defer cancel()
	if err := app.Start(ctx); err != nil {
		fmt.Fprintf(stderr, "start failed: %v\n", err)
		return 1
	}
	st := app.Stats()
	fmt.Fprintf(stdout, "✓ %d workers ready in %s (orphans reaped from earlier runs: %d)\n",
		st.Pool.Workers.Total, time.Since(t0).Round(time.Millisecond), st.Reap.Reaped+st.Reap.Descendants)

	pids := d.steps(ctx, *burst)

	stopCtx, stopCancel := context.WithTimeout(context.Background(), time.Minute)
	defer stopCancel()
	t1 := time.Now()
	rep, err := app.Stop(stopCtx)
	if err != nil {
		d.fail("stop: %v", err)
	} else {
		fmt.Fprintf(stdout, "✓ stopped in %s; cleanup found %d survivors\n", time.Since(t1).Round(time.Millisecond), len(rep.Cleanup.Found))
	}
	left, err := proc.FindByRunID(app.RunID())
	switch {
	case err != nil:
		d.fail("cannot scan /proc: %v", err)
	case len(left) > 0:
		d.fail("%d processes carrying run id %s are still alive", len(left), app.RunID())
	default:
		fmt.Fprintf(stdout, "✓ no process carrying run id %s is alive\n", app.RunID())
	}
	d.summary(pids)
	if len(d.failures) > 0 {
		return 1
	}
	return 0
}

func (d *demo) record(dt time.Duration) {
	d.mu.Lock()
	d.calls++
	d.latencies = append(d.latencies, dt)
	d.mu.Unlock()
}

func (d *demo) fail(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	d.mu.Lock()
	d.failures = append(d.failures, msg)
	d.mu.Unlock()
	fmt.Fprintln(d.out, "✗ "+msg)
}

func (d *demo) call(ctx context.Context, tool string, args any) (*snakepit.Result, error) {
	t := time.Now()
	r, err := d.app.Execute(ctx, tool, args)
	d.record(time.Since(t))
	return r, err
}

func (d *demo) steps(ctx context.Context, burst int) []int {
	// 1. plain calls
	if v, err := snakepit.Decode[string](d.call(ctx, "ping", nil)); err != nil || v != "pong" {
		d.fail("ping: %q %v", v, err)
	} else {
		fmt.Fprintln(d.out, "✓ ping → \"pong\"")
	}
	if v, err := snakepit.Decode[float64](d.call(ctx, "add", map[string]any{"a": 2, "b": 40})); err != nil || v != 42 {
		d.fail("add: %v %v", v, err)
	} else {
		fmt.Fprintln(d.out, "✓ add(a=2, b=40) → 42")
	}
	// 2. concurrent burst
	var wg sync.WaitGroup
	par := 16
	per := burst / par
	t0 := time.Now()
	var pidMu sync.Mutex
	pidSet := map[int]bool{}
	for g := 0; g < par; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; i < per; i++ {
				if i == 0 {
					info, err := snakepit.Decode[map[string]any](d.call(ctx, "worker_info", nil))
					if err == nil {
						pidMu.Lock()
						pidSet[int(info["pid"].(float64))] = true
						pidMu.Unlock()
					}
					continue
				}
				v, err := snakepit.Decode[float64](d.call(ctx, "add", map[string]any{"a": g, "b": i}))
				if err != nil || v != float64(g+i) {
					d.fail("burst add(%d,%d): %v %v", g, i, v, err)
					return
				}
			}
		}(g)
	}
	wg.Wait()
	el := time.Since(t0)
	fmt.Fprintf(d.out, "✓ burst: %d calls from %d goroutines in %s (%.0f calls/s)\n", per*par, par, el.Round(time.Millisecond), float64(per*par)/el.Seconds())
	// 3. streaming
	var got []string
	for c, err := range d.app.ExecuteStream(ctx, "stream_count", map[string]any{"n": 5, "delay_ms": 20}) {
		if err != nil {
			d.fail("stream_count: %v", err)
			break
		}
		got = append(got, string(c.JSON))
	}
	if len(got) == 5 {
		fmt.Fprintf(d.out, "✓ stream_count(n=5) → %v\n", got)
	} else if len(got) > 0 {
		d.fail("stream_count returned %d chunks, want 5", len(got))
	}
	// 4. a Python exception as a typed Go error
	_, err := d.call(ctx, "fail", map[string]any{"message": "demo failure"})
	var te *snakepit.ToolError
	if errors.As(err, &te) && te.Type == "ValueError" && te.Message == "demo failure" {
		fmt.Fprintf(d.out, "✓ fail() → *snakepit.ToolError{Type: %q, Message: %q} with a %d-line traceback\n", te.Type, te.Message, countLines(te.Traceback))
	} else {
		d.fail("fail: want a ValueError ToolError, got %v", err)
	}
	// 5. an unknown tool
	_, err = d.call(ctx, "no_such_tool", nil)
	if errors.Is(err, snakepit.ErrUnknownTool) {
		fmt.Fprintf(d.out, "✓ unknown tool → %v\n", truncate(err.Error(), 100))
	} else {
		d.fail("unknown tool: got %v", err)
	}
	pids := make([]int, 0, len(pidSet))
	for p := range pidSet {
		pids = append(pids, p)
	}
	slices.Sort(pids)
	return pids
}

func (d *demo) summary(pids []int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	lat := slices.Clone(d.latencies)
	slices.Sort(lat)
	pct := func(p float64) time.Duration {
		if len(lat) == 0 {
			return 0
		}
		return lat[int(p*float64(len(lat)-1))]
	}
	fmt.Fprintf(d.out, "\nsummary: %d calls, p50 %s, p99 %s, worker pids %v, %d failures\n",
		d.calls, pct(0.50).Round(time.Microsecond), pct(0.99).Round(time.Microsecond), pids, len(d.failures))
	if len(d.failures) == 0 {
		fmt.Fprintln(d.out, "demo OK")
	} else {
		fmt.Fprintln(d.out, "demo FAILED")
	}
}

func countLines(s string) int {
	n := 0
	for _, c := range s {
		if c == '\n' {
			n++
		}
	}
	return n
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
