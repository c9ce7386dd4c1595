package grpcworker

import (
	"path/filepath"
	"testing"

	"github.com/snakepit-go/snakepit/internal/auth"
)

// NewFactory leaves bytecode beside the extracted package, so a worker
// started under PYTHONDONTWRITEBYTECODE (or from a read-only tree later)
// does not compile snakepit_bridge from source at every start.
func TestNewFactoryCompilesTheExtractedPackage(t *testing.T) {
	t.Setenv("PYTHONDONTWRITEBYTECODE", "1")
	f, err := NewFactory(Options{Adapter: "snakepit_bridge.examples.showcase.ShowcaseAdapter", Token: auth.NewToken(), PackageDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	for _, dir := range []string{"snakepit_bridge", "snakepit_bridge/pb"} {
		got, err := filepath.Glob(filepath.Join(f.pkgDir, filepath.FromSlash(dir), "__pycache__", "*.pyc"))
		if err != nil || len(got) == 0 {
			t.Fatalf("no bytecode in %s/__pycache__ after NewFactory (%v)", dir, err)
		}
	}
}
