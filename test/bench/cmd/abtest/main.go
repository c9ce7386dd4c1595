// Command abtest compares Python server variants in paired rounds: each
// round starts every variant in turn, drives it with raw grpc-go ExecuteTool
// calls ("add", the side-by-side benchmark's trivial call) from -c
// goroutines for -t, and reads the process's CPU time and context switches
// from /proc. Ratios are per round against the first variant, so a load
// change on a shared machine hits both sides of each ratio alike: the
// median ratio is a steadier figure than the ratio of medians.
//
// A variant is "servicer" (minimal_servicer.py) or "worker" (snakepit's
// worker with bench_adapter.BenchAdapter), optionally followed by
// ":NAME=VALUE" environment settings, e.g. worker:SNAKEPIT_SERVER=aio.
//
//	cd test/bench && go run ./cmd/abtest -rounds 6 -t 3s -c 8 servicer worker
//
// (make bench-ab runs that). Use it to decide whether a change to the
// Python side is worth its complexity; the published figures come from
// make bench-sidebyside.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/snakepit-go/snakepit/bridge/pb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

func main() {
	rounds := flag.Int("rounds", 5, "paired rounds")
	dur := flag.Duration("t", 2*time.Second, "measured time per variant and round")
	c := flag.Int("c", 8, "concurrent callers")
	py := flag.String("py", os.Getenv("SNAKEPIT_PYTHON"), "Python with grpcio (default $SNAKEPIT_PYTHON)")
	flag.Parse()
	variants := flag.Args()
	if len(variants) == 0 || *py == "" || *rounds < 1 || *c < 1 {
		fmt.Fprintln(os.Stderr, "usage: SNAKEPIT_PYTHON=/path/to/python abtest [-rounds N] [-t D] [-c C] servicer worker[:NAME=VALUE...] ...")
		os.Exit(2)
	}
	root, _ := filepath.Abs("../..")
	res := map[string][][3]float64{}
	for r := 0; r < *rounds; r++ {
		for _, v := range variants {
			m, err := run(*py, root, v, *c, *dur)
			if err != nil {
				fmt.Fprintf(os.Stderr, "abtest: %s: %v\n", v, err)
				os.Exit(1)
			}
			res[v] = append(res[v], m)
			fmt.Fprintf(os.Stderr, "round %d %-40s cpu %.1f µs/call  cs %.2f/call  %.0f calls/s\n", r, v, m[0], m[1], m[2])
		}
	}
	fmt.Printf("C=%d, %d paired rounds of %s; Python CPU ratio against %s per round\n", *c, *rounds, *dur, variants[0])
	base := res[variants[0]]
	for _, v := range variants {
		var cpu, rat, cs, cps []float64
		for i, m := range res[v] {
			cpu = append(cpu, m[0])
			cs = append(cs, m[1])
			cps = append(cps, m[2])
			rat = append(rat, m[0]/base[i][0])
		}
		fmt.Printf("%-40s cpu med %.1f  ratio med %.3f [%.3f..%.3f]  cs/call %.2f  calls/s %.0f\n", v, med(cpu), med(rat), lo(rat), hi(rat), med(cs), med(cps))
	}
}

func med(x []float64) float64 {
	y := append([]float64(nil), x...)
	sort.Float64s(y)
	if len(y)%2 == 0 {
		return (y[len(y)/2-1] + y[len(y)/2]) / 2
	}
	return y[len(y)/2]
}
func lo(x []float64) float64 { y := append([]float64(nil), x...); sort.Float64s(y); return y[0] }
func hi(x []float64) float64 {
	y := append([]float64(nil), x...)
	sort.Float64s(y)
	return y[len(y)-1]
}

// run measures one variant: [Python CPU µs/call, context switches/call, calls/s].
func run(py, root, v string, c int, dur time.Duration) ([3]float64, error) {
	parts := strings.Split(v, ":")
	var cmd *exec.Cmd
	if parts[0] == "servicer" {
		cmd = exec.Command(py, "minimal_servicer.py")
	} else {
		cmd = exec.Command(py, "-m", "snakepit_bridge.server", "--adapter", "bench_adapter.BenchAdapter", "--port", "0", "--max-workers", "8")
	}
	cmd.Env = append(os.Environ(), "PYTHONPATH="+filepath.Join(root, "python")+":.", "BENCH_WATCH_STDIN=1", "SNAKEPIT_LOG_LEVEL=WARNING")
	cmd.Env = append(cmd.Env, parts[1:]...)
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		return [3]float64{}, err
	}
	// Its pid is its process group (Setpgid) and cannot be reused before Wait.
	defer func() {
		_ = stdin.Close()
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		_ = cmd.Wait()
	}()
	line, _ := bufio.NewReader(stdout).ReadString('\n')
	go io.Copy(io.Discard, stdout)
	var addr string
	if f := strings.Fields(line); len(f) >= 4 && f[0] == "SNAKEPIT_READY" {
		addr = f[3]
	} else if p := strings.Split(strings.TrimSpace(line), "|"); len(p) == 5 {
		addr = p[3]
	} else {
		return [3]float64{}, fmt.Errorf("bad handshake line %q", line)
	}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return [3]float64{}, err
	}
	defer conn.Close()
	cl := pb.NewWorkerServiceClient(conn)
	if _, err := drive(cl, c, 300*time.Millisecond); err != nil { // warm-up
		return [3]float64{}, err
	}
	pid := cmd.Process.Pid
	t0, cs0 := ticks(pid), switches(pid)
	n, err := drive(cl, c, dur)
	if err != nil {
		return [3]float64{}, err
	}
	t1, cs1 := ticks(pid), switches(pid)
	// /proc's CPU times are in clock ticks of 10 ms (USER_HZ 100).
	return [3]float64{float64(t1-t0) * 1e4 / float64(n), float64(cs1-cs0) / float64(n), float64(n) / dur.Seconds()}, nil
}

func drive(cl pb.WorkerServiceClient, c int, dur time.Duration) (int64, error) {
	var n atomic.Int64
	var once sync.Once
	var first error
	var wg sync.WaitGroup
	end := time.Now().Add(dur)
	args, _ := json.Marshal(map[string]int{"a": 1, "b": 2})
	for g := 0; g < c; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(end) {
				resp, err := cl.ExecuteTool(context.Background(), &pb.ExecuteToolRequest{ToolName: "add", ArgsJson: args})
				if err == nil && resp.GetError() != nil {
					err = fmt.Errorf("tool error: %s", resp.GetError().GetMessage())
				}
				if err != nil {
					once.Do(func() { first = err })
					return
				}
				n.Add(1)
			}
		}()
	}
	wg.Wait()
	return n.Load(), first
}

func ticks(pid int) int64 {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return ut + st
}

func switches(pid int) int64 {
	var sum int64
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/status", pid))
	for _, t := range tasks {
		b, _ := os.ReadFile(t)
		for _, l := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(l, "voluntary_ctxt_switches:") || strings.HasPrefix(l, "nonvoluntary_ctxt_switches:") {
				x, _ := strconv.ParseInt(strings.TrimSpace(l[strings.IndexByte(l, ':')+1:]), 10, 64)
				sum += x
			}
		}
	}
	return sum
}
