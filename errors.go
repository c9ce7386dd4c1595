package snakepit

import (
	"errors"

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
	// ToolError is a Python exception: type, message and traceback.
	ToolError = worker.ToolError
	// CrashError describes a worker that died under a call.
	CrashError = worker.CrashError
	// StartupError describes a worker that failed before it became ready,
	// with its last stderr lines.
	StartupError = worker.StartupError
	// UnknownToolError names a tool no worker offers and lists those that exist.
	UnknownToolError = worker.UnknownToolError
	// NotReadyError: fewer workers ready than wanted, with their startup errors.
	NotReadyError = pool.NotReadyError
	// WorkerTimeoutError: a call's worker hung past HungGrace and was killed.
	WorkerTimeoutError = pool.WorkerTimeoutError
	// InvalidCallError: a call that could never succeed; nothing was sent.
	InvalidCallError = pool.InvalidCallError
	// PoolStats is the pool's part of Stats: workers by state, queue,
	// counters, restarts apart from recycles, given-up workers, latency.
	PoolStats = pool.Stats
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
)

// ErrInvalidConfig: a Config field or call option is out of range.
var ErrInvalidConfig = errors.New("snakepit: invalid configuration")

// ErrNotStarted: a call was made before Start, or before the App was added
// to a running supervisor. Calls made after that wait for readiness.
var ErrNotStarted = errors.New("snakepit: the App is not running; call Start, or add the App to a running suture supervisor, before Execute")

// Errors callers test with errors.Is; the concrete types carry the detail.
var (
	ErrWorkerCrashed            = worker.ErrWorkerCrashed
	ErrWorkerTimeout            = worker.ErrWorkerTimeout
	ErrStartup                  = worker.ErrStartup
	ErrToolFailed               = worker.ErrToolFailed
	ErrUnknownTool              = worker.ErrUnknownTool
	ErrInvalidArgs              = worker.ErrInvalidArgs
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
	// ErrRegistry: the process registry cannot be opened or used for any
	// reason other than ErrRegistryLocked (see registry.ErrUnavailable).
	ErrRegistry  = registry.ErrUnavailable
	ErrSurvivors = cleanup.ErrSurvivors
	// Dynamic membership (App.AddWorker, App.RemoveWorker).
	ErrWorkerExists = supervisor.ErrWorkerExists
	ErrNoSuchWorker = supervisor.ErrNoSuchWorker
	ErrNotServing   = supervisor.ErrNotServing
)
