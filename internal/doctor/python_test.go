package doctor

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/snakepit-go/snakepit/grpcworker"
)

// The App remembers a passed interpreter check; the doctor still imports
// grpc and protobuf for real every time, so a package that is found but
// cannot load is reported even when discovery took the remembered pass.
func TestDoctorImportsForRealWhenTheCheckIsRemembered(t *testing.T) {
	cache := t.TempDir()
	t.Setenv("XDG_CACHE_HOME", cache)
	real, err := grpcworker.FindPython("")
	if err != nil {
		t.Skip(err)
	}
	if err := os.RemoveAll(filepath.Join(cache, "snakepit", "interpreters")); err != nil {
		t.Fatal(err)
	}
	// A grpc that the check finds (with a compiled core) and that cannot
	// be imported.
	site := t.TempDir()
	files := map[string]string{"grpc/__init__.py": "raise ImportError('this grpc is broken')\n", "grpc/_cython/cygrpc.so": ""}
	for f, body := range files {
		p := filepath.Join(site, filepath.FromSlash(f))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	t.Setenv("PYTHONPATH", site)
	for run := range 2 {
		var got *Check
		checks := checkPython(context.Background(), Options{Python: real, Timeout: 20 * time.Second})
		for i := range checks {
			if checks[i].Name == "grpcio/protobuf" {
				got = &checks[i]
			}
		}
		if got == nil || got.Status != Fail || !strings.Contains(got.Detail, "this grpc is broken") {
			t.Fatalf("run %d: want the grpcio/protobuf check to fail with the import error, got %+v", run, checks)
		}
		if entries, _ := os.ReadDir(filepath.Join(cache, "snakepit", "interpreters")); len(entries) != 1 {
			t.Fatalf("run %d: the discovery's pass was not remembered (%d entries), so this test proves nothing", run, len(entries))
		}
	}
}
