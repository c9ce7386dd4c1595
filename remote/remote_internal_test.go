package remote

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/snakepit-go/snakepit/agent/agentpb"
	"github.com/snakepit-go/snakepit/bridge/pb"
	"github.com/snakepit-go/snakepit/pool"
	"github.com/snakepit-go/snakepit/worker"
)

type nopEvents struct{}

func (nopEvents) Starting(string)                      {}
func (nopEvents) Ready(string, worker.Info)            {}
func (nopEvents) Exited(string, error)                 {}
func (nopEvents) Recycled(string, worker.Info, string) {}

// connected returns a remote worker whose current lifetime is a connection
// to addr, as Serve would have made it (no health wait, no Describe).
func connected(t *testing.T, addr string) (*Worker, *lifetime) {
	t.Helper()
	return connectedTo(t, addr, "")
}

// connectedTo is connected for the worker of the agent's pool agentPool.
func connectedTo(t *testing.T, addr, agentPool string) (*Worker, *lifetime) {
	t.Helper()
	tok := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tok, []byte("remote-test-token-0123456789"), 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := NewFactory(Options{TokenFile: tok})
	if err != nil {
		t.Fatal(err)
	}
	ww, err := f.ForPool(addr, agentPool).NewWorker(worker.Spec{ID: WorkerID(addr), Events: nopEvents{}})
	if err != nil {
		t.Fatal(err)
	}
	w := ww.(*Worker)
	cc, err := w.dial()
	if err != nil {
		t.Fatal(err)
	}
	lt := &lifetime{cc: cc, agent: agentpb.NewAgentServiceClient(cc), health: healthpb.NewHealthClient(cc), ended: make(chan struct{})}
	t.Cleanup(func() { lt.end("test over") })
	w.cur = lt
	return w, lt
}

// A call that could not be sent (nothing listens: the agent is gone) ran
// nowhere: ErrWorkerUnavailable, which the pool retries for any call, and
// the worker leaves rotation.
func TestCallNeverSentIsUnavailable(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	w, lt := connected(t, addr)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err = w.Execute(ctx, &worker.Call{Tool: "echo"})
	if !errors.Is(err, worker.ErrWorkerUnavailable) || errors.Is(err, worker.ErrWorkerCrashed) {
		t.Fatalf("a call to an address nobody listens on = %v; want ErrWorkerUnavailable, not ErrWorkerCrashed", err)
	}
	if !lt.over() {
		t.Fatal("the worker stayed in rotation after its connection could not send a call")
	}
	err = w.ExecuteStream(ctx, &worker.Call{Tool: "count"}, func(worker.Chunk) error { return nil })
	if !errors.Is(err, worker.ErrWorkerUnavailable) {
		t.Fatalf("a stream on a left lifetime = %v; want ErrWorkerUnavailable", err)
	}
}

// blockingAgent takes a call and holds it until the connection goes.
type blockingAgent struct {
	agentpb.UnimplementedAgentServiceServer
	entered chan struct{}
}

func (a *blockingAgent) Execute(ctx context.Context, _ *pb.ExecuteToolRequest) (*agentpb.ExecuteResponse, error) {
	close(a.entered)
	<-ctx.Done()
	return nil, ctx.Err()
}

// A call the agent received may have run: when the connection drops under
// it, it is ErrWorkerCrashed (retried only if idempotent).
func TestCallSentThenDroppedIsCrash(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	a := &blockingAgent{entered: make(chan struct{})}
	agentpb.RegisterAgentServiceServer(srv, a)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	defer func() { srv.Stop(); <-served }()
	w, _ := connected(t, ln.Addr().String())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out := make(chan error, 1)
	go func() {
		_, err := w.Execute(ctx, &worker.Call{Tool: "echo"})
		out <- err
	}()
	select {
	case <-a.entered:
	case <-ctx.Done():
		t.Fatal("the call never reached the agent")
	}
	srv.Stop() // the agent vanishes with the call running
	if err := <-out; !errors.Is(err, worker.ErrWorkerCrashed) || errors.Is(err, worker.ErrWorkerUnavailable) {
		t.Fatalf("a call dropped after it reached the agent = %v; want ErrWorkerCrashed", err)
	}
}

// An agent whose own pool killed a worker as hung reports WORKER_TIMEOUT;
// the caller gets the same *pool.WorkerTimeoutError as from a local hung
// worker, naming the agent, and this worker stays in rotation.
func TestAgentsWorkerTimeoutIsTheSameTypedError(t *testing.T) {
	w, lt := connected(t, "127.0.0.1:1")
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err := w.agentError(ctx, lt, "hang", &agentpb.AgentError{Kind: agentpb.AgentError_WORKER_TIMEOUT, WorkerId: "w3", Message: "killed as hung"})
	var wte *pool.WorkerTimeoutError
	if !errors.As(err, &wte) || !errors.Is(err, worker.ErrWorkerTimeout) || !errors.Is(err, context.Canceled) {
		t.Fatalf("WORKER_TIMEOUT = %v; want *pool.WorkerTimeoutError", err)
	}
	if wte.WorkerID != "w3" || wte.Agent != "127.0.0.1:1" || wte.Tool != "hang" || lt.over() {
		t.Fatalf("WorkerTimeoutError = %+v (lifetime over: %v); want w3 on the agent, the connection kept", wte, lt.over())
	}
}

func TestNegativeOptionsAreRejectedNotDefaulted(t *testing.T) {
	for _, o := range []Options{{StartupTimeout: -1}, {HealthTimeout: -1}, {HealthMisses: -1}, {MaxMessageBytes: -1}} {
		o.TokenFile = "/nonexistent" // never read: the options fail first
		if _, err := NewFactory(o); !errors.Is(err, worker.ErrInvalidConfig) {
			t.Errorf("NewFactory(%+v) = %v; want ErrInvalidConfig", o, err)
		}
	}
}

// poolAgent records the pool each request names; it answers Describe as
// an agent that predates named pools (no Pools) and every call with
// UNKNOWN_POOL.
type poolAgent struct {
	agentpb.UnimplementedAgentServiceServer
	described, executed chan string
}

func (a *poolAgent) Describe(_ context.Context, req *agentpb.DescribeRequest) (*agentpb.DescribeResponse, error) {
	a.described <- req.GetPool()
	return &agentpb.DescribeResponse{Capacity: 1}, nil
}

func (a *poolAgent) Execute(_ context.Context, req *pb.ExecuteToolRequest) (*agentpb.ExecuteResponse, error) {
	a.executed <- req.GetOptions().GetPool()
	return &agentpb.ExecuteResponse{Error: &agentpb.AgentError{Kind: agentpb.AgentError_UNKNOWN_POOL, Available: []string{"default", "text"}}}, nil
}

// The worker of an agent's named pool names it in Describe and in every
// call; UNKNOWN_POOL reaches the caller as pool.ErrUnknownPool naming the
// agent's pools (nothing ran: the worker stays); an agent that lists no
// pools predates them and is refused rather than used as its default pool.
func TestWorkerNamesItsAgentPool(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	a := &poolAgent{described: make(chan string, 1), executed: make(chan string, 1)}
	agentpb.RegisterAgentServiceServer(srv, a)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	defer func() { srv.Stop(); <-served }()
	w, lt := connectedTo(t, ln.Addr().String(), "embed")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	_, err = w.Execute(ctx, &worker.Call{Tool: "embed"})
	if got := <-a.executed; got != "embed" {
		t.Fatalf("the call named pool %q; want embed", got)
	}
	if !errors.Is(err, pool.ErrUnknownPool) || !strings.Contains(err.Error(), "default, text") || lt.over() {
		t.Fatalf("UNKNOWN_POOL = %v (lifetime over: %v); want ErrUnknownPool listing the agent's pools, the connection kept", err, lt.over())
	}
	_, err = w.describe(ctx, lt)
	if got := <-a.described; got != "embed" {
		t.Fatalf("Describe named pool %q; want embed", got)
	}
	if !errors.Is(err, pool.ErrUnknownPool) || !strings.Contains(err.Error(), "upgrade") {
		t.Fatalf("Describe of an agent without pools = %v; want ErrUnknownPool saying to upgrade it", err)
	}
}
