package pool

import (
	"context"
	"errors"
	"strings"

	"github.com/snakepit-go/snakepit/worker"
)

// Outcome names how a call ended. Every call counts under exactly one
// outcome in Stats.Outcomes (and the snakepit_requests_total{outcome}
// metric), whatever ended it, calls refused before dispatch included.
type Outcome string

// The outcomes. OutcomeOf maps an error to one of them; Outcomes lists them.
const (
	OutcomeSuccess         Outcome = "success"           // the call returned a result
	OutcomeToolError       Outcome = "tool_error"        // the tool raised (worker.ErrToolFailed)
	OutcomeInvalidArgs     Outcome = "invalid_args"      // refused as malformed: arguments (worker.ErrInvalidArgs), unknown tool, invalid call or options
	OutcomeToolTimeout     Outcome = "tool_timeout"      // the tool's declared timeout passed (*ToolTimeoutError)
	OutcomeDeadline        Outcome = "deadline"          // the caller's deadline passed (context.DeadlineExceeded)
	OutcomeCancelled       Outcome = "cancelled"         // the caller cancelled (context.Canceled)
	OutcomeCrashed         Outcome = "crashed"           // the worker died under the call (worker.ErrWorkerCrashed)
	OutcomeWorkerTimeout   Outcome = "worker_timeout"    // the worker hung past HungGrace and was killed (worker.ErrWorkerTimeout)
	OutcomeQueueTimeout    Outcome = "queue_timeout"     // no slot within the queue timeout (ErrQueueTimeout)
	OutcomeSaturated       Outcome = "saturated"         // the wait queue was full (ErrPoolSaturated)
	OutcomeNotReady        Outcome = "not_ready"         // no worker ready, or the App not started or failed to start (ErrNotReady)
	OutcomeStopping        Outcome = "stopping"          // the pool was stopping (ErrPoolStopping)
	OutcomeAffinity        Outcome = "affinity"          // the session's worker was busy or gone (ErrSessionWorkerBusy, ErrSessionWorkerUnavailable)
	OutcomeMessageTooLarge Outcome = "message_too_large" // a request or result exceeded the message limit (worker.ErrMessageTooLarge)
	OutcomeOther           Outcome = "other"             // anything else
)

// outcomes is the set, in the order Stats and the metrics list it.
var outcomes = [...]Outcome{
	OutcomeSuccess, OutcomeToolError, OutcomeInvalidArgs, OutcomeToolTimeout, OutcomeDeadline,
	OutcomeCancelled, OutcomeCrashed, OutcomeWorkerTimeout, OutcomeQueueTimeout, OutcomeSaturated,
	OutcomeNotReady, OutcomeStopping, OutcomeAffinity, OutcomeMessageTooLarge, OutcomeOther,
}

// Outcomes lists every outcome, success first, other last.
func Outcomes() []Outcome { return append([]Outcome(nil), outcomes[:]...) }

// OutcomeOf says how a call that returned err ended: the one mapping from
// errors to outcomes, used by Stats, the metrics and the root package.
//
// The order matters because errors wrap one another: a *WorkerTimeoutError
// and a *ToolTimeoutError wrap the context error that set them off, and a
// call refused because its context was already done is an
// *InvalidCallError wrapping that context error; the most specific cause
// wins.
func OutcomeOf(err error) Outcome {
	if err == nil {
		return OutcomeSuccess
	}
	return outcomeOfErr(err)
}

// outcomeOfErr is OutcomeOf for a non-nil error. Apart, because errors.As
// moves tt to the heap: every successful call recorded in the stats paid
// that allocation.
func outcomeOfErr(err error) Outcome {
	var tt *ToolTimeoutError
	switch {
	case errors.Is(err, worker.ErrWorkerTimeout):
		// Before the timeouts: the worker was killed as hung, whichever
		// deadline set the watchdog off; that is what needs attention.
		return OutcomeWorkerTimeout
	case errors.As(err, &tt):
		// Before deadline: it matches context.DeadlineExceeded too.
		return OutcomeToolTimeout
	case errors.Is(err, worker.ErrToolFailed):
		return OutcomeToolError
	case errors.Is(err, worker.ErrMessageTooLarge):
		return OutcomeMessageTooLarge
	case errors.Is(err, worker.ErrInvalidArgs), errors.Is(err, worker.ErrUnknownTool), errors.Is(err, ErrInvalidOptions),
		errors.Is(err, ErrInvalidCall) && !isContextErr(err):
		return OutcomeInvalidArgs
	case errors.Is(err, ErrPoolSaturated):
		return OutcomeSaturated
	case errors.Is(err, ErrQueueTimeout):
		return OutcomeQueueTimeout
	case errors.Is(err, ErrPoolStopping):
		return OutcomeStopping
	case errors.Is(err, ErrSessionWorkerBusy), errors.Is(err, ErrSessionWorkerUnavailable):
		return OutcomeAffinity
	case errors.Is(err, ErrNotReady):
		return OutcomeNotReady
	case errors.Is(err, worker.ErrWorkerCrashed):
		return OutcomeCrashed
	case errors.Is(err, context.DeadlineExceeded):
		return OutcomeDeadline
	case errors.Is(err, context.Canceled):
		return OutcomeCancelled
	default:
		return OutcomeOther
	}
}

func isContextErr(err error) bool {
	return errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)
}

// Why worker lifetimes ended with an error: the keys of Stats.RestartReasons
// and the reason label of snakepit_worker_restarts_by_reason_total. The set
// is fixed so that a label never carries an error's text; that text is in
// Stats.RestartDetail.
const (
	RestartCrashed   = "crashed"    // the process exited or was killed by a signal on its own
	RestartHung      = "hung"       // killed because a call outlived its deadline and the worker did not answer
	RestartHealth    = "health"     // killed after failed health checks
	RestartStartup   = "startup"    // the process failed to start (*worker.StartupError)
	RestartKilled    = "killed"     // ended by the host for another reason (Worker.Kill)
	RestartAgentLost = "agent_lost" // a remote worker lost its agent (unreachable, gone, draining)
	RestartOther     = "other"
)

// RestartReasons lists the restart reasons.
func RestartReasons() []string {
	return []string{RestartCrashed, RestartHung, RestartHealth, RestartStartup, RestartKilled, RestartAgentLost, RestartOther}
}

// restartReason classifies why a lifetime ended. A *worker.CrashError's
// Reason is the free text its producer gave Kill (the pool's and
// grpcworker's hung watchdogs, grpcworker's health checks) or the remote
// worker's lifetime end ("agent <address>: ..."); no typed cause exists for
// these yet, so their stable phrases are matched here, and only here.
func restartReason(err error) string {
	var se *worker.StartupError
	if errors.As(err, &se) {
		return RestartStartup
	}
	var ce *worker.CrashError
	if !errors.As(err, &ce) {
		return RestartOther
	}
	r := ce.Reason
	switch {
	case r == "":
		return RestartCrashed
	case strings.Contains(r, "considered hung"):
		return RestartHung
	case strings.Contains(r, "health check"):
		return RestartHealth
	case strings.HasPrefix(r, "agent "):
		return RestartAgentLost
	default:
		return RestartKilled
	}
}

// recycleReason keeps a recycle reason one of worker.RecycleReasons, else
// worker.RecycleOther: App.Reload and custom workers may give any text.
func recycleReason(r string) string {
	for _, k := range worker.RecycleReasons() {
		if r == k {
			return r
		}
	}
	return worker.RecycleOther
}
