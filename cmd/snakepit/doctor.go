package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/snakepit-go/snakepit/internal/doctor"
	"github.com/snakepit-go/snakepit/registry"
	"github.com/snakepit-go/snakepit/remote"
)

// cmdDoctor checks the machine for what `snakepit run` with the same
// default-pool and agent flags needs (not --pools/--pool or the elastic
// bounds: it checks the default pool); exit 0 when nothing required
// failed, 1 otherwise, 2 on bad flags.
func cmdDoctor(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("doctor", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var pf poolFlags
	pf.register(fs, 4)
	var af agentFlags
	af.register(fs)
	asJSON := fs.Bool("json", false, "print the report as JSON (exit status as without it)")
	timeout := fs.Duration("timeout", doctor.DefaultTimeout, "bound on each check")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintln(stderr, "usage: snakepit doctor [flags] (snakepit run's default-pool and agent flags, without --pools, --pool, --min-workers and --max-workers, plus --json and --timeout; see snakepit doctor -h)")
		return 2
	}
	o := doctor.Options{Python: pf.python, Adapter: pf.adapter, RegistryPath: pf.registry,
		Workers: pf.workers, AgentTokenFile: af.tokenFile, Timeout: *timeout}
	if pf.pypath != "" {
		o.PythonPath = strings.Split(pf.pypath, ":")
	}
	if o.RegistryPath == "" {
		if pf.instance != "" {
			if err := registry.ValidInstance(pf.instance); err != nil {
				fmt.Fprintln(stderr, "snakepit doctor:", err)
				return 2
			}
		}
		o.RegistryPath = registry.DefaultPath(pf.instance)
	}
	if af.agents != "" {
		src, err := parseAgents(af.agents)
		if err != nil {
			fmt.Fprintln(stderr, "snakepit doctor:", err)
			return 2
		}
		o.Agents = src
		if !flagSet(fs, "workers") {
			o.Workers = 0
		}
		if af.ca != "" || af.cert != "" || af.key != "" || af.name != "" {
			if o.AgentTLS, err = remote.LoadClientTLS(af.ca, af.cert, af.key, af.name); err != nil {
				fmt.Fprintln(stderr, "snakepit doctor:", err)
				return 2
			}
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	rep := doctor.Run(ctx, o)
	write := rep.WriteText
	if *asJSON {
		write = rep.WriteJSON
	}
	if err := write(stdout); err != nil {
		fmt.Fprintln(stderr, "snakepit doctor:", err)
		return 1
	}
	if !rep.OK {
		return 1
	}
	return 0
}
