package pool

import (
	"context"
	"errors"
	"fmt"
	"syscall"
	"testing"
	"time"

	"github.com/snakepit-go/snakepit/worker"
)

// TestOutcomeOfPrefersTheMostSpecificCause covers the errors that wrap
// others: the order of OutcomeOf's cases decides them.
func TestOutcomeOfPrefersTheMostSpecificCause(t *testing.T) {
	tt := &ToolTimeoutError{Tool: "t", Timeout: time.Second, Err: context.DeadlineExceeded}
	for _, c := range []struct {
		err  error
		want Outcome
	}{
		{nil, OutcomeSuccess},
		{tt, OutcomeToolTimeout},
		{&WorkerTimeoutError{Err: tt}, OutcomeWorkerTimeout},
		{&WorkerTimeoutError{Err: context.DeadlineExceeded}, OutcomeWorkerTimeout},
		{fmt.Errorf("wrapped: %w", context.DeadlineExceeded), OutcomeDeadline},
		{context.Canceled, OutcomeCancelled},
		{&InvalidCallError{Reason: "context already done", Err: context.Canceled}, OutcomeCancelled},
		{&InvalidCallError{Reason: "tool name is empty"}, OutcomeInvalidArgs},
		{&InvalidCallError{Reason: "args", Err: worker.ErrInvalidArgs}, OutcomeInvalidArgs},
		{&worker.ArgsError{Tool: "t", Reason: "array"}, OutcomeInvalidArgs},
		{&worker.UnknownToolError{Tool: "t"}, OutcomeInvalidArgs},
		{&OptionsError{Field: "f"}, OutcomeInvalidArgs},
		{fmt.Errorf("%w: big", worker.ErrMessageTooLarge), OutcomeMessageTooLarge},
		{&NotReadyError{}, OutcomeNotReady},
		{ErrSessionWorkerUnavailable, OutcomeAffinity},
		{&worker.CrashError{}, OutcomeCrashed},
		{errors.New("x"), OutcomeOther},
	} {
		if got := OutcomeOf(c.err); got != c.want {
			t.Errorf("OutcomeOf(%v) = %s, want %s", c.err, got, c.want)
		}
	}
}

// TestRestartReasonsAreBounded feeds restartReason the texts the producers
// give (pool's and grpcworker's hung watchdogs, grpcworker's health checks,
// the remote worker's lifetime ends).
func TestRestartReasonsAreBounded(t *testing.T) {
	crash := func(reason string) error {
		return &worker.CrashError{WorkerID: "w", ExitCode: -1, Signal: syscall.SIGKILL, Reason: reason}
	}
	for _, c := range []struct {
		err  error
		want string
	}{
		{&worker.CrashError{WorkerID: "w", ExitCode: 1}, RestartCrashed},
		{&worker.CrashError{WorkerID: "w", ExitCode: -1, Signal: syscall.SIGSEGV}, RestartCrashed},
		{crash("call t exceeded its deadline by 5s; worker considered hung"), RestartHung},
		{crash(`call "t" ran out of time and the worker did not answer a ping within 5s; considered hung`), RestartHung},
		{crash("health check failed 3 times in a row"), RestartHealth},
		{crash("health check failed 3 times in a row while draining"), RestartHealth},
		{crash("agent 127.0.0.1:7070: 3 health checks failed in a row, last: unavailable"), RestartHealth},
		{crash(`agent 127.0.0.1:7070: call "t" ran out of time and the agent did not answer a health check within 5s; considered hung`), RestartHung},
		{crash("agent 127.0.0.1:7070: connection lost under a call: error reading from server: EOF"), RestartAgentLost},
		{crash("agent 127.0.0.1:7070: the agent is gone or draining: x"), RestartAgentLost},
		{crash("operator asked"), RestartKilled},
		{&worker.StartupError{}, RestartStartup},
		{fmt.Errorf("wrapped: %w", &worker.StartupError{}), RestartStartup},
		{errors.New("x"), RestartOther},
	} {
		if got := restartReason(c.err); got != c.want {
			t.Errorf("restartReason(%v) = %s, want %s", c.err, got, c.want)
		}
	}
	for _, r := range []string{worker.RecycleRequests, worker.RecycleAge, worker.RecycleMemory, worker.RecycleReload, worker.RecycleAbandoned} {
		if got := recycleReason(r); got != r {
			t.Errorf("recycleReason(%q) = %q", r, got)
		}
	}
	if got := recycleReason("served 1000 requests"); got != worker.RecycleOther {
		t.Errorf("free text recycle reason kept as %q", got)
	}
}

// TestRefusedKeepsTheSetFixed: an outcome outside the set counts as other.
func TestRefusedKeepsTheSetFixed(t *testing.T) {
	p, err := New(Options{})
	if err != nil {
		t.Fatal(err)
	}
	p.Refused(OutcomeInvalidArgs)
	p.Refused(Outcome("made up"))
	s := p.Stats()
	if s.Requests != 2 || s.Outcomes[OutcomeInvalidArgs] != 1 || s.Outcomes[OutcomeOther] != 1 || len(s.Outcomes) != len(Outcomes()) {
		t.Fatalf("requests %d, outcomes %v", s.Requests, s.Outcomes)
	}
}
