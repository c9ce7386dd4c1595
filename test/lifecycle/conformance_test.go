package lifecycle

import (
	"testing"

	"github.com/snakepit-go/snakepit"
	"github.com/snakepit-go/snakepit/snakepittest"
)

// The conformance kit users run, against the Python worker type and the
// showcase adapter (whose spawn_child starts a grandchild in the worker's
// process group).
func TestConformancePythonWorker(t *testing.T) {
	snakepittest.Run(t, snakepit.Config{Workers: 2}, snakepittest.WithSpawnTool("spawn_child", map[string]any{"seconds": 60}))
}
