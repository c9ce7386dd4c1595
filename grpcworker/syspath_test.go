package grpcworker

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/snakepit-go/snakepit/worker"
)

// Issue 16 (8): the worker imports only what it should. A host started in
// a directory holding a snakepit_bridge package of its own and a module
// named like the adapter must still run the embedded package and the
// adapter from Options.PythonPath: the current directory is not on the
// worker's sys.path. Whatever the cwd copies load raises (or, in a plain
// module, exits with a message), so a wrong import fails the start.
func TestWorkerIgnoresModulesInTheHostsWorkingDirectory(t *testing.T) {
	cwd := t.TempDir()
	write := func(path, text string) {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(filepath.Join(cwd, "snakepit_bridge", "__init__.py"), "raise ImportError('the snakepit_bridge in the working directory was imported')\n")
	write(filepath.Join(cwd, "shadowed_adapter.py"), "raise ImportError('the adapter module in the working directory was imported')\n")
	lib := t.TempDir()
	write(filepath.Join(lib, "shadowed_adapter.py"), `import os, sys
import snakepit_bridge
from snakepit_bridge import BaseAdapter, tool


class Adapter(BaseAdapter):
    @tool
    def where(self) -> dict:
        return {"adapter": __file__, "bridge": snakepit_bridge.__file__,
                "cwd_on_path": any(p in ("", os.getcwd()) for p in sys.path)}
`)
	t.Chdir(cwd) // the host's working directory; the worker inherits it
	fx := startWorker(t, func(o *Options) {
		o.Adapter = "shadowed_adapter.Adapter"
		o.PythonPath = []string{lib}
	})
	fx.waitReadyOrFail(t)
	res, err := fx.w.Execute(context.Background(), &worker.Call{Tool: "where"})
	if err != nil {
		t.Fatal(err)
	}
	var got struct {
		Adapter, Bridge string
		CwdOnPath       bool `json:"cwd_on_path"`
	}
	if err := res.Decode(&got); err != nil {
		t.Fatal(err)
	}
	if got.Adapter != filepath.Join(lib, "shadowed_adapter.py") {
		t.Errorf("adapter loaded from %s, want %s", got.Adapter, lib)
	}
	if got.Bridge != filepath.Join(fx.w.f.pkgDir, "snakepit_bridge", "__init__.py") {
		t.Errorf("snakepit_bridge loaded from %s, want the embedded package under %s", got.Bridge, fx.w.f.pkgDir)
	}
	if got.CwdOnPath {
		t.Error("the working directory is on the worker's sys.path")
	}
}
