package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/snakepit-go/snakepit/bridge/pb"
)

// BenchmarkBatchMatvec is the per-call cost of the example adapter's numpy
// matrix-vector tool (snakepit_bridge/examples/batching.py: a fixed
// 256×256 matrix times each call's vector) by batch size: one worker
// process, one caller sending batch requests of B calls straight over gRPC
// (the shape the pool sends), against matvec_one, the same product one
// call per request. µs/call is wall time per call, py-cpu-µs/call the
// Python process's CPU per call. Run: make bench-batch.
func BenchmarkBatchMatvec(b *testing.B) {
	cmd, stdin, addr := startWorkerOf(b, "snakepit_bridge.examples.batching.BatchingAdapter", 1)
	defer stopProc(cmd, stdin)
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = conn.Close() }()
	c := pb.NewWorkerServiceClient(conn)
	ctx := context.Background()
	probe, err := c.ExecuteTool(ctx, &pb.ExecuteToolRequest{ToolName: "matvec", Batch: []*pb.BatchItem{{ArgsJson: []byte(`{"v": []}`)}}})
	if err != nil {
		b.Fatal(err)
	}
	if e := probe.GetBatch()[0].GetError(); e.GetType() == "RuntimeError" {
		b.Skipf("matvec: %s", e.GetMessage()) // no numpy in the worker's Python
	}
	rng := rand.New(rand.NewPCG(1, 2))
	args := make([][]byte, 64)
	for i := range args {
		v := make([]float64, 256)
		for j := range v {
			v[j] = rng.NormFloat64()
		}
		args[i], _ = json.Marshal(map[string]any{"v": v})
	}
	pids := []int{cmd.Process.Pid}

	b.Run("one", func(b *testing.B) {
		run := func(i int) error {
			resp, err := c.ExecuteTool(ctx, &pb.ExecuteToolRequest{ToolName: "matvec_one", ArgsJson: args[i%len(args)]})
			if err == nil && resp.GetError() != nil {
				err = fmt.Errorf("matvec_one: %s", resp.GetError().GetMessage())
			}
			return err
		}
		perCall(b, pids, 1, run)
	})
	for _, size := range []int{1, 2, 4, 8, 16, 32, 64} {
		b.Run(fmt.Sprintf("B=%d", size), func(b *testing.B) {
			items := make([]*pb.BatchItem, size)
			for i := range items {
				items[i] = &pb.BatchItem{ArgsJson: args[i]}
			}
			req := &pb.ExecuteToolRequest{ToolName: "matvec", Batch: items}
			run := func(int) error {
				resp, err := c.ExecuteTool(ctx, req)
				if err != nil {
					return err
				}
				if len(resp.GetBatch()) != size {
					return fmt.Errorf("matvec: %d results for %d calls (%v)", len(resp.GetBatch()), size, resp.GetError())
				}
				for _, r := range resp.GetBatch() {
					if r.GetError() != nil {
						return fmt.Errorf("matvec: %s", r.GetError().GetMessage())
					}
				}
				return nil
			}
			perCall(b, pids, size, run)
		})
	}
}

// perCall runs b.N requests of size calls each and reports the cost per call.
func perCall(b *testing.B, pids []int, size int, run func(i int) error) {
	for i := 0; i < 20; i++ { // warm up
		if err := run(i); err != nil {
			b.Fatal(err)
		}
	}
	ticks0 := cpuTicks(b, pids)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := run(i); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	calls := float64(b.N * size)
	b.ReportMetric(float64(b.Elapsed().Microseconds())/calls, "µs/call")
	b.ReportMetric(float64(cpuTicks(b, pids)-ticks0)*1e6/clockTicks/calls, "py-cpu-µs/call")
}
