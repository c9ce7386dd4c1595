// Package supervisor is snakepit's suture tree: the Application root, which
// starts its children one at a time and stops them in the reverse order,
// the worker supervisor (Workers), which adds and removes per-worker
// Starters under one pool, and the Group that runs the Workers of several
// pools side by side as one child.
//
// Why explicit ordering: a suture supervisor cancels all its children
// concurrently, but the no-survivor guarantee needs the pool to have reaped
// every worker before the cleanup sweep runs, and the registry to outlive
// both. So the Application removes its children newest-first with
// RemoveAndWait, each within its own timeout, before it stops the root.
//
// # Who imports it
//
// Applications reach this package through the root package snakepit, which
// wraps it and re-exports the types its API returns; the names exported
// here beyond that are seams between snakepit's own packages.
package supervisor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/thejerf/suture/v4"
)

// readier is implemented by children that need time to become usable; the
// Application does not add the next child until Ready is closed.
type readier interface {
	Ready() <-chan struct{}
}

// Child is one ordered child of the Application.
type Child struct {
	Name    string
	Service suture.Service
	// StopTimeout bounds RemoveAndWait for this child; it must exceed the
	// child's own inner timeouts (the nesting in docs/GUARANTEES.md §3a).
	StopTimeout time.Duration
}

// StartError reports a child that failed before it became ready.
type StartError struct {
	Child string
	Err   error
}

func (e *StartError) Error() string {
	return fmt.Sprintf("snakepit: %s failed to start: %v", e.Child, e.Err)
}
func (e *StartError) Unwrap() error { return e.Err }

// ErrStartTimeout: a child did not become ready in time.
var ErrStartTimeout = errors.New("snakepit: start timed out")

// StopRecord is one child's stop, in the order stops happened.
type StopRecord struct {
	Child    string
	Started  time.Time
	Finished time.Time
	Err      error // suture.ErrTimeout when the child overran its StopTimeout
}

// Application is the root of the tree. It is a suture.Service: run it with
// Serve (or add it to your own supervisor); cancelling the context performs
// the ordered stop.
type Application struct {
	name     string
	children []Child
	log      *slog.Logger
	hook     suture.EventHook

	readyOnce sync.Once
	ready     chan struct{}

	mu      sync.Mutex
	stops   []StopRecord
	started bool
}

// NewApplication prepares a root with children in start order.
func NewApplication(name string, children []Child, log *slog.Logger) *Application {
	if log == nil {
		log = slog.Default()
	}
	return &Application{name: name, children: children, log: log, hook: eventHook(log), ready: make(chan struct{})}
}

func (a *Application) String() string { return a.name }

// Ready is closed once every child is ready.
func (a *Application) Ready() <-chan struct{} { return a.ready }

// StopRecords returns the order and timing of the last stop.
func (a *Application) StopRecords() []StopRecord {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]StopRecord(nil), a.stops...)
}

// tracked reports a child's failure before it became ready instead of
// letting suture restart it in a loop (a locked registry or a bad config
// would otherwise spin forever).
type tracked struct {
	Child
	failed chan error // buffered 1
	ready  chan struct{}
}

func (t *tracked) String() string { return t.Name }

func (t *tracked) Serve(ctx context.Context) error {
	err := t.Service.Serve(ctx)
	if ctx.Err() == nil && !t.up() {
		if err == nil {
			err = errors.New("service returned before it became ready")
		}
		select {
		case t.failed <- err:
		default:
		}
		return fmt.Errorf("%w: %w", suture.ErrDoNotRestart, err)
	}
	return err
}

func (t *tracked) up() bool {
	select {
	case <-t.ready:
		return true
	default:
		return false
	}
}

// Serve starts the children in order, waits for ctx, then stops them in
// reverse order. A start failure stops what was started and is returned.
func (a *Application) Serve(ctx context.Context) error {
	a.mu.Lock()
	if a.started {
		a.mu.Unlock()
		return fmt.Errorf("%w: snakepit application %s cannot be served twice; build a new one", suture.ErrDoNotRestart, a.name)
	}
	a.started = true
	a.mu.Unlock()

	root := suture.New(a.name, suture.Spec{EventHook: a.hook, DontPropagateTermination: true})
	// The root runs on its own context: the caller's cancellation starts our
	// ordered stop, and only then is the root itself stopped.
	rootCtx, cancelRoot := context.WithCancel(context.Background())
	rootDone := root.ServeBackground(rootCtx)
	defer func() {
		cancelRoot()
		<-rootDone
	}()

	type added struct {
		c   Child
		tok suture.ServiceToken
	}
	var up []added
	stopAll := func() {
		a.mu.Lock()
		a.stops = nil
		a.mu.Unlock()
		for i := len(up) - 1; i >= 0; i-- {
			rec := StopRecord{Child: up[i].c.Name, Started: time.Now()}
			rec.Err = root.RemoveAndWait(up[i].tok, up[i].c.StopTimeout)
			rec.Finished = time.Now()
			if rec.Err != nil {
				a.log.Error("child did not stop within its timeout", "child", rec.Child, "timeout", up[i].c.StopTimeout, "err", rec.Err)
			}
			a.mu.Lock()
			a.stops = append(a.stops, rec)
			a.mu.Unlock()
		}
	}
	for _, c := range a.children {
		t := &tracked{Child: c, failed: make(chan error, 1), ready: make(chan struct{})}
		var childReady <-chan struct{}
		if r, ok := c.Service.(readier); ok {
			childReady = r.Ready()
		} else {
			close(t.ready)
		}
		tok := root.Add(t)
		up = append(up, added{c, tok})
		if childReady != nil {
			select {
			case <-childReady:
				close(t.ready)
			case err := <-t.failed:
				stopAll()
				return &StartError{Child: c.Name, Err: err}
			case <-ctx.Done():
				stopAll()
				return nil
			}
		}
		a.log.Debug("child ready", "child", c.Name)
	}
	a.readyOnce.Do(func() { close(a.ready) })
	a.log.Info("snakepit application ready", "name", a.name)
	<-ctx.Done()
	stopAll()
	return nil
}

// eventHook turns suture's events into log records.
func eventHook(log *slog.Logger) suture.EventHook {
	return func(e suture.Event) {
		switch ev := e.(type) {
		case suture.EventServiceTerminate:
			log.Warn("service terminated", "supervisor", ev.SupervisorName, "service", ev.ServiceName,
				"err", fmt.Sprint(ev.Err), "restarting", ev.Restarting)
		case suture.EventServicePanic:
			log.Error("service panicked", "supervisor", ev.SupervisorName, "service", ev.ServiceName,
				"panic", ev.PanicMsg, "stack", ev.Stacktrace, "restarting", ev.Restarting)
		case suture.EventStopTimeout:
			log.Error("service did not stop in time", "supervisor", ev.SupervisorName, "service", ev.ServiceName)
		case suture.EventBackoff:
			log.Warn("supervisor backing off", "supervisor", ev.SupervisorName)
		case suture.EventResume:
			log.Info("supervisor resumed", "supervisor", ev.SupervisorName)
		}
	}
}
