package grpcworker

import (
	"context"
	"encoding/json"
	"net"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/snakepit-go/snakepit/bridge/pb"
	"github.com/snakepit-go/snakepit/internal/auth"
	"github.com/snakepit-go/snakepit/worker"
)

// addServer answers every ExecuteTool with 3: the host's side of a trivial
// call without Python, so that the benchmarks below show what the host's
// call path adds to a bare grpc-go call (docs/BENCHMARKS.md, issue 21 item 1).
type addServer struct {
	pb.UnimplementedWorkerServiceServer
}

var three = &pb.ExecuteToolResponse{Result: &pb.Payload{Value: &pb.Payload_Json{Json: []byte("3")}}}

func (addServer) ExecuteTool(context.Context, *pb.ExecuteToolRequest) (*pb.ExecuteToolResponse, error) {
	return three, nil
}

// serveAdd starts an in-process server on loopback; with token, it requires
// it as a worker process does.
func serveAdd(tb testing.TB, token auth.Token) string {
	tb.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	var opts []grpc.ServerOption
	if !token.IsZero() {
		opts = auth.ServerOptions(token)
	}
	s := grpc.NewServer(opts...)
	pb.RegisterWorkerServiceServer(s, addServer{})
	go func() { _ = s.Serve(lis) }()
	tb.Cleanup(s.Stop)
	return lis.Addr().String()
}

// callWorker is a Worker whose current lifetime is a conn to addr made with
// the worker type's own dial options.
func callWorker(tb testing.TB, addr string, token auth.Token) *Worker {
	tb.Helper()
	o := &Options{Token: token, MaxMessageBytes: 64 << 20}
	conn, err := grpc.NewClient(addr, dialOptions(o)...)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = conn.Close() })
	w := &Worker{spec: worker.Spec{ID: "w0"}, f: &Factory{opts: *o}}
	w.cur = w.newLifetime(&lifetime{target: addr, conn: conn, client: pb.NewWorkerServiceClient(conn),
		kill: make(chan string, 1), recycle: make(chan string, 1), drained: make(chan struct{})})
	return w
}

var benchArgs = json.RawMessage(`{"a":1,"b":2}`)

// BenchmarkCallCost: one trivial call from 8 goroutines, "raw" a bare
// grpc-go client (no token) as test/bench's grpc-sync rows, "worker" the
// worker type's call path (Execute with its token, as the pool calls it:
// a cancellable context per call). Compare ns/op and allocs/op.
func BenchmarkCallCost(b *testing.B) {
	b.Run("raw", func(b *testing.B) {
		conn, err := grpc.NewClient(serveAdd(b, auth.Token{}), grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			b.Fatal(err)
		}
		defer conn.Close()
		c := pb.NewWorkerServiceClient(conn)
		b.ReportAllocs()
		b.SetParallelism(4)
		b.RunParallel(func(pb_ *testing.PB) {
			ctx := context.Background()
			for pb_.Next() {
				resp, err := c.ExecuteTool(ctx, &pb.ExecuteToolRequest{ToolName: "add", ArgsJson: benchArgs})
				if err != nil || string(resp.GetResult().GetJson()) != "3" {
					b.Error(resp, err)
					return
				}
			}
		})
	})
	b.Run("worker", func(b *testing.B) {
		// The server does not check the token: only the client's work differs.
		w := callWorker(b, serveAdd(b, auth.Token{}), auth.NewToken())
		b.ReportAllocs()
		b.SetParallelism(4)
		b.RunParallel(func(pb_ *testing.PB) {
			call := &worker.Call{Tool: "add", Args: benchArgs, RequestID: "0123abcd-1"}
			for pb_.Next() {
				ctx, cancel := context.WithCancelCause(context.Background())
				res, err := w.Execute(ctx, call)
				cancel(nil)
				if err != nil || string(res.JSON) != "3" {
					b.Error(res, err)
					return
				}
			}
		})
	})
}
