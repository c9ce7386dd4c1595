package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/snakepit-go/snakepit"
	"github.com/snakepit-go/snakepit/bridge/pb"
)

// BenchmarkArray4MiBPaired is issue 19's array target: a 4 MiB float32
// numpy array returned by a tool and decoded in Go (Decode[[]float32], and
// Decode[[]float64] with its conversion) against raw gRPC bytes — a bare
// grpc-go client calling minimal_servicer.py's "blob", which returns 4 MiB
// of bytes — and against snakepit's own bytes result (bench_adapter's blob).
// The bare servicer runs with the malloc thresholds snakepit's worker sets
// (python/snakepit_bridge/_malloc.py) unless ARRAY_BASELINE_MALLOC=default:
// with glibc's dynamic ones it page-faults on every call in some runs and
// not in others (where its buffers land), which would make the baseline
// itself bimodal. One process of each for the whole run; every round times ARRAY_CALLS
// sequential calls of each path, in an order that rotates per round, so a
// load change on a shared machine hits all paths alike; the ratios are per
// round (raw ms / path ms: throughput relative to raw) with their range.
// make bench-array runs it; results are in docs/BENCHMARKS.md.
func BenchmarkArray4MiBPaired(b *testing.B) {
	const n = 1 << 20 // float32 elements: 4 MiB
	rounds, calls := envInt("ARRAY_ROUNDS", 8), envInt("ARRAY_CALLS", 20)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()

	cmd, stdin, addr := startBareServicer(b)
	defer stopProc(cmd, stdin)
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64<<20)))
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	raw := pb.NewWorkerServiceClient(conn)
	blobArgs, _ := json.Marshal(map[string]int{"n": 4 * n})

	sp := newSnakepit(b, 1, 1, "BenchAdapter", "add").(*snakepitTarget)
	defer sp.close()
	app := sp.app

	paths := []struct {
		name string
		call func() error
	}{
		{"raw-grpc-bytes", func() error {
			r, err := raw.ExecuteTool(ctx, &pb.ExecuteToolRequest{ToolName: "blob", ArgsJson: blobArgs})
			return wantLen(len(r.GetResult().GetBinary()), 4*n, err)
		}},
		{"snakepit-bytes", func() error {
			r, err := app.Execute(ctx, "blob", map[string]any{"n": 4 * n})
			if err != nil {
				return err
			}
			return wantLen(len(r.Binary), 4*n, nil)
		}},
		{"snakepit-typed-f32", func() error {
			v, err := snakepit.Decode[[]float32](app.Execute(ctx, "array", map[string]any{"n": n}))
			return wantLen(len(v), n, err)
		}},
		{"snakepit-typed-f64", func() error {
			v, err := snakepit.Decode[[]float64](app.Execute(ctx, "array", map[string]any{"n": n}))
			return wantLen(len(v), n, err)
		}},
	}
	pids := map[string]int{"raw-grpc-bytes": cmd.Process.Pid}
	for _, p := range paths[1:] {
		pids[p.name] = sp.pid[0]
	}
	for _, p := range paths { // warm-up: numpy's import, the heaps' first growth
		for i := 0; i < 3; i++ {
			if err := p.call(); err != nil {
				b.Fatalf("%s: %v", p.name, err)
			}
		}
	}

	ms := map[string][]float64{}
	cpu := map[string][]float64{}
	faults := map[string][]float64{}
	gocpu := map[string][]float64{}
	for r := 0; r < rounds; r++ {
		for k := range paths {
			p := paths[(r+k)%len(paths)]
			t0, c0, f0, g0 := time.Now(), cpuTicks(b, []int{pids[p.name]}), minorFaults(pids[p.name]), selfCPU()
			for i := 0; i < calls; i++ {
				if err := p.call(); err != nil {
					b.Fatalf("%s: %v", p.name, err)
				}
			}
			ms[p.name] = append(ms[p.name], float64(time.Since(t0).Microseconds())/1e3/float64(calls))
			cpu[p.name] = append(cpu[p.name], float64(cpuTicks(b, []int{pids[p.name]})-c0)*1e3/clockTicks/float64(calls))
			faults[p.name] = append(faults[p.name], float64(minorFaults(pids[p.name])-f0)/float64(calls))
			gocpu[p.name] = append(gocpu[p.name], float64((selfCPU()-g0).Microseconds())/1e3/float64(calls))
		}
		b.Logf("round %d: %s", r, roundLine(paths[0].name, ms, r))
	}

	var out strings.Builder
	fmt.Fprintf(&out, "\n%d rounds x %d calls, ms per call (median [min..max]); ratio = raw-grpc-bytes ms / path ms per round\n", rounds, calls)
	fmt.Fprintf(&out, "| path | ms/call | MB/s (median) | Python CPU ms/call | Python minor faults/call | Go CPU ms/call | vs raw gRPC bytes | vs snakepit bytes |\n|---|---|---|---|---|---|---|---|\n")
	for _, p := range paths {
		vsRaw, vsBytes := ratios(ms["raw-grpc-bytes"], ms[p.name]), ratios(ms["snakepit-bytes"], ms[p.name])
		fmt.Fprintf(&out, "| %s | %s | %.0f | %s | %.0f | %s | %s | %s |\n", p.name, spread(ms[p.name], "%.1f"),
			4*n/1e6/(median(ms[p.name])/1e3), spread(cpu[p.name], "%.1f"), median(faults[p.name]), spread(gocpu[p.name], "%.1f"),
			spread(vsRaw, "%.2f"), spread(vsBytes, "%.2f"))
	}
	fmt.Fprintf(&out, "worker RSS after the run: %s; bare servicer: %s\n", rss(sp.pid[0]), rss(cmd.Process.Pid))
	fmt.Print(out.String()) // the table of docs/BENCHMARKS.md (b.Log truncates a benchmark's output)
	b.ReportMetric(median(ratios(ms["raw-grpc-bytes"], ms["snakepit-typed-f32"])), "typed/raw")
	b.ReportMetric(median(ratios(ms["snakepit-bytes"], ms["snakepit-typed-f32"])), "typed/bytes")
}

// startBareServicer is startServicer (2 threads) with the worker's malloc
// thresholds, as environment variables glibc reads at startup.
func startBareServicer(tb testing.TB) (*exec.Cmd, io.Closer, string) {
	cmd := exec.Command(python(tb), "minimal_servicer.py")
	cmd.Env = append(os.Environ(), "PYTHONPATH="+pythonPath(tb), "BENCH_WATCH_STDIN=1", "BENCH_THREADS=2")
	if os.Getenv("ARRAY_BASELINE_MALLOC") != "default" {
		// _malloc.MMAP_THRESHOLD and TRIM_THRESHOLD
		cmd.Env = append(cmd.Env, "MALLOC_MMAP_THRESHOLD_=8388608", "MALLOC_TRIM_THRESHOLD_=33554432")
	}
	return startProc(tb, cmd, func(line string) string {
		parts := strings.Split(strings.TrimSpace(line), "|")
		if len(parts) != 5 || parts[2] != "tcp" {
			return ""
		}
		return parts[3]
	})
}

func wantLen(got, want int, err error) error {
	if err == nil && got != want {
		err = fmt.Errorf("got %d elements, want %d", got, want)
	}
	return err
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

// ratios is base[i]/x[i] per round.
func ratios(base, x []float64) []float64 {
	out := make([]float64, len(x))
	for i := range x {
		out[i] = base[i] / x[i]
	}
	return out
}

func median(x []float64) float64 {
	y := append([]float64(nil), x...)
	sort.Float64s(y)
	if len(y) == 0 {
		return 0
	}
	if len(y)%2 == 0 {
		return (y[len(y)/2-1] + y[len(y)/2]) / 2
	}
	return y[len(y)/2]
}

func spread(x []float64, f string) string {
	y := append([]float64(nil), x...)
	sort.Float64s(y)
	return fmt.Sprintf(f+" ["+f+".."+f+"]", median(y), y[0], y[len(y)-1])
}

func roundLine(base string, ms map[string][]float64, r int) string {
	names := make([]string, 0, len(ms))
	for k := range ms {
		names = append(names, k)
	}
	sort.Strings(names)
	var parts []string
	for _, k := range names {
		parts = append(parts, fmt.Sprintf("%s %.1f ms (x%.2f)", k, ms[k][r], ms[base][r]/ms[k][r]))
	}
	return strings.Join(parts, ", ")
}

// minorFaults is the process's minor page faults so far (/proc/PID/stat).
func minorFaults(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	v, _ := strconv.ParseInt(f[7], 10, 64) // minflt, field 10 of the line
	return v
}

// rss is the process's VmRSS and VmHWM (its peak) from /proc.
func rss(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return "?"
	}
	var parts []string
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "VmRSS:") || strings.HasPrefix(l, "VmHWM:") {
			parts = append(parts, strings.Join(strings.Fields(l), " "))
		}
	}
	return strings.Join(parts, ", ")
}
