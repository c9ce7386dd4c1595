// Package agent serves an App's pools to snakepit hosts on other machines:
// the endpoint behind `snakepit serve`. A host joins it to one of its own
// pools as one remote worker (package remote) whose capacity is what the
// agent advertises for the pool of the same name, so dispatch, health,
// affinity and stats work across hosts.
//
// Contract:
//   - The App is an ordinary App: every no-survivor guarantee is the
//     agent's, for its own Python processes, on its own machine. The agent
//     runs no cluster logic; placing and restarting agents is Kubernetes'.
//   - AgentService (Describe, Execute, ExecuteStream; proto/snakepit/v1/
//     agent.proto) requires the shared token (Options.TokenFile, else
//     $SNAKEPIT_AGENT_TOKEN) on every call, checked from the call's headers
//     before its body is read. grpc.health.v1.Health needs none (on the
//     health-only port if there is one, else on Listen), so Kubernetes'
//     grpc probes work: service "" (and the AgentService name) is SERVING
//     while at least one local worker is ready, "liveness" while the agent
//     runs. Calls open at once are bounded per connection and in total
//     (Options.MaxStreamsPerConn, MaxStreams; docs/SCALING.md). A
//     connection is closed after auth.DefaultStrikes calls without a valid
//     token, and its source waits to reconnect (auth.Guard.Armed); one on
//     which a call carried the token never is.
//   - It listens on loopback unless Options.AllowNonLoopback is set; the
//     refusal says how to override. Without TLS the token crosses the
//     network in clear text: set Options.TLS (LoadServerTLS, with a client
//     CA for mutual TLS) on any network you do not trust.
//   - Every pool of the App is served. A call runs in the pool named in
//     its options (CallOptions.pool; empty: the default pool), and
//     Describe describes the pool named in its request and lists them
//     all. A name the App does not have is UNKNOWN_POOL (Describe:
//     NOT_FOUND), which a host reports as snakepit.ErrUnknownPool.
//   - Describe advertises the pool's capacity (workers × per-worker
//     capacity): a host never sends more calls at once, so the agent's own
//     queue only fills while its workers restart. Health is SERVING while
//     any pool has a ready worker.
//
// Sharp edges: Kubernetes' grpc probes speak plaintext only; with TLS on,
// serve health on a separate plaintext port (Options.HealthListen), which
// carries nothing but the serving status. Stop sets every health service
// NOT_SERVING first, so hosts and Kubernetes stop sending before the
// in-flight calls are given Options.StopGrace to finish; a call that
// arrives after that is answered UNAVAILABLE (nothing ran), which a host
// retries elsewhere whatever the call's idempotency.
//
// A host's call options (session, affinity mode, queue timeout,
// idempotency, request id) apply to this App's pool (callOptions); its
// deadline is the call's gRPC deadline, its trace context arrives in the
// request's metadata. wireError sorts this App's errors into the kinds a
// host maps back to the same errors.Is values.
package agent

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/propagation"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/status"

	"github.com/snakepit-go/snakepit"
	"github.com/snakepit-go/snakepit/agent/agentpb"
	"github.com/snakepit-go/snakepit/bridge/pb"
	"github.com/snakepit-go/snakepit/internal/auth"
	"github.com/snakepit-go/snakepit/internal/wire"
	"github.com/snakepit-go/snakepit/pool"
	"github.com/snakepit-go/snakepit/worker"
)

// Defaults for zero Options fields.
const (
	DefaultListen    = "127.0.0.1:7070"
	DefaultStopGrace = 5 * time.Second
	// LivenessService is the health service name that is SERVING for as
	// long as the agent runs (point a liveness probe at it); the default
	// service "" is SERVING only while a local worker is ready.
	LivenessService = "liveness"
	// EnvToken is where the token is read from when Options.TokenFile is empty.
	EnvToken = auth.EnvAgentToken
	// DefaultMaxStreamsPerConn and DefaultMaxStreams: see Options.
	DefaultMaxStreamsPerConn = auth.DefaultStreamsPerConn
	DefaultMaxStreams        = auth.DefaultStreams
)

// healthMaxMessageBytes bounds a request on the health-only port: a health
// request is a service name, and the port takes no token, so nothing larger
// has any business being buffered there.
const healthMaxMessageBytes = 4 << 10

// healthPoll is how often readiness follows the pool: fast enough that a
// probe or a host sees an agent whose workers all died within a second.
const healthPoll = 250 * time.Millisecond

// ErrNonLoopback: the listen address is not loopback and the caller did
// not say it may be.
var ErrNonLoopback = errors.New("snakepit: agent refuses to listen on a non-loopback address")

// Options configure an agent endpoint.
type Options struct {
	// Listen is the endpoint's TCP address (default DefaultListen).
	Listen string
	// AllowNonLoopback must be set to listen on anything but loopback
	// (e.g. 0.0.0.0:7070 in a pod).
	AllowNonLoopback bool
	// HealthListen, when set, also serves grpc.health.v1 alone, in
	// plaintext and without a token, on this address (same loopback rule);
	// health on Listen then needs the token like every other call.
	HealthListen string
	// TokenFile holds the shared token; empty: $SNAKEPIT_AGENT_TOKEN.
	TokenFile string
	// TLS, when set, is the server's TLS configuration (LoadServerTLS).
	TLS *tls.Config
	// MaxMessageBytes bounds one gRPC message (default 16 MiB).
	MaxMessageBytes int
	// MaxStreamsPerConn bounds the calls one connection may have open at
	// once (HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS; a host queues past it).
	// Default DefaultMaxStreamsPerConn.
	MaxStreamsPerConn uint32
	// MaxStreams bounds the calls, from all hosts together, open at once;
	// a call past it fails at once with codes.ResourceExhausted (a host
	// reports it as ErrPoolSaturated). Each open call may hold a request of
	// up to MaxMessageBytes. Default DefaultMaxStreams; negative: no bound.
	//
	// The token is checked from a call's headers before its body is read,
	// so neither bound is spent by callers without the token.
	MaxStreams int
	// StopGrace is how long in-flight calls may finish at stop (default 5 s).
	StopGrace time.Duration
	Logger    *slog.Logger
}

// Server is a listening agent endpoint. Create it with Listen, run it with Serve.
type Server struct {
	app    *snakepit.App
	opts   Options
	log    *slog.Logger
	ln     net.Listener
	hln    net.Listener
	srv    *grpc.Server
	hsrv   *grpc.Server
	health *health.Server
	host   string
	once   sync.Once
	// draining is set when the stop begins: calls that arrive after it
	// are answered UNAVAILABLE (nothing ran) rather than started, so the
	// host retries them elsewhere whatever their idempotency.
	draining atomic.Bool

	agentpb.UnimplementedAgentServiceServer
}

// Listen validates opts, loads the token and binds the addresses; nothing
// is served until Serve. app must be started (or be started before the
// first call arrives: calls wait for it as any App call does).
func Listen(app *snakepit.App, opts Options) (*Server, error) {
	if opts.Listen == "" {
		opts.Listen = DefaultListen
	}
	if opts.StopGrace < 0 || opts.MaxMessageBytes < 0 {
		return nil, fmt.Errorf("%w: agent StopGrace and MaxMessageBytes must not be negative (0: the default)", snakepit.ErrInvalidConfig)
	}
	if opts.StopGrace == 0 {
		opts.StopGrace = DefaultStopGrace
	}
	if opts.MaxMessageBytes == 0 {
		opts.MaxMessageBytes = worker.DefaultMaxMessageBytes
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	token, err := auth.Load(opts.TokenFile, EnvToken)
	if err != nil {
		return nil, err
	}
	s := &Server{app: app, opts: opts, log: opts.Logger.With("agent", app.RunID()), health: health.NewServer()}
	s.host, _ = os.Hostname()
	if s.ln, err = listen(opts.Listen, opts.AllowNonLoopback); err != nil {
		return nil, err
	}
	if opts.HealthListen != "" {
		if s.hln, err = listen(opts.HealthListen, opts.AllowNonLoopback); err != nil {
			_ = s.ln.Close()
			return nil, err
		}
	}
	if opts.TLS == nil && !isLoopback(s.ln.Addr()) {
		s.log.Warn("agent listening beyond loopback without TLS: the token and all call data cross the network in clear text", "addr", s.ln.Addr().String())
	}
	sopts := []grpc.ServerOption{
		grpc.MaxRecvMsgSize(opts.MaxMessageBytes), grpc.MaxSendMsgSize(opts.MaxMessageBytes),
		// Hosts ping idle connections to notice a dead peer; allow it.
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 5 * time.Second, PermitWithoutStream: true}),
	}
	if opts.TLS != nil {
		sopts = append(sopts, grpc.Creds(credentials.NewTLS(opts.TLS)))
	}
	// Health is open on this port only when there is no health-only port
	// for probes: an open method lets a peer without the token send bodies
	// of up to MaxMessageBytes (the Guard bounds how many at once).
	var open []string
	if s.hln == nil {
		open = []string{"/" + healthpb.Health_ServiceDesc.ServiceName + "/"}
	}
	gopts, ln := auth.Guard{Token: token, Open: open,
		StreamsPerConn: opts.MaxStreamsPerConn, Streams: opts.MaxStreams,
		LimitHint: "raise --max-streams (agent.Options.MaxStreams)"}.Armed(s.ln)
	s.ln = ln
	sopts = append(sopts, gopts...)
	s.srv = grpc.NewServer(sopts...)
	agentpb.RegisterAgentServiceServer(s.srv, s)
	healthpb.RegisterHealthServer(s.srv, s.health)
	if s.hln != nil {
		// No token here, so the bounds are what keeps a peer from making
		// this port buffer anything: tiny requests, few at once.
		s.hsrv = grpc.NewServer(grpc.MaxRecvMsgSize(healthMaxMessageBytes),
			grpc.MaxHeaderListSize(auth.MaxHeaderListBytes), grpc.MaxConcurrentStreams(auth.DefaultOpenStreams))
		healthpb.RegisterHealthServer(s.hsrv, s.health)
	}
	s.setServing(false)
	s.health.SetServingStatus(LivenessService, healthpb.HealthCheckResponse_SERVING)
	return s, nil
}

// Addr is the endpoint's bound address (useful with port 0).
func (s *Server) Addr() string { return s.ln.Addr().String() }

// HealthAddr is the health-only address, "" without Options.HealthListen.
func (s *Server) HealthAddr() string {
	if s.hln == nil {
		return ""
	}
	return s.hln.Addr().String()
}

func (s *Server) String() string { return "agent " + s.Addr() }

// Serve serves until ctx ends, then stops: health NOT_SERVING, in-flight
// calls get StopGrace, the rest are cut. It returns the listener's error,
// or nil after a requested stop.
func (s *Server) Serve(ctx context.Context) error {
	errc := make(chan error, 2)
	go func() { errc <- s.srv.Serve(s.ln) }()
	if s.hsrv != nil {
		go func() { errc <- s.hsrv.Serve(s.hln) }()
	}
	tick := time.NewTicker(healthPoll)
	defer tick.Stop()
	s.refreshHealth()
	var err error
loop:
	for {
		select {
		case <-tick.C:
			s.refreshHealth()
		case err = <-errc:
			break loop
		case <-ctx.Done():
			break loop
		}
	}
	s.stop()
	return err
}

func (s *Server) stop() {
	s.once.Do(func() {
		s.health.Shutdown() // every service NOT_SERVING, liveness included
		s.draining.Store(true)
		done := make(chan struct{})
		go func() { s.srv.GracefulStop(); close(done) }()
		t := time.NewTimer(s.opts.StopGrace)
		defer t.Stop()
		select {
		case <-done:
		case <-t.C:
			s.log.Warn("agent calls still running after the stop grace; cutting them", "grace", s.opts.StopGrace)
			s.srv.Stop()
			<-done
		}
		if s.hsrv != nil {
			s.hsrv.Stop()
		}
	})
}

// refreshHealth: the agent is SERVING while any of its pools has a ready
// worker; a host whose pool's calls find none there gets UNAVAILABLE
// (nothing ran) and reconnects, and Describe says each pool's readiness.
func (s *Server) refreshHealth() {
	ready := 0
	for _, ps := range s.app.Stats().Pools {
		ready += ps.Workers.Idle + ps.Workers.Busy
	}
	s.setServing(ready > 0)
}

func (s *Server) setServing(ok bool) {
	st := healthpb.HealthCheckResponse_NOT_SERVING
	if ok {
		st = healthpb.HealthCheckResponse_SERVING
	}
	s.health.SetServingStatus("", st)
	s.health.SetServingStatus(agentpb.AgentService_ServiceDesc.ServiceName, st)
}

// pool is the App's pool a host names (empty: the default pool): the one
// place where the agent maps the protocol's pool name to its own.
func (s *Server) pool(name string) (*snakepit.Pool, error) {
	if name == "" {
		name = snakepit.DefaultPool
	}
	p := s.app.Pool(name)
	return p, p.Err()
}

// Describe implements agentpb.AgentServiceServer: the pool the host names
// in the top-level fields, every pool in Pools.
func (s *Server) Describe(_ context.Context, req *agentpb.DescribeRequest) (*agentpb.DescribeResponse, error) {
	p, err := s.pool(req.GetPool())
	if err != nil {
		return nil, status.Error(codes.NotFound, "the agent serves "+strings.Join(s.app.PoolNames(), ", "))
	}
	resp := &agentpb.DescribeResponse{AgentId: s.app.RunID(), Hostname: s.host}
	for _, name := range s.app.PoolNames() {
		info := poolInfo(s.app.Pool(name))
		resp.Pools = append(resp.Pools, info)
		if name == p.Name() {
			resp.Capacity, resp.ReadyWorkers, resp.Tools = info.Capacity, info.ReadyWorkers, info.Tools
		}
	}
	return resp, nil
}

func poolInfo(p *snakepit.Pool) *agentpb.PoolInfo {
	st := p.Stats()
	info := &agentpb.PoolInfo{Name: p.Name(), Capacity: uint32(st.Capacity), ReadyWorkers: uint32(st.Workers.Idle + st.Workers.Busy)}
	for _, t := range p.Tools() {
		info.Tools = append(info.Tools, wire.ToolSpecToPB(t))
	}
	return info
}

// callOptions are the host caller's options, applied to this App's pool
// (docs/SCALING.md lists what crosses). The deadline crosses as the gRPC
// deadline, the trace context in the metadata (withCallerTrace).
func callOptions(req *pb.ExecuteToolRequest) []snakepit.CallOption {
	var o []snakepit.CallOption
	if req.GetSessionId() != "" {
		o = append(o, snakepit.WithSession(req.GetSessionId()))
	}
	po := wire.OptionsFromPB(req.GetOptions())
	if po.Idempotent {
		o = append(o, snakepit.Idempotent())
	}
	if po.Affinity != pool.AffinityHint {
		// A mode this version does not know fails the call (ErrInvalidConfig).
		o = append(o, snakepit.WithAffinity(po.Affinity))
	}
	if po.QueueTimeout > 0 {
		o = append(o, snakepit.WithQueueTimeout(po.QueueTimeout))
	}
	if req.GetRequestId() != "" {
		// The host's id, so one call reads the same in both hosts' logs.
		o = append(o, snakepit.WithRequestID(req.GetRequestId()))
	}
	for k, v := range req.GetBinaryArgs() {
		o = append(o, snakepit.WithBinary(k, v))
	}
	return o
}

func args(req *pb.ExecuteToolRequest) json.RawMessage {
	if len(req.GetArgsJson()) == 0 {
		return nil
	}
	return json.RawMessage(req.GetArgsJson())
}

// errDraining answers a call that arrived once the stop began.
var errDraining = fmt.Errorf("%w: the agent is stopping (draining) and starts no new calls; nothing ran", snakepit.ErrPoolStopping)

// Execute implements agentpb.AgentServiceServer.
func (s *Server) Execute(ctx context.Context, req *pb.ExecuteToolRequest) (*agentpb.ExecuteResponse, error) {
	if s.draining.Load() {
		return &agentpb.ExecuteResponse{Error: wireError(errDraining)}, nil
	}
	p, err := s.pool(req.GetOptions().GetPool())
	if err != nil {
		return &agentpb.ExecuteResponse{Error: wireError(err)}, nil
	}
	res, err := p.Execute(withCallerTrace(ctx, req), req.GetToolName(), args(req), callOptions(req)...)
	if err != nil {
		return &agentpb.ExecuteResponse{Error: wireError(err)}, nil
	}
	return &agentpb.ExecuteResponse{Result: wire.ResultPayload(res)}, nil
}

// ExecuteStream implements agentpb.AgentServiceServer.
func (s *Server) ExecuteStream(req *pb.ExecuteToolRequest, stream agentpb.AgentService_ExecuteStreamServer) error {
	if s.draining.Load() {
		return stream.Send(&agentpb.StreamChunk{IsFinal: true, Error: wireError(errDraining)})
	}
	p, err := s.pool(req.GetOptions().GetPool())
	if err != nil {
		return stream.Send(&agentpb.StreamChunk{IsFinal: true, Error: wireError(err)})
	}
	for c, err := range p.ExecuteStream(withCallerTrace(stream.Context(), req), req.GetToolName(), args(req), callOptions(req)...) {
		if err != nil {
			return stream.Send(&agentpb.StreamChunk{IsFinal: true, Error: wireError(err)})
		}
		if serr := stream.Send(&agentpb.StreamChunk{Seq: c.Seq, Data: wire.Payload(c.JSON, c.Binary)}); serr != nil {
			return serr // breaking out cancels the stream in Python
		}
	}
	return stream.Send(&agentpb.StreamChunk{IsFinal: true})
}

// withCallerTrace continues the host caller's trace: the App puts the span
// context of ctx into the call it makes here, so the W3C entries the host
// sent must become ctx's span context again.
func withCallerTrace(ctx context.Context, req *pb.ExecuteToolRequest) context.Context {
	if len(req.GetMetadata()) == 0 {
		return ctx
	}
	return propagation.TraceContext{}.Extract(ctx, propagation.MapCarrier(req.GetMetadata()))
}

// wireError sorts an App error into the kinds a host's remote worker maps
// back to the same errors.Is targets.
func wireError(err error) *agentpb.AgentError {
	e := &agentpb.AgentError{Message: err.Error()}
	var te *worker.ToolError
	var ie *worker.InvalidArgsError
	var ue *worker.UnknownToolError
	var ce *worker.CrashError
	var pe *snakepit.UnknownPoolError
	switch {
	case errors.As(err, &pe):
		e.Kind = agentpb.AgentError_UNKNOWN_POOL
		e.Available = pe.Pools
	case errors.As(err, &ie):
		// The worker refused the arguments: the host gets the same path,
		// expected type and message.
		e.Kind = agentpb.AgentError_INVALID_ARGS
		e.ToolError = wire.InvalidArgsToPB(ie)
	case errors.As(err, &te):
		e.Kind = agentpb.AgentError_TOOL_FAILED
		e.ToolError = &pb.ToolError{Type: te.Type, Message: te.Message, Traceback: te.Traceback}
	case errors.As(err, &ue):
		e.Kind = agentpb.AgentError_UNKNOWN_TOOL
		e.Available = ue.Available
	case errors.Is(err, snakepit.ErrWorkerTimeout):
		e.Kind = agentpb.AgentError_WORKER_TIMEOUT
		var wte *snakepit.WorkerTimeoutError
		if errors.As(err, &wte) {
			e.WorkerId = wte.WorkerID
		}
	case errors.As(err, &ce):
		e.Kind = agentpb.AgentError_WORKER_CRASHED
		e.WorkerId, e.Pid, e.ExitCode, e.Signal = ce.WorkerID, int64(ce.PID), int32(ce.ExitCode), worker.SignalName(ce.Signal)
	case errors.Is(err, snakepit.ErrWorkerCrashed):
		e.Kind = agentpb.AgentError_WORKER_CRASHED
	case errors.Is(err, snakepit.ErrPoolStopping), errors.Is(err, snakepit.ErrNotReady), errors.Is(err, snakepit.ErrNotStarted), errors.Is(err, worker.ErrWorkerUnavailable):
		e.Kind = agentpb.AgentError_UNAVAILABLE
	case errors.Is(err, snakepit.ErrQueueTimeout):
		e.Kind = agentpb.AgentError_QUEUE_TIMEOUT
	case errors.Is(err, snakepit.ErrPoolSaturated):
		e.Kind = agentpb.AgentError_SATURATED
	case errors.Is(err, snakepit.ErrSessionWorkerBusy):
		e.Kind = agentpb.AgentError_SESSION_BUSY
	case errors.Is(err, snakepit.ErrSessionWorkerUnavailable):
		e.Kind = agentpb.AgentError_SESSION_UNAVAILABLE
	case errors.Is(err, snakepit.ErrInvalidArgs):
		e.Kind = agentpb.AgentError_INVALID_ARGS
	case errors.Is(err, snakepit.ErrInvalidCall):
		e.Kind = agentpb.AgentError_INVALID_CALL
	case errors.Is(err, snakepit.ErrMessageTooLarge):
		e.Kind = agentpb.AgentError_MESSAGE_TOO_LARGE
	case errors.Is(err, context.DeadlineExceeded):
		e.Kind = agentpb.AgentError_DEADLINE_EXCEEDED
	case errors.Is(err, context.Canceled):
		e.Kind = agentpb.AgentError_CANCELLED
	default:
		e.Kind = agentpb.AgentError_OTHER
	}
	return e
}

func listen(addr string, allowNonLoopback bool) (net.Listener, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("snakepit: agent address %q: want HOST:PORT, e.g. %s: %v", addr, DefaultListen, err)
	}
	if !allowNonLoopback && host != "localhost" {
		if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
			return nil, fmt.Errorf("%w: %q; pass --allow-non-loopback (Options.AllowNonLoopback) to serve other machines, with TLS on any network you do not trust", ErrNonLoopback, addr)
		}
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("snakepit: agent: %w", err)
	}
	if !allowNonLoopback && !isLoopback(ln.Addr()) {
		_ = ln.Close()
		return nil, fmt.Errorf("%w: %q resolved to %s", ErrNonLoopback, addr, ln.Addr())
	}
	return ln, nil
}

func isLoopback(a net.Addr) bool {
	ta, ok := a.(*net.TCPAddr)
	return ok && ta.IP.IsLoopback()
}

// LoadServerTLS builds the agent's TLS configuration from PEM files. With
// clientCAFile set, clients must present a certificate signed by that CA
// (mutual TLS); the token is still required.
func LoadServerTLS(certFile, keyFile, clientCAFile string) (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("snakepit: agent TLS certificate: %w", err)
	}
	cfg := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	if clientCAFile != "" {
		pool, err := certPool(clientCAFile)
		if err != nil {
			return nil, err
		}
		cfg.ClientCAs = pool
		cfg.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return cfg, nil
}

func certPool(file string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("snakepit: reading CA file: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("snakepit: %s holds no PEM certificate", file)
	}
	return pool, nil
}
