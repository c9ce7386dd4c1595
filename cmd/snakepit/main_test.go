package main

import (
	"bufio"
	"bytes"
	"fmt"
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

var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "snakepit-cmd-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	binary = filepath.Join(dir, "snakepit")
	if out, err := exec.Command("go", "build", "-o", binary, ".").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "go build: %v\n%s", err, out)
		os.Exit(2)
	}
	defer os.RemoveAll(dir)
	testutil.Main(m)
}

func TestRunPrintsReadyAndStopsCleanlyOnSIGTERM(t *testing.T) {
	reg := filepath.Join(t.TempDir(), "r.db")
	cmd := exec.Command(binary, "run", "--workers", "2", "--registry", reg)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	startKilledAtCleanup(t, cmd)
	lines := make(chan string, 4)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	var line string
	select {
	case line = <-lines:
	case <-time.After(60 * time.Second):
		t.Fatalf("no ready line; stderr:\n%s", stderr.String())
	}
	m := regexp.MustCompile(`^ready run_id=([a-z0-9-]+) workers=2$`).FindStringSubmatch(line)
	if m == nil {
		t.Fatalf("ready line = %q", line)
	}
	runID := m[1]
	if n := len(testutil.RunIDProcesses(t, runID)); n != 2 {
		t.Fatalf("%d processes carry run id %s, want 2 workers", n, runID)
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("snakepit run exited with %v after SIGTERM; stderr:\n%s", err, stderr.String())
	}
	if left := testutil.RunIDProcesses(t, runID); len(left) > 0 {
		t.Fatalf("processes of run %s left after a clean stop: %+v", runID, left)
	}
	for l := range lines {
		t.Errorf("unexpected extra stdout line %q", l)
	}
}

// startKilledAtCleanup starts cmd; if the test ends with it still running
// (a failure path), it is killed and reaped so no host outlives the test.
func startKilledAtCleanup(t *testing.T, cmd *exec.Cmd) {
	t.Helper()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	})
}

func runCmd(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(binary, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return stdout.String(), stderr.String(), code
}

func TestExec(t *testing.T) {
	reg := filepath.Join(t.TempDir(), "r.db")
	out, errOut, code := runCmd(t, "exec", "--registry", reg, "add", `{"a": 20, "b": 22}`)
	if code != 0 || strings.TrimSpace(out) != "42" {
		t.Fatalf("exec add: code %d, stdout %q, stderr %s", code, out, errOut)
	}
	out, errOut, code = runCmd(t, "exec", "--registry", reg, "fail", `{"message": "nope"}`)
	if code != 1 || out != "" || !strings.Contains(errOut, "ValueError") || !strings.Contains(errOut, "Traceback") {
		t.Fatalf("exec fail: code %d, stdout %q, stderr %s", code, out, errOut)
	}
	_, errOut, code = runCmd(t, "exec", "--registry", reg, "echo", `{"a": `)
	if code != 1 || !strings.Contains(errOut, "not valid JSON") {
		t.Fatalf("exec with broken JSON: code %d, stderr %s", code, errOut)
	}
	_, errOut, code = runCmd(t, "exec")
	if code != 2 || !strings.Contains(errOut, "usage") {
		t.Fatalf("exec without a tool: code %d, stderr %s", code, errOut)
	}
}

func TestReapOnARegistryWithoutLiveInstance(t *testing.T) {
	reg := filepath.Join(t.TempDir(), "r.db")
	out, errOut, code := runCmd(t, "reap", "--registry", reg)
	if code != 0 || !strings.Contains(out, "reaped=0") {
		t.Fatalf("reap: code %d, stdout %q, stderr %s", code, out, errOut)
	}
}

func TestUnknownCommand(t *testing.T) {
	_, errOut, code := runCmd(t, "frobnicate")
	if code != 2 || !strings.Contains(errOut, "unknown command") {
		t.Fatalf("code %d, stderr %s", code, errOut)
	}
}
