// Command linesworker is a runnable example of a custom worker type: a pool
// of processes of a non-Python executable (this very binary, in "serve"
// mode) speaking JSON lines, supervised, restarted and reaped by snakepit
// exactly like its Python workers. See package lines for the worker type.
//
//	go run ./examples/linesworker          # start 2 workers, call them, run until SIGTERM/Ctrl-C
//	go run ./examples/linesworker -once    # the same, then stop at once
//
// It prints "ready run_id=<id>" once the pool is ready and "stopped" after
// the ordered stop.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/snakepit-go/snakepit"
	"github.com/snakepit-go/snakepit/examples/linesworker/lines"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "serve" {
		os.Exit(serve())
	}
	once := flag.Bool("once", false, "stop right after the demo calls")
	workers := flag.Int("workers", 2, "worker processes")
	flag.Parse()
	if err := host(*workers, *once); err != nil {
		fmt.Fprintln(os.Stderr, "linesworker:", err)
		os.Exit(1)
	}
}

func host(workers int, once bool) error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	app, err := snakepit.New(snakepit.Config{
		Workers:       workers,
		WorkerFactory: &lines.Factory{Command: []string{self, "serve"}},
		Logger:        slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
	})
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := app.Start(ctx); err != nil {
		return err
	}
	fmt.Println("ready run_id=" + app.RunID())
	sum, err := snakepit.Decode[float64](app.Execute(ctx, "add", map[string]any{"a": 2, "b": 40}))
	if err != nil {
		return err
	}
	fmt.Printf("add(2, 40) = %v\n", sum)
	if !once {
		<-ctx.Done()
	}
	sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := app.Stop(sctx); err != nil {
		return err
	}
	fmt.Println("stopped")
	return nil
}

// serve is the worker process: the line protocol on stdin/stdout. It leads
// its process group (childproc makes it so), and takes the group with it
// when it ends — at SIGTERM or at EOF on stdin, which is also how it learns
// that its host died.
func serve() int {
	term := make(chan os.Signal, 1)
	signal.Notify(term, syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- lines.ServeProcess(os.Stdin, os.Stdout, tools) }()
	select {
	case <-term:
	case <-done:
	}
	// Everything this process started is in its group.
	_ = syscall.Kill(-os.Getpid(), syscall.SIGKILL)
	return 0
}

var tools = map[string]func(json.RawMessage) (any, error){
	"echo": func(a json.RawMessage) (any, error) { return a, nil },
	"add": func(a json.RawMessage) (any, error) {
		var v struct{ A, B float64 }
		if err := json.Unmarshal(a, &v); err != nil {
			return nil, err
		}
		return v.A + v.B, nil
	},
	"pid": func(json.RawMessage) (any, error) { return os.Getpid(), nil },
	// spawn_child starts a descendant in this process's group (in a new
	// session and group with "new_session"), for the conformance kit's
	// descendant cases.
	"spawn_child": func(a json.RawMessage) (any, error) {
		var v struct {
			Seconds    float64
			NewSession bool `json:"new_session"`
		}
		_ = json.Unmarshal(a, &v)
		if v.Seconds <= 0 {
			v.Seconds = 60
		}
		cmd := exec.Command("sleep", strconv.FormatFloat(v.Seconds, 'f', -1, 64))
		if v.NewSession {
			cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
		}
		if err := cmd.Start(); err != nil {
			return nil, err
		}
		go func() { _ = cmd.Wait() }()
		return map[string]int{"pid": cmd.Process.Pid}, nil
	},
	"crash": func(json.RawMessage) (any, error) {
		os.Exit(3)
		return nil, errors.New("unreachable")
	},
}
