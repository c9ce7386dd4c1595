package snakepit

import (
	"fmt"
	"slices"
	"time"

	"github.com/snakepit-go/snakepit/pool"
)

// DefaultStopTimeout is Config.StopTimeout's default: the App's whole stop,
// worst case included, fits in it. It leaves 2 s of margin inside suture's
// default 10 s Timeout, so an App added to a parent supervisor with default
// settings is never abandoned (with its processes alive) mid-stop.
const DefaultStopTimeout = 8 * time.Second

// Fixed shares of the stop budget. They are small because each covers work
// that is quick unless something is already broken: reaping a SIGKILLed
// process, closing the bbolt file, sweeping /proc for survivors (there
// should be none), letting host calls of already-dead workers go.
const (
	reapSlack         = 500 * time.Millisecond // SIGKILL → reaped → Serve returned
	nestMargin        = 250 * time.Millisecond // between one bound and the next outer one
	maxCancelWait     = 500 * time.Millisecond // pool: cancelled calls return
	minDrain          = 100 * time.Millisecond // below this, draining is meaningless
	bridgeGrace       = 250 * time.Millisecond
	cleanupKillGrace  = 500 * time.Millisecond
	cleanupSweepSlack = 500 * time.Millisecond // scan /proc, reap what was killed
	registryStop      = 500 * time.Millisecond
	// discoveryStop: the discovery loop stops first; it only cuts the
	// drains of endpoints that were vanishing (remote workers stop at once).
	discoveryStop = 500 * time.Millisecond
	// scalerStop: the autoscaler returns at once; a removal it began is
	// the workers' to finish (their stop waits for it).
	scalerStop = 100 * time.Millisecond
)

// stopBudget is every stop timeout of an App, derived from one total. The
// stop is sequential (discovery, autoscale, workers, bridge, cleanup,
// registry; docs/GUARANTEES.md §3), so the
// children's bounds add up to at most total; inside the workers child the
// drain, the pool's wait for cancelled calls and the starters' stop follow
// one another; and each process-level bound nests strictly inside the one
// that waits for it: workerGrace < starter < workersSup < workers < total.
type stopBudget struct {
	total       time.Duration // Config.StopTimeout
	workerGrace time.Duration // SIGTERM → SIGKILL per worker (Config.StopGrace)
	starter     time.Duration // a Starter's wait for its worker to be reaped
	workersSup  time.Duration // the workers supervisor's wait for one Starter
	drain       time.Duration // in-flight calls may finish
	cancelWait  time.Duration // the pool's wait after cancelling what is left
	workers     time.Duration // the root's bound for the workers child
	bridgeGrace time.Duration // per phase of the bridge's stop (two phases)
	bridge      time.Duration
	cleanupKill time.Duration // SIGTERM → SIGKILL for survivors the sweep finds
	cleanup     time.Duration
	registry    time.Duration
	discovery   time.Duration // 0 when no pool has Discovery
	scaler      time.Duration // 0 when no pool is elastic
}

// newStopBudget splits cfg.StopTimeout (defaults applied) for the
// resolved pools pcs: an elastic pool adds the scalers' share (their one
// tree child stops them side by side, so one share covers them all), a
// pool with Discovery the watchers', and the longest HungGrace bounds
// every pool's wait for its cancelled calls. Whatever is not
// needed by the fixed shares and the workers' stop goes to the drain; a
// configuration that leaves less than minDrain is refused, naming what to
// change, rather than silently overrunning the total.
func newStopBudget(cfg Config, pcs []PoolConfig) (stopBudget, error) {
	var hung time.Duration
	for i := range pcs {
		h := pcs[i].HungGrace
		if h == 0 {
			h = pool.DefaultHungGrace
		}
		hung = max(hung, h)
	}
	b := stopBudget{total: cfg.StopTimeout, workerGrace: cfg.StopGrace, bridgeGrace: bridgeGrace, cleanupKill: cleanupKillGrace, registry: registryStop}
	b.starter = b.workerGrace + reapSlack
	b.workersSup = b.starter + nestMargin
	b.cancelWait = min(hung, maxCancelWait)
	b.bridge = 2*b.bridgeGrace + nestMargin
	b.cleanup = b.cleanupKill + cleanupSweepSlack
	if slices.ContainsFunc(pcs, func(p PoolConfig) bool { return p.Discovery != nil }) {
		b.discovery = discoveryStop
	}
	if anyElastic(pcs) {
		b.scaler = scalerStop
	}
	b.workers = b.total - b.bridge - b.cleanup - b.registry - b.discovery - b.scaler - nestMargin
	b.drain = b.workers - b.workersSup - b.cancelWait - nestMargin
	if b.drain < minDrain {
		short := minDrain - b.drain
		fix := fmt.Sprintf("raise StopTimeout to at least %s", b.total+short)
		if b.workerGrace > short {
			fix += fmt.Sprintf(" or lower StopGrace to at most %s", b.workerGrace-short)
		}
		return b, fmt.Errorf("%w: StopGrace %s does not fit in StopTimeout %s, which must also cover the drain, the bridge, the cleanup and the registry; %s",
			ErrInvalidConfig, b.workerGrace, b.total, fix)
	}
	return b, nil
}
