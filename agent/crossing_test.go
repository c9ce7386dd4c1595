package agent_test

import (
	"context"
	"encoding/json"
	"errors"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/snakepit-go/snakepit"
	"github.com/snakepit-go/snakepit/agent"
	"github.com/snakepit-go/snakepit/agent/agentpb"
	"github.com/snakepit-go/snakepit/bridge/pb"
	"github.com/snakepit-go/snakepit/discovery"
	"github.com/snakepit-go/snakepit/internal/testutil"
	"github.com/snakepit-go/snakepit/remote"
	"github.com/snakepit-go/snakepit/worker"
	"github.com/snakepit-go/snakepit/worker/fake"
)

// startApp starts an App of fake workers with one call slot each, so a
// session's process is busy with a single call.
func startApp(t *testing.T, workers int, f *fake.Factory) *snakepit.App {
	t.Helper()
	app, err := snakepit.New(snakepit.Config{Workers: workers, Capacity: 1, WorkerFactory: f,
		RegistryPath: filepath.Join(t.TempDir(), "agent.db"), Logger: testutil.Logger()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := app.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = app.Stop(context.Background()) })
	return app
}

// crashBusy crashes the fake workers with a call in flight: the process of
// the one call the test has running.
func crashBusy(f *fake.Factory) {
	for _, w := range f.Workers() {
		if w.InFlight() > 0 {
			w.Crash()
		}
	}
}

// The caller's pool options reach the agent's pool, and its typed errors
// come back as the same errors.Is values: strict-fail-fast on a session
// whose process on the agent is busy is ErrSessionWorkerBusy (not a run on
// another process), strict-queue waits the caller's queue timeout, not the
// agent's default, a strict call whose process died is
// ErrSessionWorkerUnavailable, and an idempotent call is retried by the
// agent's own pool.
func TestCallOptionsCrossTheAgent(t *testing.T) {
	tok := tokenFile(t)
	f := tools()
	release := make(chan struct{})
	var flaky atomic.Int32
	f.Options = append(f.Options,
		fake.WithTool("hold", func(ctx context.Context, _ *worker.Call) (*worker.Result, error) {
			select {
			case <-release:
				return &worker.Result{JSON: json.RawMessage(`"held"`)}, nil
			case <-ctx.Done():
				return nil, context.Cause(ctx)
			}
		}),
		// flaky: the first call's process dies under it.
		fake.WithTool("flaky", func(ctx context.Context, _ *worker.Call) (*worker.Result, error) {
			if flaky.Add(1) == 1 {
				crashBusy(f)
				<-ctx.Done()
				return nil, context.Cause(ctx)
			}
			return &worker.Result{JSON: json.RawMessage(`"ok"`)}, nil
		}))
	app := startApp(t, 2, f)
	srv := serve(t, app, agent.Options{TokenFile: tok})
	host := hostApp(t, discovery.Static{srv.Addr()}, remote.Options{TokenFile: tok})
	testutil.Eventually(t, 5*time.Second, "the remote worker ready", func() bool { return readyWorkers(host) == 1 })
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	held := make(chan error, 1)
	go func() {
		_, err := host.Execute(ctx, "hold", nil, snakepit.WithSession("s"))
		held <- err
	}()
	testutil.Eventually(t, 5*time.Second, "the session's call running on the agent", func() bool { return app.Stats().Pool.InFlight == 1 })

	// The host's remote worker has a free slot; the agent's process of "s" does not.
	_, err := host.Execute(ctx, "echo", nil, snakepit.WithSession("s"), snakepit.WithAffinity(snakepit.AffinityStrictFailFast))
	if !errors.Is(err, snakepit.ErrSessionWorkerBusy) {
		t.Fatalf("strict-fail-fast on a busy session process behind the agent = %v; want ErrSessionWorkerBusy", err)
	}
	start := time.Now()
	_, err = host.Execute(ctx, "echo", nil, snakepit.WithSession("s"), snakepit.WithAffinity(snakepit.AffinityStrictQueue), snakepit.WithQueueTimeout(300*time.Millisecond))
	waited := time.Since(start)
	if !errors.Is(err, snakepit.ErrQueueTimeout) || waited > 3*time.Second {
		t.Fatalf("strict-queue with a 300 ms queue timeout = %v after %s; want ErrQueueTimeout well before the agent's 5 s default", err, waited)
	}

	crashBusy(f) // the session's process dies under "hold"
	if err := <-held; !errors.Is(err, snakepit.ErrWorkerCrashed) {
		t.Fatalf("hold under a crashed process = %v; want ErrWorkerCrashed", err)
	}
	_, err = host.Execute(ctx, "echo", nil, snakepit.WithSession("s"), snakepit.WithAffinity(snakepit.AffinityStrictFailFast))
	if !errors.Is(err, snakepit.ErrSessionWorkerUnavailable) {
		t.Fatalf("strict affinity to a dead session process behind the agent = %v; want ErrSessionWorkerUnavailable", err)
	}
	if readyWorkers(host) != 1 {
		t.Fatal("a session error behind the agent took the remote worker out of rotation")
	}

	testutil.Eventually(t, 5*time.Second, "both agent processes ready", func() bool { return readyWorkers(app) == 2 })
	hostRetries, agentRetries := host.Stats().Pool.Retries, app.Stats().Pool.Retries
	if got, err := snakepit.Decode[string](host.Execute(ctx, "flaky", nil, snakepit.Idempotent())); err != nil || got != "ok" {
		t.Fatalf("idempotent flaky = %q, %v; want it retried to success", got, err)
	}
	if d := app.Stats().Pool.Retries - agentRetries; d != 1 {
		t.Errorf("the agent's pool retried %d times; want 1 (the call crossed as idempotent)", d)
	}
	if d := host.Stats().Pool.Retries - hostRetries; d != 0 {
		t.Errorf("the host's pool retried %d times; want 0 (the agent's pool retried)", d)
	}
	close(release)
}

// An agent whose only worker is restarting answers NOT_SERVING. A call past
// its deadline, or cancelled, there gets its own context error; the
// connection is not cut as hung, so the agent's other queued call is served
// once the worker is back.
func TestNotServingAgentIsNotHung(t *testing.T) {
	tok := tokenFile(t)
	f := tools()
	f.Options = append(f.Options, fake.WithReadyDelay(2*time.Second),
		fake.WithTool("crash", func(ctx context.Context, _ *worker.Call) (*worker.Result, error) {
			crashBusy(f)
			<-ctx.Done()
			return nil, context.Cause(ctx)
		}))
	app, err := snakepit.New(snakepit.Config{Workers: 1, Capacity: 2, WorkerFactory: f,
		RegistryPath: filepath.Join(t.TempDir(), "agent.db"), Logger: testutil.Logger()})
	if err != nil {
		t.Fatal(err)
	}
	sctx, scancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer scancel()
	if err := app.Start(sctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = app.Stop(context.Background()) })
	srv := serve(t, app, agent.Options{TokenFile: tok})
	host := hostApp(t, discovery.Static{srv.Addr()}, remote.Options{TokenFile: tok})
	testutil.Eventually(t, 5*time.Second, "the remote worker ready", func() bool { return readyWorkers(host) == 1 })
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	if _, err := host.Execute(ctx, "crash", nil); !errors.Is(err, snakepit.ErrWorkerCrashed) {
		t.Fatalf("crash = %v", err)
	}
	cc, err := grpc.NewClient(srv.Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	hc := healthpb.NewHealthClient(cc)
	testutil.Eventually(t, 5*time.Second, "the agent NOT_SERVING while its worker restarts", func() bool {
		resp, err := hc.Check(ctx, &healthpb.HealthCheckRequest{})
		return err == nil && resp.GetStatus() == healthpb.HealthCheckResponse_NOT_SERVING
	})

	queued := make(chan error, 1)
	go func() {
		_, err := host.Execute(ctx, "echo", map[string]int{"a": 1})
		queued <- err
	}()
	short, cancelShort := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancelShort()
	_, err = host.Execute(short, "echo", nil)
	if !errors.Is(err, context.DeadlineExceeded) || errors.Is(err, snakepit.ErrWorkerTimeout) {
		t.Fatalf("a call past its deadline on a NOT_SERVING agent = %v; want its own DeadlineExceeded, not ErrWorkerTimeout", err)
	}
	// A call the caller cancels ends on the host first, whatever the race
	// of the deadline above: the host checks the agent's health, which is
	// NOT_SERVING.
	cctx, cancelCall := context.WithCancel(ctx)
	stopCall := time.AfterFunc(300*time.Millisecond, cancelCall)
	defer stopCall.Stop()
	_, err = host.Execute(cctx, "echo", nil)
	if !errors.Is(err, context.Canceled) || errors.Is(err, snakepit.ErrWorkerTimeout) {
		t.Fatalf("a cancelled call on a NOT_SERVING agent = %v; want its own Canceled, not ErrWorkerTimeout", err)
	}
	if err := <-queued; err != nil {
		t.Fatalf("the agent's other queued call = %v; want it served once the worker is back", err)
	}
	for reason := range host.Stats().Pool.RestartReasons {
		t.Errorf("the remote worker restarted (%s); a NOT_SERVING agent is not hung", reason)
	}
}

// When the agent's tool list changes (its code reloaded, or its workers
// changed), the host's pool learns the new tools and their limits within a
// health interval, without a reconnect.
func TestToolListChangeReachesTheHost(t *testing.T) {
	tok := tokenFile(t)
	app := startApp(t, 1, tools())
	srv := serve(t, app, agent.Options{TokenFile: tok})
	host := hostApp(t, discovery.Static{srv.Addr()}, remote.Options{TokenFile: tok, HealthInterval: 100 * time.Millisecond})
	testutil.Eventually(t, 5*time.Second, "the remote worker ready", func() bool { return readyWorkers(host) == 1 })
	limit := func(name string) int {
		for _, s := range host.Tools() {
			if s.Name == name {
				return s.MaxConcurrency
			}
		}
		return -1
	}
	if l := limit("echo"); l != 0 {
		t.Fatalf("echo's limit on the host = %d; want 0 (none)", l)
	}
	// The agent's code changes: a process whose echo declares
	// max_concurrency=1 replaces the one without.
	limited := &fake.Factory{Options: []fake.Option{fake.WithToolSpec(worker.ToolSpec{Name: "echo", MaxConcurrency: 1}, fake.Echo)}}
	if err := app.AddWorker("w-new", limited); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 5*time.Second, "the new agent process ready", func() bool { return readyWorkers(app) == 2 })
	rctx, rcancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer rcancel()
	if err := app.RemoveWorker(rctx, "w0"); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 5*time.Second, "echo's new limit on the host", func() bool { return limit("echo") == 1 })
	if host.Stats().Pool.Restarts != 0 {
		t.Fatal("the remote worker reconnected to learn the tools; want them refreshed in place")
	}
}

// Once its stop began, an agent starts no new call: it answers UNAVAILABLE
// (nothing ran), which a host retries elsewhere for any call, while the
// call already running finishes.
func TestDrainingAgentStartsNoNewCall(t *testing.T) {
	tok := tokenFile(t)
	f := tools()
	release := make(chan struct{})
	f.Options = append(f.Options, slowTool(release))
	app := startApp(t, 2, f)
	srv, err := agent.Listen(app, agent.Options{Listen: "127.0.0.1:0", TokenFile: tok, StopGrace: 10 * time.Second, Logger: testutil.Logger()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, stopAgent := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx) }()
	defer func() { stopAgent(); <-served }()
	running := make(chan error, 1)
	go func() {
		_, err := srv.Execute(context.Background(), &pb.ExecuteToolRequest{ToolName: "slow", ArgsJson: []byte("{}")})
		running <- err
	}()
	testutil.Eventually(t, 5*time.Second, "the call running", func() bool { return app.Stats().Pool.InFlight == 1 })
	stopAgent()
	var resp *agentpb.ExecuteResponse
	testutil.Eventually(t, 5*time.Second, "a new call refused as not run", func() bool {
		resp, err = srv.Execute(context.Background(), &pb.ExecuteToolRequest{ToolName: "echo", ArgsJson: []byte("{}")})
		return err == nil && resp.GetError() != nil
	})
	if k := resp.GetError().GetKind(); k != agentpb.AgentError_UNAVAILABLE {
		t.Fatalf("a call to a draining agent answered %s (%s); want UNAVAILABLE", k, resp.GetError().GetMessage())
	}
	if app.Stats().Pool.InFlight != 1 {
		t.Fatal("the draining agent started the new call")
	}
	close(release)
	if err := <-running; err != nil {
		t.Fatalf("the call running at the stop = %v", err)
	}
}
