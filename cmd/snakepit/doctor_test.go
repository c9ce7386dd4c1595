package main

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/snakepit-go/snakepit/internal/doctor"
	"github.com/snakepit-go/snakepit/registry"
)

// runDoctor runs `snakepit doctor --json args...` with env added to (and
// overriding) the test's environment; prefix, when set, runs it through
// that command (e.g. a shell that lowers a limit first).
func runDoctor(t *testing.T, env []string, prefix []string, args ...string) (doctor.Report, int, string) {
	t.Helper()
	argv := append(append(append([]string{}, prefix...), binary, "doctor", "--json"), args...)
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	var rep doctor.Report
	if err := json.Unmarshal(stdout.Bytes(), &rep); err != nil {
		t.Fatalf("doctor --json printed no report (%v); exit %d\nstdout:\n%s\nstderr:\n%s", err, code, stdout.String(), stderr.String())
	}
	return rep, code, stdout.String()
}

func check(t *testing.T, rep doctor.Report, name string) doctor.Check {
	t.Helper()
	for _, c := range rep.Checks {
		if c.Name == name {
			return c
		}
	}
	t.Fatalf("no %q check in %+v", name, rep.Checks)
	return doctor.Check{}
}

func testPython() string {
	if p := os.Getenv("SNAKEPIT_PYTHON"); p != "" {
		return p
	}
	return "/usr/bin/python3"
}

func TestDoctorHealthy(t *testing.T) {
	reg := filepath.Join(t.TempDir(), "r.db")
	env := []string{"SNAKEPIT_PYTHON=" + testPython(), "PYTHONDONTWRITEBYTECODE="}
	rep, code, out := runDoctor(t, env, nil, "--registry", reg, "--workers", "2")
	if code != 0 || !rep.OK {
		t.Fatalf("doctor on a healthy set-up: exit %d\n%s", code, out)
	}
	for _, name := range []string{"python", "grpcio/protobuf", "snakepit_bridge", "adapter", "registry", "leftovers", "/proc", "parent-death signal", "bytecode cache"} {
		if c := check(t, rep, name); c.Status != doctor.Pass {
			t.Errorf("%s: %s (%s), want pass", name, c.Status, c.Detail)
		}
	}
	if c := check(t, rep, "python"); !strings.Contains(c.Detail, "$SNAKEPIT_PYTHON") {
		t.Errorf("python check does not say why the interpreter was chosen: %s", c.Detail)
	}
	if c := check(t, rep, "grpcio/protobuf"); !strings.Contains(c.Detail, "grpcio ") || !strings.Contains(c.Detail, "protobuf ") {
		t.Errorf("versions missing: %s", c.Detail)
	}
	// Text output: one line per check and the verdict, exit 0.
	txt, errOut, code := runCmd(t, "doctor", "--registry", reg, "--python", testPython())
	if code != 0 || !strings.Contains(txt, "PASS  python: ") || !strings.Contains(txt, "every required check passed") {
		t.Fatalf("text report: exit %d\n%s\n%s", code, txt, errOut)
	}
}

func TestDoctorWarnsAboutBytecodeButPasses(t *testing.T) {
	reg := filepath.Join(t.TempDir(), "r.db")
	rep, code, out := runDoctor(t, []string{"PYTHONDONTWRITEBYTECODE=1"}, nil, "--registry", reg, "--python", testPython())
	if c := check(t, rep, "bytecode cache"); c.Status != doctor.Warn || c.Fix == "" {
		t.Errorf("bytecode cache with PYTHONDONTWRITEBYTECODE=1: %+v, want a warning with a fix", c)
	}
	if code != 0 || !rep.OK {
		t.Fatalf("a warning failed the doctor: exit %d\n%s", code, out)
	}
}

func TestDoctorInterpreterWithoutGRPC(t *testing.T) {
	dir := t.TempDir()
	fake := filepath.Join(dir, "python3")
	script := "#!/bin/sh\necho \"ModuleNotFoundError: No module named 'grpc'\" >&2\nexit 1\n"
	if err := os.WriteFile(fake, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	rep, code, out := runDoctor(t, nil, nil, "--registry", filepath.Join(dir, "r.db"), "--python", fake)
	c := check(t, rep, "python")
	if code != 1 || rep.OK || c.Status != doctor.Fail || !strings.Contains(c.Detail, "No module named 'grpc'") || !strings.Contains(c.Fix, "grpcio") {
		t.Fatalf("interpreter without grpc: exit %d, python check %+v\n%s", code, c, out)
	}
}

func TestDoctorAdapterThatDoesNotImport(t *testing.T) {
	reg := filepath.Join(t.TempDir(), "r.db")
	rep, code, out := runDoctor(t, nil, nil, "--registry", reg, "--python", testPython(), "--adapter", "no_such_pkg.mod.Adapter", "--pythonpath", "/nonexistent")
	c := check(t, rep, "adapter")
	if code != 1 || c.Status != doctor.Fail || !strings.Contains(c.Detail, "No module named 'no_such_pkg'") || !strings.Contains(c.Fix, "/nonexistent") {
		t.Fatalf("missing adapter: exit %d, adapter check %+v\n%s", code, c, out)
	}
}

func TestDoctorLockedRegistry(t *testing.T) {
	reg := filepath.Join(t.TempDir(), "r.db")
	// This test holds the bbolt lock, as a running instance would.
	r, err := registry.Open(registry.Options{Path: reg, RunID: registry.NewRunID()})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	rep, code, out := runDoctor(t, nil, nil, "--registry", reg, "--python", testPython())
	c := check(t, rep, "registry")
	if code != 1 || c.Status != doctor.Fail || !strings.Contains(c.Detail, "locked") || !strings.Contains(c.Fix, "--instance") {
		t.Fatalf("locked registry: exit %d, registry check %+v\n%s", code, c, out)
	}
	if !strings.Contains(c.Detail, "pid "+strconv.Itoa(os.Getpid())) {
		t.Errorf("the locked check does not name the holder (this test, pid %d): %s", os.Getpid(), c.Detail)
	}
}

func TestDoctorLeftoverProcess(t *testing.T) {
	reg := filepath.Join(t.TempDir(), "r.db")
	runID := registry.NewRunID()
	r, err := registry.Open(registry.Options{Path: reg, RunID: runID})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Reserve("w1"); err != nil {
		t.Fatal(err)
	}
	// A process of that run, ours: started here, waited for at cleanup.
	sleeper := exec.Command("sleep", "300")
	sleeper.Env = append(os.Environ(), "SNAKEPIT_RUN_ID="+runID)
	if err := sleeper.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = sleeper.Process.Kill()
		_ = sleeper.Wait()
	})
	if err := r.Activate("w1", sleeper.Process.Pid); err != nil {
		t.Fatal(err)
	}
	// Closing with a record left keeps the run: the file now looks like a
	// host that died with a live worker.
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	rep, code, out := runDoctor(t, nil, nil, "--registry", reg, "--python", testPython())
	c := check(t, rep, "leftovers")
	if code != 1 || c.Status != doctor.Fail || !strings.Contains(c.Detail, "pid "+strconv.Itoa(sleeper.Process.Pid)) || !strings.Contains(c.Fix, "snakepit reap --registry "+reg) {
		t.Fatalf("leftover process: exit %d, leftovers check %+v\n%s", code, c, out)
	}
	if c := check(t, rep, "registry"); c.Status != doctor.Pass {
		t.Errorf("registry check with only a dead run in it: %+v", c)
	}
	// Once the process is gone only the records are left: a warning.
	_ = sleeper.Process.Kill()
	_ = sleeper.Wait()
	rep, code, out = runDoctor(t, nil, nil, "--registry", reg, "--python", testPython())
	if c := check(t, rep, "leftovers"); code != 0 || c.Status != doctor.Warn {
		t.Fatalf("dead run without processes: exit %d, leftovers %+v\n%s", code, c, out)
	}
}

func TestDoctorLowOpenFileLimit(t *testing.T) {
	reg := filepath.Join(t.TempDir(), "r.db")
	// ulimit -n in sh lowers the soft and the hard limit, so the Go
	// runtime's own raise to the hard limit cannot undo it.
	lower := []string{"/bin/sh", "-c", `ulimit -n 100 && exec "$0" "$@"`}
	rep, code, out := runDoctor(t, nil, lower, "--registry", reg, "--python", testPython(), "--workers", "8")
	c := check(t, rep, "ulimit -n")
	need := strconv.FormatUint(doctor.NeededNoFile(8), 10)
	if code != 1 || c.Status != doctor.Fail || !strings.Contains(c.Detail, "need "+need) || !strings.Contains(c.Fix, need) {
		t.Fatalf("ulimit -n 100 with 8 workers: exit %d, check %+v\n%s", code, c, out)
	}
	// The same limit is enough for one worker.
	rep, _, out = runDoctor(t, nil, lower, "--registry", reg, "--python", testPython(), "--workers", "1")
	if c := check(t, rep, "ulimit -n"); c.Status != doctor.Pass {
		t.Fatalf("ulimit -n 100 with 1 worker: %+v\n%s", c, out)
	}
}

// checkDoctorAgent runs the doctor against a live agent at addr: reachable
// with the token in tok, refused with another, unreachable on a closed port.
func checkDoctorAgent(t *testing.T, addr, tok string) {
	t.Helper()
	reg := filepath.Join(t.TempDir(), "r.db")
	rep, code, out := runDoctor(t, nil, nil, "--registry", reg, "--python", testPython(), "--agents", addr, "--agent-token-file", tok)
	if c := check(t, rep, "agent "+addr); code != 0 || c.Status != doctor.Pass || !strings.Contains(c.Detail, "reachable with the token") {
		t.Fatalf("doctor --agents with the right token: exit %d, %+v\n%s", code, c, out)
	}
	wrong := filepath.Join(t.TempDir(), "wrong")
	if err := os.WriteFile(wrong, []byte("not-the-agents-token-0123456789"), 0o600); err != nil {
		t.Fatal(err)
	}
	rep, code, out = runDoctor(t, nil, nil, "--registry", reg, "--python", testPython(), "--agents", addr, "--agent-token-file", wrong)
	if c := check(t, rep, "agent "+addr); code != 1 || c.Status != doctor.Fail || !strings.Contains(c.Detail, "rejected the token") {
		t.Fatalf("doctor --agents with a wrong token: exit %d, %+v\n%s", code, c, out)
	}
	if strings.Contains(out, "not-the-agents-token") || strings.Contains(out, "serve-test-token") {
		t.Fatalf("the doctor's report shows a token:\n%s", out)
	}
}
