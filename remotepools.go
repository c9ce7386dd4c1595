package snakepit

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"

	"github.com/snakepit-go/snakepit/discovery"
	"github.com/snakepit-go/snakepit/remote"
	"github.com/snakepit-go/snakepit/supervisor"
)

// A pool with Discovery (Config.Discovery for the default pool,
// PoolConfig.Discovery for a named one) joins a remote worker per agent
// endpoint, which feeds on the agent's pool of the same name: the default
// pool on the agents' default pool, pool "embed" on their "embed". That
// name rule is agentPool's.

// agentPool is the agent's pool that pool pc's remote workers name: its
// own name, the default pool's being the protocol's empty name (so hosts
// and agents that predate named pools still meet).
func (pc *PoolConfig) agentPool() string {
	if pc.Name == DefaultPool {
		return ""
	}
	return pc.Name
}

// remoteID is the id of pool pr's remote worker for endpoint ep: the
// pool's worker prefix, so two pools fed by one agent keep apart.
func (pr *poolRun) remoteID(ep string) string {
	return pr.cfg.workerPrefix() + remote.WorkerID(ep)
}

// isRemote reports whether id is one of pool pr's remote workers.
func (pr *poolRun) isRemote(id string) bool {
	return strings.HasPrefix(id, pr.cfg.workerPrefix()+remote.IDPrefix)
}

// refreshDiscovery asks the discovery of the pool whose remote worker id
// failed to look again at once: its agent may be gone.
func (r *run) refreshDiscovery(id string) {
	for _, pr := range r.pools {
		if pr.watch != nil && pr.isRemote(id) {
			pr.watch.Refresh()
			return
		}
	}
}

// newWatchers builds the remote worker factories (reading the agents'
// token now, so a missing one fails New) and, for each pool with
// Discovery, the loop that joins and removes its remote workers.
func (a *App) newWatchers(r *run) error {
	// One factory per message limit: a named pool's own MaxMessageBytes
	// bounds its agents' client (unless Remote sets one for all).
	factories := map[int]*remote.Factory{}
	for _, pr := range r.pools {
		if pr.cfg.Discovery == nil {
			continue
		}
		ro := a.cfg.Remote
		if ro.MaxMessageBytes == 0 {
			ro.MaxMessageBytes = pr.cfg.MaxMessageBytes
		}
		rf := factories[ro.MaxMessageBytes]
		if rf == nil {
			if ro.Logger == nil {
				ro.Logger = a.log
			}
			var err error
			if rf, err = remote.NewFactory(ro); err != nil {
				return fmt.Errorf("%w: Remote: %w", ErrInvalidConfig, err)
			}
			factories[ro.MaxMessageBytes] = rf
		}
		w, err := a.newWatcher(pr, rf)
		if err != nil {
			return err
		}
		pr.watch = w
		r.watches.watches = append(r.watches.watches, w)
	}
	r.watches.ready = make(chan struct{})
	return nil
}

func (a *App) newWatcher(pr *poolRun, rf *remote.Factory) (*discovery.Watcher, error) {
	log, drain, agentPool := a.poolLog(pr.cfg), a.stop.drain, pr.cfg.agentPool()
	return discovery.NewWatcher(discovery.Options{
		Source: pr.cfg.Discovery, Interval: a.cfg.DiscoveryInterval, Logger: log,
		Join: func(ep string) error {
			return pr.work.AddWorker(pr.remoteID(ep), rf.ForPool(ep, agentPool), supervisor.Ungated())
		},
		Leave: func(ctx context.Context, ep string) {
			dctx, cancel := context.WithTimeout(ctx, drain)
			defer cancel()
			if err := pr.work.RemoveWorker(dctx, pr.remoteID(ep)); err != nil && !errors.Is(err, supervisor.ErrNoSuchWorker) {
				log.Warn("removing a vanished agent's worker", "endpoint", ep, "err", err)
			}
		},
	})
}

// watchGroup is the tree's one "discovery" child: every pool's Watcher,
// run side by side and stopped together, so one stop share
// (stopBudget.discovery) covers them however many pools have one.
type watchGroup struct {
	watches []*discovery.Watcher
	ready   chan struct{} // closed once every Watcher applied its first poll
	once    sync.Once
}

func (g *watchGroup) String() string { return "discovery" }

// Ready implements the tree's readiness: the App is not ready before every
// pool's first poll was applied.
func (g *watchGroup) Ready() <-chan struct{} { return g.ready }

// Serve implements suture.Service; a Watcher returns only when ctx ends.
func (g *watchGroup) Serve(ctx context.Context) error {
	var wg sync.WaitGroup
	for _, w := range g.watches {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = w.Serve(ctx)
		}()
	}
	go func() {
		for _, w := range g.watches {
			select {
			case <-w.Ready():
			case <-ctx.Done():
				return
			}
		}
		g.once.Do(func() { close(g.ready) })
	}()
	wg.Wait()
	return nil
}
