package python

import (
	"bytes"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

func TestEmbeddedFiles(t *testing.T) {
	names, err := fileNames()
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"snakepit_bridge/__init__.py",
		"snakepit_bridge/server.py",
		"snakepit_bridge/pb/__init__.py",
		"snakepit_bridge/pb/snakepit_pb2.py",
		"snakepit_bridge/pb/snakepit_pb2_grpc.py",
		"snakepit_bridge/examples/__init__.py",
		"snakepit_bridge/examples/showcase.py",
	}
	have := map[string]bool{}
	for _, n := range names {
		have[n] = true
		if !strings.HasSuffix(n, ".py") || strings.Contains(n, "__pycache__") {
			t.Errorf("unexpected embedded file %s", n)
		}
	}
	for _, w := range want {
		if !have[w] {
			t.Errorf("%s is not embedded", w)
		}
	}
}

func TestExtract(t *testing.T) {
	dir := t.TempDir()
	got, err := Extract(dir)
	if err != nil {
		t.Fatal(err)
	}
	digest, err := digest()
	if err != nil {
		t.Fatal(err)
	}
	if len(digest) != 12 || got != filepath.Join(dir, digest) {
		t.Fatalf("Extract returned %s, want %s/<12 hex digits> (digest %q)", got, dir, digest)
	}
	for _, f := range []string{"snakepit_bridge/__init__.py", "snakepit_bridge/server.py", "snakepit_bridge/pb/__init__.py"} {
		p := filepath.Join(got, filepath.FromSlash(f))
		data, err := os.ReadFile(p)
		if err != nil {
			t.Fatalf("%s missing: %v", f, err)
		}
		want, _ := files.ReadFile(f)
		if !bytes.Equal(data, want) {
			t.Errorf("%s differs from the embedded copy", f)
		}
	}
	err = filepath.WalkDir(got, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		want := fs.FileMode(0o644)
		if d.IsDir() {
			want = 0o755
		}
		if info.Mode().Perm() != want {
			t.Errorf("%s has mode %v, want %v", p, info.Mode().Perm(), want)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}

	// Idempotent: same directory, nothing rewritten, no temp dirs left.
	marker := filepath.Join(got, "snakepit_bridge", "server.py")
	before, _ := os.Stat(marker)
	again, err := Extract(dir)
	if err != nil || again != got {
		t.Fatalf("second Extract = %s, %v; want %s", again, err, got)
	}
	after, _ := os.Stat(marker)
	if !before.ModTime().Equal(after.ModTime()) {
		t.Error("second Extract rewrote the files")
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("extraction dir holds %d entries, want only the digest dir", len(entries))
	}
}

func TestExtractConcurrent(t *testing.T) {
	dir := t.TempDir()
	var wg sync.WaitGroup
	results := make([]string, 8)
	errs := make([]error, 8)
	for i := range results {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			results[i], errs[i] = Extract(dir)
		}(i)
	}
	wg.Wait()
	for i := range results {
		if errs[i] != nil || results[i] != results[0] {
			t.Fatalf("extractor %d: %s, %v (first: %s)", i, results[i], errs[i], results[0])
		}
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		names := []string{}
		for _, e := range entries {
			names = append(names, e.Name())
		}
		t.Errorf("left behind: %v", names)
	}
}

// TestExtractedPackageImports proves the extracted tree is a complete
// package: it needs a Python with grpcio, named by SNAKEPIT_PYTHON (as
// `make test` sets it).
func TestExtractedPackageImports(t *testing.T) {
	py := os.Getenv("SNAKEPIT_PYTHON")
	if py == "" {
		t.Skip("SNAKEPIT_PYTHON not set")
	}
	root, err := Extract(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(py, "-c", "import snakepit_bridge.server, snakepit_bridge.examples.showcase, snakepit_bridge.examples.textstats, snakepit_bridge; print(snakepit_bridge.__file__)")
	cmd.Env = append(os.Environ(), "PYTHONPATH="+root, "PYTHONDONTWRITEBYTECODE=1")
	cmd.Dir = t.TempDir()
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("import failed: %v\n%s", err, out)
	}
	if !strings.HasPrefix(strings.TrimSpace(string(out)), root) {
		t.Errorf("imported %s, want the extracted copy under %s", out, root)
	}
}
