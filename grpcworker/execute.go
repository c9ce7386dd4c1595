package grpcworker

import (
	"context"
	"fmt"
	"time"

	"github.com/snakepit-go/snakepit/bridge/pb"
	"github.com/snakepit-go/snakepit/internal/callpath"
	"github.com/snakepit-go/snakepit/internal/wire"
	"github.com/snakepit-go/snakepit/worker"
)

// crashWait is how long a failed RPC waits for the reaper to confirm that
// the process died, so the caller gets the exit status rather than a
// transport error.
const crashWait = 2 * time.Second

// Execute implements worker.Worker.
func (w *Worker) Execute(ctx context.Context, call *worker.Call) (*worker.Result, error) {
	return callpath.Execute(ctx, call, w.admit)
}

// ExecuteStream implements worker.Worker.
func (w *Worker) ExecuteStream(ctx context.Context, call *worker.Call, yield func(worker.Chunk) error) error {
	return callpath.ExecuteStream(ctx, call, yield, w.admit)
}

// admit gives the call path a conn on the current lifetime.
func (w *Worker) admit(tool string) (callpath.Conn[*pb.ToolError], error) {
	lt, err := w.lifetimeFor(tool)
	if err != nil {
		return nil, err
	}
	return lt.call, nil
}

// newLifetime completes lt, a lifetime of w.
func (w *Worker) newLifetime(lt *lifetime) *lifetime {
	lt.call = &conn{w: w, lt: lt}
	return lt
}

// lifetimeFor admits a call to the current lifetime; the caller must call
// lt.end when the call is over.
func (w *Worker) lifetimeFor(tool string) (*lifetime, error) {
	lt := w.current()
	if lt != nil && !lt.begin() {
		// It started draining between our read and begin: a successor may
		// have just taken over.
		if next := w.current(); next != lt && next != nil && next.begin() {
			return next, nil
		}
		lt = nil
	}
	if lt == nil {
		return nil, fmt.Errorf("%w: worker %s is not ready (starting, restarting or stopped); tool %q", worker.ErrWorkerUnavailable, w.spec.ID, tool)
	}
	return lt, nil
}

// conn is the process's side of the call path for the calls admitted to
// lt. It holds nothing per call, so each lifetime has one (lifetime.call):
// no allocation per call.
type conn struct {
	w  *Worker
	lt *lifetime
}

func (c *conn) Unary(ctx context.Context, call *worker.Call) (callpath.Reply[*pb.ToolError], error) {
	return c.lt.client.ExecuteTool(ctx, wire.Request(call))
}

func (c *conn) Stream(ctx context.Context, call *worker.Call) (callpath.Recv[*pb.ToolError], error) {
	s, err := c.lt.client.ExecuteStreamingTool(ctx, wire.Request(call))
	if err != nil {
		return nil, err
	}
	return func() (callpath.Chunk[*pb.ToolError], error) { return s.Recv() }, nil
}

func (c *conn) Report(_ context.Context, tool string, te *pb.ToolError) error {
	if te.GetType() == "UnknownTool" {
		names := make([]string, 0, len(c.lt.tools))
		for _, t := range c.lt.tools {
			names = append(names, t.Name)
		}
		return &worker.UnknownToolError{Tool: tool, Available: names}
	}
	return wire.ToolError(tool, c.w.spec.ID, te)
}

func (c *conn) Release() { c.lt.end() }

func (c *conn) Name() string { return "worker " + c.w.spec.ID }

func (c *conn) Over() <-chan struct{} { return c.lt.p.Exited() }

func (c *conn) Crash() error { return c.lt.crashError(c.w.spec.ID) }

func (c *conn) Refused(context.Context, string, error) error { return nil }

// Lost: a dropped connection most likely means the process died; wait a
// little for the reaper so the caller gets the exit status.
func (c *conn) Lost(ctx context.Context, _ error) error {
	t := time.NewTimer(crashWait)
	defer t.Stop()
	select {
	case <-c.lt.p.Exited():
		return c.Crash()
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (c *conn) Probe(ctx context.Context) error {
	_, err := c.lt.client.Ping(ctx, &pb.PingRequest{Message: "after-deadline"})
	return err
}

// Alive: the process answers, but Python cannot stop a thread; see whether
// the cancelled call is still running once it has had HungGrace to end.
func (c *conn) Alive() { c.w.checkAbandonedLater(c.lt) }

func (c *conn) MaxMessageBytes() int { return c.w.f.opts.MaxMessageBytes }

var _ worker.BatchExecutor = (*Worker)(nil)

// ExecuteBatch implements worker.BatchExecutor: the calls travel in one
// ExecuteTool request (its batch field) and take one of the process's
// slots. A failure of the request fails it whole, mapped as for Execute.
func (w *Worker) ExecuteBatch(ctx context.Context, tool string, calls []*worker.Call) ([]worker.BatchResult, error) {
	if len(calls) == 0 {
		// An empty batch on the wire reads as one call with no arguments.
		return []worker.BatchResult{}, nil
	}
	lt, err := w.lifetimeFor(tool)
	if err != nil {
		return nil, err
	}
	c := lt.call
	defer c.Release()
	resp, err := lt.client.ExecuteTool(ctx, wire.BatchRequest(tool, calls))
	if err != nil {
		return nil, callpath.Failure(ctx, c, tool, err)
	}
	out := make([]worker.BatchResult, len(calls))
	if te := resp.GetError(); te != nil {
		// Refused whole (an unknown or non-batch tool): every call's error.
		e := c.Report(ctx, tool, te)
		for i := range out {
			out[i].Err = e
		}
		return out, nil
	}
	items := resp.GetBatch()
	if len(items) != len(calls) {
		return nil, fmt.Errorf("snakepit: worker %s answered a batch of %d calls of %q with %d results; is its snakepit_bridge older than the host?",
			w.spec.ID, len(calls), tool, len(items))
	}
	for i, it := range items {
		if te := it.GetError(); te != nil {
			out[i].Err = c.Report(ctx, tool, te)
			continue
		}
		out[i].Result = wire.Result(it.GetResult())
	}
	return out, nil
}
