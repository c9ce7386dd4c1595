package main

import (
	"context"
	"crypto/tls"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/snakepit-go/snakepit"
	"github.com/snakepit-go/snakepit/agent"
)

// cmdServe runs an App and exposes its pools (the default one and those of
// --pools/--pool) to hosts on other machines (package agent). It prints "ready run_id=<id> workers=<n> addr=<addr>
// capacity=<c>" once it serves, and stops in order on SIGINT/SIGTERM:
// health NOT_SERVING, in-flight calls finish (--stop-grace), then the App.
func cmdServe(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var pf poolFlags
	pf.register(fs, 4)
	var pools poolsFlags
	pools.register(fs)
	listen := fs.String("listen", agent.DefaultListen, "agent endpoint `ADDR`; a non-loopback address needs --allow-non-loopback")
	allow := fs.Bool("allow-non-loopback", false, "allow --listen/--health-listen on an address other machines can reach")
	healthListen := fs.String("health-listen", "", "also serve grpc.health.v1 alone, plaintext and without token, on this `ADDR` (for Kubernetes probes when TLS is on)")
	tokenFile := fs.String("token-file", "", "file holding the shared token (default: $"+agent.EnvToken+")")
	cert := fs.String("tls-cert", "", "PEM certificate: serve TLS (with --tls-key)")
	key := fs.String("tls-key", "", "PEM private key of --tls-cert")
	clientCA := fs.String("tls-client-ca", "", "PEM CA: require client certificates signed by it (mutual TLS)")
	stopGrace := fs.Duration("stop-grace", agent.DefaultStopGrace, "how long in-flight calls may finish at stop")
	streamsPerConn := fs.Uint("max-streams-per-conn", agent.DefaultMaxStreamsPerConn, "calls one connection may have open at once (a host queues past it)")
	maxStreams := fs.Int("max-streams", agent.DefaultMaxStreams, "calls all hosts together may have open at once; past it a call fails at once (the host sees ErrPoolSaturated)")
	adminAddr := fs.String("admin", "", "serve /metrics, /healthz, /readyz, /status and the status page /status.html of this agent's pool on this loopback `ADDR`; empty: off")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *adminAddr != "" {
		if err := checkAdminAddr(*adminAddr); err != nil {
			fmt.Fprintln(stderr, "snakepit serve:", err)
			return 2
		}
	}
	var tlsCfg *tls.Config
	if *cert != "" || *key != "" || *clientCA != "" {
		var err error
		if tlsCfg, err = agent.LoadServerTLS(*cert, *key, *clientCA); err != nil {
			fmt.Fprintln(stderr, "snakepit serve:", err)
			return 2
		}
	}
	cfg := pf.config(stderr)
	if err := servePools(&pools, &cfg); err != nil {
		fmt.Fprintln(stderr, "snakepit serve:", err)
		return 2
	}
	app, err := snakepit.New(cfg)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	// Bind before starting Python: a wrong address or a missing token
	// fails in milliseconds, not after the workers started.
	srv, err := agent.Listen(app, agent.Options{Listen: *listen, AllowNonLoopback: *allow, HealthListen: *healthListen,
		TokenFile: *tokenFile, TLS: tlsCfg, StopGrace: *stopGrace, Logger: cfg.Logger,
		MaxStreamsPerConn: uint32(min(*streamsPerConn, math.MaxUint32)), MaxStreams: *maxStreams})
	if err != nil {
		fmt.Fprintln(stderr, "snakepit serve:", err)
		return 2
	}
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)
	startCtx, cancelStart := context.WithCancel(context.Background())
	defer cancelStart()
	stopping := make(chan struct{})
	go func() {
		<-sigs
		close(stopping)
		cancelStart()
	}()
	serveCtx, stopServe := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- srv.Serve(serveCtx) }()
	code := 0
	if err := app.Start(startCtx); err != nil {
		fmt.Fprintln(stderr, err)
		stopServe()
		<-served
		return 1
	}
	var admin *adminServer
	if *adminAddr != "" {
		if admin, err = startAdmin(app, *adminAddr, cfg.Logger); err != nil {
			fmt.Fprintln(stderr, "snakepit serve:", err)
			_ = stopInOrder(stopServe, served, nil, app)
			return 1
		}
	}
	fmt.Fprintln(stdout, serveReady(app, srv, pf.workers))
	select {
	case <-stopping:
	case err := <-served:
		fmt.Fprintln(stderr, "snakepit serve: agent endpoint:", err)
		code = 1
		served <- nil
	}
	if err := stopInOrder(stopServe, served, admin, app); err != nil {
		fmt.Fprintln(stderr, err)
		code = 1
	}
	return code
}

// serveReady is the agent's ready line: the default pool's size and
// capacity, then its named pools when it has any.
func serveReady(app *snakepit.App, srv *agent.Server, workers int) string {
	ready := fmt.Sprintf("ready run_id=%s workers=%d addr=%s capacity=%d", app.RunID(), workers, srv.Addr(), app.Stats().Pool.Capacity)
	if names := app.PoolNames(); len(names) > 1 {
		ready += " pools=" + strings.Join(names, ",")
	}
	return ready
}

// servePools adds the named pools an agent serves beside its default one;
// hosts name them (a host pool of the same name with agents). Agents that
// feed an agent's pool from further agents are not supported.
func servePools(pools *poolsFlags, cfg *snakepit.Config) error {
	if err := pools.apply(cfg); err != nil {
		return err
	}
	for _, pc := range cfg.Pools {
		if pc.Discovery != nil {
			return fmt.Errorf("pool %q: agents= is for hosts (snakepit run); an agent's pools run local workers", pc.Name)
		}
	}
	return nil
}

// stopInOrder stops what cmdServe started, in the order its doc promises:
// the agent endpoint (its in-flight calls finish), the admin endpoint if
// any, then the App, whose Stop error it returns.
func stopInOrder(stopServe context.CancelFunc, served <-chan error, admin *adminServer, app *snakepit.App) error {
	stopServe()
	<-served
	stopCtx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if admin != nil {
		_ = admin.Shutdown(stopCtx)
	}
	_, err := app.Stop(stopCtx)
	return err
}
