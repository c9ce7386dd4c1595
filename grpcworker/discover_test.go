package grpcworker

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The interpreter check finds grpc and protobuf without importing them; an
// interpreter that cannot see them is rejected with Python's own message
// for a missing module.
func TestProbeFindsGRPCAndProtobufWithoutImportingThem(t *testing.T) {
	real, err := FindPython("")
	if err != nil {
		t.Skip(err)
	}
	if p, _ := probeUncached(real); p != "" {
		t.Fatalf("a usable interpreter was rejected: %s", p)
	}
	// -S: no site-packages, so neither package is there.
	bare := filepath.Join(t.TempDir(), "python")
	if err := os.WriteFile(bare, []byte("#!/bin/sh\nexec '"+real+"' -S \"$@\"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	p, _ := probeUncached(bare)
	if !strings.Contains(p, "No module named 'grpc'") {
		t.Fatalf("want the missing-module message, got %q", p)
	}
	_, err = FindPython(bare)
	var de *DiscoveryError
	if !errors.Is(err, ErrPythonNotFound) || !errors.As(err, &de) || !strings.Contains(de.Error(), "No module named 'grpc'") {
		t.Fatalf("want a DiscoveryError naming the missing module, got %v", err)
	}
}

// A grpc package without a compiled core for this interpreter (installed for
// another Python version) cannot be imported: the check must reject it
// without importing it.
func TestProbeRejectsGRPCWithoutItsCompiledCore(t *testing.T) {
	real, err := FindPython("")
	if err != nil {
		t.Skip(err)
	}
	py, _ := pythonWithSite(t, real, "grpc/__init__.py", "grpc/_cython/__init__.py", "grpc/_cython/cygrpc.cpython-27-x86_64-linux-gnu.so")
	if p, _ := probeUncached(py); !strings.Contains(p, "no compiled core") {
		t.Fatalf("want the missing-core message, got %q", p)
	}
}

// The generated snakepit_pb2 needs google.protobuf.internal.builder
// (protobuf >= 3.20). The worker imports it lazily, on the first host call,
// so a too-old protobuf must be rejected here, without importing it, rather
// than fail mid-call.
func TestProbeRejectsProtobufOlderThan320(t *testing.T) {
	real, err := FindPython("")
	if err != nil {
		t.Skip(err)
	}
	// google stays a namespace package, so this google.protobuf is found
	// ahead of the real one while the real grpc is still found.
	py, site := pythonWithSite(t, real, "google/protobuf/__init__.py", "google/protobuf/internal/__init__.py", "google/protobuf/internal/decoder.py")
	p, _ := probeUncached(py)
	if !strings.Contains(p, "cannot import name 'builder'") || !strings.Contains(p, "protobuf>=3.20") || !strings.Contains(p, site) {
		t.Fatalf("want the too-old-protobuf message naming the package and what to install, got %q", p)
	}
}

// pythonWithSite is a wrapper of the real interpreter whose PYTHONPATH
// starts with a fresh directory holding the given (empty) files: a package
// that shadows the installed one. It returns the wrapper and the directory.
func pythonWithSite(t *testing.T, real string, files ...string) (py, site string) {
	t.Helper()
	site = t.TempDir()
	for _, f := range files {
		if err := os.MkdirAll(filepath.Dir(filepath.Join(site, f)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(site, f), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	py = filepath.Join(t.TempDir(), "python")
	script := "#!/bin/sh\nPYTHONPATH='" + site + "' exec '" + real + "' \"$@\"\n"
	if err := os.WriteFile(py, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return py, site
}
