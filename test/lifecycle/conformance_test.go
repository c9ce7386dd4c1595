package lifecycle

import (
	"testing"

	"github.com/snakepit-go/snakepit"
	"github.com/snakepit-go/snakepit/examples/linesworker/lines"
	"github.com/snakepit-go/snakepit/snakepittest"
)

// The conformance kit users run, against the Python worker type and the
// showcase adapter (whose spawn_child starts a grandchild in the worker's
// process group, or with new_session in its own session and group).
func TestConformancePythonWorker(t *testing.T) {
	snakepittest.Run(t, snakepit.Config{Workers: 2},
		snakepittest.WithSpawnTool("spawn_child", map[string]any{"seconds": 60}),
		snakepittest.WithEscapeTool("spawn_child", map[string]any{"seconds": 60, "new_session": true}))
}

// The same kit against an elastic pool (2..4 workers): its scaler is one
// more child of the tree, and the guarantees hold with it running.
func TestConformanceElasticPythonWorker(t *testing.T) {
	snakepittest.Run(t, snakepit.Config{MinWorkers: 2, MaxWorkers: 4},
		snakepittest.WithSpawnTool("spawn_child", map[string]any{"seconds": 60}),
		snakepittest.WithEscapeTool("spawn_child", map[string]any{"seconds": 60, "new_session": true}))
}

// The same kit against the example custom worker type: a non-Python
// executable speaking JSON lines, built on package childproc.
func TestConformanceCustomLinesWorker(t *testing.T) {
	bin := buildBinary(t, "linesworker", "github.com/snakepit-go/snakepit/examples/linesworker")
	snakepittest.Run(t, snakepit.Config{Workers: 2, WorkerFactory: &lines.Factory{Command: []string{bin, "serve"}}},
		snakepittest.WithSpawnTool("spawn_child", map[string]any{"seconds": 60}),
		snakepittest.WithEscapeTool("spawn_child", map[string]any{"seconds": 60, "new_session": true}))
}
