package snakepit

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/snakepit-go/snakepit/bridge"
	"github.com/snakepit-go/snakepit/cleanup"
	"github.com/snakepit-go/snakepit/grpcworker"
	"github.com/snakepit-go/snakepit/pool"
	"github.com/snakepit-go/snakepit/registry"
	"github.com/snakepit-go/snakepit/supervisor"
	"github.com/snakepit-go/snakepit/worker"
)

// Result, Chunk and ToolSpec are the worker contract's types.
type (
	Result   = worker.Result
	Chunk    = worker.Chunk
	ToolSpec = worker.ToolSpec
	// ParamSpec is one parameter of a ToolSpec.
	ParamSpec = worker.ParamSpec
	// ToolError is a Python exception: type, message and traceback.
	ToolError = worker.ToolError
	// CrashError describes a worker that died under a call.
	CrashError = worker.CrashError
	// StartupError describes a worker that failed before it became ready,
	// with its last stderr lines.
	StartupError = worker.StartupError
	// UnknownToolError names a tool no worker offers and lists those that exist.
	UnknownToolError = worker.UnknownToolError
	// InvalidArgsError: the worker refused the arguments (missing,
	// unexpected or mistyped; Path names the argument, e.g. "xs[2]") or
	// the tool raised InvalidArgs; errors.Is ErrInvalidArgs.
	InvalidArgsError = worker.InvalidArgsError
	// NotReadyError: fewer workers ready than wanted, with their startup errors.
	NotReadyError = pool.NotReadyError
	// WorkerTimeoutError: a call's worker hung past HungGrace and was killed.
	WorkerTimeoutError = pool.WorkerTimeoutError
	// ToolTimeoutError: the call ran past the timeout its tool declares
	// (@tool(timeout=...)); errors.Is context.DeadlineExceeded.
	ToolTimeoutError = pool.ToolTimeoutError
	// InvalidCallError: a call that could never succeed; nothing was sent.
	InvalidCallError = pool.InvalidCallError
	// GivenUpWorker is a worker resting after too many failed starts.
	GivenUpWorker = pool.GivenUpWorker
	// PythonNotFoundError lists every interpreter tried and why each failed.
	PythonNotFoundError = grpcworker.DiscoveryError
	// RegistryLockedError names the registry file and, when known, the pid
	// of the live App holding it.
	RegistryLockedError = registry.LockedError
	// SurvivorsError lists the processes the last-resort cleanup had to kill.
	SurvivorsError = cleanup.SurvivorsError
	// StartError names the child of the tree that failed to start.
	StartError = supervisor.StartError
	// HostToolError says why a host tool could not be registered.
	HostToolError = bridge.RegistrationError
	// HostToolFunc is a Go function Python tools call by name; see
	// RegisterHostTool. The call's caller is HostCallFrom(ctx).
	HostToolFunc = bridge.HostToolFunc
	// HostCall names the tool, session and worker a host tool call came from.
	HostCall = bridge.HostCall
	// Sessions is the session store Python workers share; see App.Sessions.
	Sessions = bridge.Sessions
	// Session is one entry of Sessions.
	Session = bridge.Session
	// ReapReport is what the startup reaper did about earlier runs' processes.
	ReapReport = registry.ReapReport
	// StopRecord is one child's stop within a StopReport.
	StopRecord = supervisor.StopRecord
	// CleanupReport is the last-resort sweep's part of a StopReport.
	CleanupReport = cleanup.Report
	// Survivor is a process of the run that the last-resort sweep found.
	Survivor = cleanup.Survivor
	// DecodeError: a result that could not be decoded into the value asked
	// for (errors.Is ErrDecode).
	DecodeError = worker.DecodeError
	// ReloadReport says which workers a Reload replaced and how long it took.
	ReloadReport = supervisor.ReloadReport
	// ReloadError: a Reload stopped at a worker whose new process failed to
	// start; errors.As also finds that *StartupError through it.
	ReloadError = supervisor.ReloadError
)

// HostCallFrom returns the caller of the host tool call ctx belongs to; ok
// is false outside a host tool call.
func HostCallFrom(ctx context.Context) (HostCall, bool) { return bridge.CallFromContext(ctx) }

// Defaults of Config fields that other packages share.
const (
	DefaultMaxMessageBytes = worker.DefaultMaxMessageBytes // Config.MaxMessageBytes
	DefaultHungGrace       = worker.DefaultHungGrace       // Config.HungGrace
	DefaultStopGrace       = worker.DefaultStopGrace       // Config.StopGrace
	DefaultCapacity        = worker.DefaultCapacity        // Config.Capacity
)

// ErrInvalidConfig: a Config field or call option is out of range.
var ErrInvalidConfig = worker.ErrInvalidConfig

// ErrNotStarted: a call was made before Start, or before the App was added
// to a running supervisor. Calls made after that wait for readiness.
var ErrNotStarted = errors.New("snakepit: the App is not running; call Start, or add the App to a running suture supervisor, before Execute")

// ErrStopped: Start or Serve on an App that was stopped with Stop. An App
// runs once under Start/Stop; build a new App with New to start again.
var ErrStopped = errors.New("snakepit: the App was stopped; build a new App with New to start again")

// ErrAlreadyStarted: Start called a second time (also after a failed
// Start), or Serve while the App already runs.
var ErrAlreadyStarted = errors.New("snakepit: the App was already started")

// ErrUnknownPool: a call named a pool the Config does not have, or one
// that a `snakepit serve` agent feeding the pool does not have (the
// agent's pools are listed in the message). The *UnknownPoolError behind
// a local one lists the pools that exist.
var ErrUnknownPool = pool.ErrUnknownPool

// UnknownPoolError names the pool asked for and the pools configured.
type UnknownPoolError struct {
	Name  string
	Pools []string // DefaultPool first, then Config.Pools in order
}

func (e *UnknownPoolError) Error() string {
	return fmt.Sprintf("snakepit: no pool named %q; the App has %s (add it to Config.Pools)", e.Name, strings.Join(e.Pools, ", "))
}

// Is makes errors.Is(err, ErrUnknownPool) true.
func (e *UnknownPoolError) Is(target error) bool { return target == ErrUnknownPool }

// Errors callers test with errors.Is; the concrete types carry the detail.
var (
	ErrWorkerCrashed = worker.ErrWorkerCrashed
	ErrWorkerTimeout = worker.ErrWorkerTimeout
	ErrStartup       = worker.ErrStartup
	ErrToolFailed    = worker.ErrToolFailed
	ErrUnknownTool   = worker.ErrUnknownTool
	ErrInvalidArgs   = worker.ErrInvalidArgs
	ErrDecode        = worker.ErrDecode
	// ErrWorkerUnavailable: the worker had no running process for the
	// call; nothing was sent (the pool retries such a call elsewhere, so a
	// caller sees it only from a worker used directly).
	ErrWorkerUnavailable        = worker.ErrWorkerUnavailable
	ErrMessageTooLarge          = worker.ErrMessageTooLarge
	ErrPoolSaturated            = pool.ErrPoolSaturated
	ErrQueueTimeout             = pool.ErrQueueTimeout
	ErrPoolStopping             = pool.ErrPoolStopping
	ErrSessionWorkerUnavailable = pool.ErrSessionWorkerUnavailable
	ErrSessionWorkerBusy        = pool.ErrSessionWorkerBusy
	ErrNotReady                 = pool.ErrNotReady
	ErrInvalidCall              = pool.ErrInvalidCall
	ErrPythonNotFound           = grpcworker.ErrPythonNotFound
	ErrRegistryLocked           = registry.ErrLocked
	// ErrDuplicateHostTool: RegisterHostTool was given a name already taken.
	ErrDuplicateHostTool = bridge.ErrDuplicateTool
	// ErrReloadUnsupported: Reload with a worker type that does not
	// implement worker.Recycler.
	ErrReloadUnsupported = supervisor.ErrReloadUnsupported
	// ErrRegistry: the process registry cannot be opened or used for any
	// reason other than ErrRegistryLocked (see registry.ErrUnavailable).
	ErrRegistry  = registry.ErrUnavailable
	ErrSurvivors = cleanup.ErrSurvivors
	// ErrContainment: Start needed cgroup v2 containment (Containment
	// "required", MemoryMax or CPUMax) that the machine does not offer, or
	// SNAKEPIT_CGROUP holds an unknown value; no worker was started.
	ErrContainment = registry.ErrContainment
	// Dynamic membership (App.AddWorker, App.RemoveWorker).
	ErrWorkerExists = supervisor.ErrWorkerExists
	// ErrInvalidWorker: AddWorker without an id or a factory, or with an
	// id that starts with a named pool's "<pool>." prefix.
	ErrInvalidWorker = supervisor.ErrInvalidWorker
	ErrNoSuchWorker  = supervisor.ErrNoSuchWorker
	ErrNotServing    = supervisor.ErrNotServing
)
