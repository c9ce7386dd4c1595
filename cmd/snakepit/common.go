package main

import (
	"flag"
	"io"
	"log/slog"
	"strings"

	"github.com/snakepit-go/snakepit"
)

// poolFlags are the flags shared by the commands that start a pool.
type poolFlags struct {
	workers  int
	adapter  string
	python   string
	registry string
	instance string
	pypath   string
	logLevel string
	rss      int64
}

func (p *poolFlags) register(fs *flag.FlagSet, defaultWorkers int) {
	fs.IntVar(&p.workers, "workers", defaultWorkers, "number of Python worker processes")
	fs.StringVar(&p.adapter, "adapter", snakepit.DefaultAdapter, "Python adapter class (package.module.Class)")
	fs.StringVar(&p.python, "python", "", "Python interpreter (default: SNAKEPIT_PYTHON, a virtualenv, or the first with grpcio and protobuf>=3.20 installed)")
	fs.StringVar(&p.registry, "registry", "", "process registry file (default: per-instance file in the state directory)")
	fs.StringVar(&p.instance, "instance", "", "instance name, so several pools on one machine keep separate registries")
	fs.StringVar(&p.pypath, "pythonpath", "", "extra PYTHONPATH entries for your adapter, separated by ':'")
	fs.StringVar(&p.logLevel, "log-level", "warn", "log level: debug, info, warn, error")
	fs.Int64Var(&p.rss, "recycle-above-rss", 0, "replace a worker process (make-before-break) once its process tree's resident memory exceeds this many `BYTES`; 0: never")
}

func (p *poolFlags) config(stderr io.Writer) snakepit.Config {
	var lvl slog.Level
	_ = lvl.UnmarshalText([]byte(p.logLevel))
	cfg := snakepit.Config{
		Workers:         p.workers,
		Adapter:         p.adapter,
		Python:          p.python,
		RegistryPath:    p.registry,
		Instance:        p.instance,
		RecycleAboveRSS: p.rss,
		Logger:          slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: lvl})),
	}
	if p.pypath != "" {
		cfg.PythonPath = strings.Split(p.pypath, ":")
	}
	return cfg
}
