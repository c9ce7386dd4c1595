package snakepit_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/snakepit-go/snakepit"
	"github.com/snakepit-go/snakepit/worker/fake"
)

// Mistakes that would only surface when the registry is opened or when the
// first worker describes its tools are reported by New, naming the field.
func TestNewRejectsUnusableInstanceAndMessageLimit(t *testing.T) {
	for name, tc := range map[string]struct {
		cfg   snakepit.Config
		field string
	}{
		"instance with a slash":    {snakepit.Config{Instance: "a/b"}, "Instance"},
		"instance starting with .": {snakepit.Config{Instance: ".hidden"}, "Instance"},
		"instance too long":        {snakepit.Config{Instance: strings.Repeat("x", 65)}, "Instance"},
		"message limit too small":  {snakepit.Config{MaxMessageBytes: snakepit.MinMessageBytes - 1}, "MaxMessageBytes"},
	} {
		t.Run(name, func(t *testing.T) {
			tc.cfg.WorkerFactory = &fake.Factory{}
			_, err := snakepit.New(tc.cfg)
			if !errors.Is(err, snakepit.ErrInvalidConfig) || !strings.Contains(err.Error(), tc.field) {
				t.Fatalf("New = %v; want ErrInvalidConfig naming %s", err, tc.field)
			}
		})
	}
	for _, ok := range []snakepit.Config{{Instance: "team-a_1.x"}, {MaxMessageBytes: snakepit.MinMessageBytes}} {
		ok.WorkerFactory = &fake.Factory{}
		if _, err := snakepit.New(ok); err != nil {
			t.Errorf("New(%+v) = %v; want it accepted", ok, err)
		}
	}
}

// A call on an App nobody runs would otherwise wait out the caller's whole
// deadline for a readiness that can never come.
func TestCallBeforeStartFailsAtOnce(t *testing.T) {
	app, err := snakepit.New(fakeConfig(t, &fake.Factory{}, 1))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	begin := time.Now()
	if _, err := app.Execute(ctx, "echo", nil); !errors.Is(err, snakepit.ErrNotStarted) {
		t.Fatalf("Execute before Start = %v; want ErrNotStarted", err)
	}
	for _, err := range app.ExecuteStream(ctx, "echo", nil) {
		if !errors.Is(err, snakepit.ErrNotStarted) {
			t.Fatalf("ExecuteStream before Start = %v; want ErrNotStarted", err)
		}
	}
	if took := time.Since(begin); took > 2*time.Second {
		t.Fatalf("the calls took %s; they must fail at once", took)
	}
	if !strings.Contains(snakepit.ErrNotStarted.Error(), "Start") {
		t.Fatalf("%q does not say to call Start", snakepit.ErrNotStarted)
	}
}

// A registry that cannot be opened for a reason other than a lock is one
// sentinel, so callers need not know the registry's internals.
func TestUnusableRegistryIsErrRegistry(t *testing.T) {
	file := filepath.Join(t.TempDir(), "plain")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := fakeConfig(t, &fake.Factory{}, 1)
	cfg.RegistryPath = filepath.Join(file, "sub", "r.db")
	app, err := snakepit.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err = app.Start(ctx)
	if !errors.Is(err, snakepit.ErrRegistry) || errors.Is(err, snakepit.ErrRegistryLocked) {
		t.Fatalf("Start = %v; want ErrRegistry (not ErrRegistryLocked)", err)
	}
}
