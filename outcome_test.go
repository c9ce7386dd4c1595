package snakepit

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/snakepit-go/snakepit/internal/testutil"
	"github.com/snakepit-go/snakepit/pool"
	"github.com/snakepit-go/snakepit/worker"
	"github.com/snakepit-go/snakepit/worker/fake"
)

// requestsByOutcome reads snakepit_requests_total from reg, by outcome.
func requestsByOutcome(t *testing.T, reg *prometheus.Registry) map[Outcome]float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[Outcome]float64{}
	for _, mf := range mfs {
		if mf.GetName() != "snakepit_requests_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if lp.GetName() == "outcome" {
					out[Outcome(lp.GetValue())] = m.GetCounter().GetValue()
				}
			}
		}
	}
	return out
}

// TestEveryOutcomeCountsOnce makes one call per outcome and checks that the
// error maps to it (OutcomeOf), that Stats counts it there and only there,
// and that snakepit_requests_total{outcome} follows.
func TestEveryOutcomeCountsOnce(t *testing.T) {
	release := make(chan struct{})
	wait := func(ctx context.Context, _ *worker.Call) (*worker.Result, error) {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	f := &fake.Factory{Options: []fake.Option{
		fake.WithTool("echo", fake.Echo),
		fake.WithTool("boom", func(context.Context, *worker.Call) (*worker.Result, error) {
			return nil, &worker.ToolError{Tool: "boom", Type: "ValueError", Message: "boom"}
		}),
		fake.WithTool("wait", wait),
		fake.WithToolSpec(worker.ToolSpec{Name: "slow", Timeout: 20 * time.Millisecond}, wait),
		fake.WithTool("big", func(context.Context, *worker.Call) (*worker.Result, error) {
			return nil, fmt.Errorf("%w: the result is over the limit", worker.ErrMessageTooLarge)
		}),
		// A process behind an agent died: the worker itself serves on.
		fake.WithTool("behind", func(context.Context, *worker.Call) (*worker.Result, error) {
			return nil, &worker.CrashError{WorkerID: "a1", ExitCode: 1, Agent: "agent:1"}
		}),
		fake.WithTool("odd", func(context.Context, *worker.Call) (*worker.Result, error) {
			return nil, errors.New("something no outcome names")
		}),
		fake.WithTool("hold", func(ctx context.Context, _ *worker.Call) (*worker.Result, error) {
			select {
			case <-release:
				return &worker.Result{JSON: []byte("{}")}, nil
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}),
	}}
	reg := prometheus.NewRegistry()
	app, err := New(Config{
		Workers: 1, Capacity: 1, MaxQueue: 1, WorkerFactory: f,
		RegistryPath: filepath.Join(t.TempDir(), "r.db"), Metrics: reg, Logger: testutil.Logger(),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	// Before Start: refused by the App, counted all the same.
	if _, err := app.Execute(ctx, "echo", nil); !errors.Is(err, ErrNotStarted) || OutcomeOf(err) != OutcomeNotReady {
		t.Fatalf("before Start: %v", err)
	}
	if s := app.Stats().Pool; s.Requests != 1 || s.Outcomes[OutcomeNotReady] != 1 {
		t.Fatalf("a call before Start is not counted: %d %v", s.Requests, s.Outcomes)
	}
	if err := app.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		sctx, scancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer scancel()
		if _, err := app.Stop(sctx); err != nil {
			t.Errorf("Stop: %v", err)
		}
	})

	// holding runs fn while the only slot is taken by a "hold" call.
	holding := func(fn func() error) error {
		held := make(chan error, 1)
		go func() {
			_, err := app.Execute(ctx, "hold", nil, WithSession("pinned"))
			held <- err
		}()
		testutil.Eventually(t, 5*time.Second, "the hold call running", func() bool { return app.Stats().Pool.InFlight == 1 })
		err := fn()
		release <- struct{}{}
		if herr := <-held; herr != nil {
			t.Errorf("hold: %v", herr)
		}
		return err
	}
	exec := func(ctx context.Context, tool string, args any, opts ...CallOption) error {
		_, err := app.Execute(ctx, tool, args, opts...)
		return err
	}
	expiring := func(d time.Duration) context.Context {
		c, cancel := context.WithTimeout(ctx, d)
		t.Cleanup(cancel)
		return c
	}

	cases := []struct {
		name string
		want Outcome
		// also: what the side calls of the case add (the hold call).
		also map[Outcome]float64
		call func() error
	}{
		{"result", OutcomeSuccess, nil, func() error { return exec(ctx, "echo", map[string]any{"x": 1}) }},
		{"the tool raised", OutcomeToolError, nil, func() error { return exec(ctx, "boom", nil) }},
		{"args a JSON array, refused by the App", OutcomeInvalidArgs, nil, func() error { return exec(ctx, "echo", []int{1, 2}) }},
		{"args not JSON, refused by the App", OutcomeInvalidArgs, nil, func() error { return exec(ctx, "echo", json.RawMessage("{")) }},
		{"unknown tool", OutcomeInvalidArgs, nil, func() error { return exec(ctx, "nope", nil) }},
		{"bad call option", OutcomeInvalidArgs, nil, func() error { return exec(ctx, "echo", nil, WithQueueTimeout(-time.Second)) }},
		// A caller's deadline overrides the tool's: this call has none.
		{"the tool's declared timeout", OutcomeToolTimeout, nil, func() error { return exec(context.Background(), "slow", nil) }},
		{"the caller's deadline", OutcomeDeadline, nil, func() error { return exec(expiring(20*time.Millisecond), "wait", nil) }},
		{"the caller cancelled", OutcomeCancelled, nil, func() error {
			c, cancel := context.WithCancel(ctx)
			defer time.AfterFunc(20*time.Millisecond, cancel).Stop()
			return exec(c, "wait", nil)
		}},
		{"the worker died under the call", OutcomeCrashed, nil, func() error { return exec(ctx, "behind", nil) }},
		{"message too large", OutcomeMessageTooLarge, nil, func() error { return exec(ctx, "big", nil) }},
		{"an untyped error", OutcomeOther, nil, func() error { return exec(ctx, "odd", nil) }},
		{"no slot in time", OutcomeQueueTimeout, map[Outcome]float64{OutcomeSuccess: 1}, func() error {
			return holding(func() error { return exec(ctx, "echo", nil, WithQueueTimeout(10*time.Millisecond)) })
		}},
		{"the session's worker busy", OutcomeAffinity, map[Outcome]float64{OutcomeSuccess: 1}, func() error {
			return holding(func() error {
				return exec(ctx, "echo", nil, WithSession("pinned"), WithAffinity(AffinityStrictFailFast))
			})
		}},
		{"the queue full", OutcomeSaturated, map[Outcome]float64{OutcomeSuccess: 2}, func() error {
			// The queued call gets the slot once the hold call returns.
			queued := make(chan error, 1)
			err := holding(func() error {
				go func() { queued <- exec(ctx, "echo", nil) }()
				testutil.Eventually(t, 5*time.Second, "a call queued", func() bool { return app.Stats().Pool.Queued == 1 })
				return exec(ctx, "echo", nil)
			})
			if qerr := <-queued; qerr != nil {
				t.Errorf("queued call: %v", qerr)
			}
			return err
		}},
	}
	for _, tc := range cases {
		before, requests := requestsByOutcome(t, reg), app.Stats().Pool.Requests
		err := tc.call()
		if got := OutcomeOf(err); got != tc.want {
			t.Errorf("%s: %v is %s, want %s", tc.name, err, got, tc.want)
			continue
		}
		testutil.Eventually(t, 5*time.Second, "the pool idle", func() bool {
			s := app.Stats().Pool
			return s.InFlight == 0 && s.Queued == 0
		})
		want := map[Outcome]float64{tc.want: 1}
		added := 1.0
		for o, n := range tc.also {
			want[o] += n
			added += n
		}
		after := requestsByOutcome(t, reg)
		if len(after) != len(pool.Outcomes()) {
			t.Fatalf("%d outcome series, want %d: %v", len(after), len(pool.Outcomes()), after)
		}
		for _, o := range pool.Outcomes() {
			if d := after[o] - before[o]; d != want[o] {
				t.Errorf("%s: requests_total{outcome=%q} went up by %v, want %v", tc.name, o, d, want[o])
			}
		}
		s := app.Stats().Pool
		if float64(s.Requests-requests) != added {
			t.Errorf("%s: Requests went up by %d, want %v", tc.name, s.Requests-requests, added)
		}
		if float64(s.Outcomes[tc.want]) != after[tc.want] {
			t.Errorf("%s: Stats %d and the metric %v disagree", tc.name, s.Outcomes[tc.want], after[tc.want])
		}
	}
}
