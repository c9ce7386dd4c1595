package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/snakepit-go/snakepit"
	"github.com/snakepit-go/snakepit/registry"
)

func cmdRun(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var pf poolFlags
	pf.register(fs, 4)
	var pools poolsFlags
	pools.register(fs)
	var ef elasticFlags
	ef.register(fs)
	var af agentFlags
	af.register(fs)
	adminAddr := fs.String("admin", "", "serve /metrics, /healthz, /readyz, /status and the status page /status.html on this loopback `ADDR` (e.g. 127.0.0.1:9090); empty: off")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *adminAddr != "" {
		if err := checkAdminAddr(*adminAddr); err != nil {
			fmt.Fprintln(stderr, "snakepit run:", err)
			return 2
		}
	}
	cfg := pf.config(stderr)
	if err := af.apply(&cfg, flagSet(fs, "workers")); err != nil {
		fmt.Fprintln(stderr, "snakepit run:", err)
		return 2
	}
	ef.apply(fs, &cfg)
	if err := pools.apply(&cfg); err != nil {
		fmt.Fprintln(stderr, "snakepit run:", err)
		return 2
	}
	app, err := snakepit.New(cfg)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)
	// SIGHUP reloads; taken from here on, so one during the start is kept
	// for when the App is ready instead of ending the command.
	hups := make(chan os.Signal, 1)
	signal.Notify(hups, syscall.SIGHUP)
	defer signal.Stop(hups)
	// One goroutine owns the signals: the first one cancels a start in
	// progress or, once running, starts the ordered stop.
	startCtx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stopping := make(chan struct{})
	go func() {
		<-sigs
		close(stopping)
		cancel()
	}()
	if err := app.Start(startCtx); err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	// The admin listener starts once the App is ready, before the ready
	// line, and stops before the App does.
	var admin *adminServer
	if *adminAddr != "" {
		if admin, err = startAdmin(app, *adminAddr, cfg.Logger); err != nil {
			fmt.Fprintln(stderr, "snakepit run:", err)
			stopCtx, stopCancel := context.WithTimeout(context.Background(), time.Minute)
			defer stopCancel()
			if _, err := app.Stop(stopCtx); err != nil {
				fmt.Fprintln(stderr, err)
			}
			return 1
		}
		fmt.Fprintf(stderr, "admin listening on http://%s\n", admin.Addr())
	}
	ready := fmt.Sprintf("ready run_id=%s workers=%s", app.RunID(), sizeText(&cfg))
	if len(cfg.Pools) > 0 {
		ready += " pools=" + strings.Join(app.PoolNames(), ",")
	}
	fmt.Fprintln(stdout, ready)
	reloads := reloadOnSIGHUP(app, hups, stopping, stderr)
	<-stopping
	<-reloads // a reload in progress is withdrawn first
	stopCtx, stopCancel := context.WithTimeout(context.Background(), time.Minute)
	defer stopCancel()
	if admin != nil {
		if err := admin.Shutdown(stopCtx); err != nil {
			fmt.Fprintln(stderr, "snakepit run: admin listener:", err)
		}
	}
	if _, err := app.Stop(stopCtx); err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	return 0
}

// reloadOnSIGHUP runs App.Reload for each SIGHUP until stopping closes,
// one at a time (SIGHUPs arriving during a reload make one more), and
// prints each outcome on stderr. The returned channel closes when it is
// done; a reload under way when stopping closes is withdrawn.
func reloadOnSIGHUP(app *snakepit.App, hups <-chan os.Signal, stopping <-chan struct{}, stderr io.Writer) <-chan struct{} {
	done := make(chan struct{})
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		<-stopping
		cancel()
	}()
	go func() {
		defer close(done)
		for {
			select {
			case <-stopping:
				return
			case <-hups:
			}
			fmt.Fprintln(stderr, "reload: SIGHUP received; replacing every worker process (make-before-break)")
			rep, err := app.Reload(ctx)
			if err != nil {
				// The error carries the new process's last stderr lines.
				fmt.Fprintf(stderr, "reload failed: recycled=%d: %v\n", len(rep.Recycled), err)
				continue
			}
			fmt.Fprintf(stderr, "reload: ok recycled=%d skipped=%d not_recyclable=%d duration=%s\n", len(rep.Recycled), len(rep.Skipped), len(rep.NotRecyclable), rep.Duration.Round(time.Millisecond))
		}
	}()
	return done
}

func cmdExec(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("exec", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var pf poolFlags
	pf.register(fs, 1)
	var af agentFlags
	af.register(fs)
	timeout := fs.Duration("timeout", 60*time.Second, "deadline for the call")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() < 1 || fs.NArg() > 2 {
		fmt.Fprintln(stderr, "usage: snakepit exec [flags] TOOL '<json args>'")
		return 2
	}
	tool := fs.Arg(0)
	var callArgs json.RawMessage
	if fs.NArg() == 2 {
		callArgs = json.RawMessage(fs.Arg(1))
	}
	cfg := pf.config(stderr)
	if err := af.apply(&cfg, flagSet(fs, "workers")); err != nil {
		fmt.Fprintln(stderr, "snakepit exec:", err)
		return 2
	}
	app, err := snakepit.New(cfg)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	// Ctrl-C cancels the call but still runs the ordered stop below.
	sigCtx, stopSignals := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stopSignals()
	ctx, cancel := context.WithTimeout(sigCtx, *timeout)
	defer cancel()
	if err := app.Start(ctx); err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	code := 0
	res, err := app.Execute(ctx, tool, callArgs)
	if err != nil {
		fmt.Fprintln(stderr, err)
		var te *snakepit.ToolError
		if errors.As(err, &te) && te.Traceback != "" {
			fmt.Fprintln(stderr, te.Traceback)
		}
		code = 1
	} else if res.Binary != nil {
		_, _ = stdout.Write(res.Binary)
	} else {
		fmt.Fprintln(stdout, string(res.JSON))
	}
	stopCtx, stopCancel := context.WithTimeout(context.Background(), time.Minute)
	defer stopCancel()
	if _, err := app.Stop(stopCtx); err != nil {
		fmt.Fprintln(stderr, err)
		code = 1
	}
	return code
}

func cmdReap(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("reap", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("registry", "", "registry file (default: the instance's file)")
	instance := fs.String("instance", "", "instance name")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	p := *path
	if p == "" {
		p = registry.DefaultPath(*instance)
	}
	reg, err := registry.Open(registry.Options{Path: p, Instance: *instance, RunID: registry.NewRunID()})
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	rep, err := reg.ReapOrphans(context.Background())
	_ = reg.Close()
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	fmt.Fprintf(stdout, "registry %s: runs=%d reaped=%d descendants=%d skipped_reused_pid=%d already_gone=%d cgroups=%d cgroup_procs=%d\n",
		p, rep.Runs, rep.Reaped, rep.Descendants, rep.SkippedReused, rep.AlreadyGone, rep.Cgroups, rep.CgroupProcs)
	for _, d := range rep.Details {
		fmt.Fprintln(stdout, "  "+d)
	}
	return 0
}
