// Package remote is the worker type for a snakepit agent on another host
// (`snakepit serve`, package agent): one Worker per agent endpoint, which
// the pool sees as one worker with the capacity the agent advertises.
//
// Contract, as for local workers (package worker):
//   - One Serve is one connection lifetime: connect, wait until the agent's
//     health is SERVING, Describe (tools, capacity), Ready; then health
//     checks every HealthInterval, each SERVING one followed by a Describe
//     whose changed tools or capacity are reported with Ready again (the
//     agent reloaded: the pool's tool limits follow). The lifetime ends —
//     *worker.CrashError with PID 0 and the reason — when the connection
//     drops, HealthMisses checks in a row fail, the agent reports it is
//     stopping, or the pool kills it as hung. Only checks that fail or time
//     out cut the connection; an agent that answers NOT_SERVING (no ready
//     worker) that many times is drained instead: no new calls, its queued
//     ones finish. The Starter then reconnects with backoff. An agent that
//     cannot be reached fails the start at once, unless this worker was
//     ready before (a restart at the same address): then it is redialed,
//     at most every reconnectMaxDelay, for up to StartupTimeout. One that
//     is up but NOT_SERVING is waited for up to StartupTimeout. Either
//     failure is a *worker.StartupError and counts toward the give-up budget.
//   - A call that provably never reached the agent — its request was never
//     written to a connection (the agent's GOAWAY, a refused dial, our own
//     close), the agent refused the stream unprocessed, or the agent
//     answered that it starts nothing (draining) — fails with
//     worker.ErrWorkerUnavailable, which the pool retries elsewhere for any
//     call. A call under a connection that drops after it was sent fails
//     with ErrWorkerCrashed (it may have run). A call whose agent-side
//     Python process crashed fails with a *worker.CrashError whose Agent is
//     set: the call is lost, this worker stays in rotation. Idempotent
//     calls are retried by the pool either way.
//   - A call past its deadline stays with the worker until the agent
//     answers a health check: one that answers, SERVING or not, is alive,
//     and the caller gets its own context error. Whether one that cannot
//     answer is hung is the pool's decision (its watchdog, after HungGrace):
//     it kills the worker, the lifetime ends, and the call gets the pool's
//     *WorkerTimeoutError (internal/callpath).
//   - The call's pool options (affinity mode, queue timeout, idempotency),
//     put in its context by the App (internal/wire), travel in
//     ExecuteToolRequest.options with its session and request ids and the
//     name of the agent's pool (Factory.ForPool; "": its default); the
//     deadline is the gRPC deadline and the trace context is in the
//     metadata. The agent's pool applies them, and its typed errors come
//     back as the same errors.Is values (agentError).
//
// Sharp edges: a remote worker owns no process, so it has no registry
// record and the host's cleanup has nothing of it to sweep; the agent's
// processes are the agent's to stop (its own no-survivor guarantees), and
// restarting a dead agent is Kubernetes' job, not snakepit's. Without TLS
// the token and all data cross the network in clear text.
package remote

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/snakepit-go/snakepit/internal/auth"
	"github.com/snakepit-go/snakepit/worker"
)

// Defaults for zero Options fields.
const (
	DefaultStartupTimeout  = 10 * time.Second
	DefaultHealthInterval  = 2 * time.Second
	DefaultHealthTimeout   = time.Second
	DefaultHealthMisses    = 3
	DefaultMaxMessageBytes = worker.DefaultMaxMessageBytes
	// keepaliveTime: an idle connection is pinged this often, so a peer
	// that vanished without closing (a partition) is noticed.
	keepaliveTime    = 10 * time.Second
	keepaliveTimeout = 5 * time.Second
	startupPoll      = 100 * time.Millisecond
	// reconnectMaxDelay caps grpc-go's pause between dials of an agent
	// that is down (its default grows to 120 s): a restarted agent is
	// found within about this long of listening, and a dead address is
	// dialed at most this often.
	reconnectMaxDelay = time.Second
)

// EnvToken is where the token is read from when Options.TokenFile is empty.
const EnvToken = auth.EnvAgentToken

// IDPrefix starts the worker id of every remote worker: "remote:" + endpoint.
const IDPrefix = "remote:"

// WorkerID is the pool's id for the worker of endpoint.
func WorkerID(endpoint string) string { return IDPrefix + endpoint }

// Options configure remote workers; zero fields take the defaults above.
type Options struct {
	// TokenFile holds the agents' shared token; empty: $SNAKEPIT_AGENT_TOKEN.
	TokenFile string
	// TLS, when set, secures the connection (LoadClientTLS); nil: plaintext.
	TLS *tls.Config
	// StartupTimeout bounds connect + healthy + Describe.
	StartupTimeout time.Duration
	// HealthInterval is the period of health checks (negative disables).
	HealthInterval  time.Duration
	HealthTimeout   time.Duration // one health check
	HealthMisses    int           // failed checks in a row that end the lifetime
	MaxMessageBytes int
	Logger          *slog.Logger
}

func (o *Options) setDefaults() {
	if o.StartupTimeout == 0 {
		o.StartupTimeout = DefaultStartupTimeout
	}
	if o.HealthInterval == 0 {
		o.HealthInterval = DefaultHealthInterval
	}
	if o.HealthTimeout == 0 {
		o.HealthTimeout = DefaultHealthTimeout
	}
	if o.HealthMisses == 0 {
		o.HealthMisses = DefaultHealthMisses
	}
	if o.MaxMessageBytes == 0 {
		o.MaxMessageBytes = DefaultMaxMessageBytes
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
}

// Factory builds remote workers; the token is read once, by NewFactory.
type Factory struct {
	opts  Options
	token auth.Token
}

// NewFactory loads the token and applies the defaults.
func NewFactory(opts Options) (*Factory, error) {
	if opts.StartupTimeout < 0 || opts.HealthTimeout < 0 || opts.HealthMisses < 0 || opts.MaxMessageBytes < 0 {
		// Zero means the default; a negative value is a mistake to report,
		// not to replace (HealthInterval alone uses negative for "off").
		return nil, fmt.Errorf("%w: remote options StartupTimeout, HealthTimeout, HealthMisses and MaxMessageBytes must not be negative (0: the default)", worker.ErrInvalidConfig)
	}
	opts.setDefaults()
	tok, err := auth.Load(opts.TokenFile, EnvToken)
	if err != nil {
		return nil, err
	}
	return &Factory{opts: opts, token: tok}, nil
}

// For returns the worker.Factory of the worker for one agent endpoint
// (HOST:PORT), which serves the agent's default pool. Use
// WorkerID(endpoint) as its id.
func (f *Factory) For(endpoint string) worker.Factory { return f.ForPool(endpoint, "") }

// ForPool is For for the agent's pool named agentPool ("": its default
// pool): Describe and every call name it. An agent without that pool fails
// the worker's start, and any call it gets, with pool.ErrUnknownPool.
func (f *Factory) ForPool(endpoint, agentPool string) worker.Factory {
	return worker.FactoryFunc(func(spec worker.Spec) (worker.Worker, error) {
		if spec.Events == nil {
			return nil, errors.New("snakepit: remote worker needs Spec.Events")
		}
		log := f.opts.Logger.With("worker_id", spec.ID, "endpoint", endpoint)
		if spec.Logger != nil {
			log = spec.Logger.With("worker_id", spec.ID, "endpoint", endpoint)
		}
		if agentPool != "" {
			log = log.With("agent_pool", agentPool)
		}
		return &Worker{f: f, spec: spec, endpoint: endpoint, agentPool: agentPool, log: log}, nil
	})
}

// Worker is the pool's view of one agent.
type Worker struct {
	f        *Factory
	spec     worker.Spec
	endpoint string
	// agentPool names the agent's pool this worker feeds on ("": default).
	agentPool string
	log       *slog.Logger

	mu  sync.Mutex
	cur *lifetime
	// served: a lifetime of this worker was ready once, so the agent
	// exists and an unreachable one is most likely restarting.
	served atomic.Bool
}

// ID implements worker.Worker.
func (w *Worker) ID() string { return w.spec.ID }

func (w *Worker) String() string { return "remote worker " + w.endpoint }

// Endpoint is the agent's address.
func (w *Worker) Endpoint() string { return w.endpoint }

func (w *Worker) current() *lifetime {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.cur
}

func (w *Worker) crash(lt *lifetime) *worker.CrashError {
	return &worker.CrashError{WorkerID: w.spec.ID, ExitCode: -1, Reason: "agent " + w.endpoint + ": " + lt.reason}
}

// Kill implements worker.Worker: the connection is closed, pending calls
// return at once, and Serve reports the crash.
func (w *Worker) Kill(reason string) {
	if lt := w.current(); lt != nil {
		lt.end(reason)
	}
}

// Serve implements suture.Service: one connection lifetime.
func (w *Worker) Serve(ctx context.Context) error {
	ev := w.spec.Events
	ev.Starting(w.spec.ID)
	lt, info, err := w.connect(ctx)
	if err != nil {
		if ctx.Err() != nil {
			ev.Exited(w.spec.ID, nil)
			return nil
		}
		ev.Exited(w.spec.ID, err)
		return err
	}
	w.mu.Lock()
	w.cur = lt
	w.mu.Unlock()
	w.served.Store(true)
	ev.Ready(w.spec.ID, info)
	w.log.Info("remote worker ready", "capacity", info.Capacity, "tools", len(info.Tools))

	go w.watchConn(lt)
	err = w.run(ctx, lt)
	w.mu.Lock()
	w.cur = nil
	w.mu.Unlock()
	ev.Exited(w.spec.ID, err)
	return err
}
