package grpcworker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/snakepit-go/snakepit/bridge/pb"
	"github.com/snakepit-go/snakepit/internal/wire"
	"github.com/snakepit-go/snakepit/worker"
)

// crashWait is how long a failed RPC waits for the reaper to confirm that
// the process died, so the caller gets the exit status rather than a
// transport error.
const crashWait = 2 * time.Second

// callError maps an RPC failure to the caller's error: its own ctx error, a
// CrashError when the process died under the call, or a wrapped status.
func (w *Worker) callError(ctx context.Context, lt *lifetime, tool string, err error) error {
	select {
	case <-lt.p.Exited():
		return lt.crashError(w.spec.ID)
	default:
	}
	if ctx.Err() != nil {
		return w.afterDeadline(ctx.Err(), lt, tool)
	}
	switch status.Code(err) {
	case codes.Unavailable, codes.Canceled, codes.Internal, codes.Unknown:
		t := time.NewTimer(crashWait)
		defer t.Stop()
		select {
		case <-lt.p.Exited():
			return lt.crashError(w.spec.ID)
		case <-t.C:
		case <-ctx.Done():
			return ctx.Err()
		}
	case codes.DeadlineExceeded:
		return w.afterDeadline(context.DeadlineExceeded, lt, tool)
	case codes.ResourceExhausted:
		return fmt.Errorf("%w: call to %q on worker %s: %s; raise Config.MaxMessageBytes (now %d bytes) or pass large values in smaller pieces",
			worker.ErrMessageTooLarge, tool, w.spec.ID, status.Convert(err).Message(), w.f.opts.MaxMessageBytes)
	}
	return fmt.Errorf("snakepit: worker %s: call to %q failed: %w", w.spec.ID, tool, err)
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

// Execute implements worker.Worker.
func (w *Worker) Execute(ctx context.Context, call *worker.Call) (*worker.Result, error) {
	lt, err := w.lifetimeFor(call.Tool)
	if err != nil {
		return nil, err
	}
	defer lt.end()
	resp, err := lt.client.ExecuteTool(ctx, wire.Request(call))
	if err != nil {
		return nil, w.callError(ctx, lt, call.Tool, err)
	}
	if te := resp.GetError(); te != nil {
		return nil, w.toolError(lt, call.Tool, te)
	}
	return wire.Result(resp.GetResult()), nil
}

// ExecuteStream implements worker.Worker.
func (w *Worker) ExecuteStream(ctx context.Context, call *worker.Call, yield func(worker.Chunk) error) error {
	lt, err := w.lifetimeFor(call.Tool)
	if err != nil {
		return err
	}
	defer lt.end()
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := lt.client.ExecuteStreamingTool(sctx, wire.Request(call))
	if err != nil {
		return w.callError(ctx, lt, call.Tool, err)
	}
	for {
		msg, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return fmt.Errorf("snakepit: worker %s closed the stream of %q without its final marker", w.spec.ID, call.Tool)
		}
		if err != nil {
			return w.callError(ctx, lt, call.Tool, err)
		}
		if msg.GetIsFinal() {
			if te := msg.GetError(); te != nil {
				return w.toolError(lt, call.Tool, te)
			}
			return nil
		}
		c := worker.Chunk{Seq: msg.GetSeq()}
		c.JSON, c.Binary = wire.Value(msg.GetData())
		if err := yield(c); err != nil {
			return err
		}
	}
}

func (w *Worker) toolError(lt *lifetime, tool string, te *pb.ToolError) error {
	if te.GetType() == "UnknownTool" {
		names := make([]string, 0, len(lt.tools))
		for _, t := range lt.tools {
			names = append(names, t.Name)
		}
		return &worker.UnknownToolError{Tool: tool, Available: names}
	}
	return wire.ToolError(tool, w.spec.ID, te)
}
