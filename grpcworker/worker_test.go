package grpcworker

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/snakepit-go/snakepit/bridge/pb"
	"github.com/snakepit-go/snakepit/childproc"
	"github.com/snakepit-go/snakepit/internal/auth"
	"github.com/snakepit-go/snakepit/internal/proc"
	"github.com/snakepit-go/snakepit/internal/testutil"
	"github.com/snakepit-go/snakepit/worker"
)

func TestMain(m *testing.M) {
	if os.Getenv(stubWorkerEnv) == "1" {
		stubWorkerMain() // this process is a worker started by a benchmark
	}
	testutil.Main(m)
}

// recorder collects lifecycle events in order, and passes them on to next
// (a pool) when set.
type recorder struct {
	mu     sync.Mutex
	events []string
	info   worker.Info
	exits  []error
	next   worker.Events
}

func (r *recorder) Starting(id string) {
	r.add("starting")
	if r.next != nil {
		r.next.Starting(id)
	}
}
func (r *recorder) Ready(id string, info worker.Info) {
	r.mu.Lock()
	r.info = info
	r.mu.Unlock()
	r.add("ready")
	if r.next != nil {
		r.next.Ready(id, info)
	}
}
func (r *recorder) Exited(id string, err error) {
	r.mu.Lock()
	r.exits = append(r.exits, err)
	r.mu.Unlock()
	r.add("exited")
	if r.next != nil {
		r.next.Exited(id, err)
	}
}
func (r *recorder) Recycled(id string, info worker.Info, reason string) {
	r.add("replaced")
	r.add("replaced:" + reason)
	if r.next != nil {
		r.next.Recycled(id, info, reason)
	}
}
func (r *recorder) add(s string) {
	r.mu.Lock()
	r.events = append(r.events, s)
	r.mu.Unlock()
}
func (r *recorder) has(s string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, e := range r.events {
		if e == s {
			return true
		}
	}
	return false
}

type memRecorder struct {
	mu    sync.Mutex
	state map[string]string
	pid   map[string]int
}

func (m *memRecorder) Reserve(id string) error { m.set(id, "reserved", 0); return nil }
func (m *memRecorder) Activate(id string, pid int) error {
	m.set(id, "active", pid)
	return nil
}
func (m *memRecorder) Unregister(id string) error { m.set(id, "", 0); return nil }
func (m *memRecorder) set(id, s string, pid int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.state == nil {
		m.state, m.pid = map[string]string{}, map[string]int{}
	}
	m.state[id], m.pid[id] = s, pid
}
func (m *memRecorder) get(id string) (string, int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.state[id], m.pid[id]
}

type fixture struct {
	w      *Worker
	ev     *recorder
	rec    *memRecorder
	cancel context.CancelFunc
	done   chan error
}

func startWorker(t *testing.T, mutate func(*Options)) *fixture {
	t.Helper()
	return startWorkerCapacity(t, 0, mutate)
}

// startWorkerCapacity is startWorker with the Spec's Capacity (0: unset).
func startWorkerCapacity(t *testing.T, capacity int, mutate func(*Options)) *fixture {
	t.Helper()
	return startWorkerEvents(t, capacity, nil, mutate)
}

// startWorkerEvents is startWorkerCapacity whose lifecycle events also go
// to next (nil: only to the fixture's recorder).
func startWorkerEvents(t *testing.T, capacity int, next worker.Events, mutate func(*Options)) *fixture {
	t.Helper()
	opts := Options{Adapter: "snakepit_bridge.examples.showcase.ShowcaseAdapter", Token: auth.NewToken(),
		PackageDir: t.TempDir(), StopGrace: 2 * time.Second}
	if mutate != nil {
		mutate(&opts)
	}
	rec := &memRecorder{}
	f, err := NewFactory(opts)
	if err != nil {
		t.Fatal(err)
	}
	ev := &recorder{next: next}
	runID := "test-" + strings.ToLower(auth.Reveal(auth.NewToken())[:8])
	w, err := f.NewWorker(worker.Spec{ID: "w0", RunID: runID, Capacity: capacity, Events: ev, Logger: testutil.Logger(),
		Launcher: &childproc.Launcher{RunID: runID, WorkerID: "w0", Recorder: rec, Logger: testutil.Logger()}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	fx := &fixture{w: w.(*Worker), ev: ev, rec: rec, cancel: cancel, done: make(chan error, 1)}
	go func() { fx.done <- w.Serve(ctx) }()
	t.Cleanup(func() { fx.stop(t) })
	return fx
}

func (fx *fixture) stop(t *testing.T) error {
	fx.cancel()
	select {
	case err := <-fx.done:
		fx.done <- err // keep it for a second stop
		return err
	case <-time.After(30 * time.Second):
		t.Fatal("Serve did not return within 30 s of cancellation")
		return nil
	}
}

func (fx *fixture) waitReady(t *testing.T) {
	testutil.Eventually(t, 30*time.Second, "worker ready", func() bool { return fx.ev.has("ready") })
}

// waitReadyOrFail is waitReady that fails at once, with the error, when
// the lifetime ends first (a startup failure).
func (fx *fixture) waitReadyOrFail(t *testing.T) {
	t.Helper()
	testutil.Eventually(t, 30*time.Second, "worker ready or exited", func() bool { return fx.ev.has("ready") || fx.ev.has("exited") })
	if !fx.ev.has("ready") {
		err := <-fx.done
		fx.done <- err
		t.Fatalf("worker did not start: %v", err)
	}
}

func TestServeSpawnsCallsAndReapsOnStop(t *testing.T) {
	fx := startWorker(t, nil)
	fx.waitReady(t)
	pid := fx.w.PID()
	if st, rpid := fx.rec.get("w0"); st != "active" || rpid != pid {
		t.Fatalf("registry record = %s/%d, want active/%d", st, rpid, pid)
	}
	if !proc.CarriesRunID(pid, fx.w.spec.RunID) {
		t.Fatalf("worker %d does not carry its run id in argv/environ", pid)
	}
	env, _ := proc.Environ(pid)
	for _, kv := range env {
		if strings.HasPrefix(kv, "OMP_NUM_THREADS=") && kv != "OMP_NUM_THREADS=1" {
			t.Errorf("thread limit not applied: %s", kv)
		}
	}
	cmdline, _ := proc.Cmdline(pid)
	if strings.Contains(strings.Join(cmdline, " "), auth.Reveal(fx.w.f.opts.Token)) {
		t.Fatal("the auth token appears in argv")
	}
	res, err := fx.w.Execute(context.Background(), &worker.Call{Tool: "add", Args: []byte(`{"a":1,"b":2}`)})
	if err != nil || string(res.JSON) != "3" {
		t.Fatalf("add = %v, %v", res, err)
	}
	st, _ := proc.ReadStat(pid)
	if st.PGID != pid {
		t.Fatalf("worker pgid %d, want its own group %d", st.PGID, pid)
	}
	if err := fx.stop(t); err != nil {
		t.Fatalf("Serve returned %v on a requested stop", err)
	}
	if proc.Alive(pid) {
		t.Fatalf("pid %d alive after Serve returned", pid)
	}
	if st, _ := fx.rec.get("w0"); st != "" {
		t.Fatalf("registry record still %q after reap", st)
	}
	if _, err := fx.w.Execute(context.Background(), &worker.Call{Tool: "ping"}); !errors.Is(err, worker.ErrWorkerUnavailable) {
		t.Fatalf("Execute after stop: %v", err)
	}
}

func TestKillRecordsReasonInCrashError(t *testing.T) {
	fx := startWorker(t, nil)
	fx.waitReady(t)
	fx.w.Kill("test says so")
	select {
	case err := <-fx.done:
		var ce *worker.CrashError
		if !errors.As(err, &ce) || ce.Reason != "test says so" || ce.Signal != syscall.SIGKILL {
			t.Fatalf("Serve returned %v, want a CrashError with the reason and SIGKILL", err)
		}
		fx.done <- err
	case <-time.After(10 * time.Second):
		t.Fatal("Kill did not end the lifetime")
	}
}

func TestStoppedWorkerIsRestartedAfterMissedHealthChecks(t *testing.T) {
	fx := startWorker(t, func(o *Options) {
		o.HealthInterval = 100 * time.Millisecond
		o.HealthTimeout = 100 * time.Millisecond
		o.HealthMisses = 3
	})
	fx.waitReady(t)
	pid := fx.w.PID()
	// A stopped process answers nothing: exactly a hung worker.
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-fx.done:
		var ce *worker.CrashError
		if !errors.As(err, &ce) || !strings.Contains(ce.Reason, "health check failed 3 times") {
			t.Fatalf("Serve returned %v, want a health-check CrashError", err)
		}
		fx.done <- err
	case <-time.After(15 * time.Second):
		t.Fatal("hung worker was not killed")
	}
	if proc.Alive(pid) {
		t.Fatal("hung worker still alive")
	}
}

func TestStartupFailureQuotesStderr(t *testing.T) {
	fx := startWorker(t, func(o *Options) { o.Adapter = "nowhere_to_be_found.Adapter" })
	select {
	case err := <-fx.done:
		var se *worker.StartupError
		if !errors.As(err, &se) {
			t.Fatalf("want StartupError, got %v", err)
		}
		if !strings.Contains(err.Error(), "nowhere_to_be_found") || !strings.Contains(err.Error(), "ModuleNotFoundError") {
			t.Fatalf("error does not quote Python's ImportError:\n%v", err)
		}
		if se.Kind != worker.StartupAdapter {
			t.Fatalf("an adapter that cannot be imported is classified %v, want adapter", se.Kind)
		}
		fx.done <- err
	case <-time.After(20 * time.Second):
		t.Fatal("startup failure not reported")
	}
	if st, _ := fx.rec.get("w0"); st != "" {
		t.Fatalf("record %q left after a failed start", st)
	}
}

func TestCrashMidCallReturnsCrashErrorWithExitStatus(t *testing.T) {
	fx := startWorker(t, nil)
	fx.waitReady(t)
	_, err := fx.w.Execute(context.Background(), &worker.Call{Tool: "crash", Args: []byte(`{"code":9}`)})
	var ce *worker.CrashError
	if !errors.As(err, &ce) || ce.ExitCode != 9 {
		t.Fatalf("want CrashError exit 9, got %v", err)
	}
}

func TestDeadlineCancelsPythonTool(t *testing.T) {
	fx := startWorker(t, nil)
	fx.waitReady(t)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	_, err := fx.w.Execute(ctx, &worker.Call{Tool: "hang"})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("want DeadlineExceeded, got %v", err)
	}
	testutil.Eventually(t, 5*time.Second, "Python observed the cancellation", func() bool {
		res, err := fx.w.Execute(context.Background(), &worker.Call{Tool: "counters"})
		var c struct {
			CancelledHangs int `json:"cancelled_hangs"`
		}
		return err == nil && res.Decode(&c) == nil && c.CancelledHangs == 1
	})
}

func TestWorkerRejectsCallsWithoutTheToken(t *testing.T) {
	fx := startWorker(t, nil)
	fx.waitReady(t)
	for name, opts := range map[string][]grpc.DialOption{
		"no token":    nil,
		"wrong token": auth.ClientOptions(auth.NewToken()),
	} {
		opts = append(opts, grpc.WithTransportCredentials(insecure.NewCredentials()))
		conn, err := grpc.NewClient(fx.w.target(), opts...)
		if err != nil {
			t.Fatal(err)
		}
		_, err = pb.NewWorkerServiceClient(conn).ExecuteTool(context.Background(), &pb.ExecuteToolRequest{ToolName: "ping"})
		_ = conn.Close()
		if status.Code(err) != codes.Unauthenticated {
			t.Fatalf("%s: want Unauthenticated, got %v", name, err)
		}
	}
}

// A worker that prints its token and dies at startup (here an
// interpreter that echoes it instead of running the server: the bridge itself drops the token from its
// environment before adapter code runs): the StartupError (its quoted
// stderr tail) and so every log of it carry no token.
func TestStartupErrorCarriesNoToken(t *testing.T) {
	real, err := FindPython("")
	if err != nil {
		t.Skip(err)
	}
	py := filepath.Join(t.TempDir(), "python")
	if err := os.WriteFile(py, []byte(`#!/bin/sh
case "$3" in snakepit_bridge.server) echo "leak $SNAKEPIT_TOKEN" >&2; exit 3;; esac
exec '`+real+`' "$@"
`), 0o755); err != nil {
		t.Fatal(err)
	}
	tok := auth.NewToken()
	fx := startWorker(t, func(o *Options) { o.Python, o.Token = py, tok })
	select {
	case err := <-fx.done:
		fx.done <- err
		var se *worker.StartupError
		if !errors.As(err, &se) || !strings.Contains(err.Error(), "leak "+auth.Redacted) {
			t.Fatalf("want a StartupError quoting the redacted line, got %v", err)
		}
		if strings.Contains(err.Error(), auth.Reveal(tok)) || strings.Contains(strings.Join(se.Stderr, "\n"), auth.Reveal(tok)) {
			t.Fatalf("the StartupError carries the token:\n%v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("startup failure not reported")
	}
}

// A batch of no calls has no results and sends nothing (on the wire an
// empty batch would read as one call without arguments).
func TestEmptyBatchHasNoResults(t *testing.T) {
	fx := startWorker(t, func(o *Options) { o.Adapter = "snakepit_bridge.examples.batching.BatchingAdapter" })
	fx.waitReady(t)
	// A cancelled context fails any request: success proves none was sent.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	res, err := fx.w.ExecuteBatch(ctx, "double", nil)
	if err != nil || len(res) != 0 {
		t.Fatalf("empty batch: %d results, %v; want none, nil", len(res), err)
	}
}
