package lifecycle

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/thejerf/suture/v4"

	"github.com/snakepit-go/snakepit"
	"github.com/snakepit-go/snakepit/internal/proc"
	"github.com/snakepit-go/snakepit/internal/testutil"
)

const lateAdapterSource = `from snakepit_bridge import BaseAdapter, tool


class LateAdapter(BaseAdapter):
    @tool(description="answers once the module exists")
    def ping(self) -> str:
        return "pong"
`

// parentEvents records what a user's supervisor sees of the App.
type parentEvents struct {
	mu    sync.Mutex
	terms []suture.EventServiceTerminate
}

func (p *parentEvents) hook(e suture.Event) {
	if ev, ok := e.(suture.EventServiceTerminate); ok {
		p.mu.Lock()
		p.terms = append(p.terms, ev)
		p.mu.Unlock()
	}
}

func (p *parentEvents) terminations() []suture.EventServiceTerminate {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]suture.EventServiceTerminate(nil), p.terms...)
}

// checkStartError asserts err is the App's start error, carrying the
// Python error, typed for errors.Is/As, without suture's wording.
func checkStartError(t *testing.T, what string, err error) {
	t.Helper()
	var se *snakepit.StartupError
	var ste *snakepit.StartError
	switch {
	case err == nil:
		t.Fatalf("%s returned nil on an App that failed to start", what)
	case !errors.Is(err, snakepit.ErrNotReady) || !errors.Is(err, snakepit.ErrStartup):
		t.Errorf("%s = %v; want errors.Is ErrNotReady and ErrStartup", what, err)
	case !errors.As(err, &se) || !errors.As(err, &ste):
		t.Errorf("%s = %v; want a *StartError holding a *StartupError", what, err)
	case !strings.Contains(err.Error(), "No module named 'late_adapter'"):
		t.Errorf("%s = %v; want the Python error", what, err)
	case strings.Contains(err.Error(), "should not be restarted"):
		t.Errorf("%s = %v; suture's wording reached the user", what, err)
	}
}

// An App embedded in a user's suture tree whose adapter cannot be imported:
// WaitReady(context.Background()), Execute and Reload return the start
// error at once, the parent supervisor sees the failure (and, per its own
// backoff, restarts the App), nothing of the run is left, and once the
// cause is fixed the parent's next restart makes the App ready.
func TestEmbeddedAppThatCannotStartFailsFastAndHealsOnRestart(t *testing.T) {
	dir := t.TempDir()
	log, _ := newQuietRecordingLogger()
	app, err := snakepit.New(snakepit.Config{
		Workers: 2, Adapter: "late_adapter.LateAdapter", PythonPath: []string{dir},
		RegistryPath: filepath.Join(t.TempDir(), "registry.db"), Logger: log,
	})
	must(t, err)
	t.Cleanup(func() { testutil.KillRunSurvivors(t, app.RunID()) })

	var events parentEvents
	// FailureThreshold below 1: the first failure pauses the parent for
	// FailureBackoff before it restarts the App, a window in which the
	// failed App must answer at once.
	parent := suture.New("user-root", suture.Spec{
		EventHook: events.hook, FailureThreshold: 0.5, FailureDecay: 1, FailureBackoff: 3 * time.Second,
		Timeout: 30 * time.Second,
	})
	parent.Add(app)
	ctx, cancel := context.WithCancel(context.Background())
	served := parent.ServeBackground(ctx)
	done := make(chan struct{})
	go func() { <-served; close(done) }()
	t.Cleanup(func() { cancel(); <-done })

	waited := make(chan error, 1)
	go func() { waited <- app.WaitReady(context.Background()) }()
	select {
	case err := <-waited:
		checkStartError(t, "WaitReady", err)
	case <-time.After(60 * time.Second):
		t.Fatal("WaitReady(context.Background()) did not return within 60 s on an App that cannot start")
	}

	for _, c := range []struct {
		what string
		call func() error
	}{
		{"WaitReady", func() error { return app.WaitReady(context.Background()) }},
		{"Execute", func() error { _, err := app.Execute(context.Background(), "ping", nil); return err }},
		{"ExecuteStream", func() error {
			for _, err := range app.ExecuteStream(context.Background(), "ping", nil) {
				return err
			}
			return nil
		}},
		{"Reload", func() error { _, err := app.Reload(context.Background()); return err }},
	} {
		t0 := time.Now()
		err := c.call()
		if d := time.Since(t0); d > 2*time.Second {
			t.Errorf("%s took %s on a failed App; want at once", c.what, d)
		}
		checkStartError(t, c.what, err)
	}

	waitFor(t, 10*time.Second, "the parent to see the App's failure", func() bool { return len(events.terminations()) > 0 })
	ev := events.terminations()[0]
	if ev.Service != app || !strings.Contains(ev.Err.(error).Error(), "No module named 'late_adapter'") {
		t.Errorf("parent saw %+v; want the App's start error", ev)
	}
	waitFor(t, 10*time.Second, "no process of the failed run", func() bool {
		left, _ := proc.FindByRunID(app.RunID())
		return len(left) == 0
	})

	// Fix the cause; the parent's restart (after its backoff) heals the App.
	must(t, os.WriteFile(filepath.Join(dir, "late_adapter.py"), []byte(lateAdapterSource), 0o644))
	waitFor(t, 90*time.Second, "the restarted App to become ready", func() bool {
		wctx, wcancel := context.WithTimeout(context.Background(), time.Second)
		defer wcancel()
		return app.WaitReady(wctx) == nil
	})
	res, err := app.Execute(ctxFor(t, 30*time.Second), "ping", nil)
	must(t, err)
	if string(res.JSON) != `"pong"` {
		t.Fatalf("ping = %s", res.JSON)
	}

	cancel()
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		t.Fatal("the parent did not stop within 60 s")
	}
	if left, _ := proc.FindByRunID(app.RunID()); len(left) > 0 {
		t.Errorf("processes of the run alive after the parent stopped: %+v", left)
	}
}

// Misuse of the Start/Stop pair is typed.
func TestStartStopMisuseIsTyped(t *testing.T) {
	in := newInstance(t, snakepit.Config{Workers: 1})
	if _, err := in.Stop(context.Background()); !errors.Is(err, snakepit.ErrNotStarted) {
		t.Errorf("Stop before Start = %v; want ErrNotStarted", err)
	}
	must(t, in.Start(ctxFor(t, 60*time.Second)))
	if err := in.Start(context.Background()); !errors.Is(err, snakepit.ErrAlreadyStarted) {
		t.Errorf("second Start = %v; want ErrAlreadyStarted", err)
	}
	in.stop(t)
	if err := in.Start(context.Background()); !errors.Is(err, snakepit.ErrStopped) {
		t.Errorf("Start after Stop = %v; want ErrStopped", err)
	}
	if err := in.Serve(context.Background()); !errors.Is(err, snakepit.ErrStopped) || !errors.Is(err, suture.ErrDoNotRestart) {
		t.Errorf("Serve after Stop = %v; want ErrStopped (and no restart by a parent)", err)
	}
	if err := in.WaitReady(context.Background()); !errors.Is(err, snakepit.ErrPoolStopping) {
		t.Errorf("WaitReady after Stop = %v; want ErrPoolStopping", err)
	}
	if err := in.AddWorker("", nil); !errors.Is(err, snakepit.ErrInvalidConfig) {
		t.Errorf("AddWorker without id = %v; want ErrInvalidConfig", err)
	}
}

// Stop racing Reload, WaitReady and calls: every one returns within the
// stop's bound, a Reload the stop cuts short says so (ErrPoolStopping),
// never "success" with its workers skipped, and nothing of the run is left.
func TestStopRacingReloadWaitReadyAndCalls(t *testing.T) {
	for round := range 3 {
		in := startInstance(t, snakepit.Config{Workers: 2})
		var wg sync.WaitGroup
		reloaded := make(chan struct{}, 1)
		errs := make(chan error, 64)
		wg.Go(func() {
			for {
				rep, err := in.Reload(context.Background())
				if err != nil {
					if !errors.Is(err, snakepit.ErrPoolStopping) {
						errs <- errors.New("Reload: " + err.Error())
					}
					return
				}
				if len(rep.Recycled) == 0 {
					errs <- errors.New("Reload succeeded without replacing a worker")
					return
				}
				select {
				case reloaded <- struct{}{}:
				default:
				}
			}
		})
		for range 4 {
			wg.Go(func() {
				for {
					_, err := in.Execute(context.Background(), "worker_info", nil, snakepit.Idempotent())
					if errors.Is(err, snakepit.ErrPoolStopping) {
						return
					}
					if err != nil {
						errs <- errors.New("Execute: " + err.Error())
						return
					}
				}
			})
		}
		wg.Go(func() {
			for {
				if err := in.WaitReady(context.Background()); err != nil {
					if !errors.Is(err, snakepit.ErrPoolStopping) {
						errs <- errors.New("WaitReady: " + err.Error())
					}
					return
				}
			}
		})
		select {
		case <-reloaded:
		case <-time.After(60 * time.Second):
			t.Fatal("no Reload finished within 60 s")
		}
		in.stop(t) // asserts that nothing of the run is left
		finished := make(chan struct{})
		go func() { wg.Wait(); close(finished) }()
		select {
		case <-finished:
		case <-time.After(10 * time.Second):
			t.Fatalf("round %d: a Reload, WaitReady or call still waits 10 s after Stop returned", round)
		}
		close(errs)
		for err := range errs {
			t.Errorf("round %d: %v", round, err)
		}
	}
}
