// Package spawn starts child processes from one goroutine that is locked to
// its OS thread for the life of the program.
//
// Why: Linux delivers a child's parent-death signal (SysProcAttr.Pdeathsig)
// when the *thread* that forked it exits, not the process. Go may retire the
// thread behind an ordinary goroutine at any time, which would send the
// signal to a healthy worker. Forking only from a thread that never exits
// makes Pdeathsig mean "the host process died", which is what the
// no-survivor guarantee needs.
package spawn

import (
	"os/exec"
	"runtime"
	"sync"
)

// LoopFunction is the fully qualified name of the goroutine that owns the
// locked thread; leak checkers (goleak.IgnoreTopFunction) should ignore it,
// because it deliberately lives as long as the program.
const LoopFunction = "github.com/snakepit-go/snakepit/internal/spawn.loop"

type request struct {
	cmd  *exec.Cmd
	done chan error
}

var (
	once     sync.Once
	requests chan request
)

// Start calls cmd.Start on the locked spawner thread and returns its error.
func Start(cmd *exec.Cmd) error {
	once.Do(func() {
		requests = make(chan request)
		go loop()
	})
	r := request{cmd: cmd, done: make(chan error, 1)}
	requests <- r
	return <-r.done
}

func loop() {
	// Never unlocked and never returns: the thread must outlive every child
	// it forked.
	runtime.LockOSThread()
	for r := range requests {
		r.done <- r.cmd.Start()
	}
}
