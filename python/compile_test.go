package python

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestCompile: after Compile, every extracted module has checked
// hash-based bytecode where the interpreter looks for it; a second Compile
// leaves it alone; an edited source is what the interpreter runs (the
// bytecode is checked against the source, not trusted).
func TestCompile(t *testing.T) {
	py := os.Getenv("SNAKEPIT_PYTHON")
	if py == "" {
		t.Skip("SNAKEPIT_PYTHON not set")
	}
	root, err := Extract(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	env := append(os.Environ(), "PYTHONDONTWRITEBYTECODE=1")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := Compile(ctx, py, root, env); err != nil {
		t.Fatal(err)
	}
	tag, err := exec.Command(py, "-c", "import sys; print(sys.implementation.cache_tag)").Output()
	if err != nil {
		t.Fatal(err)
	}
	names, err := fileNames()
	if err != nil {
		t.Fatal(err)
	}
	pycOf := func(name string) string {
		dir, file := filepath.Split(filepath.Join(root, filepath.FromSlash(name)))
		return filepath.Join(dir, "__pycache__", strings.TrimSuffix(file, ".py")+"."+strings.TrimSpace(string(tag))+".pyc")
	}
	mtimes := map[string]time.Time{}
	for _, name := range names {
		b, err := os.ReadFile(pycOf(name))
		if err != nil {
			t.Fatalf("no bytecode for %s: %v", name, err)
		}
		// PEP 552: flags word after the magic; 0b11 = hash-based, checked.
		if len(b) < 16 || b[4] != 3 || b[5]|b[6]|b[7] != 0 {
			t.Fatalf("%s: bytecode is not checked hash-based (header % x)", name, b[:min(len(b), 16)])
		}
		st, _ := os.Stat(pycOf(name))
		mtimes[name] = st.ModTime()
	}
	if err := Compile(ctx, py, root, env); err != nil {
		t.Fatal(err)
	}
	// The marker makes the second call start no interpreter: a missing
	// one would fail. Another PYTHONOPTIMIZE is another marker.
	if err := Compile(ctx, filepath.Join(t.TempDir(), "gone"), root, env); err == nil {
		t.Fatal("a different interpreter path reused the marker")
	}
	if matches, _ := filepath.Glob(filepath.Join(root, ".bytecode-*")); len(matches) != 1 {
		t.Fatalf("markers after two compilations with one interpreter: %v", matches)
	}
	if interpreterKey(py, env) == interpreterKey(py, append(env, "PYTHONOPTIMIZE=1")) {
		t.Fatal("PYTHONOPTIMIZE does not change the marker")
	}
	os.Remove(filepath.Join(root, ".bytecode-"+interpreterKey(py, env)))
	if err := Compile(ctx, py, root, env); err != nil {
		t.Fatal(err)
	}
	for name, mt := range mtimes {
		if st, err := os.Stat(pycOf(name)); err != nil || !st.ModTime().Equal(mt) {
			t.Fatalf("second Compile rewrote %s (%v)", name, err)
		}
	}
	// Same length and same second: a timestamp .pyc would be taken as fresh.
	codec := filepath.Join(root, "snakepit_bridge", "codec.py")
	src, err := os.ReadFile(codec)
	if err != nil {
		t.Fatal(err)
	}
	st, _ := os.Stat(codec)
	if err := os.WriteFile(codec, append(src, "\nEDITED = 1\n"...), 0o644); err != nil {
		t.Fatal(err)
	}
	_ = os.Chtimes(codec, st.ModTime(), st.ModTime())
	cmd := exec.Command(py, "-c", "import snakepit_bridge.codec as c; print(c.EDITED)")
	cmd.Env = append(env, "PYTHONPATH="+root)
	cmd.Dir = t.TempDir()
	if out, err := cmd.CombinedOutput(); err != nil || strings.TrimSpace(string(out)) != "1" {
		t.Fatalf("the edited source was not what ran: %v\n%s", err, out)
	}
}

// TestCompileErrorSaysWhat: an interpreter that cannot run is an error
// naming the tree, not a panic or a silent success.
func TestCompileErrorSaysWhat(t *testing.T) {
	root := t.TempDir()
	err := Compile(context.Background(), filepath.Join(t.TempDir(), "no-python"), root, os.Environ())
	if err == nil || !strings.Contains(err.Error(), root) {
		t.Fatalf("Compile with a missing interpreter: %v", err)
	}
}

// TestCompileMarker: once an interpreter compiled a tree, a later Compile
// with it starts no process.
func TestCompileMarker(t *testing.T) {
	dir := t.TempDir()
	runs := filepath.Join(dir, "runs")
	fake := filepath.Join(dir, "python")
	if err := os.WriteFile(fake, []byte("#!/bin/sh\necho run >> "+runs+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	for range 3 {
		if err := Compile(context.Background(), fake, root, nil); err != nil {
			t.Fatal(err)
		}
	}
	if b, err := os.ReadFile(runs); err != nil || string(b) != "run\n" {
		t.Fatalf("the interpreter ran %q times (%v), want once", b, err)
	}
}
