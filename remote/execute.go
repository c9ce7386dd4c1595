package remote

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/snakepit-go/snakepit/agent/agentpb"
	"github.com/snakepit-go/snakepit/bridge/pb"
	"github.com/snakepit-go/snakepit/internal/auth"
	"github.com/snakepit-go/snakepit/internal/callpath"
	"github.com/snakepit-go/snakepit/internal/wire"
	"github.com/snakepit-go/snakepit/pool"
	"github.com/snakepit-go/snakepit/worker"
)

func (w *Worker) lifetimeFor(tool string) (*lifetime, error) {
	lt := w.current()
	if lt == nil || !lt.enter() {
		return nil, fmt.Errorf("%w: remote worker %s is not connected (connecting, reconnecting or stopped); tool %q", worker.ErrWorkerUnavailable, w.endpoint, tool)
	}
	return lt, nil
}

// Execute implements worker.Worker.
func (w *Worker) Execute(ctx context.Context, call *worker.Call) (*worker.Result, error) {
	return callpath.Execute(ctx, call, w.admit)
}

// ExecuteStream implements worker.Worker.
func (w *Worker) ExecuteStream(ctx context.Context, call *worker.Call, yield func(worker.Chunk) error) error {
	return callpath.ExecuteStream(ctx, call, yield, w.admit)
}

// admit gives the call path a conn on the current lifetime.
func (w *Worker) admit(tool string) (callpath.Conn[*agentpb.AgentError], error) {
	lt, err := w.lifetimeFor(tool)
	if err != nil {
		return nil, err
	}
	return &conn{w: w, lt: lt}, nil
}

// conn is one call admitted to lt: the agent's side of the call path.
type conn struct {
	w     *Worker
	lt    *lifetime
	track *sendTrack // set when the RPC starts
}

func (c *conn) Unary(ctx context.Context, call *worker.Call) (callpath.Reply[*agentpb.AgentError], error) {
	tctx, track := tracked(ctx)
	c.track = track
	return c.lt.agent.Execute(tctx, c.w.request(ctx, call))
}

func (c *conn) Stream(ctx context.Context, call *worker.Call) (callpath.Recv[*agentpb.AgentError], error) {
	tctx, track := tracked(ctx)
	c.track = track
	s, err := c.lt.agent.ExecuteStream(tctx, c.w.request(ctx, call))
	if err != nil {
		return nil, err
	}
	return func() (callpath.Chunk[*agentpb.AgentError], error) { return s.Recv() }, nil
}

func (c *conn) Report(ctx context.Context, tool string, e *agentpb.AgentError) error {
	return c.w.agentError(ctx, c.lt, tool, e)
}

func (c *conn) Release() { c.lt.exit() }

func (c *conn) Name() string { return "agent " + c.w.endpoint }

func (c *conn) Over() <-chan struct{} { return c.lt.ended }

func (c *conn) Crash() error { return c.w.crash(c.lt) }

// Refused reads the failures that are the agent's connection's own: the
// connection is what failed, and a request that never left this host is
// one the pool retries elsewhere for any call.
func (c *conn) Refused(ctx context.Context, tool string, err error) error {
	code, msg := status.Code(err), status.Convert(err).Message()
	switch {
	case ctx.Err() == nil && c.track.notSent() && (code == codes.Unavailable || code == codes.Canceled):
		// No connection to send on (the agent's GOAWAY, a refused dial, our
		// own close), or the agent refused the stream unprocessed: nothing
		// ran. The connection is not usable, so leave rotation too.
		c.lt.leave("the agent is gone or draining: " + msg)
		return fmt.Errorf("%w: agent %s: the call to %q was never sent (%s); nothing ran",
			worker.ErrWorkerUnavailable, c.w.endpoint, tool, msg)
	case code == codes.ResourceExhausted && auth.IsStreamLimit(err):
		// Refused from its headers: nothing ran on the agent.
		return fmt.Errorf("%w: agent %s: %s", pool.ErrPoolSaturated, c.w.endpoint, msg)
	case code == codes.Unauthenticated:
		return fmt.Errorf("snakepit: agent %s rejected the token for %q; give the host and the agent the same token", c.w.endpoint, tool)
	}
	return nil
}

// Lost: a connection that drops under a call that was sent is a crash of
// this worker (the call may have run).
func (c *conn) Lost(_ context.Context, err error) error {
	c.lt.leave("connection lost under a call: " + status.Convert(err).Message())
	return c.Crash()
}

// Probe is a health check: an agent that answers, SERVING or not, is
// alive. NOT_SERVING (say, its only worker is restarting) is the health
// loop's to act on, by draining.
func (c *conn) Probe(ctx context.Context) error {
	if err := c.w.check(ctx, c.lt); err != nil && !errors.Is(err, errNotServing) {
		return err
	}
	return nil
}

func (c *conn) Alive() {}

func (c *conn) MaxMessageBytes() int { return c.w.f.opts.MaxMessageBytes }

// request is the wire form of call with the caller's pool options, which
// the agent's pool applies (docs/SCALING.md, "What crosses an agent"),
// and the name of that pool.
func (w *Worker) request(ctx context.Context, call *worker.Call) *pb.ExecuteToolRequest {
	req := wire.Request(call)
	req.Options = wire.OptionsToPB(wire.CallOptionsFrom(ctx))
	if w.agentPool != "" {
		if req.Options == nil {
			req.Options = &pb.CallOptions{}
		}
		req.Options.Pool = w.agentPool
	}
	return req
}

// agentError maps what the agent reported for the call to the errors the
// pool and callers test for.
func (w *Worker) agentError(ctx context.Context, lt *lifetime, tool string, e *agentpb.AgentError) error {
	msg := e.GetMessage()
	switch e.GetKind() {
	case agentpb.AgentError_TOOL_FAILED:
		return wire.ToolError(tool, w.spec.ID, e.GetToolError())
	case agentpb.AgentError_UNKNOWN_TOOL:
		return &worker.UnknownToolError{Tool: tool, Available: e.GetAvailable()}
	case agentpb.AgentError_WORKER_CRASHED:
		return &worker.CrashError{WorkerID: e.GetWorkerId(), PID: int(e.GetPid()), ExitCode: int(e.GetExitCode()), Signal: worker.SignalNamed(e.GetSignal()), Agent: w.endpoint}
	case agentpb.AgentError_WORKER_TIMEOUT:
		// The agent's pool decided it; the caller gets the same shape as
		// from a hung local worker.
		cerr := ctx.Err()
		if cerr == nil {
			cerr = context.DeadlineExceeded
		}
		return &pool.WorkerTimeoutError{WorkerID: e.GetWorkerId(), Tool: tool, Agent: w.endpoint, Err: cerr, WorkerErr: errors.New(msg)}
	case agentpb.AgentError_UNAVAILABLE:
		// The agent is stopping or has no ready worker: nothing ran. Leave
		// rotation and reconnect once it is healthy again.
		lt.leave("the agent is not serving: " + msg)
		return fmt.Errorf("%w: agent %s: %s", worker.ErrWorkerUnavailable, w.endpoint, msg)
	case agentpb.AgentError_QUEUE_TIMEOUT:
		return fmt.Errorf("%w: on agent %s: %s", pool.ErrQueueTimeout, w.endpoint, msg)
	case agentpb.AgentError_SATURATED:
		return fmt.Errorf("%w: on agent %s: %s", pool.ErrPoolSaturated, w.endpoint, msg)
	case agentpb.AgentError_INVALID_ARGS:
		if te := e.GetToolError(); te != nil { // a Python worker behind the agent refused them
			return wire.ToolError(tool, w.spec.ID, te)
		}
		return &worker.ArgsError{Tool: tool, Reason: "agent " + w.endpoint + ": " + msg}
	case agentpb.AgentError_MESSAGE_TOO_LARGE:
		return fmt.Errorf("%w: on agent %s: %s", worker.ErrMessageTooLarge, w.endpoint, msg)
	case agentpb.AgentError_SESSION_BUSY:
		return fmt.Errorf("%w: on agent %s: %s", pool.ErrSessionWorkerBusy, w.endpoint, msg)
	case agentpb.AgentError_SESSION_UNAVAILABLE:
		return fmt.Errorf("%w: on agent %s: %s", pool.ErrSessionWorkerUnavailable, w.endpoint, msg)
	case agentpb.AgentError_UNKNOWN_POOL:
		return w.unknownPool("it serves "+strings.Join(e.GetAvailable(), ", "), true)
	case agentpb.AgentError_INVALID_CALL:
		return &pool.InvalidCallError{Tool: tool, Reason: "agent " + w.endpoint + ": " + msg}
	case agentpb.AgentError_DEADLINE_EXCEEDED:
		if err := ctx.Err(); err != nil {
			return err
		}
		// The tool's declared timeout, applied on the agent.
		return fmt.Errorf("snakepit: on agent %s, the call to %q ran out of time: %s: %w", w.endpoint, tool, msg, context.DeadlineExceeded)
	case agentpb.AgentError_CANCELLED:
		if err := ctx.Err(); err != nil {
			return err
		}
		return fmt.Errorf("snakepit: agent %s cancelled the call to %q: %s: %w", w.endpoint, tool, msg, context.Canceled)
	}
	return fmt.Errorf("snakepit: agent %s: call to %q failed: %s", w.endpoint, tool, msg)
}

// unknownPool: the agent has no pool by this worker's name; what it
// serves is in served. A call that meets it (the agent was restarted with
// other pools) says what to do; a start that does carries that in its
// StartupError's hint.
func (w *Worker) unknownPool(served string, advise bool) error {
	err := fmt.Errorf("%w: agent %s has no pool %q (%s)", pool.ErrUnknownPool, w.endpoint, w.agentPool, served)
	if advise {
		err = fmt.Errorf("%w; %s", err, w.unknownPoolHint())
	}
	return err
}

func (w *Worker) unknownPoolHint() string {
	return fmt.Sprintf("serve pool %q on the agent (snakepit serve --pools FILE or --pool %s,...), or point this pool at agents that serve it", w.agentPool, w.agentPool)
}
