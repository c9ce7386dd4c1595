package agent_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

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

func TestMain(m *testing.M) { testutil.Main(m) }

func tokenFile(t *testing.T) string {
	t.Helper()
	f := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(f, []byte("agent-test-token-0123456789\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}

// agentApp is an App of fake workers (no Python): what a `snakepit serve`
// would run, in-process.
func agentApp(t *testing.T, workers int, f *fake.Factory) *snakepit.App {
	t.Helper()
	app, err := snakepit.New(snakepit.Config{Workers: workers, Capacity: 2, WorkerFactory: f,
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

func serve(t *testing.T, app *snakepit.App, opts agent.Options) *agent.Server {
	t.Helper()
	if opts.Listen == "" {
		opts.Listen = "127.0.0.1:0"
	}
	opts.Logger = testutil.Logger()
	srv, err := agent.Listen(app, opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("agent Serve: %v", err)
		}
	})
	return srv
}

func hostApp(t *testing.T, src discovery.Source, ro remote.Options) *snakepit.App {
	t.Helper()
	app, err := snakepit.New(snakepit.Config{Discovery: src, DiscoveryInterval: 200 * time.Millisecond, Remote: ro,
		RegistryPath: filepath.Join(t.TempDir(), "host.db"), Logger: testutil.Logger()})
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

func readyWorkers(app *snakepit.App) int {
	w := app.Stats().Pool.Workers
	return w.Idle + w.Busy
}

func tools() *fake.Factory {
	return &fake.Factory{Options: []fake.Option{
		fake.WithTool("echo", fake.Echo),
		fake.WithTool("fail", func(context.Context, *worker.Call) (*worker.Result, error) {
			return nil, &worker.ToolError{Tool: "fail", Type: "ValueError", Message: "boom", Traceback: "tb"}
		}),
		fake.WithTool("bytes", func(_ context.Context, c *worker.Call) (*worker.Result, error) {
			return &worker.Result{Binary: c.Binary["data"]}, nil
		}),
		fake.WithTool("session", func(_ context.Context, c *worker.Call) (*worker.Result, error) {
			b, _ := json.Marshal(c.SessionID)
			return &worker.Result{JSON: b}, nil
		}),
		fake.WithStreamTool("count", func(_ context.Context, _ *worker.Call, yield func(worker.Chunk) error) error {
			for i := 1; i <= 3; i++ {
				if err := yield(worker.Chunk{Seq: uint64(i), JSON: json.RawMessage([]byte{byte('0' + i)})}); err != nil {
					return err
				}
			}
			return nil
		}),
		fake.WithHangingTool("hang"),
	}}
}

func TestListenRefusesNonLoopbackUnlessAllowed(t *testing.T) {
	app := agentApp(t, 1, tools())
	tok := tokenFile(t)
	for _, addr := range []string{"0.0.0.0:0", ":0", "192.0.2.10:0"} {
		_, err := agent.Listen(app, agent.Options{Listen: addr, TokenFile: tok})
		if !errors.Is(err, agent.ErrNonLoopback) {
			t.Errorf("Listen(%q) = %v, want ErrNonLoopback", addr, err)
		}
	}
	_, err := agent.Listen(app, agent.Options{Listen: "127.0.0.1:0", TokenFile: filepath.Join(t.TempDir(), "missing")})
	if err == nil {
		t.Error("Listen without a readable token file succeeded")
	}
}

// Every AgentService call needs the token; health needs none (Kubernetes
// probes send none) and follows the pool's readiness.
func TestTokenRequiredHealthOpen(t *testing.T) {
	app := agentApp(t, 1, tools())
	srv := serve(t, app, agent.Options{TokenFile: tokenFile(t)})
	cc, err := grpc.NewClient(srv.Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err = agentpb.NewAgentServiceClient(cc).Describe(ctx, &agentpb.DescribeRequest{})
	if status.Code(err) != codes.Unauthenticated {
		t.Fatalf("Describe without token = %v, want Unauthenticated", err)
	}
	h := healthpb.NewHealthClient(cc)
	testutil.Eventually(t, 5*time.Second, "health SERVING without a token", func() bool {
		r, err := h.Check(ctx, &healthpb.HealthCheckRequest{})
		return err == nil && r.GetStatus() == healthpb.HealthCheckResponse_SERVING
	})
	if r, err := h.Check(ctx, &healthpb.HealthCheckRequest{Service: agent.LivenessService}); err != nil || r.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("liveness = %v, %v", r, err)
	}
}

// The token is checked from the headers, before the body is read: a
// request without it is refused as Unauthenticated even when its body is
// over the receive limit (reading the body first would answer
// ResourceExhausted, after buffering it). The health-only port refuses
// anything but a small request.
func TestUnauthenticatedBodyIsNotRead(t *testing.T) {
	srv := serve(t, agentApp(t, 1, tools()), agent.Options{TokenFile: tokenFile(t), MaxMessageBytes: 64 << 10, HealthListen: "127.0.0.1:0"})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn := func(addr string) *grpc.ClientConn {
		cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithDefaultCallOptions(grpc.MaxCallSendMsgSize(8<<20)))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cc.Close() })
		return cc
	}
	big := &pb.ExecuteToolRequest{ToolName: "echo", BinaryArgs: map[string][]byte{"data": make([]byte, 4<<20)}}
	if _, err := agentpb.NewAgentServiceClient(conn(srv.Addr())).Execute(ctx, big); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("4 MiB Execute without a token: %v, want Unauthenticated", err)
	}
	// With a health-only port for the probes, health on the main port is
	// not open either.
	if _, err := healthpb.NewHealthClient(conn(srv.Addr())).Check(ctx, &healthpb.HealthCheckRequest{}); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("health on the main port without a token, with a health-only port: %v, want Unauthenticated", err)
	}
	h := healthpb.NewHealthClient(conn(srv.HealthAddr()))
	if _, err := h.Check(ctx, &healthpb.HealthCheckRequest{Service: strings.Repeat("x", 64<<10)}); status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("64 KiB health request on the health-only port: %v, want ResourceExhausted", err)
	}
	if _, err := h.Check(ctx, &healthpb.HealthCheckRequest{Service: agent.LivenessService}); err != nil {
		t.Fatalf("liveness on the health-only port: %v", err)
	}
}

// The host's pool calls the agent's pool through a remote worker: results,
// bytes, sessions, streams and typed errors arrive as from a local worker,
// with the agent's advertised capacity.
func TestRemoteWorkerEndToEnd(t *testing.T) {
	tok := tokenFile(t)
	srv := serve(t, agentApp(t, 2, tools()), agent.Options{TokenFile: tok})
	host := hostApp(t, discovery.Static{srv.Addr()}, remote.Options{TokenFile: tok})
	testutil.Eventually(t, 5*time.Second, "the remote worker ready", func() bool { return readyWorkers(host) == 1 })
	if c := host.Stats().Pool.Capacity; c != 4 {
		t.Fatalf("capacity %d, want the agent's 2 workers × 2", c)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	got, err := snakepit.Decode[map[string]int](host.Execute(ctx, "echo", map[string]int{"a": 1}))
	if err != nil || got["a"] != 1 {
		t.Fatalf("echo = %v, %v", got, err)
	}
	res, err := host.Execute(ctx, "bytes", nil, snakepit.WithBinary("data", []byte{0, 1, 2}))
	if err != nil || string(res.Binary) != "\x00\x01\x02" {
		t.Fatalf("bytes = %v, %v", res, err)
	}
	sid, err := snakepit.Decode[string](host.Execute(ctx, "session", nil, snakepit.WithSession("s-42")))
	if err != nil || sid != "s-42" {
		t.Fatalf("session = %q, %v", sid, err)
	}
	var seqs []uint64
	for c, err := range host.ExecuteStream(ctx, "count", nil) {
		if err != nil {
			t.Fatal(err)
		}
		seqs = append(seqs, c.Seq)
	}
	if len(seqs) != 3 || seqs[2] != 3 {
		t.Fatalf("stream seqs = %v", seqs)
	}
	var te *snakepit.ToolError
	if _, err := host.Execute(ctx, "fail", nil); !errors.As(err, &te) || te.Type != "ValueError" || te.Traceback != "tb" {
		t.Fatalf("fail = %v, want the ToolError", err)
	}
	var ue *snakepit.UnknownToolError
	if _, err := host.Execute(ctx, "nope", nil); !errors.As(err, &ue) || len(ue.Available) == 0 {
		t.Fatalf("unknown tool = %v", err)
	}
	// The caller's deadline crosses to the agent; a responsive agent is not
	// treated as hung.
	short, cancelShort := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancelShort()
	if _, err := host.Execute(short, "hang", nil); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("hang = %v, want DeadlineExceeded", err)
	}
	if readyWorkers(host) != 1 {
		t.Fatal("a deadline on a responsive agent took the remote worker out of rotation")
	}
}

// A worker process crashing behind the agent fails that call with
// ErrWorkerCrashed but leaves the remote worker serving; the agent going
// away under a call fails it with ErrWorkerCrashed and takes the worker out
// of rotation.
func TestCrashSemantics(t *testing.T) {
	tok := tokenFile(t)
	f := tools()
	// crash ends the lifetime it runs in, as a Python process dying does.
	f.Options = append(f.Options, fake.WithTool("crash", func(ctx context.Context, _ *worker.Call) (*worker.Result, error) {
		f.Worker("w0").Crash()
		<-ctx.Done()
		return nil, context.Cause(ctx)
	}))
	app := agentApp(t, 1, f)
	ctx, stopAgent := context.WithCancel(context.Background())
	srv, err := agent.Listen(app, agent.Options{Listen: "127.0.0.1:0", TokenFile: tok, StopGrace: 100 * time.Millisecond, Logger: testutil.Logger()})
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx) }()
	defer func() { stopAgent(); <-served }()

	host := hostApp(t, discovery.Static{srv.Addr()}, remote.Options{TokenFile: tok})
	testutil.Eventually(t, 5*time.Second, "the remote worker ready", func() bool { return readyWorkers(host) == 1 })
	cctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err = host.Execute(cctx, "crash", nil)
	var ce *snakepit.CrashError
	if !errors.As(err, &ce) || ce.Agent != srv.Addr() {
		t.Fatalf("crash behind the agent = %v, want a CrashError naming the agent", err)
	}
	if readyWorkers(host) != 1 {
		t.Fatal("a crash behind the agent took the remote worker out of rotation")
	}
	testutil.Eventually(t, 5*time.Second, "the agent's worker back", func() bool { return readyWorkers(app) == 1 })

	out := make(chan error, 1)
	go func() {
		_, err := host.Execute(cctx, "hang", nil)
		out <- err
	}()
	testutil.Eventually(t, 5*time.Second, "the call in flight on the agent", func() bool { return app.Stats().Pool.InFlight == 1 })
	stopAgent()
	select {
	case err := <-out:
		if !errors.Is(err, snakepit.ErrWorkerCrashed) {
			t.Fatalf("call under a vanishing agent = %v, want ErrWorkerCrashed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the call under a stopped agent did not return")
	}
	testutil.Eventually(t, 5*time.Second, "the remote worker out of rotation", func() bool { return readyWorkers(host) == 0 })
}

// TLS with a client CA: a host with a certificate the CA signed connects;
// one without a client certificate cannot.
func TestMutualTLS(t *testing.T) {
	dir := t.TempDir()
	ca, caKey := selfSignedCA(t)
	writePEM(t, filepath.Join(dir, "ca.pem"), "CERTIFICATE", ca.Raw)
	issue(t, ca, caKey, dir, "server", true)
	issue(t, ca, caKey, dir, "client", false)
	serverTLS, err := agent.LoadServerTLS(filepath.Join(dir, "server.pem"), filepath.Join(dir, "server.key"), filepath.Join(dir, "ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	tok := tokenFile(t)
	srv := serve(t, agentApp(t, 1, tools()), agent.Options{TokenFile: tok, TLS: serverTLS})

	clientTLS, err := remote.LoadClientTLS(filepath.Join(dir, "ca.pem"), filepath.Join(dir, "client.pem"), filepath.Join(dir, "client.key"), "")
	if err != nil {
		t.Fatal(err)
	}
	host := hostApp(t, discovery.Static{srv.Addr()}, remote.Options{TokenFile: tok, TLS: clientTLS})
	testutil.Eventually(t, 5*time.Second, "the remote worker ready over mutual TLS", func() bool { return readyWorkers(host) == 1 })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := host.Execute(ctx, "echo", nil); err != nil {
		t.Fatal(err)
	}

	noCert, err := remote.LoadClientTLS(filepath.Join(dir, "ca.pem"), "", "", "")
	if err != nil {
		t.Fatal(err)
	}
	cc, err := grpc.NewClient(srv.Addr(), grpc.WithTransportCredentials(credentials.NewTLS(noCert)))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	if _, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{}); err == nil {
		t.Fatal("a client without a certificate passed mutual TLS")
	}
}

func selfSignedCA(t *testing.T) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "snakepit test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return ca, key
}

func issue(t *testing.T, ca *x509.Certificate, caKey *ecdsa.PrivateKey, dir, name string, server bool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), KeyUsage: x509.KeyUsageDigitalSignature}
	if server {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		tmpl.IPAddresses = []net.IP{net.ParseIP("127.0.0.1")}
	} else {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	writePEM(t, filepath.Join(dir, name+".pem"), "CERTIFICATE", der)
	writePEM(t, filepath.Join(dir, name+".key"), "EC PRIVATE KEY", kb)
}

func writePEM(t *testing.T, path, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

// A host with another token never gets the remote worker ready, and the
// startup error it records says what to fix.
func TestWrongTokenIsAStartupErrorNamingTheToken(t *testing.T) {
	srv := serve(t, agentApp(t, 1, tools()), agent.Options{TokenFile: tokenFile(t)})
	other := filepath.Join(t.TempDir(), "other")
	if err := os.WriteFile(other, []byte("a-different-token-0123456789"), 0o600); err != nil {
		t.Fatal(err)
	}
	host, err := snakepit.New(snakepit.Config{Discovery: discovery.Static{srv.Addr()}, Remote: remote.Options{TokenFile: other},
		StartupFailures: 1, RegistryPath: filepath.Join(t.TempDir(), "host.db"), Logger: testutil.Logger()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := host.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer host.Stop(context.Background())
	var given []snakepit.GivenUpWorker
	testutil.Eventually(t, 5*time.Second, "the remote worker given up", func() bool {
		given = host.Stats().Pool.GivenUp
		return len(given) == 1
	})
	var se *snakepit.StartupError
	if !errors.As(given[0].Err, &se) || !strings.Contains(se.Hint, "token") {
		t.Fatalf("given up with %v; want a StartupError whose hint names the token", given[0].Err)
	}
	if readyWorkers(host) != 0 {
		t.Fatal("a remote worker with the wrong token became ready")
	}
}

// A graceful agent stop (SIGTERM in Kubernetes: a rollout, a scale-down)
// lets a call already running on it finish: the host's remote worker leaves
// rotation at once but keeps the draining connection for that call.
func TestGracefulAgentStopLetsInFlightCallsFinish(t *testing.T) {
	tok := tokenFile(t)
	f := tools()
	release := make(chan struct{})
	f.Options = append(f.Options, slowTool(release))
	app := agentApp(t, 1, f)
	ctx, stopAgent := context.WithCancel(context.Background())
	srv, err := agent.Listen(app, agent.Options{Listen: "127.0.0.1:0", TokenFile: tok, StopGrace: 10 * time.Second, Logger: testutil.Logger()})
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx) }()
	defer func() { stopAgent(); <-served }()
	host := hostApp(t, discovery.Static{srv.Addr()}, remote.Options{TokenFile: tok})
	testutil.Eventually(t, 5*time.Second, "the remote worker ready", func() bool { return readyWorkers(host) == 1 })

	out := make(chan error, 1)
	go func() {
		_, err := host.Execute(context.Background(), "slow", nil)
		out <- err
	}()
	testutil.Eventually(t, 5*time.Second, "the call running on the agent", func() bool { return app.Stats().Pool.InFlight == 1 })
	stopAgent()
	testutil.Eventually(t, 5*time.Second, "the agent draining: the host's worker out of rotation", func() bool { return readyWorkers(host) == 0 })
	close(release)
	select {
	case err := <-out:
		if err != nil {
			t.Fatalf("the call in flight during a graceful agent stop failed: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the call in flight got no answer")
	}
}

// slowTool is the fake tool "slow": it answers "ok" once release is closed,
// or ends with its call's context.
func slowTool(release <-chan struct{}) fake.Option {
	return fake.WithTool("slow", func(ctx context.Context, _ *worker.Call) (*worker.Result, error) {
		select {
		case <-release:
			return &worker.Result{JSON: json.RawMessage(`"ok"`)}, nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	})
}
