// Package bench is the side-by-side benchmark of snakepit's Python side
// against two baselines doing the same trivial call (decode {"a":1,"b":2},
// add, encode the result) over the same protobuf messages:
//
//   - grpc-sync: a raw grpc-go client calling minimal_servicer.py, a minimal
//     grpcio sync servicer (grpc.server with a ThreadPoolExecutor);
//   - go-plugin: a hashicorp/go-plugin host dispensing the same servicer as
//     a gRPC plugin (go-plugin's own handshake, health check and connection);
//   - raw-worker: raw grpc-go calls to snakepit worker processes started by
//     hand (snakepit's Python side without the pool and the host's client);
//   - snakepit: an App with real Python workers running bench_adapter.py's
//     add tool, at Capacity 1 and at Capacity C/N; snakepit-async the same
//     with the async twin aadd of an all-async adapter (served by grpc.aio),
//     snakepit-mixed-async with aadd of an adapter that also has sync tools
//     (served by grpcio's sync server, so the call hops to the event loop).
//
// Each is measured with N = 1 and 2 Python processes and C = 1 and 8
// concurrent callers. Besides ns/op (wall time per call, all callers
// together) every benchmark reports calls/s, py-cpu-µs/call (utime+stime of
// the Python processes from /proc/PID/stat over the timed calls, divided by
// the calls) and go-cpu-µs/call (this process's rusage, the Go side of all
// three). Run it with `make bench-sidebyside`; results are in
// docs/BENCHMARKS.md.
//
// It lives in its own module so go-plugin never becomes a dependency of
// snakepit itself.
package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/snakepit-go/snakepit"
	"github.com/snakepit-go/snakepit/bridge/pb"
	"github.com/snakepit-go/snakepit/internal/testutil"
)

func TestMain(m *testing.M) { testutil.Main(m) }

// target is N Python processes behind one way of calling them.
type target interface {
	call(ctx context.Context) error
	pids() []int
	close()
}

var addArgs = map[string]any{"a": 1, "b": 2}

func python(tb testing.TB) string {
	if p := os.Getenv("SNAKEPIT_PYTHON"); p != "" {
		return p
	}
	if b, err := os.ReadFile("../../.snakepit/python"); err == nil {
		return strings.TrimSpace(string(b))
	}
	tb.Skip("set SNAKEPIT_PYTHON to a Python with grpcio and protobuf")
	return ""
}

func pythonPath(tb testing.TB) string {
	dir, err := filepath.Abs("../../python")
	if err != nil {
		tb.Fatal(err)
	}
	return dir
}

// -- grpc-sync: raw grpc-go → minimal servicer ---------------------------------

type rawTarget struct {
	procs   []*exec.Cmd
	stdins  []io.Closer
	conns   []*grpc.ClientConn
	clients []pb.WorkerServiceClient
	next    atomic.Uint64
}

func startServicer(tb testing.TB, threads int) (*exec.Cmd, io.Closer, string) {
	cmd := exec.Command(python(tb), "minimal_servicer.py")
	cmd.Env = append(os.Environ(), "PYTHONPATH="+pythonPath(tb), "BENCH_WATCH_STDIN=1", "BENCH_THREADS="+strconv.Itoa(threads))
	return startProc(tb, cmd, func(line string) string {
		parts := strings.Split(strings.TrimSpace(line), "|")
		if len(parts) != 5 || parts[2] != "tcp" {
			return ""
		}
		return parts[3]
	})
}

// startWorker starts a snakepit worker process by hand (no host, no token),
// for raw grpc-go calls: snakepit's Python side without its Go client.
func startWorker(tb testing.TB, threads int) (*exec.Cmd, io.Closer, string) {
	return startWorkerOf(tb, "bench_adapter.BenchAdapter", threads)
}

func startWorkerOf(tb testing.TB, adapter string, threads int) (*exec.Cmd, io.Closer, string) {
	cmd := exec.Command(python(tb), "-m", "snakepit_bridge.server", "--adapter", adapter,
		"--port", "0", "--max-workers", strconv.Itoa(threads))
	cmd.Env = append(os.Environ(), "PYTHONPATH="+pythonPath(tb)+":.", "SNAKEPIT_LOG_LEVEL=WARNING")
	return startProc(tb, cmd, func(line string) string {
		f := strings.Fields(line)
		if len(f) < 4 || f[0] != "SNAKEPIT_READY" {
			return ""
		}
		return f[3]
	})
}

func startProc(tb testing.TB, cmd *exec.Cmd, parse func(string) string) (*exec.Cmd, io.Closer, string) {
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		tb.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		tb.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	lines := make(chan string, 1)
	go func() {
		line, _ := bufio.NewReader(stdout).ReadString('\n')
		lines <- line
		_, _ = io.Copy(io.Discard, stdout)
	}()
	var line string
	select {
	case line = <-lines:
	case <-time.After(20 * time.Second):
	}
	addr := parse(line)
	if addr == "" {
		stopProc(cmd, stdin)
		tb.Fatalf("bad handshake line %q", line)
	}
	return cmd, stdin, addr
}

// stopProc ends a servicer started by startServicer: stdin EOF, then
// SIGKILL to its group (its pid is the pgid and cannot be reused before
// Wait reaps it).
func stopProc(cmd *exec.Cmd, stdin io.Closer) {
	_ = stdin.Close()
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	select {
	case <-done:
		return
	case <-time.After(2 * time.Second):
	}
	_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	<-done
}

func newRaw(tb testing.TB, n, threads int, start func(testing.TB, int) (*exec.Cmd, io.Closer, string)) target {
	t := &rawTarget{}
	for i := 0; i < n; i++ {
		cmd, stdin, addr := start(tb, threads)
		t.procs = append(t.procs, cmd)
		t.stdins = append(t.stdins, stdin)
		conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.close()
			tb.Fatal(err)
		}
		t.conns = append(t.conns, conn)
		t.clients = append(t.clients, pb.NewWorkerServiceClient(conn))
	}
	return t
}

// callTool is the baseline's whole call: marshal the arguments, call,
// decode the JSON result (what snakepit's Execute + Decode do on the Go side).
func callTool(ctx context.Context, c pb.WorkerServiceClient) error {
	args, err := json.Marshal(addArgs)
	if err != nil {
		return err
	}
	resp, err := c.ExecuteTool(ctx, &pb.ExecuteToolRequest{ToolName: "add", ArgsJson: args})
	if err != nil {
		return err
	}
	var v int
	if err := json.Unmarshal(resp.GetResult().GetJson(), &v); err != nil {
		return err
	}
	if v != 3 {
		return fmt.Errorf("add returned %d", v)
	}
	return nil
}

func (t *rawTarget) call(ctx context.Context) error {
	return callTool(ctx, t.clients[t.next.Add(1)%uint64(len(t.clients))])
}

func (t *rawTarget) pids() []int {
	var out []int
	for _, p := range t.procs {
		out = append(out, p.Process.Pid)
	}
	return out
}

func (t *rawTarget) close() {
	for _, c := range t.conns {
		_ = c.Close()
	}
	for i, p := range t.procs {
		stopProc(p, t.stdins[i])
	}
}

// -- go-plugin host → the same servicer as a gRPC plugin ---------------------------

type toolPlugin struct{ plugin.NetRPCUnsupportedPlugin }

func (toolPlugin) GRPCServer(*plugin.GRPCBroker, *grpc.Server) error {
	return errors.New("the plugin side is Python")
}

func (toolPlugin) GRPCClient(_ context.Context, _ *plugin.GRPCBroker, conn *grpc.ClientConn) (any, error) {
	return pb.NewWorkerServiceClient(conn), nil
}

type pluginTarget struct {
	hosts   []*plugin.Client
	clients []pb.WorkerServiceClient
	next    atomic.Uint64
}

func newPlugin(tb testing.TB, n, threads int) target {
	t := &pluginTarget{}
	for i := 0; i < n; i++ {
		cmd := exec.Command(python(tb), "minimal_servicer.py")
		cmd.Env = []string{"PYTHONPATH=" + pythonPath(tb), "BENCH_THREADS=" + strconv.Itoa(threads)}
		c := plugin.NewClient(&plugin.ClientConfig{
			HandshakeConfig:  plugin.HandshakeConfig{ProtocolVersion: 1, MagicCookieKey: "SNAKEPIT_BENCH_PLUGIN", MagicCookieValue: "1"},
			Plugins:          map[string]plugin.Plugin{"tool": toolPlugin{}},
			Cmd:              cmd,
			AllowedProtocols: []plugin.Protocol{plugin.ProtocolGRPC},
			Logger:           hclog.NewNullLogger(),
			StartTimeout:     20 * time.Second,
		})
		t.hosts = append(t.hosts, c)
		rpc, err := c.Client()
		if err != nil {
			t.close()
			tb.Fatal(err)
		}
		raw, err := rpc.Dispense("tool")
		if err != nil {
			t.close()
			tb.Fatal(err)
		}
		t.clients = append(t.clients, raw.(pb.WorkerServiceClient))
	}
	return t
}

func (t *pluginTarget) call(ctx context.Context) error {
	return callTool(ctx, t.clients[t.next.Add(1)%uint64(len(t.clients))])
}

func (t *pluginTarget) pids() []int {
	var out []int
	for _, c := range t.hosts {
		if rc := c.ReattachConfig(); rc != nil {
			out = append(out, rc.Pid)
		}
	}
	return out
}

func (t *pluginTarget) close() {
	for _, c := range t.hosts {
		c.Kill()
	}
}

// -- snakepit ----------------------------------------------------------------------

type snakepitTarget struct {
	app  *snakepit.App
	tool string
	pid  []int
}

// newSnakepit runs a tool of bench_adapter.py: "add" (sync) or "aadd" (async)
// of BenchAdapter, or "aadd" of AsyncBenchAdapter when adapter says so.
func newSnakepit(tb testing.TB, n, capacity int, adapter, tool string, more ...func(*snakepit.Config)) target {
	here, err := filepath.Abs(".")
	if err != nil {
		tb.Fatal(err)
	}
	cfg := snakepit.Config{
		Workers:      n,
		Capacity:     capacity,
		Adapter:      "bench_adapter." + adapter,
		PythonPath:   []string{here},
		Python:       python(tb),
		RegistryPath: filepath.Join(tb.TempDir(), "r.db"),
		Logger:       testutil.Logger(),
	}
	for _, f := range more {
		f(&cfg)
	}
	app, err := snakepit.New(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := app.Start(ctx); err != nil {
		tb.Fatal(err)
	}
	t := &snakepitTarget{app: app, tool: tool}
	for _, p := range testutil.RunIDProcesses(tb, app.RunID()) {
		if strings.Contains(p.Cmdline, "snakepit_bridge.server") {
			t.pid = append(t.pid, p.PID)
		}
	}
	if len(t.pid) != n {
		t.close()
		tb.Fatalf("found %d worker processes, want %d", len(t.pid), n)
	}
	return t
}

func (t *snakepitTarget) call(ctx context.Context) error {
	res, err := t.app.Execute(ctx, t.tool, addArgs)
	if err != nil {
		return err
	}
	var v int
	if err := res.Decode(&v); err != nil {
		return err
	}
	if v != 3 {
		return fmt.Errorf("add returned %d", v)
	}
	return nil
}

func (t *snakepitTarget) pids() []int { return t.pid }

func (t *snakepitTarget) close() {
	if _, err := t.app.Stop(context.Background()); err != nil {
		fmt.Fprintln(os.Stderr, "Stop:", err)
	}
}

// -- measuring -----------------------------------------------------------------------

// clockTicks is USER_HZ, the unit of utime/stime in /proc/PID/stat (100 on
// every Linux architecture Go supports).
const clockTicks = 100

// cpuTicks is the utime+stime of the processes, all threads included.
func cpuTicks(tb testing.TB, pids []int) int64 {
	var sum int64
	for _, pid := range pids {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			tb.Fatalf("reading the CPU time of %d: %v", pid, err)
		}
		s := string(b)
		f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
		// fields after the comm: state is [0], utime is field 14 of the line → [11], stime [12]
		ut, _ := strconv.ParseInt(f[11], 10, 64)
		st, _ := strconv.ParseInt(f[12], 10, 64)
		sum += ut + st
	}
	return sum
}

func selfCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// drive makes total calls from c goroutines, fails the benchmark on an error.
func drive(tb testing.TB, t target, c, total int) {
	var next atomic.Int64
	var wg sync.WaitGroup
	ctx := context.Background()
	var once sync.Once
	for g := 0; g < c; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= int64(total) {
				if err := t.call(ctx); err != nil {
					once.Do(func() { tb.Errorf("call: %v", err) })
					return
				}
			}
		}()
	}
	wg.Wait()
}

func measure(b *testing.B, t target, c int) {
	pids := t.pids()
	var batches0, calls0 uint64
	sp, isApp := t.(*snakepitTarget)
	if isApp {
		bs := sp.app.Stats().Pool.Batches
		batches0, calls0 = bs.Count, bs.Calls
	}
	ticks0, self0 := cpuTicks(b, pids), selfCPU()
	b.ResetTimer()
	drive(b, t, c, b.N)
	b.StopTimer()
	ticks, self := cpuTicks(b, pids)-ticks0, selfCPU()-self0
	secs := b.Elapsed().Seconds()
	b.ReportMetric(float64(b.N)/secs, "calls/s")
	b.ReportMetric(float64(ticks)*1e6/clockTicks/float64(b.N), "py-cpu-µs/call")
	b.ReportMetric(float64(self.Microseconds())/float64(b.N), "go-cpu-µs/call")
	if isApp {
		st := sp.app.Stats().Pool
		if n := len(st.SerialTools); n > 0 {
			// A trivial tool must never be limited to one call per worker
			// (pool/serial.go); shown so a run that did it cannot pass unseen.
			b.ReportMetric(float64(n), "serial")
		}
		if bs := st.Batches; bs.Count > batches0 {
			b.ReportMetric(float64(bs.Calls-calls0)/float64(bs.Count-batches0), "calls/batch")
		}
	}
}

type setup struct {
	name  string
	n     int
	cs    []int
	start func(testing.TB) target
}

func setups() []setup {
	var out []setup
	for _, n := range []int{1, 2} {
		out = append(out,
			setup{fmt.Sprintf("grpc-sync/N=%d", n), n, []int{1, 8}, func(tb testing.TB) target { return newRaw(tb, n, 8, startServicer) }},
			setup{fmt.Sprintf("go-plugin/N=%d", n), n, []int{1, 8}, func(tb testing.TB) target { return newPlugin(tb, n, 8) }},
			setup{fmt.Sprintf("snakepit/N=%d/cap=1", n), n, []int{1, 8}, func(tb testing.TB) target { return newSnakepit(tb, n, 1, "BenchAdapter", "add") }},
			// Capacity = C/N for C = 8 (for C = 1 it is the row above).
			setup{fmt.Sprintf("snakepit/N=%d/cap=%d", n, 8/n), n, []int{8}, func(tb testing.TB) target { return newSnakepit(tb, n, 8/n, "BenchAdapter", "add") }},
			// snakepit's worker process called by raw grpc-go: its Python side
			// alone, without the pool, the token and the host's call options.
			setup{fmt.Sprintf("raw-worker/N=%d", n), n, []int{1, 8}, func(tb testing.TB) target { return newRaw(tb, n, 8, startWorker) }},
			// An async tool of an all-async adapter (grpc.aio flavour)…
			setup{fmt.Sprintf("snakepit-async/N=%d/cap=1", n), n, []int{1}, func(tb testing.TB) target { return newSnakepit(tb, n, 1, "AsyncBenchAdapter", "aadd") }},
			setup{fmt.Sprintf("snakepit-async/N=%d/cap=%d", n, 8/n), n, []int{8}, func(tb testing.TB) target { return newSnakepit(tb, n, 8/n, "AsyncBenchAdapter", "aadd") }},
			// …and of a mixed adapter (sync flavour: a hop to the event loop).
			setup{fmt.Sprintf("snakepit-mixed-async/N=%d/cap=1", n), n, []int{1}, func(tb testing.TB) target { return newSnakepit(tb, n, 1, "BenchAdapter", "aadd") }},
			setup{fmt.Sprintf("snakepit-mixed-async/N=%d/cap=%d", n, 8/n), n, []int{8}, func(tb testing.TB) target { return newSnakepit(tb, n, 8/n, "BenchAdapter", "aadd") }},
			// …and of the same mixed adapter declared `snakepit_server = "aio"`.
			setup{fmt.Sprintf("snakepit-mixed-aio/N=%d/cap=%d", n, 8/n), n, []int{8}, func(tb testing.TB) target { return newSnakepit(tb, n, 8/n, "DeclaredAioBenchAdapter", "aadd") }},
		)
	}
	// The default Config (Capacity 0: DefaultCapacity) against raw gRPC at
	// more callers than workers, N = 1, 2, 4 × C = 8, 32 (issue 21).
	for _, n := range []int{1, 2, 4} {
		out = append(out,
			setup{fmt.Sprintf("grpc-sync-wide/N=%d", n), n, []int{8, 32}, func(tb testing.TB) target { return newRaw(tb, n, 8, startServicer) }},
			setup{fmt.Sprintf("snakepit-default/N=%d", n), n, []int{8, 32}, func(tb testing.TB) target { return newSnakepit(tb, n, 0, "BenchAdapter", "add") }},
			// The default with pool/serial.go's rule off: the rule must cost a trivial tool nothing.
			setup{fmt.Sprintf("snakepit-noserial/N=%d", n), n, []int{8, 32}, func(tb testing.TB) target {
				return newSnakepit(tb, n, 0, "BenchAdapter", "add", func(c *snakepit.Config) { c.DisableSerialTools = true })
			}},
			setup{fmt.Sprintf("snakepit-cap1-wide/N=%d", n), n, []int{8, 32}, func(tb testing.TB) target { return newSnakepit(tb, n, 1, "BenchAdapter", "add") }},
		)
	}
	// Dynamic batching (issue 21): the batch tool badd against the same
	// work unbatched (add) in the same default Config, and go-plugin, at
	// N = 2 × C = 64; and the latency of a lone caller (C = 1), which pays
	// the batch's max_wait (2 ms). benchtable compares them per round.
	out = append(out,
		setup{"batch-snakepit/N=2", 2, []int{64}, func(tb testing.TB) target { return newSnakepit(tb, 2, 0, "BenchAdapter", "badd") }},
		setup{"batch-unbatched/N=2", 2, []int{64}, func(tb testing.TB) target { return newSnakepit(tb, 2, 0, "BenchAdapter", "add") }},
		setup{"batch-go-plugin/N=2", 2, []int{64}, func(tb testing.TB) target { return newPlugin(tb, 2, 8) }},
		setup{"batch-snakepit/N=1", 1, []int{1}, func(tb testing.TB) target { return newSnakepit(tb, 1, 0, "BenchAdapter", "badd") }},
		setup{"batch-unbatched/N=1", 1, []int{1}, func(tb testing.TB) target { return newSnakepit(tb, 1, 0, "BenchAdapter", "add") }},
	)
	return out
}

// BenchmarkSideBySide: see the package comment.
func BenchmarkSideBySide(b *testing.B) {
	for _, s := range setups() {
		b.Run(s.name, func(b *testing.B) {
			t := s.start(b)
			defer t.close()
			drive(b, t, 8, 300) // warm up: connections, thread pools, caches
			for _, c := range s.cs {
				b.Run(fmt.Sprintf("C=%d", c), func(b *testing.B) { measure(b, t, c) })
			}
		})
	}
}
