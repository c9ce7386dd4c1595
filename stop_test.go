package snakepit

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/snakepit-go/snakepit/worker/fake"
)

// Every inner stop timeout must end strictly before the bound that waits
// for it, and the sequential children must fit in the total; otherwise an
// outer level gives up (and moves on, or returns to a parent supervisor)
// while a process is still being stopped.
func TestStopBoundsNestStrictlyInsideStopTimeout(t *testing.T) {
	for _, cfg := range []Config{
		{},
		{StopGrace: 100 * time.Millisecond},
		{StopGrace: 5 * time.Second, StopTimeout: 9500 * time.Millisecond},
		{StopGrace: 30 * time.Second, StopTimeout: time.Minute},
		{HungGrace: 10 * time.Second},
		{HungGrace: 50 * time.Millisecond, StopTimeout: 5 * time.Second, StopGrace: time.Second},
	} {
		name := fmt.Sprintf("StopGrace=%s StopTimeout=%s HungGrace=%s", cfg.StopGrace, cfg.StopTimeout, cfg.HungGrace)
		t.Run(name, func(t *testing.T) {
			if err := cfg.setDefaults(); err != nil {
				t.Fatal(err)
			}
			checkStopBudget(t, cfg, false)
			// Elastic pools: one more sequential child, the scalers.
			if b := checkStopBudget(t, cfg, true); b.scaler <= 0 {
				t.Errorf("an elastic App's budget has no scaler share: %+v", b)
			}
		})
	}
	def := withDefaults(t, Config{})
	if b, _ := newStopBudget(def, resolved(t, def)); b.total+time.Second > 10*time.Second {
		t.Errorf("the default StopTimeout %s leaves under 1 s of margin inside suture's default 10 s Timeout", b.total)
	}
}

func checkStopBudget(t *testing.T, cfg Config, elastic bool) stopBudget {
	t.Helper()
	pcs := resolved(t, cfg)
	if elastic {
		pcs = append(pcs, cfg.inherit(PoolConfig{Name: "el", MaxWorkers: 2}))
	}
	b, err := newStopBudget(cfg, pcs)
	if err != nil {
		t.Fatal(err)
	}
	if b.workerGrace != cfg.StopGrace || b.total != cfg.StopTimeout {
		t.Fatalf("budget %+v does not use StopGrace %s and StopTimeout %s", b, cfg.StopGrace, cfg.StopTimeout)
	}
	for _, n := range []struct {
		inner, outer string
		in, out      time.Duration
	}{
		{"worker grace", "starter timeout", b.workerGrace, b.starter},
		{"starter timeout", "workers supervisor timeout", b.starter, b.workersSup},
		{"drain + pool cancel wait + workers supervisor", "root's bound for workers", b.drain + b.cancelWait + b.workersSup, b.workers},
		{"root's bound for workers", "StopTimeout", b.workers, b.total},
		{"two bridge grace phases", "root's bound for the bridge", 2 * b.bridgeGrace, b.bridge},
		{"cleanup kill grace", "root's bound for the cleanup", b.cleanupKill, b.cleanup},
		{"scaler + workers + bridge + cleanup + registry", "StopTimeout", b.scaler + b.workers + b.bridge + b.cleanup + b.registry, b.total},
	} {
		if n.in >= n.out {
			t.Errorf("%s (%s) does not end strictly before %s (%s)", n.inner, n.in, n.outer, n.out)
		}
	}
	for name, d := range map[string]time.Duration{"drain": b.drain, "cancel wait": b.cancelWait, "registry": b.registry} {
		if d <= 0 {
			t.Errorf("%s is %s; every phase needs time", name, d)
		}
	}
	return b
}

// A StopGrace the total cannot hold is refused by New with what to change,
// not discovered when a parent supervisor abandons the stop.
func TestStopGraceThatDoesNotFitIsInvalidConfig(t *testing.T) {
	for _, cfg := range []Config{
		{StopGrace: 8 * time.Second},
		{StopGrace: 2 * time.Second, StopTimeout: 3 * time.Second},
		{StopTimeout: time.Second},
	} {
		cfg.WorkerFactory = &fake.Factory{}
		_, err := New(cfg)
		if !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), "raise StopTimeout") {
			t.Errorf("New(StopGrace %s, StopTimeout %s) = %v; want ErrInvalidConfig saying what to raise", cfg.StopGrace, cfg.StopTimeout, err)
		}
	}
}

func withDefaults(t *testing.T, cfg Config) Config {
	t.Helper()
	if err := cfg.setDefaults(); err != nil {
		t.Fatal(err)
	}
	return cfg
}

func resolved(t *testing.T, cfg Config) []PoolConfig {
	t.Helper()
	pcs, err := cfg.pools()
	if err != nil {
		t.Fatal(err)
	}
	return pcs
}

// Every pool's wait for its cancelled calls (pool.Options.StopWait) is
// the one cancelWait: a named pool's longer HungGrace sets it, not the
// top-level one alone.
func TestCancelWaitCoversEveryPoolsHungGrace(t *testing.T) {
	cfg := withDefaults(t, Config{HungGrace: 100 * time.Millisecond, Pools: []PoolConfig{{Name: "slow", HungGrace: 2 * time.Second}}})
	b := checkStopBudget(t, cfg, false)
	if b.cancelWait != maxCancelWait {
		t.Fatalf("cancelWait %s; want %s (the slow pool's HungGrace, capped)", b.cancelWait, maxCancelWait)
	}
	if b := checkStopBudget(t, withDefaults(t, Config{HungGrace: 100 * time.Millisecond}), false); b.cancelWait != 100*time.Millisecond {
		t.Fatalf("cancelWait %s; want the one pool's HungGrace 100ms", b.cancelWait)
	}
}
