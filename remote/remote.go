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
//   - A call past its deadline makes the worker ping the agent within
//     HungGrace; an agent that cannot answer is considered hung: the
//     lifetime ends and the call gets ErrWorkerTimeout. One that answers,
//     SERVING or not, is alive: the caller gets its own context error.
//   - The call's pool options (affinity mode, queue timeout, idempotency),
//     put in its context by the App (internal/wire), travel in
//     ExecuteToolRequest.options with its session and request ids; the
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
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/stats"
	"google.golang.org/grpc/status"

	"github.com/snakepit-go/snakepit/agent/agentpb"
	"github.com/snakepit-go/snakepit/bridge/pb"
	"github.com/snakepit-go/snakepit/internal/auth"
	"github.com/snakepit-go/snakepit/internal/wire"
	"github.com/snakepit-go/snakepit/pool"
	"github.com/snakepit-go/snakepit/worker"
)

// Defaults for zero Options fields.
const (
	DefaultStartupTimeout  = 10 * time.Second
	DefaultHealthInterval  = 2 * time.Second
	DefaultHealthTimeout   = time.Second
	DefaultHealthMisses    = 3
	DefaultHungGrace       = worker.DefaultHungGrace
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
	HealthInterval time.Duration
	HealthTimeout  time.Duration // one health check
	HealthMisses   int           // failed checks in a row that end the lifetime
	// HungGrace: a call past its deadline whose agent does not answer a
	// health check within this long ends the lifetime (ErrWorkerTimeout).
	HungGrace       time.Duration
	MaxMessageBytes int
	Logger          *slog.Logger
}

func (o *Options) setDefaults() {
	if o.StartupTimeout <= 0 {
		o.StartupTimeout = DefaultStartupTimeout
	}
	if o.HealthInterval == 0 {
		o.HealthInterval = DefaultHealthInterval
	}
	if o.HealthTimeout <= 0 {
		o.HealthTimeout = DefaultHealthTimeout
	}
	if o.HealthMisses <= 0 {
		o.HealthMisses = DefaultHealthMisses
	}
	if o.HungGrace <= 0 {
		o.HungGrace = DefaultHungGrace
	}
	if o.MaxMessageBytes <= 0 {
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
	opts.setDefaults()
	tok, err := auth.Load(opts.TokenFile, EnvToken)
	if err != nil {
		return nil, err
	}
	return &Factory{opts: opts, token: tok}, nil
}

// For returns the worker.Factory of the worker for one agent endpoint
// (HOST:PORT). Use WorkerID(endpoint) as its id.
func (f *Factory) For(endpoint string) worker.Factory {
	return worker.FactoryFunc(func(spec worker.Spec) (worker.Worker, error) {
		if spec.Events == nil {
			return nil, errors.New("snakepit: remote worker needs Spec.Events")
		}
		log := f.opts.Logger.With("worker_id", spec.ID, "endpoint", endpoint)
		if spec.Logger != nil {
			log = spec.Logger.With("worker_id", spec.ID, "endpoint", endpoint)
		}
		return &Worker{f: f, spec: spec, endpoint: endpoint, log: log}, nil
	})
}

// Worker is the pool's view of one agent.
type Worker struct {
	f        *Factory
	spec     worker.Spec
	endpoint string
	log      *slog.Logger

	mu  sync.Mutex
	cur *lifetime
	// served: a lifetime of this worker was ready once, so the agent
	// exists and an unreachable one is most likely restarting.
	served atomic.Bool
}

// lifetime is one connection to the agent.
type lifetime struct {
	cc     *grpc.ClientConn
	agent  agentpb.AgentServiceClient
	health healthpb.HealthClient
	tools  []worker.ToolSpec
	capac  int           // capacity the agent advertised
	ended  chan struct{} // closed by end or leave
	once   sync.Once
	reason string // why it ended; valid once ended is closed

	mu     sync.Mutex
	calls  int  // calls in flight on cc
	closed bool // cc is closed
}

// drainBound caps how long a connection that left rotation stays open for
// the calls still on it. The agent's own stop grace normally ends them
// sooner; keepalive fails them if the agent vanished without a word.
const drainBound = time.Minute

// end takes the lifetime out of rotation and closes the connection at once:
// calls under it fail. For a kill, a hung or unreachable agent, a stop.
func (lt *lifetime) end(reason string) {
	lt.once.Do(func() {
		lt.reason = reason
		close(lt.ended)
	})
	lt.close()
}

// leave takes the lifetime out of rotation but lets the calls already on
// the connection finish: an agent that is draining (GOAWAY, NOT_SERVING)
// answers them. The connection closes when the last one returns, or after
// drainBound. An agent that died fails those calls by itself.
func (lt *lifetime) leave(reason string) {
	first := false
	lt.once.Do(func() {
		lt.reason = reason
		close(lt.ended)
		first = true
	})
	if !first {
		return
	}
	lt.mu.Lock()
	idle := lt.calls == 0
	lt.mu.Unlock()
	if idle {
		lt.close()
		return
	}
	time.AfterFunc(drainBound, lt.close)
}

func (lt *lifetime) close() {
	lt.mu.Lock()
	done := lt.closed
	lt.closed = true
	lt.mu.Unlock()
	if !done {
		_ = lt.cc.Close()
	}
}

// enter counts a call on the connection; false once the lifetime ended.
func (lt *lifetime) enter() bool {
	lt.mu.Lock()
	defer lt.mu.Unlock()
	if lt.closed || lt.over() {
		return false
	}
	lt.calls++
	return true
}

// exit ends a call entered; the last one out of a lifetime that left
// rotation closes the connection.
func (lt *lifetime) exit() {
	lt.mu.Lock()
	lt.calls--
	last := lt.calls == 0 && lt.over()
	lt.mu.Unlock()
	if last {
		lt.close()
	}
}

func (lt *lifetime) over() bool {
	select {
	case <-lt.ended:
		return true
	default:
		return false
	}
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

func (w *Worker) dial() (*grpc.ClientConn, error) {
	o := &w.f.opts
	creds := insecure.NewCredentials()
	if o.TLS != nil {
		creds = credentials.NewTLS(o.TLS)
	}
	opts := append([]grpc.DialOption{
		grpc.WithTransportCredentials(creds),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(o.MaxMessageBytes), grpc.MaxCallSendMsgSize(o.MaxMessageBytes)),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: keepaliveTime, Timeout: keepaliveTimeout, PermitWithoutStream: true}),
		grpc.WithConnectParams(grpc.ConnectParams{Backoff: backoff.Config{
			BaseDelay: startupPoll, Multiplier: backoff.DefaultConfig.Multiplier, Jitter: backoff.DefaultConfig.Jitter, MaxDelay: reconnectMaxDelay}}),
		// Tells a call that never left this host from one that may have run.
		grpc.WithStatsHandler(sendStats{}),
		// An idle channel must stay READY: watchConn reads any other state
		// as the agent being gone.
		grpc.WithIdleTimeout(0),
	}, auth.ClientOptions(w.f.token)...)
	return grpc.NewClient(w.endpoint, opts...)
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

// connect dials and waits until the agent is healthy and described.
func (w *Worker) connect(ctx context.Context) (*lifetime, worker.Info, error) {
	o := &w.f.opts
	cc, err := w.dial()
	if err != nil {
		return nil, worker.Info{}, w.startupError(err)
	}
	lt := &lifetime{cc: cc, agent: agentpb.NewAgentServiceClient(cc), health: healthpb.NewHealthClient(cc), ended: make(chan struct{})}
	sctx, cancel := context.WithTimeout(ctx, o.StartupTimeout)
	defer cancel()
	// An agent that served before and cannot be reached now is most
	// likely restarting (a static address keeps its name): wait for it
	// within StartupTimeout, grpc-go redialing at most every
	// reconnectMaxDelay, rather than fail at once and be given up.
	rejoin := w.served.Load()
	var last error
	for {
		cctx, ccancel := context.WithTimeout(sctx, o.HealthTimeout)
		resp, err := lt.health.Check(cctx, &healthpb.HealthCheckRequest{}, grpc.WaitForReady(rejoin))
		ccancel()
		switch {
		case err == nil && resp.GetStatus() == healthpb.HealthCheckResponse_SERVING:
			info, err := w.describe(sctx, lt)
			if err != nil {
				lt.end("describe failed")
				return nil, worker.Info{}, w.startupError(err)
			}
			return lt, info, nil
		case err == nil:
			last = fmt.Errorf("agent health is %s (no ready worker yet)", resp.GetStatus())
		case rejoin && ctx.Err() == nil && sctx.Err() == nil && status.Code(err) != codes.Unauthenticated:
			last = err
		case ctx.Err() == nil && sctx.Err() == nil:
			// Unreachable, refused, rejected: fail now and let the Starter's
			// backoff (and discovery, told at once) decide; only an agent
			// that is up but not yet serving is worth waiting for here.
			lt.end("cannot reach the agent")
			return nil, worker.Info{}, w.startupError(err)
		default:
			last = err
		}
		t := time.NewTimer(startupPoll)
		select {
		case <-t.C:
		case <-sctx.Done():
			t.Stop()
			lt.end("startup timed out")
			if ctx.Err() != nil {
				return nil, worker.Info{}, ctx.Err()
			}
			return nil, worker.Info{}, w.startupError(fmt.Errorf("not healthy within StartupTimeout (%s): %w", o.StartupTimeout, last))
		}
	}
}

// describe asks the agent for its tools and capacity and records them.
func (w *Worker) describe(ctx context.Context, lt *lifetime) (worker.Info, error) {
	d, err := lt.agent.Describe(ctx, &agentpb.DescribeRequest{})
	if err != nil {
		return worker.Info{}, err
	}
	lt.tools, lt.capac = wire.ToolSpecsFromPB(d.GetTools()), int(d.GetCapacity())
	w.log.Debug("agent described", "agent_id", d.GetAgentId(), "hostname", d.GetHostname(), "capacity", lt.capac)
	return worker.Info{Tools: lt.tools, Capacity: lt.capac}, nil
}

func (w *Worker) startupError(err error) error {
	kind := worker.StartupUnreachable
	hint := "check that the agent runs (snakepit serve) and listens on " + w.endpoint +
		" beyond loopback (--allow-non-loopback), and that both sides use the same token and TLS settings"
	if status.Code(err) == codes.Unauthenticated {
		kind = worker.StartupAuth
		hint = "the agent rejected the token: give the host and the agent the same token (token file or $" + auth.EnvAgentToken + ")"
	}
	return &worker.StartupError{WorkerID: w.spec.ID, Cause: fmt.Errorf("agent %s: %w", w.endpoint, err), Kind: kind, Hint: hint}
}

// watchConn ends the lifetime as soon as the connection leaves READY: a
// dead agent's sockets close at once, so its worker leaves rotation
// before any health check would notice.
func (w *Worker) watchConn(lt *lifetime) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		<-lt.ended
		cancel()
	}()
	st := lt.cc.GetState()
	for {
		if st != connectivity.Ready {
			lt.leave("connection to the agent lost (" + st.String() + ")")
			return
		}
		if !lt.cc.WaitForStateChange(ctx, st) {
			return
		}
		st = lt.cc.GetState()
	}
}

// run serves the lifetime until ctx ends (nil) or the lifetime ends (a
// *worker.CrashError).
func (w *Worker) run(ctx context.Context, lt *lifetime) error {
	o := &w.f.opts
	var tick <-chan time.Time
	if o.HealthInterval > 0 {
		t := time.NewTicker(o.HealthInterval)
		defer t.Stop()
		tick = t.C
	}
	misses := 0
	for {
		select {
		case <-ctx.Done():
			lt.end("stopped")
			return nil
		case <-lt.ended:
			return w.crash(lt)
		case <-tick:
			err := w.check(ctx, lt, o.HealthTimeout)
			switch {
			case ctx.Err() != nil:
			case err != nil:
				misses++
				w.log.Warn("agent health check failed", "misses", misses, "of", o.HealthMisses, "err", err)
				if misses < o.HealthMisses {
					break
				}
				reason := fmt.Sprintf("%d health checks failed in a row, last: %v", misses, err)
				if errors.Is(err, errNotServing) {
					// Alive but without a ready worker: drain (its queued calls
					// are its own to finish) and come back once it serves.
					lt.leave(reason)
				} else {
					lt.end(reason)
				}
			default:
				misses = 0
				w.refreshTools(ctx, lt)
			}
		}
	}
}

// errNotServing: the agent answered its health check, NOT_SERVING (no
// ready worker, or stopping). It is alive: not hung.
var errNotServing = errors.New("agent health is NOT_SERVING")

// check is one health check: nil when SERVING, errNotServing when the agent
// answered otherwise, the call's error when it did not answer.
func (w *Worker) check(ctx context.Context, lt *lifetime, timeout time.Duration) error {
	cctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	resp, err := lt.health.Check(cctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		return err
	}
	if st := resp.GetStatus(); st != healthpb.HealthCheckResponse_SERVING {
		return fmt.Errorf("%w (%s)", errNotServing, st)
	}
	return nil
}

// refreshTools asks the agent for its tools again and reports them when
// they changed (the agent reloaded its code): the pool's per-tool limits
// and its tool list follow without a reconnect. A failed Describe changes
// nothing; the health checks judge the connection.
func (w *Worker) refreshTools(ctx context.Context, lt *lifetime) {
	cctx, cancel := context.WithTimeout(ctx, w.f.opts.HealthTimeout)
	defer cancel()
	d, err := lt.agent.Describe(cctx, &agentpb.DescribeRequest{})
	if err != nil || lt.over() {
		return
	}
	tools, capac := wire.ToolSpecsFromPB(d.GetTools()), int(d.GetCapacity())
	if capac == lt.capac && slices.EqualFunc(tools, lt.tools, sameTool) {
		return
	}
	lt.tools, lt.capac = tools, capac
	w.log.Info("agent's tools changed; reporting them to the pool", "tools", len(tools), "capacity", capac)
	// A second Ready of the same lifetime replaces its tools and capacity;
	// sessions and calls in flight are untouched.
	w.spec.Events.Ready(w.spec.ID, worker.Info{Tools: tools, Capacity: capac})
}

func sameTool(a, b worker.ToolSpec) bool {
	return a.Name == b.Name && a.Description == b.Description && a.SupportsStreaming == b.SupportsStreaming &&
		a.MaxConcurrency == b.MaxConcurrency && a.Timeout == b.Timeout &&
		slices.EqualFunc(a.Parameters, b.Parameters, func(x, y worker.ParamSpec) bool {
			return x.Name == y.Name && x.Type == y.Type && x.Required == y.Required &&
				string(x.Default) == string(y.Default) && x.Description == y.Description
		})
}

func (w *Worker) lifetimeFor(tool string) (*lifetime, error) {
	lt := w.current()
	if lt == nil || !lt.enter() {
		return nil, fmt.Errorf("%w: remote worker %s is not connected (connecting, reconnecting or stopped); tool %q", worker.ErrWorkerUnavailable, w.endpoint, tool)
	}
	return lt, nil
}

// sendTrack follows one call through grpc-go's attempts: sent is whether
// the current attempt put its request headers on a connection. grpc-go
// starts another attempt (stats.Begin again: its transparent retry; no
// retry policy is configured) only after one that never reached the agent
// or that the agent refused unprocessed (a GOAWAY naming a lower stream,
// REFUSED_STREAM). So a call whose last attempt sent no headers provably
// never reached the agent's handler, let alone its Python.
type sendTrack struct{ sent atomic.Bool }

type sendKey struct{}

func (t *sendTrack) notSent() bool { return !t.sent.Load() }

// tracked returns ctx carrying a new sendTrack.
func tracked(ctx context.Context) (context.Context, *sendTrack) {
	t := &sendTrack{}
	return context.WithValue(ctx, sendKey{}, t), t
}

// sendStats is the stats.Handler that feeds sendTrack.
type sendStats struct{}

func (sendStats) TagRPC(ctx context.Context, _ *stats.RPCTagInfo) context.Context { return ctx }

func (sendStats) HandleRPC(ctx context.Context, s stats.RPCStats) {
	t, _ := ctx.Value(sendKey{}).(*sendTrack)
	if t == nil {
		return
	}
	switch s.(type) {
	case *stats.Begin:
		t.sent.Store(false)
	case *stats.OutHeader:
		t.sent.Store(true)
	}
}

func (sendStats) TagConn(ctx context.Context, _ *stats.ConnTagInfo) context.Context { return ctx }

func (sendStats) HandleConn(context.Context, stats.ConnStats) {}

// request is the wire form of call with the caller's pool options, which
// the agent's pool applies (docs/SCALING.md, "What crosses an agent").
func request(ctx context.Context, call *worker.Call) *pb.ExecuteToolRequest {
	req := wire.Request(call)
	req.Options = wire.OptionsToPB(wire.CallOptionsFrom(ctx))
	return req
}

// Execute implements worker.Worker.
func (w *Worker) Execute(ctx context.Context, call *worker.Call) (*worker.Result, error) {
	lt, err := w.lifetimeFor(call.Tool)
	if err != nil {
		return nil, err
	}
	defer lt.exit()
	tctx, track := tracked(ctx)
	resp, err := lt.agent.Execute(tctx, request(ctx, call))
	if err != nil {
		return nil, w.callError(ctx, lt, call.Tool, track, err)
	}
	if e := resp.GetError(); e != nil {
		return nil, w.agentError(ctx, lt, call.Tool, e)
	}
	return wire.Result(resp.GetResult()), nil
}

// ExecuteStream implements worker.Worker.
func (w *Worker) ExecuteStream(ctx context.Context, call *worker.Call, yield func(worker.Chunk) error) error {
	lt, err := w.lifetimeFor(call.Tool)
	if err != nil {
		return err
	}
	defer lt.exit()
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	sctx, track := tracked(sctx)
	stream, err := lt.agent.ExecuteStream(sctx, request(ctx, call))
	if err != nil {
		return w.callError(ctx, lt, call.Tool, track, err)
	}
	for {
		msg, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return fmt.Errorf("snakepit: agent %s closed the stream of %q without its final marker", w.endpoint, call.Tool)
		}
		if err != nil {
			return w.callError(ctx, lt, call.Tool, track, err)
		}
		if msg.GetIsFinal() {
			if e := msg.GetError(); e != nil {
				return w.agentError(ctx, lt, call.Tool, e)
			}
			return nil
		}
		c := worker.Chunk{Seq: msg.GetSeq()}
		c.JSON, c.Binary = wire.Value(msg.GetData())
		if err := yield(c); err != nil {
			return err
		}
	}
}

// callError maps a transport failure: the connection is what failed, so a
// dropped one is a crash of this worker — unless the request never left
// this host, which the pool retries elsewhere for any call.
func (w *Worker) callError(ctx context.Context, lt *lifetime, tool string, track *sendTrack, err error) error {
	code := status.Code(err)
	if ctx.Err() == nil && track.notSent() && (code == codes.Unavailable || code == codes.Canceled) {
		// No connection to send on (the agent's GOAWAY, a refused dial, our
		// own close), or the agent refused the stream unprocessed: nothing
		// ran. The connection is not usable, so leave rotation too.
		lt.leave("the agent is gone or draining: " + status.Convert(err).Message())
		return fmt.Errorf("%w: agent %s: the call to %q was never sent (%s); nothing ran",
			worker.ErrWorkerUnavailable, w.endpoint, tool, status.Convert(err).Message())
	}
	if lt.over() {
		return w.crash(lt)
	}
	if ctx.Err() != nil || code == codes.DeadlineExceeded {
		return w.afterDeadline(ctx, lt, tool)
	}
	switch code {
	case codes.Unavailable, codes.Canceled, codes.Internal, codes.Unknown:
		lt.leave("connection lost under a call: " + status.Convert(err).Message())
		return w.crash(lt)
	case codes.ResourceExhausted:
		if auth.IsStreamLimit(err) {
			// Refused from its headers: nothing ran on the agent.
			return fmt.Errorf("%w: agent %s: %s", pool.ErrPoolSaturated, w.endpoint, status.Convert(err).Message())
		}
		return fmt.Errorf("%w: call to %q on agent %s: %s; raise MaxMessageBytes (now %d bytes) on both sides or pass large values in smaller pieces",
			worker.ErrMessageTooLarge, tool, w.endpoint, status.Convert(err).Message(), w.f.opts.MaxMessageBytes)
	case codes.Unauthenticated:
		return fmt.Errorf("snakepit: agent %s rejected the token for %q; give the host and the agent the same token", w.endpoint, tool)
	}
	return fmt.Errorf("snakepit: agent %s: call to %q failed: %w", w.endpoint, tool, err)
}

// afterDeadline: the call ran out of time. An agent that still answers a
// health check within HungGrace is fine (the caller gets its own error);
// one that does not is hung, and the lifetime ends.
func (w *Worker) afterDeadline(ctx context.Context, lt *lifetime, tool string) error {
	ctxErr := ctx.Err()
	if ctxErr == nil {
		ctxErr = context.DeadlineExceeded
	}
	grace := w.f.opts.HungGrace
	err := w.check(context.Background(), lt, grace)
	if lt.over() {
		return w.crash(lt)
	}
	if err == nil || errors.Is(err, errNotServing) {
		// It answered: alive. NOT_SERVING (say, its only worker is
		// restarting) is the health loop's to act on, by draining.
		return ctxErr
	}
	reason := fmt.Sprintf("call %q ran out of time and the agent did not answer a health check within %s; considered hung", tool, grace)
	lt.end(reason)
	return fmt.Errorf("%w: remote worker %s: %s (reconnecting): %w", worker.ErrWorkerTimeout, w.endpoint, reason, ctxErr)
}

// agentError maps what the agent reported for the call to the errors the
// pool and callers test for.
func (w *Worker) agentError(ctx context.Context, lt *lifetime, tool string, e *agentpb.AgentError) error {
	msg := e.GetMessage()
	switch e.GetKind() {
	case agentpb.AgentError_TOOL_FAILED:
		return wire.ToolError(tool, w.spec.ID, e.GetToolError())
	case agentpb.AgentError_UNKNOWN_TOOL:
		return &worker.UnknownToolError{Tool: tool, Available: e.GetAvailable()}
	case agentpb.AgentError_WORKER_CRASHED:
		return &worker.CrashError{WorkerID: e.GetWorkerId(), PID: int(e.GetPid()), ExitCode: int(e.GetExitCode()), Signal: e.GetSignal(), Agent: w.endpoint}
	case agentpb.AgentError_WORKER_TIMEOUT:
		return fmt.Errorf("%w: on agent %s: %s", worker.ErrWorkerTimeout, w.endpoint, msg)
	case agentpb.AgentError_UNAVAILABLE:
		// The agent is stopping or has no ready worker: nothing ran. Leave
		// rotation and reconnect once it is healthy again.
		lt.leave("the agent is not serving: " + msg)
		return fmt.Errorf("%w: agent %s: %s", worker.ErrWorkerUnavailable, w.endpoint, msg)
	case agentpb.AgentError_QUEUE_TIMEOUT:
		return fmt.Errorf("%w: on agent %s: %s", pool.ErrQueueTimeout, w.endpoint, msg)
	case agentpb.AgentError_SATURATED:
		return fmt.Errorf("%w: on agent %s: %s", pool.ErrPoolSaturated, w.endpoint, msg)
	case agentpb.AgentError_INVALID_ARGS:
		if te := e.GetToolError(); te != nil { // a Python worker behind the agent refused them
			return wire.ToolError(tool, w.spec.ID, te)
		}
		return &worker.ArgsError{Tool: tool, Reason: "agent " + w.endpoint + ": " + msg}
	case agentpb.AgentError_MESSAGE_TOO_LARGE:
		return fmt.Errorf("%w: on agent %s: %s", worker.ErrMessageTooLarge, w.endpoint, msg)
	case agentpb.AgentError_SESSION_BUSY:
		return fmt.Errorf("%w: on agent %s: %s", pool.ErrSessionWorkerBusy, w.endpoint, msg)
	case agentpb.AgentError_SESSION_UNAVAILABLE:
		return fmt.Errorf("%w: on agent %s: %s", pool.ErrSessionWorkerUnavailable, w.endpoint, msg)
	case agentpb.AgentError_INVALID_CALL:
		return &pool.InvalidCallError{Tool: tool, Reason: "agent " + w.endpoint + ": " + msg}
	case agentpb.AgentError_DEADLINE_EXCEEDED:
		if err := ctx.Err(); err != nil {
			return err
		}
		// The tool's declared timeout, applied on the agent.
		return fmt.Errorf("snakepit: on agent %s, the call to %q ran out of time: %s: %w", w.endpoint, tool, msg, context.DeadlineExceeded)
	case agentpb.AgentError_CANCELLED:
		if err := ctx.Err(); err != nil {
			return err
		}
		return fmt.Errorf("snakepit: agent %s cancelled the call to %q: %s: %w", w.endpoint, tool, msg, context.Canceled)
	}
	return fmt.Errorf("snakepit: agent %s: call to %q failed: %s", w.endpoint, tool, msg)
}

// LoadClientTLS builds the host's TLS configuration from PEM files: caFile
// verifies the agents' certificates (empty: the system roots); certFile and
// keyFile, when set, are the client certificate for agents that require
// one; serverName overrides the name checked (empty: the endpoint's host).
func LoadClientTLS(caFile, certFile, keyFile, serverName string) (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: serverName}
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("snakepit: reading CA file: %w", err)
		}
		roots := x509.NewCertPool()
		if !roots.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("snakepit: %s holds no PEM certificate", caFile)
		}
		cfg.RootCAs = roots
	}
	if certFile != "" || keyFile != "" {
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return nil, fmt.Errorf("snakepit: client TLS certificate: %w", err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}
