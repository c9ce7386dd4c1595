package integration

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/snakepit-go/snakepit"
	"github.com/snakepit-go/snakepit/bridge/pb"
	"github.com/snakepit-go/snakepit/internal/proc"
	"github.com/snakepit-go/snakepit/internal/testutil"
)

func TestHostToolRoundTripGoPythonGo(t *testing.T) {
	app := buildApp(t, snakepit.Config{Workers: 1})
	err := app.RegisterHostTool("multiply", func(ctx context.Context, args json.RawMessage) (any, error) {
		var in struct{ A, B float64 }
		if err := json.Unmarshal(args, &in); err != nil {
			return nil, err
		}
		call, _ := snakepit.HostCallFrom(ctx)
		return map[string]any{"product": in.A * in.B, "caller": call.WorkerID}, nil
	}, snakepit.ToolSpec{Name: "multiply", Description: "a*b"})
	if err != nil {
		t.Fatal(err)
	}
	if err := app.RegisterHostTool("boom", func(context.Context, json.RawMessage) (any, error) { panic("host tool exploded") }, snakepit.ToolSpec{Name: "boom"}); err != nil {
		t.Fatal(err)
	}
	if err := app.RegisterHostTool("refuse", func(context.Context, json.RawMessage) (any, error) { return nil, errors.New("not today") }, snakepit.ToolSpec{Name: "refuse"}); err != nil {
		t.Fatal(err)
	}
	if err := app.RegisterHostTool("multiply", func(context.Context, json.RawMessage) (any, error) { return nil, nil }, snakepit.ToolSpec{Name: "multiply"}); !errors.Is(err, snakepit.ErrDuplicateHostTool) {
		t.Fatalf("registering a name twice: want ErrDuplicateTool, got %v", err)
	}
	ctx := ctxT(t)
	if err := app.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stopApp(t, app) })

	out, err := snakepit.Decode[map[string]any](app.Execute(ctx, "call_host", map[string]any{"name": "multiply", "args": map[string]any{"a": 6, "b": 7}}))
	if err != nil || out["product"] != 42.0 || out["caller"] != "w0" {
		t.Fatalf("round trip = %v, %v", out, err)
	}
	// A panicking host tool reaches Python as a typed exception; the host survives.
	_, err = app.Execute(ctx, "call_host", map[string]any{"name": "boom"})
	var te *snakepit.ToolError
	if !errors.As(err, &te) || te.Type != "HostToolError" || !strings.Contains(te.Message, "host tool exploded") {
		t.Fatalf("panicking host tool: %v", err)
	}
	_, err = app.Execute(ctx, "call_host", map[string]any{"name": "refuse"})
	if !errors.As(err, &te) || te.Type != "HostToolError" || !strings.Contains(te.Message, "not today") {
		t.Fatalf("erroring host tool: %v", err)
	}
	_, err = app.Execute(ctx, "call_host", map[string]any{"name": "nope"})
	if !errors.As(err, &te) || !strings.Contains(te.Message, "multiply") {
		t.Fatalf("unknown host tool should list the registered ones: %v", err)
	}
	if _, err := app.Execute(ctx, "ping", nil); err != nil {
		t.Fatalf("app unusable after host tool failures: %v", err)
	}
}

func TestSessionsReachPythonAndHeartbeatsSeeTheirValidity(t *testing.T) {
	app := newApp(t, snakepit.Config{Workers: 2})
	ctx := ctxT(t)
	count := func(session string) float64 {
		t.Helper()
		out, err := snakepit.Decode[map[string]any](app.Execute(ctx, "session_counter", nil, snakepit.WithSession(session), snakepit.WithAffinity(snakepit.AffinityStrictQueue)))
		if err != nil {
			t.Fatalf("session_counter(%s): %v", session, err)
		}
		if out["session_id"] != session {
			t.Fatalf("Python saw session %v, want %s", out["session_id"], session)
		}
		return out["count"].(float64)
	}
	if _, err := app.Sessions().Create("alpha", map[string]string{"user": "a"}, 0); err != nil {
		t.Fatal(err)
	}
	if a1, a2, b1 := count("alpha"), count("alpha"), count("beta"); a1 != 1 || a2 != 2 || b1 != 1 {
		t.Fatalf("per-session counters = %v %v %v, want 1 2 1", a1, a2, b1)
	}
	valid := func(session string) bool {
		v, err := snakepit.Decode[bool](app.Execute(ctx, "session_valid", nil, snakepit.WithSession(session)))
		if err != nil {
			t.Fatalf("session_valid: %v", err)
		}
		return v
	}
	if !valid("alpha") {
		t.Fatal("existing session reported invalid")
	}
	if valid("never-created") {
		t.Fatal("unknown session reported valid")
	}
	app.Sessions().Delete("alpha")
	if valid("alpha") {
		t.Fatal("deleted session reported valid")
	}
}

func TestBridgeRejectsCallsWithoutTheToken(t *testing.T) {
	app := newApp(t, snakepit.Config{Workers: 1})
	conn, err := grpc.NewClient(app.BridgeAddress(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_, err = pb.NewHostServiceClient(conn).ExecuteHostTool(ctxT(t), &pb.ExecuteHostToolRequest{ToolName: "x"})
	if status.Code(err) != codes.Unauthenticated {
		t.Fatalf("want Unauthenticated, got %v", err)
	}
	if !strings.HasPrefix(app.BridgeAddress(), "127.0.0.1:") {
		t.Fatalf("bridge listens on %s, want loopback", app.BridgeAddress())
	}
}

func TestHungWorkerIsRestartedAfterMissedHealthChecksWithReasonInStats(t *testing.T) {
	app := newApp(t, snakepit.Config{Workers: 1, HealthInterval: 100 * time.Millisecond, HealthMisses: 3})
	pid := workerPID(t, app)
	if !proc.CarriesRunID(pid, app.RunID()) {
		t.Fatalf("pid %d is not ours", pid)
	}
	// SIGSTOP: the process is alive but answers nothing, like a wedged worker.
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 20*time.Second, "restart with a health-check reason", func() bool {
		st := app.Stats().Pool
		return st.RestartReasons[snakepit.RestartHealth] > 0 && strings.Contains(st.RestartDetail[snakepit.RestartHealth], "health check failed")
	})
	testutil.Eventually(t, 20*time.Second, "a new worker serves", func() bool {
		out, err := snakepit.Decode[map[string]any](app.Execute(ctxT(t), "worker_info", nil))
		return err == nil && int(out["pid"].(float64)) != pid
	})
}
