// Package lifecycle proves snakepit's no-survivor guarantees against real
// Python workers: real processes, real gRPC, real signals. Each test is named
// for the guarantee it proves; docs/GUARANTEES.md maps every guarantee to its
// mechanism and to the test here that proves it.
//
// Rules every test follows:
//   - It synchronises only by polling observable state (the process table,
//     the registry, App.Stats) against a deadline, never by a fixed sleep.
//   - Each App has its own registry in t.TempDir() and a logger that records
//     every record; at the end of the test no record may say that a worker
//     failed to start.
//   - It cleans up every process it started. The only processes it ever
//     signals are ones it started itself (exec.Cmd, proctest) or ones that
//     carry the run id of an App it created, verified by internal/proc at
//     the moment of signalling.
//
// The suite fails if any process carrying its suite id survives it (see
// internal/testutil.Main).
//
// Run: SNAKEPIT_PYTHON=/usr/bin/python3 go test -race ./test/lifecycle/...
package lifecycle

import (
	"testing"

	"github.com/snakepit-go/snakepit/internal/testutil"
)

func TestMain(m *testing.M) { testutil.Main(m) }
