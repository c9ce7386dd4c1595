// Command host is the lifecycle suite's stand-in for an application that
// embeds snakepit and is then killed with SIGKILL. It is built by the test
// (test/lifecycle) and never used otherwise.
//
//	host -registry PATH [-workers N] [-grandchildren K] [-session-grandchildren S]
//	     [-callers C] [-sleep-ms MS] [-adapter A -pythonpath DIR] [-no-host-death-watch]
//	     [-scrubbed-daemons D] [-stubborn]
//
// It starts an App with N workers on the registry, has the workers start K
// grandchildren in their process group (spawn_child), S that leave it
// (spawn_session_child, needs the lifecycle adapter) and D double-forked
// setsid daemons with an empty environment (spawn_daemon env=scrubbed),
// starts C goroutines
// that keep sleep(MS) calls in flight, waits until calls are in flight, then
// prints exactly one line
//
//	HOST run_id=<id> grandchildren=<pid>,... session_grandchildren=<pid>,... scrubbed=<pid>,... containment=<mode>
//
// on stdout and runs until it is killed. Logs (warnings and errors) go to
// stderr.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/snakepit-go/snakepit"
)

func main() {
	reg := flag.String("registry", "", "registry file (required)")
	workers := flag.Int("workers", 4, "worker processes")
	kids := flag.Int("grandchildren", 4, "spawn_child calls")
	sessionKids := flag.Int("session-grandchildren", 0, "spawn_session_child calls")
	adapter := flag.String("adapter", "", "adapter class (default: the showcase)")
	pypath := flag.String("pythonpath", "", "extra PYTHONPATH entry for the adapter")
	callers := flag.Int("callers", 6, "goroutines keeping sleep calls in flight")
	sleepMS := flag.Int("sleep-ms", 200, "duration of each sleep call")
	stubborn := flag.Bool("stubborn", false, "also keep one `stubborn` call in flight (the worker then ignores SIGTERM)")
	scrubbed := flag.Int("scrubbed-daemons", 0, "spawn_daemon env=scrubbed calls")
	noWatch := flag.Bool("no-host-death-watch", false, "TEST-ONLY: workers do not watch stdin or their parent pid, so only the parent-death signal can stop them")
	flag.Parse()
	if *reg == "" {
		fail("-registry is required")
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	cfg := snakepit.Config{Workers: *workers, RegistryPath: *reg, Adapter: *adapter, Logger: log}
	if *pypath != "" {
		cfg.PythonPath = []string{*pypath}
	}
	if *noWatch {
		cfg.Env = map[string]string{"SNAKEPIT_TEST_IGNORE_HOST_DEATH": "1"}
	}
	app, err := snakepit.New(cfg)
	if err != nil {
		fail("new: %v", err)
	}
	ctx := context.Background()
	startCtx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if err := app.Start(startCtx); err != nil {
		fail("start: %v", err)
	}

	var mu sync.Mutex
	pids := map[string][]string{}
	var wg sync.WaitGroup
	for i := range *kids + *sessionKids + *scrubbed {
		tool, args := "spawn_child", map[string]any{"seconds": 300}
		switch {
		case i >= *kids+*sessionKids:
			tool, args["env"] = "spawn_daemon", "scrubbed"
		case i >= *kids:
			tool = "spawn_session_child"
		}
		wg.Go(func() {
			res, err := snakepit.Decode[map[string]int](app.Execute(startCtx, tool, args))
			if err != nil {
				fail("%s: %v", tool, err)
			}
			mu.Lock()
			pids[tool] = append(pids[tool], strconv.Itoa(res["pid"]))
			mu.Unlock()
		})
	}
	wg.Wait()

	if *stubborn {
		go func() { _, _ = app.Execute(ctx, "stubborn", map[string]any{"seconds": 300}) }()
	}
	for range *callers {
		go func() {
			for {
				if _, err := app.Execute(ctx, "sleep", map[string]any{"ms": *sleepMS}); err != nil {
					fmt.Fprintf(os.Stderr, "host: sleep call failed: %v\n", err)
					time.Sleep(10 * time.Millisecond)
				}
			}
		}()
	}
	deadline := time.Now().Add(30 * time.Second)
	for app.Stats().Pool.InFlight == 0 {
		if time.Now().After(deadline) {
			fail("no call in flight after 30 s")
		}
		time.Sleep(5 * time.Millisecond)
	}
	fmt.Printf("HOST run_id=%s grandchildren=%s session_grandchildren=%s scrubbed=%s containment=%s\n", app.RunID(),
		strings.Join(pids["spawn_child"], ","), strings.Join(pids["spawn_session_child"], ","), strings.Join(pids["spawn_daemon"], ","),
		app.Stats().Containment)
	select {}
}

func fail(format string, a ...any) {
	fmt.Fprintf(os.Stderr, "host: "+format+"\n", a...)
	os.Exit(1)
}
