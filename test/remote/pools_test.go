package remote_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/snakepit-go/snakepit"
	"github.com/snakepit-go/snakepit/discovery"
	"github.com/snakepit-go/snakepit/internal/testutil"
	"github.com/snakepit-go/snakepit/remote"
)

const textAdapter = "snakepit_bridge.examples.textstats.TextStatsAdapter"

// freePort is a loopback port free a moment ago (for --admin).
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// agentRequests reads the agent's per-pool request counts from its admin
// endpoint's /status.
func agentRequests(t *testing.T, admin string) map[string]uint64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+admin+"/status?format=json", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var st struct { // statusJSON embeds the Stats
		Pools map[string]struct{ Requests uint64 }
	}
	if err := json.Unmarshal(body, &st); err != nil {
		t.Fatalf("agent /status: %v: %s", err, body)
	}
	out := map[string]uint64{}
	for name, p := range st.Pools {
		out[name] = p.Requests
	}
	return out
}

func names(ts []snakepit.ToolSpec) []string {
	var out []string
	for _, t := range ts {
		out = append(out, t.Name)
	}
	slices.Sort(out)
	return out
}

// One `snakepit serve` with two pools of different adapters (the default
// showcase one and --pool text); a host whose default pool and named pool
// "text" are each fed by the agent's pool of the same name: calls are
// routed by pool (the tool lists differ), both sides count per pool, a
// host pool the agent lacks fails with ErrUnknownPool, and stopping both
// leaves no process of either run.
func TestNamedPoolsAcrossAnAgent(t *testing.T) {
	tokenFile := writeToken(t)
	admin := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	ag := startAgent(t, "127.0.0.1", 0, tokenFile, 1, "--admin", admin, "--pool", "text,adapter="+textAdapter+",workers=1")
	agents := discovery.Static{ag.addr}
	host, err := snakepit.New(snakepit.Config{
		Discovery: agents, DiscoveryInterval: 500 * time.Millisecond,
		Pools: []snakepit.PoolConfig{{Name: "text", Discovery: agents},
			{Name: "nope", Discovery: agents, StartupFailures: 1, ReadyTimeout: 5 * time.Second}},
		Remote:       remote.Options{TokenFile: tokenFile, HealthInterval: 500 * time.Millisecond},
		RegistryPath: filepath.Join(t.TempDir(), "host.db"), Logger: testutil.Logger(),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := host.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = host.Stop(context.Background()) })
	text := host.Pool("text")
	testutil.Eventually(t, 30*time.Second, "both host pools fed by the agent", func() bool {
		return ready(host) == 1 && text.Stats().Workers.Idle+text.Stats().Workers.Busy == 1
	})
	if d, tx := names(host.Tools()), names(text.Tools()); !slices.Contains(d, "worker_info") || slices.Contains(d, "analyze") ||
		!slices.Contains(tx, "analyze") || slices.Contains(tx, "worker_info") {
		t.Fatalf("tools: default %v, text %v; want the showcase's and the textstats' apart", d, tx)
	}

	info, err := snakepit.Decode[struct {
		RunID string `json:"run_id"`
	}](host.Execute(ctx, "worker_info", nil))
	if err != nil || info.RunID != ag.runID {
		t.Fatalf("worker_info through the default pool: %+v, %v; want the agent's run %s", info, err, ag.runID)
	}
	for range 3 {
		out, err := snakepit.Decode[struct{ Words int }](text.Execute(ctx, "analyze", map[string]string{"text": "a good clear day"}))
		if err != nil || out.Words != 4 {
			t.Fatalf("analyze through the text pool: %+v, %v", out, err)
		}
	}
	var ute *snakepit.UnknownToolError
	if _, err := text.Execute(ctx, "worker_info", nil); !errors.As(err, &ute) {
		t.Fatalf("worker_info through the text pool: %v; want UnknownToolError", err)
	}
	if d, tx := host.Stats().Pool.Requests, text.Stats().Requests; d != 1 || tx != 4 {
		t.Errorf("host requests: default %d, text %d; want 1 and 4 (the unknown tool refused on the host)", d, tx)
	}
	if got := agentRequests(t, admin); got[snakepit.DefaultPool] != 1 || got["text"] != 3 {
		t.Errorf("agent requests per pool: %v; want default 1, text 3", got)
	}

	testutil.Eventually(t, 30*time.Second, "the nope pool's remote worker given up", func() bool {
		return len(host.Pool("nope").Stats().GivenUp) == 1
	})
	if err := host.Pool("nope").Stats().GivenUp[0].Err; !errors.Is(err, snakepit.ErrUnknownPool) {
		t.Fatalf("nope given up with %v; want ErrUnknownPool", err)
	}
	if _, err := host.Pool("nope").Execute(ctx, "analyze", nil); !errors.Is(err, snakepit.ErrUnknownPool) {
		t.Fatalf("a call to the nope pool: %v; want ErrUnknownPool", err)
	}

	if _, err := host.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if err := ag.cmd.Process.Signal(syscall.SIGTERM); err != nil { // the PID we started, unreaped: ours
		t.Fatal(err)
	}
	select {
	case <-ag.exited:
	case <-time.After(30 * time.Second):
		t.Fatalf("agent did not exit after SIGTERM; stderr:\n%s", ag.stderr.String())
	}
	if left := testutil.RunIDProcesses(t, ag.runID); len(left) > 0 {
		t.Fatalf("agent processes left after its stop: %+v", left)
	}
	if left := testutil.RunIDProcesses(t, host.RunID()); len(left) > 0 {
		t.Fatalf("host processes left: %+v", left)
	}
}
