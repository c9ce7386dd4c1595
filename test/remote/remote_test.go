// Package remote_test runs a host pool of remote workers against real
// `snakepit serve` agents on 127.0.0.1–127.0.0.4 (all of 127/8 is loopback
// on Linux), each with real Python workers: real processes, real gRPC, real
// signals. Nothing leaves loopback.
package remote_test

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/snakepit-go/snakepit"
	"github.com/snakepit-go/snakepit/discovery"
	"github.com/snakepit-go/snakepit/internal/testutil"
	"github.com/snakepit-go/snakepit/remote"
)

var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "snakepit-remote-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	binary = filepath.Join(dir, "snakepit")
	if out, err := exec.Command("go", "build", "-o", binary, "github.com/snakepit-go/snakepit/cmd/snakepit").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "go build: %v\n%s", err, out)
		os.Exit(2)
	}
	defer os.RemoveAll(dir)
	testutil.Main(m)
}

// agentProc is one `snakepit serve` we started; only its own PID is ever
// signalled.
type agentProc struct {
	cmd    *exec.Cmd
	runID  string
	addr   string
	readyT time.Time
	exited chan struct{} // closed once Wait returned
	stderr testutil.Buffer
}

func (a *agentProc) alive() bool {
	select {
	case <-a.exited:
		return false
	default:
		return true
	}
}

var readyLine = regexp.MustCompile(`^ready run_id=(\S+) workers=(\d+) addr=(\S+) capacity=(\d+)(?: pools=\S+)?$`)

func startAgent(t *testing.T, ip string, port int, tokenFile string, workers int, extra ...string) *agentProc {
	t.Helper()
	dir := t.TempDir()
	cmd := exec.Command(binary, append([]string{"serve", "--listen", net.JoinHostPort(ip, strconv.Itoa(port)), "--token-file", tokenFile,
		"--workers", fmt.Sprint(workers), "--registry", filepath.Join(dir, "agent.db"), "--stop-grace", "2s"}, extra...)...)
	a := &agentProc{cmd: cmd, exited: make(chan struct{})}
	cmd.Stderr = &a.stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		_ = cmd.Wait()
		close(a.exited)
	}()
	t.Cleanup(func() {
		killed := a.alive()
		if killed {
			_ = cmd.Process.Kill() // the PID we started, still unreaped: ours
			<-a.exited
			// A SIGKILLed agent's workers see their host gone and exit by
			// themselves (docs/GUARANTEES.md §5), within milliseconds.
			deadline := time.Now().Add(2 * time.Second)
			for a.runID != "" && len(testutil.RunIDProcesses(t, a.runID)) > 0 && time.Now().Before(deadline) {
				time.Sleep(10 * time.Millisecond)
			}
		}
		if left := testutil.RunIDProcesses(t, a.runID); a.runID != "" && len(left) > 0 {
			t.Errorf("agent %s: %d processes of its run alive after it stopped: %+v", a.addr, len(left), left)
			testutil.KillRunSurvivors(t, a.runID)
		}
		// A killed agent's cgroups wait for a reap of its registry.
		testutil.EndRunCgroups(t, a.runID)
	})
	lines := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			select {
			case lines <- sc.Text():
			default:
			}
		}
	}()
	select {
	case line := <-lines:
		m := readyLine.FindStringSubmatch(line)
		if m == nil {
			t.Fatalf("agent on %s: unexpected first line %q; stderr:\n%s", ip, line, a.stderr.String())
		}
		a.runID, a.addr, a.readyT = m[1], m[3], time.Now()
	case <-a.exited:
		t.Fatalf("agent on %s exited before ready; stderr:\n%s", ip, a.stderr.String())
	case <-time.After(60 * time.Second):
		t.Fatalf("agent on %s not ready within 60 s; stderr:\n%s", ip, a.stderr.String())
	}
	return a
}

// fleet simulates the DNS of a headless Service: the name resolves to the
// addresses of the agents whose process is running, as Kubernetes' endpoints
// controller lists the ready pods. It is the Resolver of a discovery.DNS.
type fleet struct {
	mu     sync.Mutex
	agents []*agentProc
}

func (f *fleet) add(a *agentProc) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.agents = append(f.agents, a)
}

func (f *fleet) LookupHost(_ context.Context, host string) ([]string, error) {
	if host != serviceName {
		return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for _, a := range f.agents {
		if a.alive() {
			h, _, _ := net.SplitHostPort(a.addr)
			out = append(out, h)
		}
	}
	return out, nil
}

const serviceName = "snakepit-agent.test.svc.cluster.local"

// commonPort finds a port free on every ip: behind one headless Service,
// all agents listen on the same port.
func commonPort(t *testing.T, ips ...string) int {
	t.Helper()
	for range 20 {
		ln, err := net.Listen("tcp", ips[0]+":0")
		if err != nil {
			t.Fatal(err)
		}
		port := ln.Addr().(*net.TCPAddr).Port
		free := []net.Listener{ln}
		for _, ip := range ips[1:] {
			l, err := net.Listen("tcp", net.JoinHostPort(ip, strconv.Itoa(port)))
			if err != nil {
				break
			}
			free = append(free, l)
		}
		for _, l := range free {
			_ = l.Close()
		}
		if len(free) == len(ips) {
			return port
		}
	}
	t.Fatal("no port free on every agent address")
	return 0
}

// load runs callers making calls of worker_info, which answers with the
// run id of the agent whose Python served it, with the options opts gives
// caller i. A non-idempotent call sees ErrWorkerCrashed when its agent dies
// under it; an idempotent one is retried.
type load struct {
	total, ok, crashed atomic.Int64
	mu                 sync.Mutex
	other              []error
	byRun              map[string]int
	firstSeen          map[string]time.Time
	stop               chan struct{}
	wg                 sync.WaitGroup
	gate               sync.RWMutex // held shared around each call; pause takes it
}

// pause waits for the calls in flight to finish and holds new ones until
// resume: the test places its probes on a quiet pool.
func (l *load) pause()  { l.gate.Lock() }
func (l *load) resume() { l.gate.Unlock() }

// callerPause is each caller's pause between calls.
const callerPause = 50 * time.Millisecond

func startLoad(app *snakepit.App, callers int, opts func(i int) []snakepit.CallOption) *load {
	l := &load{byRun: map[string]int{}, firstSeen: map[string]time.Time{}, stop: make(chan struct{})}
	for i := range callers {
		opts := opts(i)
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			for {
				// Paced, not flat out: steady load on every agent while
				// leaving CPU to the suites make test runs alongside (the
				// lifecycle suite's stop timings are CPU-sensitive).
				select {
				case <-l.stop:
					return
				case <-time.After(callerPause):
				}
				l.gate.RLock()
				l.total.Add(1)
				ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
				info, err := snakepit.Decode[struct {
					RunID string `json:"run_id"`
				}](app.Execute(ctx, "worker_info", nil, opts...))
				cancel()
				l.gate.RUnlock()
				switch {
				case err == nil:
					l.ok.Add(1)
					l.mu.Lock()
					if l.byRun[info.RunID] == 0 {
						l.firstSeen[info.RunID] = time.Now()
					}
					l.byRun[info.RunID]++
					l.mu.Unlock()
				case errors.Is(err, snakepit.ErrWorkerCrashed):
					l.crashed.Add(1)
				default:
					l.mu.Lock()
					l.other = append(l.other, err)
					l.mu.Unlock()
				}
			}
		}()
	}
	return l
}

func (l *load) served(runID string) (int, time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.byRun[runID], l.firstSeen[runID]
}

func (l *load) finish() {
	close(l.stop)
	l.wg.Wait()
}

func writeToken(t *testing.T) string {
	t.Helper()
	b := make([]byte, 24)
	_, _ = rand.Read(b)
	f := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(f, []byte(hex.EncodeToString(b)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}

func ready(app *snakepit.App) int {
	w := app.Stats().Pool.Workers
	return w.Idle + w.Busy
}

// Three agents behind DNS discovery serve a host pool under load; one is
// SIGKILLed with two calls pinned to it (the non-idempotent one fails with
// ErrWorkerCrashed, the idempotent one is retried; no call is lost; the
// pool drops the agent; its Python dies with it); a fourth joins and takes
// calls within one poll interval; stopping everything leaves no process of
// any run.
func TestAgentsUnderLoadKillOneAddOne(t *testing.T) {
	const (
		interval = time.Second
		workers  = 2
		callers  = 12
	)
	tokenFile := writeToken(t)
	port := commonPort(t, "127.0.0.1", "127.0.0.2", "127.0.0.3", "127.0.0.4")
	var f fleet
	agents := make([]*agentProc, 3)
	for i := range agents {
		agents[i] = startAgent(t, fmt.Sprintf("127.0.0.%d", i+1), port, tokenFile, workers)
		f.add(agents[i])
	}

	app := startHost(t, discovery.DNS{Name: serviceName, Port: port, Resolver: &f}, interval, tokenFile)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	testutil.Eventually(t, 15*time.Second, "three remote workers ready", func() bool { return ready(app) == 3 })
	if c, want := app.Stats().Pool.Capacity, 3*workers*snakepit.DefaultCapacity; c != want {
		t.Fatalf("pool capacity %d, want the agents' advertised %d", c, want)
	}
	// Across hosts as on one: the caller's trace reaches Python on the agent,
	// and the limits a tool declares reach the host's pool.
	tid, _ := trace.TraceIDFromHex("4bf92f3577b34da6a3ce929d0e0e4736")
	sid, _ := trace.SpanIDFromHex("00f067aa0ba902b7")
	traced := trace.ContextWithRemoteSpanContext(ctx, trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: sid, TraceFlags: trace.FlagsSampled, Remote: true}))
	if got, err := snakepit.Decode[map[string]string](app.Execute(traced, "trace_context", nil)); err != nil || got["trace_id"] != tid.String() {
		t.Fatalf("trace through an agent: %v, %v; want trace_id %s", got, err, tid)
	}
	for _, s := range app.Tools() {
		if s.Name == "exclusive" && s.MaxConcurrency != 1 {
			t.Fatalf("exclusive through an agent: %+v; want MaxConcurrency 1", s)
		}
	}

	// Every third caller's calls are not idempotent.
	l := startLoad(app, callers, func(i int) []snakepit.CallOption {
		if i%3 != 0 {
			return []snakepit.CallOption{snakepit.Idempotent()}
		}
		return nil
	})
	defer func() {
		select {
		case <-l.stop:
		default:
			l.finish()
		}
	}()
	testutil.Eventually(t, 15*time.Second, "every agent serving calls", func() bool {
		for _, a := range agents {
			if n, _ := l.served(a.runID); n < 20 {
				return false
			}
		}
		return true
	})

	// Two long calls certainly running on agent 1 when it dies: sessions
	// pinned to its worker (found on a quiet pool), then a sleep each, one
	// idempotent, one not.
	victim := agents[0]
	l.pause()
	var sessions []string
	for i := 0; len(sessions) < 2 && i < 100; i++ {
		sid := fmt.Sprintf("probe-%d", i)
		info, err := snakepit.Decode[struct {
			RunID string `json:"run_id"`
		}](app.Execute(ctx, "worker_info", nil, snakepit.WithSession(sid)))
		if err != nil {
			t.Fatal(err)
		}
		if info.RunID == victim.runID {
			sessions = append(sessions, sid)
		}
	}
	if len(sessions) < 2 {
		t.Fatal("no session landed on the first agent")
	}
	probes := make([]chan error, 2)
	for i, sid := range sessions {
		probes[i] = make(chan error, 1)
		opts := []snakepit.CallOption{snakepit.WithSession(sid)}
		if i == 1 {
			opts = append(opts, snakepit.Idempotent())
		}
		go func() {
			_, err := app.Execute(ctx, "sleep", map[string]int{"ms": 2000}, opts...)
			probes[i] <- err
		}()
	}
	testutil.Eventually(t, 5*time.Second, "both probes running", func() bool { return app.Stats().Pool.InFlight == 2 })
	l.resume()

	// SIGKILL agent 1, by the PID we started.
	killedAt := time.Now()
	if err := victim.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, "the killed agent out of rotation", func() bool { return ready(app) == 2 })
	outOfRotation := time.Since(killedAt)
	testutil.Eventually(t, 10*time.Second, "the killed agent's worker removed", func() bool { return app.Stats().Pool.Workers.Total == 2 })
	removed := time.Since(killedAt)
	testutil.Eventually(t, 10*time.Second, "the killed agent's Python processes gone", func() bool {
		return len(testutil.RunIDProcesses(t, victim.runID)) == 0
	})
	pythonGone := time.Since(killedAt)
	victimServed, _ := l.served(victim.runID)
	if err := <-probes[0]; !errors.Is(err, snakepit.ErrWorkerCrashed) {
		t.Errorf("a non-idempotent call running on the killed agent returned %v; want ErrWorkerCrashed", err)
	}
	if err := <-probes[1]; err != nil {
		t.Errorf("an idempotent call running on the killed agent returned %v; want it retried elsewhere", err)
	}

	// A fourth agent joins.
	fourth := startAgent(t, "127.0.0.4", port, tokenFile, workers)
	f.add(fourth)
	testutil.Eventually(t, interval+10*time.Second, "the fourth agent taking calls", func() bool {
		n, _ := l.served(fourth.runID)
		return n > 0
	})
	_, first := l.served(fourth.runID)
	joinLatency := first.Sub(fourth.readyT)
	testutil.Eventually(t, 15*time.Second, "the fourth agent serving a share", func() bool {
		n, _ := l.served(fourth.runID)
		return n >= 20
	})
	l.finish()

	total, ok, crashed := l.total.Load(), l.ok.Load(), l.crashed.Load()
	l.mu.Lock()
	other := l.other
	l.mu.Unlock()
	s := app.Stats().Pool
	msg := fmt.Sprintf("calls=%d ok=%d crashed=%d other=%d retries=%d (load; plus 2 probes on the victim: ErrWorkerCrashed, retried ok) | killed agent: out of rotation %s, removed %s, its Python gone %s (served %d) | 4th agent: first call %s after its ready line (poll interval %s)",
		total, ok, crashed, len(other), s.Retries, outOfRotation.Round(time.Millisecond), removed.Round(time.Millisecond), pythonGone.Round(time.Millisecond), victimServed,
		joinLatency.Round(time.Millisecond), interval)
	t.Log(msg)
	fmt.Println("REMOTE-TEST:", msg)
	for i, err := range other {
		if i < 5 {
			t.Errorf("call failed with neither success nor ErrWorkerCrashed: %v", err)
		}
	}
	if lost := total - ok - crashed - int64(len(other)); lost != 0 {
		t.Errorf("%d calls lost (neither answered nor failed)", lost)
	}
	if joinLatency > interval+2*time.Second {
		t.Errorf("the fourth agent took its first call %s after it was ready; want within one poll interval (%s) plus connection time", joinLatency, interval)
	}

	// Stop everything: the host, then the agents (SIGTERM: their ordered stop).
	stopCtx, stopCancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer stopCancel()
	if _, err := app.Stop(stopCtx); err != nil {
		t.Errorf("host Stop: %v", err)
	}
	for _, a := range append(agents[1:], fourth) {
		if err := a.cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Errorf("SIGTERM agent %s: %v", a.addr, err)
		}
	}
	for _, a := range append(agents[1:], fourth) {
		select {
		case <-a.exited:
			if code := a.cmd.ProcessState.ExitCode(); code != 0 {
				t.Errorf("agent %s exited with %d; stderr:\n%s", a.addr, code, a.stderr.String())
			}
		case <-time.After(20 * time.Second):
			t.Errorf("agent %s did not stop within 20 s of SIGTERM", a.addr)
		}
	}
	for _, run := range []string{app.RunID(), agents[0].runID, agents[1].runID, agents[2].runID, fourth.runID} {
		if left := testutil.RunIDProcesses(t, run); len(left) > 0 {
			t.Errorf("run %s: %d processes alive after everything stopped: %+v", run, len(left), left)
		}
	}
}

// startHost starts a host App whose workers are the agents src lists
// (discovery polled every interval; 0: the default). The test's cleanup
// stops it; stopping it earlier is fine (Stop again returns at once).
func startHost(t *testing.T, src discovery.Source, interval time.Duration, tokenFile string) *snakepit.App {
	t.Helper()
	app, err := snakepit.New(snakepit.Config{
		Discovery: src, DiscoveryInterval: interval,
		Remote:       remote.Options{TokenFile: tokenFile, HealthInterval: 500 * time.Millisecond},
		RegistryPath: filepath.Join(t.TempDir(), "host.db"), Logger: testutil.Logger(),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := app.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = app.Stop(context.Background()) })
	return app
}
