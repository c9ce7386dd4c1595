package registry

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
)

// errServedTwice: a Service was served again after it had run. A Service
// owns one registry for one run; make a new one (with a new run id) instead.
var errServedTwice = errors.New("registry: Service already served once; create a new Service for a new run")

// Service runs a Registry inside a suture tree: it opens the file, reaps the
// orphans of dead runs, sets up the run's cgroup containment
// (Registry.Contain, per Options.Containment), reports ready, and closes
// the registry when its context ends. Start it first, so it is stopped
// after everything that spawns workers. A containment that was required
// but is unavailable fails Serve like a failed Open (ErrContainment).
type Service struct {
	opts    Options
	ready   chan struct{}
	done    chan struct{}
	started atomic.Bool

	mu       sync.Mutex
	reg      *Registry
	startErr error
	reap     ReapReport
	reapErr  error
}

// NewService returns a Service that will Open(opts) when served. Set
// opts.RunID (NewRunID) if other parts of the application need the run id
// before the Service is ready.
func NewService(opts Options) *Service {
	return &Service{opts: opts, ready: make(chan struct{}), done: make(chan struct{})}
}

// Serve opens the registry and reaps orphans, then closes Ready and holds the
// registry open until ctx ends, then closes it. If Open fails it returns that
// error at once (a *LockedError, ErrNotRegistry, …), also kept for startError,
// and Ready is never closed: wait on Ready and Done together. A failed reap
// is logged and kept for reapError but does not stop the start: refusing to
// run would not bring orphans back under control.
func (s *Service) Serve(ctx context.Context) error {
	if !s.started.CompareAndSwap(false, true) {
		if err := s.startError(); err != nil {
			return err
		}
		return errServedTwice
	}
	defer close(s.done)
	reg, err := Open(s.opts)
	if err != nil {
		s.mu.Lock()
		s.startErr = err
		s.mu.Unlock()
		return err
	}
	rep, rerr := reg.ReapOrphans(ctx)
	if rerr != nil {
		reg.log.Error("orphan reaping incomplete; continuing, the next start retries", "err", rerr)
	}
	if err := reg.Contain(s.opts.Containment, s.opts.Pools); err != nil {
		_ = reg.Close()
		s.mu.Lock()
		s.startErr = err
		s.mu.Unlock()
		return err
	}
	s.mu.Lock()
	s.reg, s.reap, s.reapErr = reg, rep, rerr
	s.mu.Unlock()
	close(s.ready)
	<-ctx.Done()
	return reg.Close()
}

// Ready is closed once the registry is open and orphans have been reaped.
func (s *Service) Ready() <-chan struct{} { return s.ready }

// Done is closed when Serve has returned (after a failed Open, or after the
// registry was closed at the end).
func (s *Service) Done() <-chan struct{} { return s.done }

// Registry is the open registry once Ready is closed, nil before. After Done
// it is closed and its methods return ErrClosed.
func (s *Service) Registry() *Registry {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.reg
}

// startError is the error Open failed with, or nil.
func (s *Service) startError() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.startErr
}

// LastReap is the report of the reap done at start (zero before Ready).
func (s *Service) LastReap() ReapReport {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.reap
}

// reapError is the error of the reap done at start: what it could not stop or
// delete (kept for the next start). The start went ahead regardless.
func (s *Service) reapError() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.reapErr
}

// String names the service in suture's logs.
func (s *Service) String() string { return "snakepit registry" }
