package worker

import (
	"errors"
	"fmt"
	"strings"
	"syscall"
)

// Sentinel errors. Concrete error types below match them with errors.Is.
var (
	// ErrWorkerCrashed: the worker's process ended while a call was running.
	ErrWorkerCrashed = errors.New("snakepit: worker crashed")
	// ErrWorkerUnavailable: the worker is not between Ready and Exited.
	ErrWorkerUnavailable = errors.New("snakepit: worker not available")
	// ErrWorkerTimeout: the worker did not answer within the deadline plus grace and was restarted.
	ErrWorkerTimeout = errors.New("snakepit: worker timed out")
	// ErrStartup: a worker lifetime failed before it became ready.
	ErrStartup = errors.New("snakepit: worker failed to start")
	// ErrToolFailed: the tool itself raised (see *ToolError).
	ErrToolFailed = errors.New("snakepit: tool failed")
	// ErrUnknownTool: no worker offers the tool (see *UnknownToolError).
	ErrUnknownTool = errors.New("snakepit: unknown tool")
	// ErrInvalidArgs: the arguments do not fit the tool: they could not be
	// encoded (*ArgsError, nothing was sent), or the worker refused them
	// before the tool ran — missing, unexpected or mistyped — or the tool
	// itself judged them bad (*InvalidArgsError). Never a tool failure.
	ErrInvalidArgs = errors.New("snakepit: invalid arguments")
	// ErrInvalidConfig: a configuration value or option is out of range.
	// It is the one sentinel for every package's options (snakepit's
	// Config, pool, bridge, grpcworker, starter), re-exported by each.
	ErrInvalidConfig = errors.New("snakepit: invalid configuration")
	// ErrDecode: a result could not be decoded into the requested value.
	ErrDecode = errors.New("snakepit: cannot decode result")
	// ErrRecycled: a worker lifetime ended by plan (request count or age), not by failure.
	ErrRecycled = errors.New("snakepit: worker recycled")
	// ErrMessageTooLarge: a request or result exceeded the configured gRPC message limit.
	ErrMessageTooLarge = errors.New("snakepit: message too large")
)

// CrashError reports a worker lifetime that ended unexpectedly.
type CrashError struct {
	WorkerID string
	PID      int
	// ExitCode is the exit status, or -1 when the process was killed by a signal.
	ExitCode int
	// Signal is the signal that killed the process (0 if it exited);
	// messages name it (SignalName).
	Signal syscall.Signal
	// Reason says why the host ended the process, when it did (e.g. "health check failed").
	Reason string
	// Agent is set when the process that died ran behind a remote agent
	// (package remote): WorkerID and PID are the agent's, and the worker
	// that returned the error is still connected and serving, so only this
	// call is lost.
	Agent string
}

// CrashedBehind reports a crash of a process behind a worker that is still
// serving (a *CrashError with Agent set): the call is lost, the worker is not.
func CrashedBehind(err error) bool {
	var ce *CrashError
	return errors.As(err, &ce) && ce.Agent != ""
}

func (e *CrashError) Error() string {
	var b strings.Builder
	if e.Agent != "" {
		fmt.Fprintf(&b, "snakepit: on agent %s, ", e.Agent)
	} else {
		b.WriteString("snakepit: ")
	}
	if e.PID == 0 {
		fmt.Fprintf(&b, "worker %s ", e.WorkerID)
	} else {
		fmt.Fprintf(&b, "worker %s (pid %d) ", e.WorkerID, e.PID)
	}
	switch {
	case e.Signal != 0:
		fmt.Fprintf(&b, "was killed by %s", SignalName(e.Signal))
	case e.PID == 0 && e.Reason != "":
		// No process of ours (a connection to an agent): the reason is all.
		b.WriteString("ended")
	default:
		fmt.Fprintf(&b, "exited with status %d", e.ExitCode)
	}
	if e.Reason != "" {
		fmt.Fprintf(&b, " (%s)", e.Reason)
	}
	b.WriteString("; it is being restarted — retry the call, or mark it idempotent to retry automatically")
	return b.String()
}

// Is makes errors.Is(err, ErrWorkerCrashed) true.
func (e *CrashError) Is(target error) bool { return target == ErrWorkerCrashed }

// StartupKind classifies a failed start, so that what is retried, counted
// and suggested fits the cause: a broken adapter needs a code or
// configuration fix, a full file table needs a higher limit, not a fix.
type StartupKind uint8

const (
	// StartupUnclassified: the worker type did not say (and the cause is
	// no host resource error).
	StartupUnclassified StartupKind = iota
	// StartupAdapter: the adapter could not be imported or set up (an
	// ImportError, a bad Config.Adapter path, setup() raised, an invalid
	// tool declaration).
	StartupAdapter
	// StartupInterpreter: the interpreter cannot run the worker at all
	// (not found, lacks grpcio/protobuf, snakepit_bridge not importable).
	StartupInterpreter
	// StartupResource: the host ran out of a resource while starting the
	// process (EMFILE, ENFILE, ENOMEM, EAGAIN): not the adapter's fault,
	// so it does not count toward giving the worker up.
	StartupResource
	// StartupTimeout: no handshake within the startup timeout.
	StartupTimeout
	// StartupAuth: the peer rejected our credentials (a remote agent's token).
	StartupAuth
	// StartupUnreachable: the peer could not be reached (a remote agent).
	StartupUnreachable
)

func (k StartupKind) String() string {
	switch k {
	case StartupAdapter:
		return "adapter"
	case StartupInterpreter:
		return "interpreter"
	case StartupResource:
		return "host resource"
	case StartupTimeout:
		return "timeout"
	case StartupAuth:
		return "authentication"
	case StartupUnreachable:
		return "unreachable"
	}
	return "unclassified"
}

// ResourceLimit says which host limit err ran into, when it is one of the
// errors the kernel returns for an exhausted resource (EMFILE, ENFILE,
// ENOMEM, EAGAIN from fork, pipe or socket creation), phrased as what to
// raise; ok is false for any other error.
func ResourceLimit(err error) (limit string, ok bool) {
	switch {
	case err == nil:
		return "", false
	case errors.Is(err, syscall.EMFILE):
		return "the process's open-file limit is reached (EMFILE): raise it (ulimit -n, RLIMIT_NOFILE, LimitNOFILE= in a systemd unit)", true
	case errors.Is(err, syscall.ENFILE):
		return "the system-wide open-file table is full (ENFILE): raise fs.file-max or close files elsewhere on the host", true
	case errors.Is(err, syscall.ENOMEM):
		return "the host is out of memory (ENOMEM): free memory or raise the memory limit of the container or cgroup", true
	case errors.Is(err, syscall.EAGAIN):
		return "the process or thread limit is reached (EAGAIN): raise it (ulimit -u, RLIMIT_NPROC, or the cgroup's pids.max / TasksMax=)", true
	}
	return "", false
}

// StartupError reports a lifetime that ended before it became ready.
type StartupError struct {
	WorkerID string
	PID      int
	Cause    error    // what went wrong (process exited, handshake timeout, ...)
	Stderr   []string // the process's last stderr lines, oldest first
	Hint     string   // what to do next; empty: derived from the kind
	// Kind classifies the failure (see Class, which also recognises a host
	// resource error in Cause when Kind is unset).
	Kind StartupKind
	// Signal is the signal that ended the process before it became ready
	// (0 if it exited or is still running). A start ended by a signal
	// from outside (SIGKILL from the OOM killer or an operator, SIGTERM, …)
	// is not the adapter's fault; see Starter's give-up rule.
	Signal syscall.Signal
}

// Class is Kind, or StartupResource when Kind is unset and Cause is a host
// resource error (worker types need not classify those themselves).
func (e *StartupError) Class() StartupKind {
	if e.Kind != StartupUnclassified {
		return e.Kind
	}
	if _, ok := ResourceLimit(e.Cause); ok {
		return StartupResource
	}
	return StartupUnclassified
}

func (e *StartupError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "snakepit: worker %s failed to start", e.WorkerID)
	if e.PID > 0 {
		fmt.Fprintf(&b, " (pid %d)", e.PID)
	}
	if e.Cause != nil {
		fmt.Fprintf(&b, ": %v", e.Cause)
	}
	if len(e.Stderr) > 0 {
		b.WriteString("\n  last stderr lines:\n    ")
		b.WriteString(strings.Join(e.Stderr, "\n    "))
	}
	hint := e.Hint
	if hint == "" {
		hint, _ = ResourceLimit(e.Cause)
	}
	if hint != "" {
		fmt.Fprintf(&b, "\n  hint: %s", hint)
	}
	return b.String()
}

// Is makes errors.Is(err, ErrStartup) true.
func (e *StartupError) Is(target error) bool { return target == ErrStartup }

// Unwrap returns the cause.
func (e *StartupError) Unwrap() error { return e.Cause }

// ToolError is an exception raised by a tool, carried across the wire.
type ToolError struct {
	Tool      string
	WorkerID  string
	Type      string // Python exception type, e.g. "ValueError"
	Message   string
	Traceback string
}

func (e *ToolError) Error() string {
	return fmt.Sprintf("snakepit: tool %q raised %s: %s", e.Tool, e.Type, e.Message)
}

// Is makes errors.Is(err, ErrToolFailed) true.
func (e *ToolError) Is(target error) bool { return target == ErrToolFailed }

// UnknownToolError names a tool nobody offers and lists the ones that exist.
type UnknownToolError struct {
	Tool      string
	Available []string
}

func (e *UnknownToolError) Error() string {
	return fmt.Sprintf("snakepit: unknown tool %q; available tools: %s", e.Tool, strings.Join(e.Available, ", "))
}

// Is makes errors.Is(err, ErrUnknownTool) true.
func (e *UnknownToolError) Is(target error) bool { return target == ErrUnknownTool }

// ArgsError reports arguments that cannot be encoded as a JSON object.
type ArgsError struct {
	Tool   string
	Reason string
}

func (e *ArgsError) Error() string {
	return fmt.Sprintf("snakepit: arguments for tool %q cannot be sent: %s (pass a map or struct that encodes to a JSON object)", e.Tool, e.Reason)
}

// Is makes errors.Is(err, ErrInvalidArgs) true.
func (e *ArgsError) Is(target error) bool { return target == ErrInvalidArgs }

// InvalidArgsError reports arguments a worker refused: they do not fit the
// tool's signature (a required one missing, one it does not take) or its
// type hints, or the tool raised snakepit_bridge.InvalidArgs itself. The
// tool did not run in the first cases; retrying the same call cannot help.
type InvalidArgsError struct {
	Tool     string
	WorkerID string
	// Path is the argument at fault: "xs", "xs[2]", "cfg.name",
	// `opts['k']`; "" when the call as a whole is at fault.
	Path string
	// Expected is the type (or values) the tool wants, e.g. "int",
	// "list[str]"; "" when not applicable (an unexpected argument).
	Expected string
	// Got describes what was given, e.g. "str 'x'", "bool True"; "missing"
	// for a required argument that was not given.
	Got string
	// Message is the worker's whole explanation.
	Message string
	// Traceback is set when the tool raised InvalidArgs itself.
	Traceback string
}

func (e *InvalidArgsError) Error() string {
	return fmt.Sprintf("snakepit: invalid arguments for tool %q: %s (fix the arguments; App.Tools lists the tool's parameters and their types)", e.Tool, e.Message)
}

// Is makes errors.Is(err, ErrInvalidArgs) true.
func (e *InvalidArgsError) Is(target error) bool { return target == ErrInvalidArgs }

// DecodeError reports a result that could not be decoded.
type DecodeError struct{ Reason string }

func (e *DecodeError) Error() string { return "snakepit: cannot decode result: " + e.Reason }

// Is makes errors.Is(err, ErrDecode) true.
func (e *DecodeError) Is(target error) bool { return target == ErrDecode }

// RecycledError ends a lifetime that served its quota of requests or reached
// its maximum age. Its in-flight calls were allowed to finish first; the
// Starter starts a fresh process.
type RecycledError struct {
	WorkerID string
	PID      int
	Reason   string // e.g. "served 1000 requests"
}

func (e *RecycledError) Error() string {
	return fmt.Sprintf("snakepit: worker %s (pid %d) recycled: %s", e.WorkerID, e.PID, e.Reason)
}

// Is makes errors.Is(err, ErrRecycled) true.
func (e *RecycledError) Is(target error) bool { return target == ErrRecycled }
