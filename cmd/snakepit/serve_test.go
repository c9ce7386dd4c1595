package main

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/snakepit-go/snakepit/internal/testutil"
)

func TestServeRefusesNonLoopbackAndMissingToken(t *testing.T) {
	tok := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tok, []byte("serve-test-token-0123456789"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, stderr, code := runCmd(t, "serve", "--listen", "0.0.0.0:0", "--token-file", tok, "--registry", filepath.Join(t.TempDir(), "r.db"))
	if code != 2 || !strings.Contains(stderr, "--allow-non-loopback") {
		t.Errorf("serve on 0.0.0.0: exit %d, stderr %q; want 2 naming --allow-non-loopback", code, stderr)
	}
	cmd := exec.Command(binary, "serve", "--listen", "127.0.0.1:0", "--registry", filepath.Join(t.TempDir(), "r.db"))
	cmd.Env = append(os.Environ(), "SNAKEPIT_AGENT_TOKEN=")
	out, _ := cmd.CombinedOutput()
	if cmd.ProcessState.ExitCode() != 2 || !strings.Contains(string(out), "SNAKEPIT_AGENT_TOKEN") {
		t.Errorf("serve without a token: exit %d, output %q; want 2 naming SNAKEPIT_AGENT_TOKEN", cmd.ProcessState.ExitCode(), out)
	}
}

// snakepit serve on loopback, snakepit exec --agents against it: the call
// runs in the agent's Python; SIGTERM stops the agent cleanly.
func TestServeAndExecThroughAgents(t *testing.T) {
	tok := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tok, []byte("serve-test-token-0123456789\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	serve := exec.Command(binary, "serve", "--workers", "1", "--listen", "127.0.0.1:0", "--token-file", tok, "--registry", filepath.Join(t.TempDir(), "agent.db"))
	var stderr testutil.Buffer
	serve.Stderr = &stderr
	out, err := serve.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	startKilledAtCleanup(t, serve)
	lines := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	var m []string
	select {
	case line := <-lines:
		m = regexp.MustCompile(`^ready run_id=(\S+) workers=1 addr=(\S+) capacity=[1-9][0-9]*$`).FindStringSubmatch(line)
		if m == nil {
			t.Fatalf("ready line %q", line)
		}
	case <-time.After(60 * time.Second):
		t.Fatalf("no ready line; stderr:\n%s", stderr.String())
	}
	runID, addr := m[1], m[2]
	res, errOut, code := runCmd(t, "exec", "--agents", addr, "--agent-token-file", tok, "--registry", filepath.Join(t.TempDir(), "host.db"), "worker_info", "{}")
	if code != 0 || !strings.Contains(res, runID) {
		t.Fatalf("exec --agents: exit %d, stdout %q, stderr %q; want the agent's run id %s", code, res, errOut, runID)
	}
	checkDoctorAgent(t, addr, tok)
	if err := serve.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := serve.Wait(); err != nil {
		t.Fatalf("serve after SIGTERM: %v; stderr:\n%s", err, stderr.String())
	}
	if left := testutil.RunIDProcesses(t, runID); len(left) > 0 {
		t.Fatalf("agent's processes alive after its stop: %+v", left)
	}
}
