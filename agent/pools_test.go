package agent_test

import (
	"context"
	"errors"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/snakepit-go/snakepit"
	"github.com/snakepit-go/snakepit/agent"
	"github.com/snakepit-go/snakepit/agent/agentpb"
	"github.com/snakepit-go/snakepit/bridge/pb"
	"github.com/snakepit-go/snakepit/discovery"
	"github.com/snakepit-go/snakepit/internal/auth"
	"github.com/snakepit-go/snakepit/internal/testutil"
	"github.com/snakepit-go/snakepit/remote"
	"github.com/snakepit-go/snakepit/worker/fake"
)

// twoPoolAgent is an agent App with the default pool (tools()) and pool
// "words" whose workers offer "wc" only, with another capacity.
func twoPoolAgent(t *testing.T) *snakepit.App {
	t.Helper()
	words := &fake.Factory{Options: []fake.Option{fake.WithTool("wc", fake.Echo)}}
	app, err := snakepit.New(snakepit.Config{Workers: 1, Capacity: 2, WorkerFactory: tools(),
		Pools:        []snakepit.PoolConfig{{Name: "words", Workers: 2, Capacity: 3, WorkerFactory: words}},
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

func toolNames(ts []*pb.ToolSpec) []string {
	var out []string
	for _, t := range ts {
		out = append(out, t.GetName())
	}
	slices.Sort(out)
	return out
}

// The protocol names the pool: Describe describes the one asked for and
// lists them all; a call runs in the pool its options name; a pool the
// agent lacks is NOT_FOUND (Describe) or UNKNOWN_POOL listing the pools.
func TestAgentServesEveryPool(t *testing.T) {
	tf := tokenFile(t)
	srv := serve(t, twoPoolAgent(t), agent.Options{TokenFile: tf})
	tok, err := auth.Load(tf, "")
	if err != nil {
		t.Fatal(err)
	}
	cc, err := grpc.NewClient(srv.Addr(), append([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}, auth.ClientOptions(tok)...)...)
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	c := agentpb.NewAgentServiceClient(cc)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	d, err := c.Describe(ctx, &agentpb.DescribeRequest{Pool: "words"})
	if err != nil {
		t.Fatal(err)
	}
	if got := toolNames(d.GetTools()); !slices.Equal(got, []string{"wc"}) || d.GetCapacity() != 6 {
		t.Fatalf("words: tools %v capacity %d; want [wc] and 2×3", got, d.GetCapacity())
	}
	if len(d.GetPools()) != 2 || d.GetPools()[0].GetName() != snakepit.DefaultPool || d.GetPools()[1].GetName() != "words" ||
		slices.Contains(toolNames(d.GetPools()[0].GetTools()), "wc") || d.GetPools()[0].GetCapacity() != 2 {
		t.Fatalf("pools listed: %v", d.GetPools())
	}
	if d, err := c.Describe(ctx, &agentpb.DescribeRequest{}); err != nil || slices.Contains(toolNames(d.GetTools()), "wc") || d.GetCapacity() != 2 {
		t.Fatalf("default pool described as %v, %v", d, err)
	}
	if _, err := c.Describe(ctx, &agentpb.DescribeRequest{Pool: "nope"}); status.Code(err) != codes.NotFound {
		t.Fatalf("Describe of a missing pool = %v; want NotFound", err)
	}

	call := func(pool, tool string) *agentpb.ExecuteResponse {
		t.Helper()
		r, err := c.Execute(ctx, &pb.ExecuteToolRequest{ToolName: tool, ArgsJson: []byte(`{"x":1}`), Options: &pb.CallOptions{Pool: pool}})
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	if r := call("words", "wc"); r.GetError() != nil {
		t.Fatalf("wc in words: %v", r.GetError())
	}
	if r := call("", "wc"); r.GetError().GetKind() != agentpb.AgentError_UNKNOWN_TOOL {
		t.Fatalf("wc in the default pool: %v; want UNKNOWN_TOOL", r)
	}
	r := call("nope", "wc")
	if e := r.GetError(); e.GetKind() != agentpb.AgentError_UNKNOWN_POOL || !slices.Equal(e.GetAvailable(), []string{snakepit.DefaultPool, "words"}) {
		t.Fatalf("a missing pool: %v; want UNKNOWN_POOL listing default and words", r)
	}
}

// A host's named pool with Discovery feeds on the agents' pool of its
// name, beside a default pool fed by their default pool; each side counts
// its calls per pool; a host pool the agent does not serve is given up
// with ErrUnknownPool, and its calls fail with it.
func TestHostPoolsFedByAgentPools(t *testing.T) {
	tf := tokenFile(t)
	ag := twoPoolAgent(t)
	srv := serve(t, ag, agent.Options{TokenFile: tf})
	agents := discovery.Static{srv.Addr()}
	host, err := snakepit.New(snakepit.Config{Discovery: agents, DiscoveryInterval: 200 * time.Millisecond, Remote: remote.Options{TokenFile: tf},
		Pools: []snakepit.PoolConfig{{Name: "words", Discovery: agents},
			{Name: "nope", Discovery: agents, StartupFailures: 1, ReadyTimeout: 5 * time.Second}},
		RegistryPath: filepath.Join(t.TempDir(), "host.db"), Logger: testutil.Logger()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := host.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer host.Stop(context.Background())

	if _, err := host.Pool("words").Execute(ctx, "wc", map[string]int{"x": 1}); err != nil {
		t.Fatalf("wc through the words pool: %v", err)
	}
	if _, err := host.Execute(ctx, "echo", map[string]int{"x": 1}); err != nil {
		t.Fatalf("echo through the default pool: %v", err)
	}
	var ute *snakepit.UnknownToolError
	if _, err := host.Pool("words").Execute(ctx, "echo", nil); !errors.As(err, &ute) {
		t.Fatalf("echo through the words pool: %v; want UnknownToolError", err)
	}
	if got := host.Pool("words").Stats(); got.Capacity != 6 || got.Requests != 2 {
		t.Errorf("host words pool: capacity %d requests %d; want the agent's 6 and 2", got.Capacity, got.Requests)
	}
	if got := host.Stats().Pool; got.Capacity != 2 || got.Requests != 1 {
		t.Errorf("host default pool: capacity %d requests %d; want 2 and 1", got.Capacity, got.Requests)
	}
	if w, d := ag.Pool("words").Stats().Requests, ag.Stats().Pool.Requests; w != 1 || d != 1 {
		t.Errorf("agent requests: words %d default %d; want 1 and 1 (the unknown tool is refused on the host)", w, d)
	}

	var given []snakepit.GivenUpWorker
	testutil.Eventually(t, 10*time.Second, "the nope pool's remote worker given up", func() bool {
		given = host.Pool("nope").Stats().GivenUp
		return len(given) == 1
	})
	var se *snakepit.StartupError
	if !errors.As(given[0].Err, &se) || !errors.Is(se, snakepit.ErrUnknownPool) {
		t.Fatalf("given up with %v; want a StartupError wrapping ErrUnknownPool", given[0].Err)
	}
	if _, err := host.Pool("nope").Execute(ctx, "wc", nil); !errors.Is(err, snakepit.ErrUnknownPool) {
		t.Fatalf("a call to the nope pool: %v; want ErrUnknownPool", err)
	}
}
