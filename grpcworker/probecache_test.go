package grpcworker

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/snakepit-go/snakepit/worker"
)

// countingPython is an interpreter wrapper that counts its runs: the
// interpreter check of a remembered pass must not run it.
type countingPython struct {
	path, count string
}

func newCountingPython(t *testing.T, real, extra string) *countingPython {
	t.Helper()
	dir := t.TempDir()
	c := &countingPython{path: filepath.Join(dir, "python"), count: filepath.Join(dir, "runs")}
	script := "#!/bin/sh\necho run >> '" + c.count + "'\n" + extra + "exec '" + real + "' \"$@\"\n"
	if err := os.WriteFile(c.path, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return c
}

func (c *countingPython) runs(t *testing.T) int {
	t.Helper()
	b, err := os.ReadFile(c.count)
	if errors.Is(err, os.ErrNotExist) {
		return 0
	}
	if err != nil {
		t.Fatal(err)
	}
	return strings.Count(string(b), "run\n")
}

// probeFresh is probe as a new host process sees it: nothing in memory.
func probeFresh(path string) string {
	probeMemo.Clear()
	return probe(path)
}

// isolateProbeCache points the user cache directory at a temporary one, so
// no test reads or writes the real cache, and finds the real interpreter
// (skipping without one); it returns the cache's directory, empty, with
// nothing in memory.
func isolateProbeCache(t *testing.T) (dir, real string) {
	t.Helper()
	home := t.TempDir()
	t.Setenv("XDG_CACHE_HOME", home)
	t.Cleanup(probeMemo.Clear)
	// countingPython is a script; these tests remember its passes.
	rememberScripts = true
	t.Cleanup(func() { rememberScripts = false })
	real, err := FindPython("")
	if err != nil {
		t.Skip(err)
	}
	dir = filepath.Join(home, "snakepit", "interpreters")
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	probeMemo.Clear()
	return dir, real
}

func cacheFiles(t *testing.T, dir string) []string {
	t.Helper()
	es, err := os.ReadDir(dir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	var out []string
	for _, e := range es {
		out = append(out, e.Name())
	}
	return out
}

func mustPass(t *testing.T, problem string) {
	t.Helper()
	if problem != "" {
		t.Fatalf("a usable interpreter was rejected: %s", problem)
	}
}

// A passed check is remembered in memory and on disk (0700 directory, 0600
// file), so neither a second App nor a restarted host runs the interpreter;
// an upgrade in place, another interpreter path or another environment is
// checked afresh.
func TestProbeRemembersAPassUntilTheInterpreterOrEnvironmentChanges(t *testing.T) {
	dir, real := isolateProbeCache(t)
	py := newCountingPython(t, real, "")
	mustPass(t, probe(py.path))
	mustPass(t, probe(py.path))
	if n := py.runs(t); n != 1 {
		t.Fatalf("the interpreter ran %d times for two checks in one process, want 1", n)
	}
	files := cacheFiles(t, dir)
	if len(files) != 1 {
		t.Fatalf("cache directory holds %v, want one entry", files)
	}
	if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("cache directory mode: %v %v, want 0700", fi.Mode(), err)
	}
	if fi, err := os.Stat(filepath.Join(dir, files[0])); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("cache file mode: %v %v, want 0600", fi.Mode(), err)
	}
	mustPass(t, probeFresh(py.path))
	if n := py.runs(t); n != 1 {
		t.Fatalf("a restarted host ran the interpreter again (%d runs), want the remembered pass", n)
	}

	// The interpreter file changed (an upgrade in place).
	later := time.Now().Add(time.Minute)
	if err := os.Chtimes(py.path, later, later); err != nil {
		t.Fatal(err)
	}
	mustPass(t, probeFresh(py.path))
	if n := py.runs(t); n != 2 {
		t.Fatalf("after the interpreter changed: %d runs, want 2", n)
	}

	// Another interpreter: a copy of the same script elsewhere.
	cp := filepath.Join(t.TempDir(), "python3")
	b, err := os.ReadFile(py.path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cp, b, 0o755); err != nil {
		t.Fatal(err)
	}
	mustPass(t, probeFresh(cp))
	if n := py.runs(t); n != 3 {
		t.Fatalf("a copy of the interpreter at another path: %d runs, want 3", n)
	}

	// An environment variable that moves the user site-packages.
	t.Setenv("PYTHONUSERBASE", t.TempDir())
	mustPass(t, probe(py.path))
	if n := py.runs(t); n != 4 {
		t.Fatalf("after PYTHONUSERBASE changed: %d runs, want 4", n)
	}
	mustPass(t, probeFresh(py.path))
	if n := py.runs(t); n != 4 {
		t.Fatalf("the pass under the new environment was not remembered: %d runs, want 4", n)
	}
}

// A fake grpc package (found on PYTHONPATH ahead of the real one) passes the
// check; once its compiled core is gone the remembered pass must not be
// used, the check fails, and a failure is remembered nowhere: the user's
// fix is seen by the very next check.
func TestProbeForgetsAPassWhenAFileItReliedOnVanishes(t *testing.T) {
	dir, real := isolateProbeCache(t)
	site := t.TempDir()
	core := filepath.Join(site, "grpc", "_cython", "cygrpc.so")
	for _, f := range []string{filepath.Join(site, "grpc", "__init__.py"), core} {
		if err := os.MkdirAll(filepath.Dir(f), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(f, nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	t.Setenv("PYTHONPATH", site)
	py := newCountingPython(t, real, "")
	mustPass(t, probe(py.path))
	mustPass(t, probeFresh(py.path))
	if n := py.runs(t); n != 1 {
		t.Fatalf("%d runs, want 1 (the pass remembered)", n)
	}
	if err := os.Remove(core); err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		if p := probe(py.path); !strings.Contains(p, "no compiled core") {
			t.Fatalf("check %d after the compiled core vanished: %q, want the missing-core problem", i, p)
		}
	}
	if n := py.runs(t); n != 3 {
		t.Fatalf("%d runs, want 3: the vanished file must make the check real, and a failure must not be remembered", n)
	}
	if files := cacheFiles(t, dir); len(files) != 1 {
		t.Fatalf("cache directory holds %v, want only the first pass's entry", files)
	}
	// Fixed again: seen at once.
	if err := os.WriteFile(core, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	mustPass(t, probe(py.path))
}

// A failed check is never written, in memory or on disk.
func TestProbeNeverRemembersAFailure(t *testing.T) {
	dir, real := isolateProbeCache(t)
	py := newCountingPython(t, real, "")
	bare := filepath.Join(t.TempDir(), "python")
	// -S: no site-packages, so grpc is not found.
	if err := os.WriteFile(bare, []byte("#!/bin/sh\necho run >> '"+py.count+"'\nexec '"+real+"' -S \"$@\"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if p := probe(bare); !strings.Contains(p, "No module named 'grpc'") {
			t.Fatalf("want the missing-module problem, got %q", p)
		}
	}
	if n := py.runs(t); n != 2 {
		t.Fatalf("%d runs for two failed checks, want 2", n)
	}
	if files := cacheFiles(t, dir); len(files) != 0 {
		t.Fatalf("a failed check was written to the cache: %v", files)
	}
}

// A corrupt entry, an unusable cache directory or no cache directory at
// all only make the check run; they are never an error.
func TestProbeCacheFailuresOnlyCostACheck(t *testing.T) {
	dir, real := isolateProbeCache(t)
	py := newCountingPython(t, real, "")
	mustPass(t, probe(py.path))
	files := cacheFiles(t, dir)
	if len(files) != 1 {
		t.Fatalf("cache directory holds %v, want one entry", files)
	}
	entry := filepath.Join(dir, files[0])
	good, err := os.ReadFile(entry)
	if err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{"", "garbage", string(good[:len(good)/2]), strings.Replace(string(good), " ", "x", 1)} {
		if err := os.WriteFile(entry, []byte(bad), 0o600); err != nil {
			t.Fatal(err)
		}
		before := py.runs(t)
		mustPass(t, probeFresh(py.path))
		if py.runs(t) != before+1 {
			t.Fatalf("a corrupt entry %q was used", bad)
		}
		if got, _ := os.ReadFile(entry); string(got) != string(good) {
			t.Fatalf("the corrupt entry was not rewritten: %q", got)
		}
	}

	// The cache directory cannot be created (a file is in its way; a
	// read-only directory would do the same but root ignores modes).
	blocked := filepath.Join(t.TempDir(), "not-a-dir")
	if err := os.WriteFile(blocked, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("XDG_CACHE_HOME", blocked)
	before := py.runs(t)
	mustPass(t, probeFresh(py.path))
	mustPass(t, probeFresh(py.path))
	if py.runs(t) != before+2 {
		t.Fatal("with no usable cache directory every host must run the check")
	}

	// No cache directory at all.
	t.Setenv("XDG_CACHE_HOME", "")
	t.Setenv("HOME", "")
	mustPass(t, probeFresh(py.path))
}

// A worker that cannot import grpc although the check passed (remembered)
// drops the remembered pass, so the next start checks again.
func TestWorkerThatLacksGRPCDropsTheRememberedPass(t *testing.T) {
	dir, real := isolateProbeCache(t)
	// The check passes; the worker fails as an interpreter without grpc
	// would.
	py := newCountingPython(t, real, "case \"$*\" in *snakepit_bridge.server*) echo \"ModuleNotFoundError: No module named 'grpc'\" >&2; exit 1;; esac\n")
	mustPass(t, probe(py.path))
	if files := cacheFiles(t, dir); len(files) != 1 {
		t.Fatalf("cache directory holds %v, want one entry", files)
	}
	fx := startWorker(t, func(o *Options) { o.Python = py.path })
	var err error
	select {
	case err = <-fx.done:
		fx.done <- err
	case <-time.After(30 * time.Second):
		t.Fatal("the startup failure was not reported within 30 s")
	}
	var se *worker.StartupError
	if !errors.As(err, &se) || se.Kind != worker.StartupInterpreter {
		t.Fatalf("want an interpreter StartupError, got %v", err)
	}
	if files := cacheFiles(t, dir); len(files) != 0 {
		t.Fatalf("the remembered pass survived the worker's failure: %v", files)
	}
	before := py.runs(t)
	mustPass(t, probe(py.path))
	if py.runs(t) != before+1 {
		t.Fatal("the check after the worker's failure used a remembered pass")
	}
}

func TestLacksPackages(t *testing.T) {
	for stderr, want := range map[string]bool{
		"ModuleNotFoundError: No module named 'grpc'":                                        true,
		"ModuleNotFoundError: No module named 'google'":                                      true,
		"ImportError: cannot import name 'cygrpc' from 'grpc._cython' (/x/__init__.py)":      true,
		"ImportError: cannot import name 'builder' from 'google.protobuf.internal' (/x/y)":   true,
		"ModuleNotFoundError: No module named 'grpc_status'":                                 false,
		"ModuleNotFoundError: No module named 'nowhere_to_be_found'":                         false,
		"snakepit_bridge: cannot load adapter x.Y: ModuleNotFoundError: No module named 'x'": false,
	} {
		if got := lacksPackages(stderr); got != want {
			t.Errorf("lacksPackages(%q) = %v, want %v", stderr, got, want)
		}
	}
}

// A wrapper script (a pyenv shim) chooses the interpreter it runs from
// what the key cannot see; its pass must not be remembered, or a host
// started where the shim picks an interpreter without grpc would be given
// it instead of the next candidate.
func TestProbeNeverRemembersAScriptsPass(t *testing.T) {
	dir, real := isolateProbeCache(t)
	rememberScripts = false
	choice := filepath.Join(t.TempDir(), "flags")
	if err := os.WriteFile(choice, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	// Like a shim reading .python-version: the flags file picks the
	// interpreter's mode; -S leaves site-packages (grpc) off sys.path.
	shim := newCountingPython(t, real, "")
	script := "#!/bin/sh\nexec '" + real + "' $(cat '" + choice + "') \"$@\"\n"
	if err := os.WriteFile(shim.path, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	mustPass(t, probeFresh(shim.path))
	if err := os.WriteFile(choice, []byte("-S"), 0o600); err != nil {
		t.Fatal(err)
	}
	if p := probe(shim.path); p == "" {
		t.Fatal("the shim now runs an interpreter without grpc, but the check passed (a remembered pass)")
	}
	if got := cacheFiles(t, dir); len(got) != 0 {
		t.Fatalf("a script's pass was written to the cache: %v", got)
	}
}

// A relative PYTHONPATH entry names another directory in another working
// directory: a pass found through it in one must not vouch for the
// interpreter started from another, where grpc is not there.
func TestProbeKeyResolvesRelativePythonPath(t *testing.T) {
	_, real := isolateProbeCache(t)
	// An interpreter whose own sys.path has no grpc: a bare virtualenv.
	venv := filepath.Join(t.TempDir(), "venv")
	if out, err := exec.Command(real, "-m", "venv", "--without-pip", venv).CombinedOutput(); err != nil {
		t.Skipf("cannot make a virtualenv: %v: %s", err, out)
	}
	py := filepath.Join(venv, "bin", "python")
	if p, _ := probeUncached(py); p == "" {
		t.Skip("the bare virtualenv finds grpc by itself")
	}
	// grpc's site-packages, linked in as ./vendor of one directory only.
	out, err := exec.Command(real, "-c", "import grpc,os;print(os.path.dirname(os.path.dirname(grpc.__file__)))").Output()
	if err != nil {
		t.Skip(err)
	}
	withGRPC, without := t.TempDir(), t.TempDir()
	if err := os.Symlink(strings.TrimSpace(string(out)), filepath.Join(withGRPC, "vendor")); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PYTHONPATH", "vendor")
	t.Chdir(withGRPC)
	mustPass(t, probeFresh(py))
	t.Chdir(without)
	if p := probeFresh(py); p == "" {
		t.Fatal("PYTHONPATH=vendor finds no grpc in this working directory, but the check passed (a remembered pass)")
	}
}
