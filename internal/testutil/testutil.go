// Package testutil holds what snakepit's suites share: a TestMain that fails
// the suite if any process it started is still alive at its end, polling
// with deadlines, and App construction with isolated registries.
//
// Every process a suite starts inherits SNAKEPIT_TEST_SUITE=<suite id> from
// the test binary's environment, so the end-of-suite check can find
// survivors (and only ours) by reading /proc/PID/environ.
package testutil

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/snakepit-go/snakepit/internal/cgroup"
	"github.com/snakepit-go/snakepit/internal/proc"
	"github.com/snakepit-go/snakepit/internal/proc/proctest"
	"github.com/snakepit-go/snakepit/internal/spawn"
)

// SuiteEnv is the variable that marks every process of a test suite.
const SuiteEnv = "SNAKEPIT_TEST_SUITE"

// Main runs the suite with a fresh suite id and state directory, then fails
// it if any process carrying the suite id survived or goroutines leaked.
func Main(m *testing.M) {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	suite := "suite-" + hex.EncodeToString(b)
	_ = os.Setenv(SuiteEnv, suite)
	dir, err := os.MkdirTemp("", "snakepit-test-state-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	_ = os.Setenv("SNAKEPIT_STATE_DIR", dir)
	code := m.Run()
	// Processes stop asynchronously after their group is signalled; give
	// them a bounded moment before calling them survivors.
	var left []int
	deadline := time.Now().Add(3 * time.Second)
	for {
		left = SuiteProcesses(suite)
		if len(left) == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if len(left) > 0 {
		fmt.Fprintf(os.Stderr, "FAIL: %d processes of test suite %s are still alive after the suite:\n", len(left), suite)
		for _, pid := range left {
			cmd, _ := proc.Cmdline(pid)
			fmt.Fprintf(os.Stderr, "  pid %d: %s\n", pid, strings.Join(cmd, " "))
			// They carry our suite id, so they are provably ours.
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		code = 1
	}
	if code == 0 {
		// The spawner goroutine lives as long as the program by design.
		if err := goleak.Find(goleak.IgnoreTopFunction(spawn.LoopFunction), proctest.SutureRemoveNotice); err != nil {
			fmt.Fprintf(os.Stderr, "FAIL: goroutines leaked by the suite: %v\n", err)
			code = 1
		}
	}
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

// SuiteProcesses lists live processes carrying the suite id in their
// environment (the test binary itself excluded).
func SuiteProcesses(suite string) []int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	want := SuiteEnv + "=" + suite
	self := os.Getpid()
	var out []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self || !proc.Alive(pid) {
			continue
		}
		env, err := proc.Environ(pid)
		if err != nil {
			continue
		}
		for _, kv := range env {
			if kv == want {
				out = append(out, pid)
				break
			}
		}
	}
	return out
}

// Eventually polls cond every 20 ms until it holds or timeout passes, then
// fails the test with msg.
func Eventually(t testing.TB, timeout time.Duration, msg string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %s: %s", timeout, msg)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Logger returns a logger for tests: errors only unless SNAKEPIT_TEST_LOG
// names a level (debug, info, warn). It writes to stderr rather than t.Log
// because worker output may arrive after a test has finished.
func Logger() *slog.Logger {
	lvl := slog.LevelError
	if v := os.Getenv("SNAKEPIT_TEST_LOG"); v != "" {
		_ = lvl.UnmarshalText([]byte(v))
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lvl}))
}

// RunIDProcesses lists live processes carrying runID (argv or environ).
func RunIDProcesses(t testing.TB, runID string) []proc.Process {
	t.Helper()
	ps, err := proc.FindByRunID(runID)
	if err != nil {
		t.Fatalf("scan /proc: %v", err)
	}
	return ps
}

// Buffer is a bytes.Buffer that log handlers and child-process readers may
// write to while a test reads it.
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *Buffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *Buffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// KillRunSurvivors SIGKILLs whatever still carries runID — provably ours:
// the run id is fresh and was made by the test, and SignalVerified checks it
// again through a pidfd at the moment of signalling — and reports each as a
// failure: the guarantees say there is nothing left.
func KillRunSurvivors(t testing.TB, runID string) {
	t.Helper()
	ps, err := proc.FindByRunID(runID)
	if err != nil {
		t.Errorf("scan /proc: %v", err)
		return
	}
	boot, _ := proc.BootID()
	for _, p := range ps {
		t.Errorf("process of run %s alive at the end of the test, killing it: pid %d: %s", runID, p.PID, p.Cmdline)
		_ = proc.SignalVerified(p.Identity(boot), syscall.SIGKILL)
	}
}

// EndRunCgroups ends and removes what a dead test host's run left in
// cgroup v2 — directories named snakepit-<runID> (never anything else).
// A host killed by a test leaves them for the next reap on its registry;
// a test that does not reap that file calls this instead, so nothing is
// left on the machine.
func EndRunCgroups(t testing.TB, runID string) {
	if runID == "" {
		return
	}
	for _, dir := range cgroup.RunDirs(cgroup.Detect(), runID, "") {
		if _, err := cgroup.EndDir(dir, runID, 5*time.Second); err != nil {
			t.Errorf("remove the dead host's cgroup: %v", err)
		}
	}
}
