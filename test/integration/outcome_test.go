package integration

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/snakepit-go/snakepit"
)

// TestPythonCallOutcomesAreCounted: calls a real Python worker ends in
// different ways each count once, under the outcome OutcomeOf gives their
// error, in Stats and in snakepit_requests_total{outcome}.
func TestPythonCallOutcomesAreCounted(t *testing.T) {
	reg := prometheus.NewRegistry()
	app := newApp(t, snakepit.Config{Workers: 1, MaxMessageBytes: 64 << 10, Metrics: reg})
	metric := func(o snakepit.Outcome) float64 {
		t.Helper()
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			if mf.GetName() != "snakepit_requests_total" {
				continue
			}
			for _, m := range mf.GetMetric() {
				for _, lp := range m.GetLabel() {
					if lp.GetName() == "outcome" && lp.GetValue() == string(o) {
						return m.GetCounter().GetValue()
					}
				}
			}
		}
		t.Fatalf("no snakepit_requests_total{outcome=%q}", o)
		return 0
	}
	deadline := func(d time.Duration) context.Context {
		ctx, cancel := context.WithTimeout(context.Background(), d)
		t.Cleanup(cancel)
		return ctx
	}
	for _, c := range []struct {
		name string
		want snakepit.Outcome // "": whatever OutcomeOf says, checked for consistency
		ctx  context.Context
		tool string
		args any
	}{
		{"result", snakepit.OutcomeSuccess, ctxT(t), "echo", map[string]any{"x": 1}},
		{"args a JSON array", snakepit.OutcomeInvalidArgs, ctxT(t), "echo", []int{1, 2}},
		{"args the tool does not take", snakepit.OutcomeInvalidArgs, ctxT(t), "bounded_sleep", map[string]any{"nope": 1}},
		// The tool declares @tool(timeout=0.5) and the caller set no deadline.
		{"the tool's declared timeout", snakepit.OutcomeToolTimeout, context.Background(), "bounded_sleep", map[string]any{"ms": 20000}},
		{"the caller's deadline", snakepit.OutcomeDeadline, deadline(300 * time.Millisecond), "hang", nil},
		{"message too large", snakepit.OutcomeMessageTooLarge, ctxT(t), "echo", map[string]any{"s": strings.Repeat("x", 128<<10)}},
		{"the tool raised", snakepit.OutcomeToolError, ctxT(t), "fail", nil},
	} {
		// The pool counts a call before Execute returns: no waiting.
		before, requests := app.Stats().Pool.Outcomes, app.Stats().Pool.Requests
		_, err := app.Execute(c.ctx, c.tool, c.args)
		got := snakepit.OutcomeOf(err)
		if c.want != "" && got != c.want {
			t.Errorf("%s: %v is %s, want %s", c.name, err, got, c.want)
			continue
		}
		if c.want == "" && got != snakepit.OutcomeToolError && got != snakepit.OutcomeInvalidArgs {
			t.Errorf("%s: %v is %s", c.name, err, got)
		}
		s := app.Stats().Pool
		if s.Requests != requests+1 || s.Outcomes[got] != before[got]+1 {
			t.Errorf("%s: requests %d -> %d, %s %d -> %d; want each up by 1", c.name, requests, s.Requests, got, before[got], s.Outcomes[got])
		}
		if m := metric(got); m != float64(s.Outcomes[got]) {
			t.Errorf("%s: snakepit_requests_total{outcome=%q} = %v, Stats %d", c.name, got, m, s.Outcomes[got])
		}
	}
}
