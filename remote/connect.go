package remote

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/status"

	"github.com/snakepit-go/snakepit/agent/agentpb"
	"github.com/snakepit-go/snakepit/internal/auth"
	"github.com/snakepit-go/snakepit/internal/wire"
	"github.com/snakepit-go/snakepit/pool"
	"github.com/snakepit-go/snakepit/worker"
)

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
	d, err := lt.agent.Describe(ctx, &agentpb.DescribeRequest{Pool: w.agentPool})
	switch {
	case status.Code(err) == codes.NotFound:
		return worker.Info{}, w.unknownPool(status.Convert(err).Message(), false)
	case err != nil:
		return worker.Info{}, err
	case w.agentPool != "" && len(d.GetPools()) == 0:
		// An agent that predates named pools ignores the name and would
		// run every call in its default pool.
		return worker.Info{}, fmt.Errorf("%w: agent %s serves its default pool only (a snakepit older than named pools); upgrade it to serve pool %q", pool.ErrUnknownPool, w.endpoint, w.agentPool)
	}
	lt.tools, lt.capac = wire.ToolSpecsFromPB(d.GetTools()), int(d.GetCapacity())
	w.log.Debug("agent described", "agent_id", d.GetAgentId(), "hostname", d.GetHostname(), "capacity", lt.capac)
	return worker.Info{Tools: lt.tools, Capacity: lt.capac}, nil
}

func (w *Worker) startupError(err error) error {
	kind := worker.StartupUnreachable
	hint := "check that the agent runs (snakepit serve) and listens on " + w.endpoint +
		" beyond loopback (--allow-non-loopback), and that both sides use the same token and TLS settings"
	switch {
	case errors.Is(err, pool.ErrUnknownPool):
		kind = worker.StartupUnclassified
		hint = w.unknownPoolHint()
	case status.Code(err) == codes.Unauthenticated:
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
