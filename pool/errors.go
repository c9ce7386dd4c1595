package pool

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/snakepit-go/snakepit/worker"
)

// Sentinel errors; the typed errors below match them with errors.Is.
var (
	// ErrPoolSaturated: the wait queue is full; the call was not queued.
	ErrPoolSaturated = errors.New("snakepit: pool saturated: the wait queue is full; raise MaxQueue, add workers or capacity, or retry later")
	// ErrQueueTimeout: no slot became free within the queue timeout; the call never reached a worker.
	ErrQueueTimeout = errors.New("snakepit: timed out waiting for a free worker; raise QueueTimeout, add workers or capacity, or shed load")
	// ErrPoolStopping: the pool is stopping and takes no new calls.
	ErrPoolStopping = errors.New("snakepit: pool is stopping; no new calls are accepted")
	// ErrSessionWorkerUnavailable: a strict-affinity call's session worker has exited or left since it served the session.
	ErrSessionWorkerUnavailable = errors.New("snakepit: the worker that served this session has exited or left the pool; its session state is gone — start the session again or use affinity \"hint\"")
	// ErrSessionWorkerBusy: a strict-fail-fast call's session worker has no
	// free slot (for a serial tool: it already runs a call of that tool).
	ErrSessionWorkerBusy = errors.New("snakepit: the worker that served this session is busy; retry later, or use affinity \"strict-queue\" to wait for it")
	// ErrNotReady: no worker became ready in time (or none can: see the wrapped startup errors).
	ErrNotReady = errors.New("snakepit: no worker is ready; check the workers' startup errors, or raise ReadyTimeout if they are just slow to start")
	// ErrUnknownPool: a call named a pool that does not exist, here or on
	// the agent that was to run it (snakepit.ErrUnknownPool is this value).
	ErrUnknownPool = errors.New("snakepit: no pool by that name")
	// ErrInvalidCall: the call was rejected before reaching a worker (see *InvalidCallError).
	ErrInvalidCall = errors.New("snakepit: invalid call")
	// ErrInvalidOptions: Options holds an invalid value (see *OptionsError).
	// It is snakepit.ErrInvalidConfig (worker.ErrInvalidConfig).
	ErrInvalidOptions = worker.ErrInvalidConfig
)

// InvalidCallError says why a call was rejected before reaching a worker.
type InvalidCallError struct {
	Tool   string
	Reason string
	Err    error // underlying cause, e.g. the context's error
}

func (e *InvalidCallError) Error() string {
	if e.Tool != "" {
		return fmt.Sprintf("snakepit: invalid call of tool %q: %s", e.Tool, e.Reason)
	}
	return "snakepit: invalid call: " + e.Reason
}

// Is makes errors.Is(err, ErrInvalidCall) true.
func (e *InvalidCallError) Is(target error) bool { return target == ErrInvalidCall }

// Unwrap returns the underlying cause, if any.
func (e *InvalidCallError) Unwrap() error { return e.Err }

// OptionsError names an invalid Options field.
type OptionsError struct {
	Field  string
	Reason string
}

func (e *OptionsError) Error() string {
	return "snakepit: invalid pool option " + e.Field + ": " + e.Reason
}

// Is makes errors.Is(err, ErrInvalidOptions) true.
func (e *OptionsError) Is(target error) bool { return target == ErrInvalidOptions }

// NotReadyError reports that not enough workers are (or can become) ready.
type NotReadyError struct {
	Wanted int // workers waited for
	Ready  int // workers ready when the wait ended
	Failed int // workers the supervisor gave up on
	// Cause is why: the context's error, or the startup errors of the
	// failed workers joined (errors.As finds each *worker.StartupError).
	Cause error
}

func (e *NotReadyError) Error() string {
	msg := fmt.Sprintf("snakepit: %d of %d wanted workers ready", e.Ready, e.Wanted)
	if e.Failed > 0 {
		msg += fmt.Sprintf(", %d failed to start", e.Failed)
	}
	if e.Cause != nil {
		msg += ": " + e.Cause.Error()
	}
	if e.Failed > 0 {
		return msg + "\n  hint: " + startupHint(e.Cause)
	}
	if errors.Is(e.Cause, context.DeadlineExceeded) || errors.Is(e.Cause, context.Canceled) {
		// The caller's own wait (WaitReady, App.Start) ended, not ReadyTimeout.
		return msg + "; check the workers' startup errors, or give the wait a later deadline if they are just slow to start"
	}
	return msg + "; check the workers' startup errors, or raise ReadyTimeout if they are just slow to start"
}

// startupHint says what to do about the failed starts in err, by their
// kinds: an adapter to fix is not a limit to raise nor a token to share.
func startupHint(err error) string {
	seen := map[worker.StartupKind]bool{}
	var kinds []worker.StartupKind
	var walk func(error)
	walk = func(err error) {
		var se *worker.StartupError
		switch x := err.(type) {
		case nil:
		case interface{ Unwrap() []error }:
			for _, e := range x.Unwrap() {
				walk(e)
			}
		default:
			if errors.As(err, &se) && !seen[se.Class()] {
				seen[se.Class()] = true
				kinds = append(kinds, se.Class())
			}
		}
	}
	walk(err)
	var hints []string
	for _, k := range kinds {
		switch k {
		case worker.StartupAdapter:
			hints = append(hints, "fix the adapter's import or setup error above (Config.Adapter, Config.PythonPath)")
		case worker.StartupInterpreter:
			hints = append(hints, "make the interpreter able to run the worker (Config.Python or SNAKEPIT_PYTHON, with grpcio and protobuf installed)")
		case worker.StartupResource:
			hints = append(hints, "the host ran out of a resource; raise the limit named above (the worker is retried with backoff, not given up)")
		case worker.StartupTimeout:
			hints = append(hints, "the workers did not start within StartupTimeout; raise it if their setup is just slow")
		case worker.StartupAuth:
			hints = append(hints, "give the host and the agents the same token")
		case worker.StartupUnreachable:
			hints = append(hints, "make the agents reachable (snakepit serve running, address and TLS settings right)")
		}
	}
	if len(hints) == 0 {
		return "fix the cause of the startup errors above"
	}
	return strings.Join(hints, "; ")
}

// Is makes errors.Is(err, ErrNotReady) true.
func (e *NotReadyError) Is(target error) bool { return target == ErrNotReady }

// Unwrap returns the cause.
func (e *NotReadyError) Unwrap() error { return e.Cause }

// WorkerTimeoutError reports a call that stayed inside a worker longer than
// HungGrace after its context ended; the worker was killed. It is the one
// shape of "this worker is hung", whichever way the worker failed to return
// the call (see the pool's watchdog, the only place that decides it).
type WorkerTimeoutError struct {
	WorkerID string
	Tool     string
	Grace    time.Duration
	// Agent is set when the hung worker ran behind a remote agent, whose
	// pool decided it (package remote): WorkerID is the agent's, Grace is
	// not known here, and the remote worker stays in rotation.
	Agent string
	// Err is the call's context error (context.DeadlineExceeded, or
	// context.Canceled when the caller or a pool stop cancelled it).
	Err error
	// WorkerErr is what the killed worker's Execute finally returned.
	WorkerErr error
}

func (e *WorkerTimeoutError) Error() string {
	if e.Agent != "" {
		return fmt.Sprintf("snakepit: on agent %s, worker %s did not return from tool %q after the call's context ended (%v); it was killed as hung and is being restarted — raise the call's deadline if the tool is just slow",
			e.Agent, e.WorkerID, e.Tool, e.Err)
	}
	return fmt.Sprintf("snakepit: worker %s did not return from tool %q within %s after the call's context ended (%v); it was killed as hung and is being restarted — raise the call's deadline if the tool is just slow",
		e.WorkerID, e.Tool, e.Grace, e.Err)
}

// Is makes errors.Is(err, worker.ErrWorkerTimeout) true.
func (e *WorkerTimeoutError) Is(target error) bool { return target == worker.ErrWorkerTimeout }

// Unwrap returns the context error.
func (e *WorkerTimeoutError) Unwrap() error { return e.Err }

// ToolTimeoutError reports a call that ran past the timeout its tool
// declares (worker.ToolSpec.Timeout) because the caller set no deadline of
// its own. errors.Is(err, context.DeadlineExceeded) is true.
type ToolTimeoutError struct {
	Tool    string
	Timeout time.Duration
	Err     error // what the call returned when its deadline passed
}

func (e *ToolTimeoutError) Error() string {
	msg := fmt.Sprintf("snakepit: tool %q did not finish within the %s timeout it declares (@tool(timeout=...)); give the call a context with a later deadline to allow it more time", e.Tool, e.Timeout)
	if e.Err != nil {
		msg += ": " + e.Err.Error()
	}
	return msg
}

// Is makes errors.Is(err, context.DeadlineExceeded) true.
func (e *ToolTimeoutError) Is(target error) bool { return target == context.DeadlineExceeded }

// Unwrap returns what the call returned.
func (e *ToolTimeoutError) Unwrap() error { return e.Err }

// StopError reports calls that were still running when Stop gave up waiting.
type StopError struct {
	InFlight int
	Err      error
}

func (e *StopError) Error() string {
	return "snakepit: pool stopped with " + strconv.Itoa(e.InFlight) + " call(s) still inside workers that ignored cancellation and Kill: " + e.Err.Error()
}

func (e *StopError) Unwrap() error { return e.Err }

func itoa(n int) string     { return strconv.Itoa(n) }
func quote(s string) string { return strconv.Quote(s) }
