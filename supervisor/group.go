package supervisor

import (
	"context"
	"errors"
	"sync"
	"time"
)

// Group is the Application's one "workers" child when an App has several
// pools: it runs each pool's Workers side by side, is ready once every one
// is ready (each at its own MinReady), and stops them concurrently when
// its context ends. Concurrently, because the stop budget gives the
// workers child one slot (docs/GUARANTEES.md §3a): pools stopped one after
// the other would need one slot each.
//
// A member that fails to start fails the Group: the others are stopped
// and Serve returns that member's error, so the Application reports the
// start failure as it does for a single pool.
type Group struct {
	members []*Workers
	ready   chan struct{}
}

// NewGroup groups members, which must not be served on their own.
func NewGroup(members ...*Workers) *Group {
	return &Group{members: members, ready: make(chan struct{})}
}

func (g *Group) String() string { return "workers" }

// Ready implements readier: closed once every member is ready.
func (g *Group) Ready() <-chan struct{} {
	if len(g.members) == 1 {
		return g.members[0].Ready()
	}
	return g.ready
}

// StoppedAt is when the last member's last worker was reaped (zero before).
func (g *Group) StoppedAt() time.Time {
	var t time.Time
	for _, m := range g.members {
		if s := m.StoppedAt(); s.After(t) {
			t = s
		}
	}
	return t
}

// errMemberEnded stands for a member that returned nil while the Group
// still ran (it never does; the Group ends all the same, not half-served).
var errMemberEnded = errors.New("snakepit: a pool's workers stopped on their own")

// Serve implements suture.Service.
func (g *Group) Serve(ctx context.Context) error {
	if len(g.members) == 1 {
		return g.members[0].Serve(ctx)
	}
	inner, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for _, m := range g.members {
			select {
			case <-m.Ready():
			case <-inner.Done():
				return
			}
		}
		close(g.ready)
	}()
	errs := make(chan error, len(g.members))
	for _, m := range g.members {
		go func() { errs <- m.Serve(inner) }()
	}
	var first error
	for range g.members {
		err := <-errs
		if ctx.Err() == nil && first == nil {
			// One member ended while the App runs: its start failed.
			first = err
			if first == nil {
				first = errMemberEnded
			}
			cancel()
		}
	}
	cancel()
	wg.Wait()
	return first
}
