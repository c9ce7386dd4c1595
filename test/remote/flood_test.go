package remote_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/snakepit-go/snakepit/agent/agentpb"
	"github.com/snakepit-go/snakepit/bridge/pb"
	"github.com/snakepit-go/snakepit/internal/auth"
)

// floodEnv turns TestAgentFlood on (make agent-flood); it is a measurement,
// not a check of make test. SNAKEPIT_FLOOD_BINARY, when set, is the
// `snakepit` to measure instead of this tree's (e.g. an older build, for a
// before/after figure).
const floodEnv = "SNAKEPIT_AGENT_FLOOD"

// Flood shape: what issue 17 reported (64 concurrent unauthenticated
// 15 MiB requests), each sender repeating its request for floodFor (at
// most floodRounds times).
const (
	floodSenders = 64
	floodBytes   = 15 << 20
	floodFor     = 5 * time.Second
	floodRounds  = 5000
	floodConns   = 8
)

// vmRSS reads a /proc/<pid>/status field in bytes (VmRSS, VmHWM).
func vmField(pid int, field string) (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), field+":"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10, err
		}
	}
	return 0, fmt.Errorf("no %s in /proc/%d/status", field, pid)
}

// TestAgentFlood starts a real agent (`snakepit serve`, one Python worker)
// on 127.0.0.1, floods it with unauthenticated 15 MiB requests, first to
// AgentService, then to the open health service, while one good client
// calls ping with the token, and prints the agent's RSS growth and the
// good client's latency percentiles (FLOOD: lines; docs/SCALING.md).
func TestAgentFlood(t *testing.T) {
	if os.Getenv(floodEnv) == "" {
		t.Skipf("a measurement: set %s=1 (make agent-flood)", floodEnv)
	}
	if b := os.Getenv("SNAKEPIT_FLOOD_BINARY"); b != "" {
		prev := binary
		binary = b
		t.Cleanup(func() { binary = prev })
	}
	t.Run("health open on the main port", func(t *testing.T) { floodAgent(t) })
	if os.Getenv("SNAKEPIT_FLOOD_BINARY") == "" {
		t.Run("with --health-listen", func(t *testing.T) { floodAgent(t, "--health-listen", "127.0.0.1:0") })
	}
}

func floodAgent(t *testing.T, extra ...string) {
	const secret = "flood-test-token-0123456789abcdef"
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte(secret), 0o600); err != nil {
		t.Fatal(err)
	}
	token, err := auth.Load(tokenFile, "")
	if err != nil {
		t.Fatal(err)
	}
	a := startAgent(t, "127.0.0.1", 0, tokenFile, 1, extra...)
	pid := a.cmd.Process.Pid

	dial := func(extra ...grpc.DialOption) *grpc.ClientConn {
		cc, err := grpc.NewClient(a.addr, append([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithDefaultCallOptions(grpc.MaxCallSendMsgSize(32<<20), grpc.MaxCallRecvMsgSize(32<<20))}, extra...)...)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cc.Close() })
		return cc
	}
	good := agentpb.NewAgentServiceClient(dial(auth.ClientOptions(token)...))
	ping := func() (time.Duration, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		t0 := time.Now()
		resp, err := good.Execute(ctx, &pb.ExecuteToolRequest{ToolName: "ping"})
		if err == nil && resp.GetError() != nil {
			err = fmt.Errorf("ping: %s", resp.GetError().GetMessage())
		}
		return time.Since(t0), err
	}
	// goodLoad pings back to back until stop is closed; latencies in order.
	goodLoad := func(stop <-chan struct{}) []time.Duration {
		var lat []time.Duration
		for {
			select {
			case <-stop:
				return lat
			default:
			}
			d, err := ping()
			if err != nil {
				t.Errorf("good client: %v", err)
				return lat
			}
			lat = append(lat, d)
		}
	}
	pct := func(lat []time.Duration, p float64) time.Duration {
		if len(lat) == 0 {
			return 0
		}
		s := slices.Clone(lat)
		slices.Sort(s)
		return s[min(len(s)-1, int(float64(len(s))*p))]
	}
	for range 200 { // warm up: worker, connection, allocator
		if _, err := ping(); err != nil {
			t.Fatal(err)
		}
	}
	stop := make(chan struct{})
	time.AfterFunc(2*time.Second, func() { close(stop) })
	quiet := goodLoad(stop)
	t.Logf("FLOOD: quiet: good client n=%d p50=%v p99=%v", len(quiet), pct(quiet, .5), pct(quiet, .99))

	for _, method := range []string{agentpb.AgentService_Execute_FullMethodName, healthpb.Health_Check_FullMethodName} {
		before, err := vmField(pid, "VmRSS")
		if err != nil {
			t.Fatal(err)
		}
		var peak atomic.Int64
		peak.Store(before)
		sampled := make(chan struct{})
		stopSampling := make(chan struct{})
		go func() { // VmRSS every 10 ms: VmHWM cannot be reset between floods
			defer close(sampled)
			tick := time.NewTicker(10 * time.Millisecond)
			defer tick.Stop()
			for {
				select {
				case <-stopSampling:
					return
				case <-tick.C:
					if v, err := vmField(pid, "VmRSS"); err == nil && v > peak.Load() {
						peak.Store(v)
					}
				}
			}
		}()
		sender := startFloodSender(t, a.addr, method)
		stopGood := make(chan struct{})
		latc := make(chan []time.Duration, 1)
		go func() { latc <- goodLoad(stopGood) }()
		res := sender.wait(t)
		close(stopGood)
		lat := <-latc
		close(stopSampling)
		<-sampled
		t.Logf("FLOOD: %s: %d senders, %d unauthenticated %d MiB requests over %d connections (%d accepted by the agent) in %v, answers %v, sender CPU %v | agent RSS %d MiB before, peak +%d MiB | good client during it: n=%d p50=%v p99=%v max=%v",
			method, floodSenders, res.Requests, floodBytes>>20, floodConns, res.Dials, res.Took.Round(time.Millisecond), res.Codes, res.CPU.Round(time.Millisecond),
			before>>20, (peak.Load()-before)>>20, len(lat), pct(lat, .5), pct(lat, .99), pct(lat, 1))
	}
	// A 4 MiB round trip (bytes_echo) with the token: what the agent's
	// HTTP/2 window settings cost a good client's large messages. After the
	// floods, so its buffers are not in the RSS they start from.
	big := make([]byte, 4<<20)
	var bigLat []time.Duration
	for range 20 {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		t0 := time.Now()
		resp, err := good.Execute(ctx, &pb.ExecuteToolRequest{ToolName: "bytes_echo", BinaryArgs: map[string][]byte{"data": big}})
		cancel()
		if err == nil && resp.GetError() != nil {
			err = fmt.Errorf("bytes_echo: %s", resp.GetError().GetMessage())
		}
		if err != nil {
			t.Fatal(err)
		}
		bigLat = append(bigLat, time.Since(t0))
	}
	t.Logf("FLOOD: after the floods: 4 MiB bytes_echo n=%d p50=%v max=%v", len(bigLat), pct(bigLat, .5), pct(bigLat, 1))

	if !a.alive() {
		t.Fatalf("the agent died under the flood; stderr:\n%s", a.stderr.String())
	}
	// The agent's ordered stop (its own pid only), so its Python worker is
	// stopped by it rather than left to the cleanup's SIGKILL.
	if err := a.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-a.exited:
	case <-time.After(20 * time.Second):
		t.Errorf("agent did not stop within 20 s of SIGTERM")
	}
}

// rawCodec sends a pre-marshalled []byte as it is and keeps a reply's bytes.
type rawCodec struct{}

func (rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	return mem.BufferSlice{mem.SliceBuffer(v.([]byte))}, nil
}

func (rawCodec) Unmarshal(data mem.BufferSlice, v any) error {
	*v.(*[]byte) = data.Materialize()
	return nil
}

func (rawCodec) Name() string { return "proto" }

// The flood's sender runs in a process of its own (this test binary again,
// running TestFloodSender), so the good client in this process does not
// share a Go scheduler with 64 senders, and the sender's CPU can be
// measured and pinned apart: SNAKEPIT_FLOOD_SENDER_CPUS, when set, is a
// taskset(1) CPU list for it (e.g. `taskset -c 1 make agent-flood` with
// SNAKEPIT_FLOOD_SENDER_CPUS=0 gives the agent and the good client one
// core and the sender the other).
const (
	senderEnv     = "SNAKEPIT_FLOOD_SENDER" // "<addr> <method> <result file>"
	senderCPUsEnv = "SNAKEPIT_FLOOD_SENDER_CPUS"
)

type floodResult struct {
	Requests int
	Codes    map[string]int
	Dials    int64 // connections the agent accepted from the sender
	Took     time.Duration
	CPU      time.Duration // the sender's user+system time during the flood
}

// started is the line the sender prints once its connections are dialled,
// right before it floods: the good client's window starts there, not at
// the sender's TestMain (which builds snakepit again, cached but not free).
const started = "flood sender: started"

// cpuTime is this process's user+system time so far.
func cpuTime(t *testing.T) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		t.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

type floodSender struct {
	cmd  *exec.Cmd
	out  string
	done chan struct{}
}

func startFloodSender(t *testing.T, addr, method string) *floodSender {
	t.Helper()
	out := filepath.Join(t.TempDir(), "result.json")
	argv := []string{os.Args[0], "-test.run=^TestFloodSender$", "-test.count=1"}
	if cpus := os.Getenv(senderCPUsEnv); cpus != "" {
		argv = append([]string{"taskset", "-c", cpus}, argv...)
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), senderEnv+"="+addr+" "+method+" "+out)
	cmd.Stderr = os.Stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ready, scanned := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(scanned)
		sc := bufio.NewScanner(stdout)
		for once := true; sc.Scan(); {
			if once && sc.Text() == started {
				close(ready)
				once = false
			}
		}
	}()
	s := &floodSender{cmd: cmd, out: out, done: make(chan struct{})}
	t.Cleanup(func() {
		select {
		case <-s.done:
		default:
			_ = cmd.Process.Kill() // the PID we started, still unreaped: ours
			<-s.done
		}
	})
	// Wait closes stdout, so it must come after the scanner read it to its
	// end (the sender's exit).
	go func() {
		<-scanned
		_ = cmd.Wait()
		close(s.done)
	}()
	select {
	case <-ready:
	case <-s.done:
		t.Fatalf("flood sender exited before flooding: %v", cmd.ProcessState)
	}
	return s
}

func (s *floodSender) wait(t *testing.T) floodResult {
	t.Helper()
	select {
	case <-s.done:
	case <-time.After(2 * time.Minute):
		t.Fatal("flood sender did not finish within 2 minutes")
	}
	if !s.cmd.ProcessState.Success() {
		t.Fatalf("flood sender: %v", s.cmd.ProcessState)
	}
	b, err := os.ReadFile(s.out)
	if err != nil {
		t.Fatal(err)
	}
	var r floodResult
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatal(err)
	}
	return r
}

// TestFloodSender is the flood's sender process (startFloodSender); it
// skips unless started as one.
func TestFloodSender(t *testing.T) {
	spec := strings.Fields(os.Getenv(senderEnv))
	if len(spec) != 3 {
		t.Skipf("the flood's sender process; started by TestAgentFlood")
	}
	addr, method, out := spec[0], spec[1], spec[2]
	body := make([]byte, floodBytes)
	// Each request is marshalled once: the senders' own CPU and garbage
	// (64 × 15 MiB per round) would otherwise be most of what they do.
	var req []byte
	var err error
	if method == healthpb.Health_Check_FullMethodName {
		req, err = proto.Marshal(&healthpb.HealthCheckRequest{Service: string(body)})
	} else {
		req, err = proto.Marshal(&pb.ExecuteToolRequest{ToolName: "ping", BinaryArgs: map[string][]byte{"x": body}})
	}
	if err != nil {
		t.Fatal(err)
	}
	var dials atomic.Int64
	dialer := func(ctx context.Context, addr string) (net.Conn, error) {
		c, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
		if err == nil {
			dials.Add(1)
		}
		return c, err
	}
	conns := make([]*grpc.ClientConn, floodConns)
	for i := range conns {
		cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithContextDialer(dialer),
			grpc.WithDefaultCallOptions(grpc.MaxCallSendMsgSize(32<<20))) // no token
		if err != nil {
			t.Fatal(err)
		}
		defer cc.Close()
		conns[i] = cc
	}
	raw := grpc.ForceCodecV2(rawCodec{})
	codesSeen := map[string]int{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	cpu0 := cpuTime(t)
	fmt.Println(started)
	t0 := time.Now()
	for i := range floodSenders {
		wg.Go(func() {
			for range floodRounds {
				if time.Since(t0) > floodFor {
					return
				}
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				err := conns[i%floodConns].Invoke(ctx, method, req, new([]byte), raw)
				cancel()
				c := status.Code(err).String()
				mu.Lock()
				codesSeen[c]++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	r := floodResult{Codes: codesSeen, Dials: dials.Load(), Took: time.Since(t0), CPU: cpuTime(t) - cpu0}
	for _, n := range codesSeen {
		r.Requests += n
	}
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(out, b, 0o600); err != nil {
		t.Fatal(err)
	}
}
