package bridge

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/snakepit-go/snakepit/internal/auth"
	"github.com/snakepit-go/snakepit/worker"
)

// pyClient calls the bridge the way a worker does, with grpcio and the
// committed stubs: it proves the address forms, the metadata key and the
// message shapes work from Python, not only from grpc-go.
const pyClient = `
import json, os, sys
import grpc
from snakepit_bridge.pb import snakepit_pb2 as pb, snakepit_pb2_grpc as rpc

addr, token = sys.argv[1], os.environ["SNAKEPIT_TOKEN"]
out = {}
with grpc.insecure_channel(addr) as ch:
    stub = rpc.HostServiceStub(ch)
    md = (("x-snakepit-token", token),)
    info = stub.InitializeSession(pb.InitializeSessionRequest(session_id="py", metadata={"k": "v"}), metadata=md, timeout=10)
    out["session"] = info.session_id
    out["ttl"] = info.ttl_seconds
    r = stub.ExecuteHostTool(pb.ExecuteHostToolRequest(tool_name="add", args_json=b'{"a": 2, "b": 3}', session_id="py"), metadata=md, timeout=10)
    out["result"] = json.loads(r.result.json)
    out["tools"] = [t.name for t in stub.ListHostTools(pb.ListHostToolsRequest(), metadata=md, timeout=10).tools]
    try:
        stub.Heartbeat(pb.HeartbeatRequest(worker_id="w"), timeout=10)
        out["unauth"] = "accepted"
    except grpc.RpcError as e:
        out["unauth"] = e.code().name
print(json.dumps(out))
`

func TestPythonClientInterop(t *testing.T) {
	py := os.Getenv("SNAKEPIT_PYTHON")
	if py == "" {
		t.Skip("SNAKEPIT_PYTHON not set (make test sets it)")
	}
	if err := exec.Command(py, "-c", "import grpc").Run(); err != nil {
		t.Skipf("%s cannot import grpc: %v", py, err)
	}
	pyPath, err := filepath.Abs(filepath.Join("..", "python"))
	if err != nil {
		t.Fatal(err)
	}
	for _, network := range []string{"tcp", "unix"} {
		t.Run(network, func(t *testing.T) {
			s := newServer(t, Options{Network: network})
			if err := s.RegisterHostTool("add", func(_ context.Context, args json.RawMessage) (any, error) {
				var in struct{ A, B int }
				if err := json.Unmarshal(args, &in); err != nil {
					return nil, err
				}
				return map[string]int{"sum": in.A + in.B}, nil
			}, worker.ToolSpec{}); err != nil {
				t.Fatal(err)
			}
			run(t, s)

			cmd := exec.CommandContext(testCtx(t), py, "-c", pyClient, s.Addr())
			cmd.Env = append(os.Environ(), "PYTHONPATH="+pyPath, "SNAKEPIT_TOKEN="+auth.Reveal(testToken))
			out, err := cmd.Output()
			if err != nil {
				var stderr string
				if ee, ok := err.(*exec.ExitError); ok {
					stderr = string(ee.Stderr)
				}
				t.Fatalf("python client: %v\n%s", err, stderr)
			}
			var got struct {
				Session string         `json:"session"`
				TTL     int64          `json:"ttl"`
				Result  map[string]int `json:"result"`
				Tools   []string       `json:"tools"`
				Unauth  string         `json:"unauth"`
			}
			if err := json.Unmarshal(out, &got); err != nil {
				t.Fatalf("python output %q: %v", out, err)
			}
			if got.Session != "py" || got.TTL != 3600 || got.Result["sum"] != 5 || strings.Join(got.Tools, ",") != "add" || got.Unauth != "UNAUTHENTICATED" {
				t.Fatalf("python saw %+v", got)
			}
		})
	}
}
