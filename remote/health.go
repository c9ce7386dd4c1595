package remote

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/snakepit-go/snakepit/agent/agentpb"
	"github.com/snakepit-go/snakepit/internal/wire"
	"github.com/snakepit-go/snakepit/worker"
)

// run serves the lifetime until ctx ends (nil) or the lifetime ends (a
// *worker.CrashError).
func (w *Worker) run(ctx context.Context, lt *lifetime) error {
	o := &w.f.opts
	var tick <-chan time.Time
	if o.HealthInterval > 0 {
		t := time.NewTicker(o.HealthInterval)
		defer t.Stop()
		tick = t.C
	}
	misses := 0
	for {
		select {
		case <-ctx.Done():
			lt.end("stopped")
			return nil
		case <-lt.ended:
			return w.crash(lt)
		case <-tick:
			cctx, cancel := context.WithTimeout(ctx, o.HealthTimeout)
			err := w.check(cctx, lt)
			cancel()
			switch {
			case ctx.Err() != nil:
			case err != nil:
				misses++
				w.log.Warn("agent health check failed", "misses", misses, "of", o.HealthMisses, "err", err)
				if misses < o.HealthMisses {
					break
				}
				reason := fmt.Sprintf("%d health checks failed in a row, last: %v", misses, err)
				if errors.Is(err, errNotServing) {
					// Alive but without a ready worker: drain (its queued calls
					// are its own to finish) and come back once it serves.
					lt.leave(reason)
				} else {
					lt.end(reason)
				}
			default:
				misses = 0
				w.refreshTools(ctx, lt)
			}
		}
	}
}

// errNotServing: the agent answered its health check, NOT_SERVING (no
// ready worker, or stopping). It is alive: not hung.
var errNotServing = errors.New("agent health is NOT_SERVING")

// check is one health check, bounded by ctx: nil when SERVING,
// errNotServing when the agent answered otherwise, the call's error when it
// did not answer.
func (w *Worker) check(ctx context.Context, lt *lifetime) error {
	resp, err := lt.health.Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		return err
	}
	if st := resp.GetStatus(); st != healthpb.HealthCheckResponse_SERVING {
		return fmt.Errorf("%w (%s)", errNotServing, st)
	}
	return nil
}

// refreshTools asks the agent for its tools again and reports them when
// they changed (the agent reloaded its code): the pool's per-tool limits
// and its tool list follow without a reconnect. A failed Describe changes
// nothing; the health checks judge the connection.
func (w *Worker) refreshTools(ctx context.Context, lt *lifetime) {
	cctx, cancel := context.WithTimeout(ctx, w.f.opts.HealthTimeout)
	defer cancel()
	d, err := lt.agent.Describe(cctx, &agentpb.DescribeRequest{})
	if err != nil || lt.over() {
		return
	}
	tools, capac := wire.ToolSpecsFromPB(d.GetTools()), int(d.GetCapacity())
	if capac == lt.capac && slices.EqualFunc(tools, lt.tools, sameTool) {
		return
	}
	lt.tools, lt.capac = tools, capac
	w.log.Info("agent's tools changed; reporting them to the pool", "tools", len(tools), "capacity", capac)
	// A second Ready of the same lifetime replaces its tools and capacity;
	// sessions and calls in flight are untouched.
	w.spec.Events.Ready(w.spec.ID, worker.Info{Tools: tools, Capacity: capac})
}

func sameTool(a, b worker.ToolSpec) bool {
	return a.Name == b.Name && a.Description == b.Description && a.SupportsStreaming == b.SupportsStreaming &&
		a.MaxConcurrency == b.MaxConcurrency && a.Timeout == b.Timeout &&
		slices.EqualFunc(a.Parameters, b.Parameters, func(x, y worker.ParamSpec) bool {
			return x.Name == y.Name && x.Type == y.Type && x.Required == y.Required &&
				string(x.Default) == string(y.Default) && x.Description == y.Description
		})
}
