package lifecycle

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// A user's module outside this repository (testdata/usermodule, with a
// replace pointing here, built offline from the module cache) writes its own
// worker type on childproc and runs the conformance kit against it and
// against its own Python adapter with plain `go test`.
func TestConformanceKitRunsFromAUsersOwnModule(t *testing.T) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go command on PATH")
	}
	_, file, _, _ := runtime.Caller(0)
	src := filepath.Join(filepath.Dir(file), "testdata", "usermodule")
	repo := filepath.Join(filepath.Dir(file), "..", "..")
	dir := t.TempDir()
	copyFile := func(from, to string, edit func(string) string) {
		b, err := os.ReadFile(from)
		if err != nil {
			t.Fatal(err)
		}
		s := string(b)
		if edit != nil {
			s = edit(s)
		}
		must(t, os.MkdirAll(filepath.Dir(to), 0o755))
		must(t, os.WriteFile(to, []byte(s), 0o644))
	}
	abs, _ := filepath.Abs(repo)
	// The user's go.mod requires what snakepit requires (as `go get` would
	// have written it), so the build needs nothing beyond the module cache.
	repoMod, err := os.ReadFile(filepath.Join(repo, "go.mod"))
	must(t, err)
	requires := string(repoMod)[strings.Index(string(repoMod), "require"):]
	copyFile(filepath.Join(src, "go.mod.txt"), filepath.Join(dir, "go.mod"), func(s string) string {
		return strings.ReplaceAll(s, "REPO", abs) + "\n" + requires
	})
	copyFile(filepath.Join(repo, "go.sum"), filepath.Join(dir, "go.sum"), nil)
	copyFile(filepath.Join(src, "sleeper.go.txt"), filepath.Join(dir, "sleeper.go"), nil)
	copyFile(filepath.Join(src, "conformance_test.go.txt"), filepath.Join(dir, "conformance_test.go"), nil)
	copyFile(filepath.Join(src, "python", "useradapter.py"), filepath.Join(dir, "python", "useradapter.py"), nil)

	cmd := exec.Command(goBin, "test", "-count=1", "-v", "./...")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GOPROXY=off", "GOFLAGS=-mod=mod")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("go test in the user's module: %v\n%s", err, out)
	}
	for _, want := range []string{"--- PASS: TestMyWorkerTypeConforms", "--- PASS: TestMyPythonAdapterConforms", "--- PASS: TestMyPythonAdapterConforms/HostKillLeavesNothing"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("the user's go test output lacks %q:\n%s", want, out)
		}
	}
}
