// Package callpath is the call path the gRPC worker types share (package
// grpcworker: a local Python process; package remote: an agent): admission,
// the unary or streaming RPC, and the mapping of its failures to the errors
// the pool and callers test for. What differs per transport — the RPCs,
// what a report of a failed tool means, how the lifetime ends, how the
// worker proves it is alive — is the Conn a worker type gives for a call.
//
// Whether a worker is hung is not decided here, nor by the worker types:
// it is the pool's watchdog's decision (pool/dispatch.go). After a
// deadline, the call stays with the worker until the worker proves it is
// alive; one that cannot is still inside the call HungGrace later, so the
// watchdog kills it and turns the call's error into a
// *pool.WorkerTimeoutError.
package callpath

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

// Reply is a unary response: the result, or a report E of why the tool
// failed (the zero E when it did not).
type Reply[E comparable] interface {
	GetResult() *pb.Payload
	GetError() E
}

// Chunk is one message of a streaming response; the final one carries the
// report E, if any.
type Chunk[E comparable] interface {
	GetSeq() uint64
	GetData() *pb.Payload
	GetIsFinal() bool
	GetError() E
}

// Recv gives the next message of a stream.
type Recv[E comparable] func() (Chunk[E], error)

// Conn is one admitted call on one lifetime of a worker.
type Conn[E comparable] interface {
	Lifetime
	// Unary sends the call.
	Unary(ctx context.Context, call *worker.Call) (Reply[E], error)
	// Stream opens the streaming call; ctx ends when the stream is dropped.
	Stream(ctx context.Context, call *worker.Call) (Recv[E], error)
	// Report maps a non-zero report for tool to the caller's error.
	Report(ctx context.Context, tool string, e E) error
	// Release ends the admission; it is called once the call is over.
	Release()
}

// Lifetime is the error-mapping side of a Conn: the lifetime of the
// worker (a process, a connection) that the call runs on.
type Lifetime interface {
	// Name names the worker in messages: "worker w0", "agent host:port".
	Name() string
	// Over is closed once the lifetime is over (the process exited, the
	// connection was closed or left rotation).
	Over() <-chan struct{}
	// Crash is the error of a lifetime that is over.
	Crash() error
	// Refused reads err before the common rules (remote: a call that was
	// never sent, a stream limit, a rejected token); nil to go on.
	Refused(ctx context.Context, tool string, err error) error
	// Lost reads an RPC that failed at the connection level (Unavailable,
	// Canceled, Internal, Unknown) while ctx still runs: the lifetime's
	// error if it ended under the call, nil if it still serves (the
	// failure is then reported as it is).
	Lost(ctx context.Context, err error) error
	// Probe asks the worker whether it is alive, with no deadline of its
	// own (ctx ends when the lifetime does): nil once it answered.
	Probe(ctx context.Context) error
	// Alive follows a probe answered after a deadline.
	Alive()
	// MaxMessageBytes is the message limit, named in ErrMessageTooLarge.
	MaxMessageBytes() int
}

// Execute runs a unary call: admit gives the Conn of the current lifetime
// (or the error of a worker that takes no call now).
func Execute[E comparable](ctx context.Context, call *worker.Call, admit func(tool string) (Conn[E], error)) (*worker.Result, error) {
	c, err := admit(call.Tool)
	if err != nil {
		return nil, err
	}
	defer c.Release()
	resp, err := c.Unary(ctx, call)
	if err != nil {
		return nil, Failure(ctx, c, call.Tool, err)
	}
	var none E
	if e := resp.GetError(); e != none {
		return nil, c.Report(ctx, call.Tool, e)
	}
	return wire.Result(resp.GetResult()), nil
}

// ExecuteStream runs a streaming call, giving each chunk to yield.
func ExecuteStream[E comparable](ctx context.Context, call *worker.Call, yield func(worker.Chunk) error, admit func(tool string) (Conn[E], error)) error {
	c, err := admit(call.Tool)
	if err != nil {
		return err
	}
	defer c.Release()
	// Returning early (yield failed) must end the RPC, not leave it open.
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	recv, err := c.Stream(sctx, call)
	if err != nil {
		return Failure(ctx, c, call.Tool, err)
	}
	var none E
	for {
		msg, err := recv()
		if errors.Is(err, io.EOF) {
			return fmt.Errorf("snakepit: %s closed the stream of %q without its final marker", c.Name(), call.Tool)
		}
		if err != nil {
			return Failure(ctx, c, call.Tool, err)
		}
		if msg.GetIsFinal() {
			if e := msg.GetError(); e != none {
				return c.Report(ctx, call.Tool, e)
			}
			return nil
		}
		ch := worker.Chunk{Seq: msg.GetSeq()}
		ch.JSON, ch.Binary = wire.Value(msg.GetData())
		if err := yield(ch); err != nil {
			return err
		}
	}
}

// Failure maps an RPC failure to the caller's error: its own ctx error (the
// worker proved alive), the lifetime's error when it ended under the call,
// ErrMessageTooLarge, or the status wrapped.
func Failure(ctx context.Context, l Lifetime, tool string, err error) error {
	if e := l.Refused(ctx, tool, err); e != nil {
		return e
	}
	select {
	case <-l.Over():
		return l.Crash()
	default:
	}
	code := status.Code(err)
	if ctx.Err() != nil || code == codes.DeadlineExceeded {
		return afterDeadline(ctx, l)
	}
	switch code {
	case codes.Unavailable, codes.Canceled, codes.Internal, codes.Unknown:
		if e := l.Lost(ctx, err); e != nil {
			return e
		}
	case codes.ResourceExhausted:
		return fmt.Errorf("%w: call to %q on %s: %s; raise MaxMessageBytes (now %d bytes; on the host and on any agent) or pass large values in smaller pieces",
			worker.ErrMessageTooLarge, tool, l.Name(), status.Convert(err).Message(), l.MaxMessageBytes())
	}
	return fmt.Errorf("snakepit: %s: call to %q failed: %w", l.Name(), tool, err)
}

// probeRetry spaces probes that failed while the lifetime still serves (a
// passing connection error): not an answer, so asked again.
const probeRetry = 100 * time.Millisecond

// afterDeadline: the call ran out of time, and gRPC gave up on the client
// side whatever the worker is doing. The worker must prove it is alive by
// answering a probe; then the caller gets its own ctx error. Until then the
// call stays with the worker, so one that cannot answer (a wedged
// interpreter, a stopped process, an agent that is gone without a word) is
// still inside the call when the pool's watchdog looks, HungGrace after the
// ctx ended: the watchdog kills it, the lifetime ends, and the crash
// returned here becomes the caller's *pool.WorkerTimeoutError. Without a
// pool, the worker type's health checks end such a lifetime.
func afterDeadline(ctx context.Context, l Lifetime) error {
	ctxErr := ctx.Err()
	if ctxErr == nil {
		ctxErr = context.DeadlineExceeded
	}
	pctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-l.Over():
			cancel()
		case <-pctx.Done():
		}
	}()
	for {
		if l.Probe(pctx) == nil {
			l.Alive()
			return ctxErr
		}
		t := time.NewTimer(probeRetry)
		select {
		case <-l.Over():
			t.Stop()
			return l.Crash()
		case <-t.C:
		}
	}
}
