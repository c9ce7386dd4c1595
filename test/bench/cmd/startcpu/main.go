// Command startcpu measures the host's CPU for a first New + Start, the
// figure BenchmarkStart reports as host-cpu-ms for its N = 4 line: each
// sample is a fresh process (so nothing is warm in memory: the interpreter
// check, the package digest, proto and gRPC set-up all run once more) that
// builds an App with -n workers, starts it and reads getrusage of itself
// and of its reaped children (the interpreter check) around New + Start,
// then stops it. Run two builds of it in turn for a paired comparison:
//
//	cd test/bench && go build -o /tmp/startcpu ./cmd/startcpu && \
//	  SNAKEPIT_PYTHON=/usr/bin/python3 /tmp/startcpu -n 4 -i 15
//
// Remove "$XDG_CACHE_HOME/snakepit/interpreters" (default
// ~/.cache/snakepit/interpreters) before a sample to measure a cold
// interpreter check.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/snakepit-go/snakepit"
)

func main() {
	n := flag.Int("n", 4, "workers")
	samples := flag.Int("i", 10, "samples (fresh processes)")
	child := flag.Bool("child", false, "internal: take one sample in this process")
	flag.Parse()
	if *child {
		if err := sample(*n); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		return
	}
	var hosts []float64
	for i := range *samples {
		out, err := exec.Command(os.Args[0], "-child", "-n", fmt.Sprint(*n)).Output()
		if err != nil {
			fmt.Fprintf(os.Stderr, "sample %d: %v\n", i, err)
			os.Exit(1)
		}
		var host, wall float64
		if _, err := fmt.Sscan(strings.TrimSpace(string(out)), &host, &wall); err != nil {
			fmt.Fprintf(os.Stderr, "sample %d: unreadable output %q\n", i, out)
			os.Exit(1)
		}
		fmt.Printf("host-cpu-ms %.1f  ms %.0f\n", host, wall)
		hosts = append(hosts, host)
	}
	sort.Float64s(hosts)
	fmt.Printf("N=%d: host-cpu-ms median %.1f, range %.1f..%.1f over %d fresh processes\n",
		*n, hosts[len(hosts)/2], hosts[0], hosts[len(hosts)-1], len(hosts))
}

func cpu(who int) time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(who, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// sample prints the host's CPU (ms) for New + Start and the wall time (ms).
func sample(n int) error {
	dir, err := os.MkdirTemp("", "startcpu-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	self0, child0, t0 := cpu(syscall.RUSAGE_SELF), cpu(syscall.RUSAGE_CHILDREN), time.Now()
	app, err := snakepit.New(snakepit.Config{Workers: n, RegistryPath: filepath.Join(dir, "r.db"),
		Logger: slog.New(slog.NewTextHandler(io.Discard, &slog.HandlerOptions{Level: slog.LevelError}))})
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := app.Start(ctx); err != nil {
		return err
	}
	wall := time.Since(t0)
	host := cpu(syscall.RUSAGE_SELF) - self0 + cpu(syscall.RUSAGE_CHILDREN) - child0
	if _, err := app.Stop(ctx); err != nil {
		return err
	}
	fmt.Printf("%.1f %.0f\n", float64(host.Microseconds())/1000, float64(wall.Milliseconds()))
	return nil
}
