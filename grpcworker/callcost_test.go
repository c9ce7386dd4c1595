package grpcworker

import (
	"context"
	"encoding/json"
	"maps"
	"net"
	"sync"
	"testing"
	"time"

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
	w.cur.Store(w.newLifetime(&lifetime{target: addr, conn: conn, client: pb.NewWorkerServiceClient(conn),
		kill: make(chan string, 1), recycle: make(chan string, 1), drained: make(chan struct{})}))
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

// frameConn counts the HTTP/2 frames a client writes, by type; PING acks
// apart from the PINGs the client starts.
type frameConn struct {
	net.Conn
	mu      sync.Mutex
	preface int // client preface bytes still to skip
	hdr     []byte
	remain  int
	frames  map[string]int
}

func (c *frameConn) Write(b []byte) (int, error) {
	c.mu.Lock()
	for rest := b; len(rest) > 0; {
		switch {
		case c.preface > 0:
			n := min(c.preface, len(rest))
			c.preface, rest = c.preface-n, rest[n:]
		case c.remain > 0:
			n := min(c.remain, len(rest))
			c.remain, rest = c.remain-n, rest[n:]
		default:
			n := min(9-len(c.hdr), len(rest))
			c.hdr, rest = append(c.hdr, rest[:n]...), rest[n:]
			if len(c.hdr) == 9 {
				c.remain = int(c.hdr[0])<<16 | int(c.hdr[1])<<8 | int(c.hdr[2])
				kind := map[byte]string{6: "PING", 8: "WINDOW_UPDATE"}[c.hdr[3]]
				if kind == "PING" && c.hdr[4]&1 != 0 {
					kind = "PING ack"
				}
				c.frames[kind]++
				c.hdr = c.hdr[:0]
			}
		}
	}
	c.mu.Unlock()
	return c.Conn.Write(b)
}

// The conn to a worker starts no flow-control PINGs and sends no window
// updates for small replies: the static window (dialOptions), which grpc's
// default dynamic window would replace with a PING per round trip.
func TestWorkerConnSendsNoFlowControlPings(t *testing.T) {
	addr := serveAdd(t, auth.Token{})
	count := func(opts []grpc.DialOption) map[string]int {
		fc := &frameConn{preface: 24, frames: map[string]int{}}
		dial := grpc.WithContextDialer(func(ctx context.Context, a string) (net.Conn, error) {
			c, err := (&net.Dialer{}).DialContext(ctx, "tcp", a)
			fc.Conn = c
			return fc, err
		})
		conn, err := grpc.NewClient(addr, append(opts, dial)...)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		c := pb.NewWorkerServiceClient(conn)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		var wg sync.WaitGroup
		for range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range 100 {
					if _, err := c.ExecuteTool(ctx, &pb.ExecuteToolRequest{ToolName: "add", ArgsJson: benchArgs}); err != nil {
						t.Error(err)
						return
					}
				}
			}()
		}
		wg.Wait()
		fc.mu.Lock()
		defer fc.mu.Unlock()
		return maps.Clone(fc.frames)
	}
	got := count(dialOptions(&Options{Token: auth.NewToken(), MaxMessageBytes: 1 << 20}))
	if got["PING"] != 0 || got["WINDOW_UPDATE"] > 1 {
		t.Fatalf("800 calls sent %d PINGs and %d WINDOW_UPDATEs; want none (a static flow-control window)", got["PING"], got["WINDOW_UPDATE"])
	}
	// For comparison, grpc's default (not asserted: it is grpc's choice).
	def := count([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())})
	t.Logf("800 calls: %d PINGs, %d WINDOW_UPDATEs with grpc's default window; %d, %d with the worker's", def["PING"], def["WINDOW_UPDATE"], got["PING"], got["WINDOW_UPDATE"])
}
