package remote_test

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/snakepit-go/snakepit"
	"github.com/snakepit-go/snakepit/discovery"
	"github.com/snakepit-go/snakepit/internal/testutil"
)

// rolloutRounds is how many graceful agent stops TestAgentRolloutUnderLoad
// makes: SNAKEPIT_ROLLOUT_ROUNDS (make agent-rollout: 20), else 2 (make test).
func rolloutRounds(t *testing.T) int {
	if v := os.Getenv("SNAKEPIT_ROLLOUT_ROUNDS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			t.Fatalf("SNAKEPIT_ROLLOUT_ROUNDS=%q: want a positive count", v)
		}
		return n
	}
	return 2
}

// A rollout of agents at static addresses under non-idempotent load: one
// agent at a time gets SIGTERM (its graceful stop: NOT_SERVING, GOAWAY,
// in-flight calls finish) and a new agent starts at the same address. No
// call may fail: a call the stopping agent never ran is retried elsewhere
// whatever its idempotency, and a call it did run finishes. The restarted
// agent, started after its address was dead for 2 s, must take calls within
// 2 s of its ready line (a static address is redialed, not given up).
func TestAgentRolloutUnderLoad(t *testing.T) {
	const (
		workers   = 1
		callers   = 16
		rejoinMax = 2 * time.Second
		// downtime is how long each address stays dead between the old
		// agent's exit and the new one's start (a pod restart's delay):
		// longer than a host's StartupFailures quick failed dials, which
		// used to give the address up for RetryGivenUpAfter (30 s). Not a
		// synchronisation: the scenario's gap.
		downtime = 2 * time.Second
	)
	rounds := rolloutRounds(t)
	tokenFile := writeToken(t)
	ips := []string{"127.0.0.1", "127.0.0.2", "127.0.0.3"}
	port := commonPort(t, ips...)
	agents := make([]*agentProc, len(ips))
	var static discovery.Static
	for i, ip := range ips {
		agents[i] = startAgent(t, ip, port, tokenFile, workers)
		static = append(static, agents[i].addr)
	}
	app := startHost(t, static, 0, tokenFile)
	testutil.Eventually(t, 15*time.Second, "three remote workers ready", func() bool { return ready(app) == len(ips) })

	// Not one caller marks its calls idempotent.
	l := startLoad(app, callers, func(int) []snakepit.CallOption { return nil })
	defer func() {
		select {
		case <-l.stop:
		default:
			l.finish()
		}
	}()
	testutil.Eventually(t, 15*time.Second, "every agent serving calls", func() bool {
		for _, a := range agents {
			if n, _ := l.served(a.runID); n < 5 {
				return false
			}
		}
		return true
	})

	var rejoins, stops []time.Duration
	for r := range rounds {
		i := r % len(agents)
		old := agents[i]
		stopAt := time.Now()
		if err := old.cmd.Process.Signal(syscall.SIGTERM); err != nil { // the PID we started
			t.Fatal(err)
		}
		select {
		case <-old.exited:
		case <-time.After(30 * time.Second):
			t.Fatalf("round %d: agent %s did not stop within 30 s of SIGTERM", r, old.addr)
		}
		stops = append(stops, time.Since(stopAt))
		if code := old.cmd.ProcessState.ExitCode(); code != 0 {
			t.Errorf("round %d: agent %s exited with %d; stderr:\n%s", r, old.addr, code, old.stderr.String())
		}
		ip := ips[i]
		gap := time.NewTimer(downtime)
		<-gap.C
		agents[i] = startAgent(t, ip, port, tokenFile, workers)
		if agents[i].addr != old.addr {
			t.Fatalf("round %d: the new agent listens on %s, not %s", r, agents[i].addr, old.addr)
		}
		testutil.Eventually(t, 15*time.Second, fmt.Sprintf("round %d: the restarted agent on %s taking calls", r, ip), func() bool {
			n, _ := l.served(agents[i].runID)
			return n > 0
		})
		_, first := l.served(agents[i].runID)
		rejoins = append(rejoins, first.Sub(agents[i].readyT))
	}
	l.finish()

	total, ok, crashed := l.total.Load(), l.ok.Load(), l.crashed.Load()
	l.mu.Lock()
	other := l.other
	l.mu.Unlock()
	slices.Sort(rejoins)
	slices.Sort(stops)
	s := app.Stats().Pool
	msg := fmt.Sprintf("%d graceful agent stops (3 agents, static addresses, each dead %s before its restart, %d non-idempotent callers): calls=%d ok=%d crashed=%d other=%d retries=%d | agent stop (SIGTERM to exit) %s–%s | restarted agent's first call after its ready line: median %s, max %s",
		rounds, downtime, callers, total, ok, crashed, len(other), s.Retries,
		stops[0].Round(time.Millisecond), stops[len(stops)-1].Round(time.Millisecond),
		rejoins[len(rejoins)/2].Round(time.Millisecond), rejoins[len(rejoins)-1].Round(time.Millisecond))
	t.Log(msg)
	fmt.Println("ROLLOUT:", msg)
	if crashed != 0 {
		t.Errorf("%d non-idempotent calls failed with ErrWorkerCrashed during graceful agent stops; want 0", crashed)
	}
	for i, err := range other {
		if i < 5 {
			t.Errorf("call failed: %v", err)
		}
	}
	if lost := total - ok - crashed - int64(len(other)); lost != 0 {
		t.Errorf("%d calls lost (neither answered nor failed)", lost)
	}
	if worst := rejoins[len(rejoins)-1]; worst > rejoinMax {
		t.Errorf("a restarted agent took its first call %s after its ready line; want within %s", worst, rejoinMax)
	}

	stopCtx, stopCancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer stopCancel()
	if _, err := app.Stop(stopCtx); err != nil {
		t.Errorf("host Stop: %v", err)
	}
	for _, a := range agents {
		_ = a.cmd.Process.Signal(syscall.SIGTERM)
	}
	for _, a := range agents {
		select {
		case <-a.exited:
		case <-time.After(20 * time.Second):
			t.Errorf("agent %s did not stop within 20 s of SIGTERM", a.addr)
		}
	}
	if left := testutil.RunIDProcesses(t, app.RunID()); len(left) > 0 {
		t.Errorf("host run: %d processes alive after everything stopped: %+v", len(left), left)
	}
}
