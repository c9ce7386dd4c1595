// Package worker is the contract between the pool and a worker
// implementation. The pool depends only on what is declared here, so a user
// can plug in a worker type of their own (another interpreter, a remote
// endpoint, an in-process fake) through the same interface the Python gRPC
// worker implements.
//
// Contract, in short:
//   - A Worker is a suture.Service. One call of Serve is one lifetime of the
//     underlying process (or connection). Serve returns only after everything
//     it started is gone (for a process: reaped). Its Starter calls Serve
//     again to restart it.
//   - During Serve the worker reports its lifecycle to the Events it was
//     built with: Starting, then Ready once it can take calls, then Exited
//     exactly once when the lifetime ends (before Serve returns). A worker
//     that recycles its process without a gap (make-before-break: the new
//     process is ready before the old one stops taking calls) reports
//     Recycled instead of Exited+Starting+Ready, and stays in the same Serve.
//   - Recycles are bounded pool-wide by Spec.RecycleGate: hold a
//     slot of it from the start of the new process until it took over.
//   - Execute and ExecuteStream may be called only between Ready and Exited;
//     outside that window they return ErrWorkerUnavailable. They must be safe
//     for concurrent use up to the worker's capacity.
//   - A call that fails because the lifetime ended under it returns an error
//     matching ErrWorkerCrashed (usually a *CrashError).
//   - ErrWorkerUnavailable means nothing was sent: the pool retries such a
//     call on another worker even when it is not idempotent.
//   - After Kill, pending Execute/ExecuteStream calls must return promptly;
//     the pool's hung-call watchdog relies on it.
//   - ExecuteStream calls yield from one goroutine at a time and never after
//     it returned: the pool reuses what the callback touches for other calls.
//
// A worker type that runs processes must start every one of them with
// Spec.Launcher (package childproc), never with exec.Cmd.Start directly: the
// launcher records the process in the registry before the fork, gives it
// its own process group, the parent-death signal from a thread that never
// exits and the run id in its environment, drains its stderr to the log,
// and reaps it with its group. The worker type must still stop its
// processes (Process.Stop) when its lifetime ends and return from Serve only
// after Process.Exited is closed; what it does not start through the
// launcher, snakepit cannot promise to stop. examples/linesworker is a
// complete one; package snakepittest checks one against the guarantees.
//
// A worker type that starts no process (package remote: a connection to an
// agent on another host) ignores the Launcher and has no registry record;
// it may advertise its capacity in Info.Capacity when it becomes ready, and
// reports a crash of a process behind it, which fails the call but not the
// worker, as a *CrashError with Agent set.
package worker

import (
	"context"
	"encoding/json"
	"log/slog"
	"time"

	"github.com/thejerf/suture/v4"

	"github.com/snakepit-go/snakepit/childproc"
)

// Worker is one supervised execution endpoint.
type Worker interface {
	suture.Service
	// ID is the stable worker id; it survives restarts.
	ID() string
	// Execute runs one unary tool call.
	Execute(ctx context.Context, call *Call) (*Result, error)
	// ExecuteStream runs a streaming tool call, handing each chunk to yield in
	// order. yield returning a non-nil error (or ctx ending) cancels the
	// stream on the worker side; that error is returned. yield is called
	// one chunk at a time and never after ExecuteStream returned: the pool
	// reuses what the callback refers to for other calls once it returns.
	ExecuteStream(ctx context.Context, call *Call, yield func(Chunk) error) error
	// Kill ends the current lifetime at once (used when the pool judges the
	// worker hung). reason is logged and recorded. Serve still returns only
	// after the process is reaped; the Starter then restarts it.
	Kill(reason string)
}

// Spec is what the pool hands a Factory to build one worker.
type Spec struct {
	ID       string // stable id, e.g. "w3"
	Index    int    // 0-based position in the pool
	RunID    string // the run id of the App
	Capacity int    // concurrent calls the pool will send to this worker
	Events   Events // the worker reports its lifecycle here; never nil
	Logger   *slog.Logger
	// Launcher starts the worker's processes under the no-survivor
	// guarantees (registry record, process group, parent-death signal, run
	// id, reaping); a worker type that spawns processes must use it. See
	// package childproc.
	Launcher *childproc.Launcher
	// RecycleGate bounds how many workers of the pool recycle their process
	// at once (a counting semaphore: send to take a slot, receive to give it
	// back). nil means no bound.
	RecycleGate chan struct{}
}

// Factory builds workers. It is called once per worker id, not per restart.
type Factory interface {
	NewWorker(spec Spec) (Worker, error)
}

// FactoryFunc adapts a function to Factory.
type FactoryFunc func(spec Spec) (Worker, error)

// NewWorker calls f.
func (f FactoryFunc) NewWorker(spec Spec) (Worker, error) { return f(spec) }

// Info describes a worker lifetime that has become ready.
type Info struct {
	PID   int        // OS process id, 0 if there is none
	Tools []ToolSpec // tools the worker offers
	// Capacity, when > 0, replaces Spec.Capacity for this lifetime: a
	// worker that fronts several processes (a remote agent) advertises
	// how many calls it takes at once.
	Capacity int
	// Prefetch is how many calls beyond its capacity this lifetime accepts
	// and holds in order, running each as soon as one of its own calls
	// ends; 0 for a worker that must never be sent more than its capacity.
	// The pool uses it only for calls that would otherwise queue, of short
	// tools, behind short calls (pool/doc.go, "Prefetch"): the worker's
	// next call is then already there when a call ends, instead of one
	// host round trip later. The snakepit Python worker reports four times
	// its capacity.
	Prefetch int
}

// Events receives lifecycle reports from a worker. Implementations must be
// cheap and must not call back into the worker.
type Events interface {
	// Starting: a new lifetime begins (process being spawned).
	Starting(id string)
	// Ready: the lifetime can take calls.
	Ready(id string, info Info)
	// Exited: the lifetime ended; err is nil for a requested stop, otherwise
	// the reason (a *CrashError, a *StartupError, a *RecycledError for a
	// planned break-before-make replacement, ...).
	Exited(id string, err error)
	// Recycled: a new process took over from the previous one without a gap
	// (the old one takes no new calls and drains on its own). Sessions served
	// by the old process lost their worker-side state. reason says why:
	// one of RecycleReasons (the pool counts any other text as RecycleOther).
	Recycled(id string, info Info, reason string)
}

// Call is one tool invocation.
type Call struct {
	Tool      string
	Args      json.RawMessage   // a JSON object; nil means {}
	Binary    map[string][]byte // extra keyword arguments sent as raw bytes
	SessionID string
	RequestID string
	// Metadata travels with the call to the tool (Python: SessionContext.
	// metadata). The App puts the caller's W3C trace context here under
	// "traceparent" and "tracestate"; a worker type passes it on unchanged.
	Metadata map[string]string
}

// Result is what a unary tool returned: a JSON value, or raw bytes when the
// tool returned bytes (then Binary is non-nil and JSON is nil), or a
// numeric array (a numpy ndarray): Binary holds its elements in C order,
// little-endian, DType names their type ("float64", "float32", "int64",
// "int32", "int16", "int8", "uint64", "uint32", "uint16", "uint8", "bool")
// and Shape the dimensions.
type Result struct {
	JSON   json.RawMessage
	Binary []byte
	DType  string
	Shape  []uint64
}

// Decode unmarshals a JSON result into v. An array result decodes into a
// flat slice of numbers ([]float64, []float32, []int64, []int32, ...;
// converted when no value is lost) or, through its JSON form, into
// anything its nested JSON arrays would (e.g. [][]float64, *any).
func (r *Result) Decode(v any) error {
	if r != nil && r.JSON == nil && r.DType != "" {
		return r.decodeArray(v)
	}
	if r == nil || r.JSON == nil {
		return &DecodeError{Reason: "the tool returned bytes (or nothing), not JSON; use Result.Binary"}
	}
	if err := json.Unmarshal(r.JSON, v); err != nil {
		return &DecodeError{Reason: err.Error()}
	}
	return nil
}

// Chunk is one element of a streaming result.
type Chunk struct {
	Seq    uint64
	JSON   json.RawMessage
	Binary []byte
}

// ParamSpec describes one tool parameter.
type ParamSpec struct {
	Name string `json:"name"`
	// Type is the parameter's annotation as a Python reader writes it:
	// "int", "list[int]", "Optional[str]", "Literal['a', 'b']", "Config";
	// "any" when it has none.
	Type        string          `json:"type"`
	Required    bool            `json:"required"`
	Default     json.RawMessage `json:"default,omitempty"`
	Description string          `json:"description,omitempty"`
}

// AnyTool is the name of a tool entry that stands for every name: a
// worker listing it accepts calls to tools it did not name (a Snakepit-style
// adapter whose execute_tool dispatches names itself; see docs/MIGRATING.md).
// The pool then forwards any tool name to it, and the worker answers an
// unknown name with UnknownTool as usual.
const AnyTool = "*"

// ToolSpec describes one tool.
type ToolSpec struct {
	Name              string      `json:"name"`
	Description       string      `json:"description,omitempty"`
	Parameters        []ParamSpec `json:"parameters,omitempty"`
	SupportsStreaming bool        `json:"supports_streaming"`
	// MaxConcurrency, when positive, bounds the calls of this tool running
	// at once across the whole pool (Python: @tool(max_concurrency=N));
	// further calls queue like calls waiting for a worker.
	MaxConcurrency int `json:"max_concurrency,omitempty"`
	// Timeout, when positive, is the deadline of a call of this tool whose
	// context has none (Python: @tool(timeout=seconds)). In JSON it is
	// nanoseconds.
	Timeout time.Duration `json:"timeout,omitempty"`
	// Returns is the return annotation, e.g. "dict[str, float]"; "" when
	// the tool has none.
	Returns string `json:"returns,omitempty"`
	// Doc is the whole docstring (Description is its first line, unless
	// the tool set one).
	Doc string `json:"doc,omitempty"`
	// BatchMaxSize, when positive, marks a batch tool (Python:
	// @tool(batch=Batch(max_size=N, max_wait_ms=W))): the pool coalesces
	// concurrent calls of it into one request of up to BatchMaxSize calls
	// (BatchExecutor), waiting at most BatchMaxWait for a batch to fill.
	// Each call keeps its own result, error, deadline and cancellation.
	BatchMaxSize int `json:"batch_max_size,omitempty"`
	// BatchMaxWait is how long the first call of a batch waits for more;
	// in JSON it is nanoseconds.
	BatchMaxWait time.Duration `json:"batch_max_wait,omitempty"`
}

// BatchExecutor is implemented by worker types that can send several calls
// of one batch tool (ToolSpec.BatchMaxSize > 0) in one request. The pool
// uses it when every worker in the pool implements it; otherwise it sends
// a batch tool's calls one at a time through Execute, which a batch tool
// must also accept (as a batch of one).
type BatchExecutor interface {
	// ExecuteBatch runs calls (all of tool, none with a SessionID) as one
	// request and returns one BatchResult per call, in order. It takes one
	// of the worker's capacity slots, however many calls it carries. An
	// error is the whole request's and means what it means for Execute
	// (ErrWorkerUnavailable: nothing was sent; ErrWorkerCrashed: the
	// lifetime ended under it; ctx's error); a tool's failure for one call
	// is that call's BatchResult.Err (*ToolError, *InvalidArgsError).
	ExecuteBatch(ctx context.Context, tool string, calls []*Call) ([]BatchResult, error)
}

// BatchResult is one call's share of a batch: its Result, or its Err.
type BatchResult struct {
	Result *Result
	Err    error
}

// Recycler is implemented by worker types that can recycle their process
// on request without a gap (make-before-break); App.Reload uses it.
type Recycler interface {
	// Recycle starts a new process (running the current code) while the
	// current one serves; once the new one is ready it takes every new
	// call and the old one drains. The worker reports Recycled(reason).
	// It returns nil once the new process took over; the new process's
	// *StartupError if it could not start (the current process keeps
	// serving and nothing is retried); an error matching
	// ErrWorkerUnavailable when there is no running process to recycle or
	// the lifetime ended first; ctx.Err() when ctx ended first (the
	// request is withdrawn).
	Recycle(ctx context.Context, reason string) error
}
