package snakepit

import (
	"errors"

	"github.com/snakepit-go/snakepit/pool"
	"github.com/snakepit-go/snakepit/worker"
)

// Outcome names how a call ended: the keys of Stats().Pool.Outcomes and the
// outcome label of snakepit_requests_total. Every call made through Execute
// or ExecuteStream counts under exactly one, refused ones included.
type Outcome = pool.Outcome

// The outcomes; see OutcomeOf for the errors that lead to each.
const (
	OutcomeSuccess         = pool.OutcomeSuccess
	OutcomeToolError       = pool.OutcomeToolError
	OutcomeInvalidArgs     = pool.OutcomeInvalidArgs
	OutcomeToolTimeout     = pool.OutcomeToolTimeout
	OutcomeDeadline        = pool.OutcomeDeadline
	OutcomeCancelled       = pool.OutcomeCancelled
	OutcomeCrashed         = pool.OutcomeCrashed
	OutcomeWorkerTimeout   = pool.OutcomeWorkerTimeout
	OutcomeQueueTimeout    = pool.OutcomeQueueTimeout
	OutcomeSaturated       = pool.OutcomeSaturated
	OutcomeNotReady        = pool.OutcomeNotReady
	OutcomeStopping        = pool.OutcomeStopping
	OutcomeAffinity        = pool.OutcomeAffinity
	OutcomeMessageTooLarge = pool.OutcomeMessageTooLarge
	OutcomeOther           = pool.OutcomeOther
)

// OutcomeOf says how a call that returned err ended. It is pool.OutcomeOf,
// plus the errors only the App returns: ErrNotStarted and a *StartError
// (the App is not running, or failed to start) are not_ready, like
// ErrNotReady, since in each case no worker could take the call.
func OutcomeOf(err error) Outcome {
	var se *StartError
	if errors.Is(err, ErrNotStarted) || errors.As(err, &se) {
		return OutcomeNotReady
	}
	return pool.OutcomeOf(err)
}

// Why a worker's process is recycled: the keys of Stats().Pool.RecycleReasons
// and the reason label of snakepit_worker_recycles_total.
const (
	RecycleRequests  = worker.RecycleRequests
	RecycleAge       = worker.RecycleAge
	RecycleMemory    = worker.RecycleMemory
	RecycleReload    = worker.RecycleReload
	RecycleAbandoned = worker.RecycleAbandoned
	RecycleOther     = worker.RecycleOther
)

// Why a worker lifetime ended with an error: the keys of
// Stats().Pool.RestartReasons and the reason label of
// snakepit_worker_restarts_by_reason_total.
const (
	RestartCrashed   = pool.RestartCrashed
	RestartHung      = pool.RestartHung
	RestartHealth    = pool.RestartHealth
	RestartStartup   = pool.RestartStartup
	RestartKilled    = pool.RestartKilled
	RestartAgentLost = pool.RestartAgentLost
	RestartOther     = pool.RestartOther
)
