package grpcworker

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"runtime"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/snakepit-go/snakepit/bridge/pb"
	"github.com/snakepit-go/snakepit/childproc"
	"github.com/snakepit-go/snakepit/internal/auth"
	"github.com/snakepit-go/snakepit/worker"
)

// stubWorkerEnv makes the test binary, started as a worker's "interpreter",
// serve a minimal worker (handshake, Ping, DescribeTools) instead of running
// tests: a replacement then costs a Go process start, not a Python import,
// so the replacement machinery can be exercised thousands of times.
const stubWorkerEnv = "SNAKEPIT_TEST_STUB_WORKER"

type stubWorker struct {
	pb.UnimplementedWorkerServiceServer
}

func (stubWorker) Ping(context.Context, *pb.PingRequest) (*pb.PingResponse, error) {
	return &pb.PingResponse{}, nil
}

func (stubWorker) DescribeTools(context.Context, *pb.DescribeToolsRequest) (*pb.DescribeToolsResponse, error) {
	return &pb.DescribeToolsResponse{}, nil
}

// stubWorkerMain serves until SIGTERM (the default action ends it), the
// way the Python server does; the argv meant for Python is ignored.
func stubWorkerMain() {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(3)
	}
	s := grpc.NewServer()
	pb.RegisterWorkerServiceServer(s, stubWorker{})
	fmt.Printf("%s %d tcp %s\n", handshakePrefix, protocolVersion, l.Addr())
	_ = s.Serve(l)
	os.Exit(0)
}

// liveRecorder counts the processes recorded and not yet unregistered; it
// keeps nothing per process once it is gone, so it does not grow the heap
// being measured.
type liveRecorder struct {
	mu   sync.Mutex
	live map[string]bool
}

func (r *liveRecorder) Reserve(key string) error { r.set(key, true); return nil }
func (r *liveRecorder) Activate(string, int) error {
	return nil
}
func (r *liveRecorder) Unregister(key string) error { r.set(key, false); return nil }
func (r *liveRecorder) set(key string, live bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if live {
		r.live[key] = true
	} else {
		delete(r.live, key)
	}
}
func (r *liveRecorder) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.live)
}

// nopEvents keeps nothing: a recording one would grow with every event.
type nopEvents struct{}

func (nopEvents) Starting(string)                      {}
func (nopEvents) Ready(string, worker.Info)            {}
func (nopEvents) Exited(string, error)                 {}
func (nopEvents) Recycled(string, worker.Info, string) {}

// BenchmarkReplacementHeap replaces one worker's process b.N times
// (make-before-break, as a recycle or reload does) and reports how much
// the heap after GC grew: a per-replacement leak shows as heap-B/op well
// above zero. The soak figure (docs/BENCHMARKS.md) is
//
//	make soak-replace   # -benchtime 10000x
func BenchmarkReplacementHeap(b *testing.B) {
	exe, err := os.Executable()
	if err != nil {
		b.Fatal(err)
	}
	opts := Options{Adapter: "stub.Stub", Python: exe, Token: auth.NewToken(),
		StopGrace: 2 * time.Second, HealthInterval: -1,
		Env:    map[string]string{stubWorkerEnv: "1"},
		Logger: slog.New(slog.DiscardHandler)}
	if err := opts.setDefaults(); err != nil {
		b.Fatal(err)
	}
	// Built directly: NewFactory would probe exe as a Python interpreter.
	f := &Factory{opts: opts, pkgDir: b.TempDir()}
	rec := &liveRecorder{live: map[string]bool{}}
	const runID = "bench-replace"
	w, err := f.NewWorker(worker.Spec{ID: "w0", RunID: runID, Events: nopEvents{}, Logger: opts.Logger,
		Launcher: &childproc.Launcher{RunID: runID, WorkerID: "w0", Recorder: rec, Logger: opts.Logger}})
	if err != nil {
		b.Fatal(err)
	}
	gw := w.(*Worker)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- gw.Serve(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			b.Errorf("Serve: %v", err)
		}
	}()

	replace := func(n int) {
		for range n {
			rctx, rcancel := context.WithTimeout(ctx, 30*time.Second)
			err := gw.Recycle(rctx, "soak")
			rcancel()
			if err != nil {
				b.Fatal(err)
			}
		}
	}
	// settled: only the current process is left (replaced ones are reaped),
	// then the heap after a full GC.
	settled := func() uint64 {
		deadline := time.Now().Add(30 * time.Second)
		for rec.count() != 1 {
			if time.Now().After(deadline) {
				b.Fatalf("%d processes still recorded 30 s after the last replacement", rec.count())
			}
			time.Sleep(5 * time.Millisecond)
		}
		var ms runtime.MemStats
		runtime.GC()
		runtime.GC()
		runtime.ReadMemStats(&ms)
		return ms.HeapAlloc
	}
	deadline := time.Now().Add(30 * time.Second)
	for gw.PID() == 0 {
		if time.Now().After(deadline) {
			b.Fatal("the stub worker did not become ready within 30 s")
		}
		time.Sleep(5 * time.Millisecond)
	}
	// Warm up: grpc and the runtime allocate their steady-state caches.
	replace(50)
	before := settled()
	b.ResetTimer()
	replace(b.N)
	b.StopTimer()
	after := settled()
	growth := float64(int64(after) - int64(before))
	b.ReportMetric(growth/float64(b.N), "heap-B/op")
	b.ReportMetric(growth/1024, "heap-growth-KiB")
	b.Logf("%d replacements: heap after GC %.2f MiB → %.2f MiB (%+.0f KiB)", b.N,
		float64(before)/(1<<20), float64(after)/(1<<20), growth/1024)
}
