package snakepit_test

import (
	"context"
	"errors"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/snakepit-go/snakepit"
	"github.com/snakepit-go/snakepit/internal/cgroup"
	"github.com/snakepit-go/snakepit/internal/testutil"
	"github.com/snakepit-go/snakepit/worker/fake"
)

// An adapter name the Python side could never load fails New with
// ErrInvalidConfig; both forms load_adapter_class accepts pass.
func TestAdapterNameIsValidatedByNew(t *testing.T) {
	for _, bad := range []string{"not a class path", "NoModule", "pkg.", ".Class", "pkg:", "a:b:C", "pkg.mod-ule.Class", "pkg..Class"} {
		_, err := snakepit.New(snakepit.Config{Adapter: bad, RegistryPath: filepath.Join(t.TempDir(), "r.db"), Logger: testutil.Logger()})
		if !errors.Is(err, snakepit.ErrInvalidConfig) || !strings.Contains(err.Error(), "package.module:Class") {
			t.Errorf("Adapter %q: %v; want ErrInvalidConfig naming the accepted forms", bad, err)
		}
	}
	for _, good := range []string{"pkg.Class", "pkg.mod.Class", "pkg.mod:Class", "pkg:Outer.Inner", "_p.C1"} {
		cfg := snakepit.Config{Adapter: good, WorkerFactory: &fake.Factory{}, RegistryPath: filepath.Join(t.TempDir(), "r.db"), Logger: testutil.Logger()}
		if _, err := snakepit.New(cfg); err != nil {
			t.Errorf("Adapter %q: %v", good, err)
		}
	}
}

// Config.ReadyTimeout is how long a call made while no worker is ready
// waits, and it is validated like the other durations.
func TestReadyTimeoutBoundsTheWaitForAReadyWorker(t *testing.T) {
	cfg := snakepit.Config{ReadyTimeout: -time.Second, WorkerFactory: &fake.Factory{}, RegistryPath: filepath.Join(t.TempDir(), "r.db")}
	if _, err := snakepit.New(cfg); !errors.Is(err, snakepit.ErrInvalidConfig) || !strings.Contains(err.Error(), "ReadyTimeout") {
		t.Fatalf("negative ReadyTimeout: %v; want ErrInvalidConfig naming it", err)
	}
	f := &fake.Factory{Options: []fake.Option{fake.WithReadyDelay(time.Hour), fake.WithTool("echo", fake.Echo)}}
	cfg = fakeConfig(t, f, 1)
	cfg.ReadyTimeout = 100 * time.Millisecond
	app, err := snakepit.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- app.Serve(ctx) }()
	defer func() {
		cancel()
		select {
		case <-served:
		case <-time.After(10 * time.Second):
			t.Error("Serve did not return after cancellation")
		}
	}()
	deadline := time.Now().Add(5 * time.Second)
	for {
		began := time.Now()
		_, err = app.Execute(context.Background(), "echo", nil)
		if !errors.Is(err, snakepit.ErrNotStarted) {
			if !errors.Is(err, snakepit.ErrNotReady) || !strings.Contains(err.Error(), "ReadyTimeout (100ms)") {
				t.Fatalf("a call with no worker ready: %v; want ErrNotReady after ReadyTimeout", err)
			}
			if d := time.Since(began); d > 3*time.Second {
				t.Fatalf("the call waited %s; ReadyTimeout is 100ms", d)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("the App did not start serving")
		}
		time.Sleep(time.Millisecond)
	}
}

// A pool's limit whose controller is not delegated fails Start with
// ErrContainment naming that pool (not the other one, which sets a limit
// too), the controller and the cgroup; nothing is started.
func TestRefusedPoolLimitNamesThePool(t *testing.T) {
	d := cgroup.Detect()
	if !d.Mode.Contained() || os.Getenv("SNAKEPIT_CGROUP") == "off" {
		t.Skipf("no cgroup v2 containment here: %s", d.Reason)
	}
	sub, _ := os.ReadFile(filepath.Join(d.Base, "cgroup.subtree_control"))
	if strings.Contains(string(sub), "memory") || strings.Contains(string(sub), "cpu") {
		t.Skip("the memory or cpu controller is delegated here")
	}
	f := &fake.Factory{}
	app, err := snakepit.New(snakepit.Config{Workers: 1, WorkerFactory: f, RegistryPath: filepath.Join(t.TempDir(), "r.db"), Logger: testutil.Logger(),
		Pools: []snakepit.PoolConfig{{Name: "tok", Workers: 1}, {Name: "embed", Workers: 1, MemoryMax: 1 << 30}, {Name: "late", Workers: 1, CPUMax: 1}}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err = app.Start(ctx)
	if !errors.Is(err, snakepit.ErrContainment) {
		t.Fatalf("Start: %v, want ErrContainment", err)
	}
	for _, want := range []string{`pool "embed"`, "MemoryMax", "memory controller", d.Base} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("refusal %q does not name %s", err, want)
		}
	}
	if n := len(f.Workers()); n != 0 {
		t.Errorf("%d workers started after the refusal", n)
	}
}

// Containment, MemoryMax and CPUMax are validated by New; an unknown
// SNAKEPIT_CGROUP fails Start with ErrContainment, starting nothing.
func TestContainmentSettingsAreValidated(t *testing.T) {
	for _, cfg := range []snakepit.Config{{Containment: "sometimes"}, {MemoryMax: -1}, {CPUMax: -0.5}, {CPUMax: math.NaN()},
		{Pools: []snakepit.PoolConfig{{Name: "p", MemoryMax: -1}}}, {Pools: []snakepit.PoolConfig{{Name: "p", CPUMax: math.Inf(1)}}}} {
		cfg.WorkerFactory, cfg.Logger = &fake.Factory{}, testutil.Logger()
		_, err := snakepit.New(cfg)
		if !errors.Is(err, snakepit.ErrInvalidConfig) || len(cfg.Pools) > 0 && !strings.Contains(err.Error(), `pool "p"`) {
			t.Errorf("New(%+v): %v, want ErrInvalidConfig (naming pool p if set there)", cfg, err)
		}
	}
	t.Setenv("SNAKEPIT_CGROUP", "sometimes")
	app, err := snakepit.New(snakepit.Config{Workers: 1, WorkerFactory: &fake.Factory{}, RegistryPath: filepath.Join(t.TempDir(), "r.db"), Logger: testutil.Logger()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := app.Start(ctx); !errors.Is(err, snakepit.ErrContainment) || !strings.Contains(err.Error(), "SNAKEPIT_CGROUP") {
		t.Fatalf("Start with SNAKEPIT_CGROUP=sometimes: %v; want ErrContainment naming the variable", err)
	}
}
