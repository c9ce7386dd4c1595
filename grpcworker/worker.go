// Package grpcworker is the Python gRPC worker type: it spawns one Python
// process per lifetime, waits for its handshake, calls its tools over gRPC,
// watches its health, and stops and reaps it.
//
// Contract (DESIGN §4–§5): argv never goes through a shell and carries the
// run id; the auth token travels only in the environment; the process leads
// its own process group and gets SIGTERM when the host dies (forked from a
// thread that never exits, see internal/spawn); stop is SIGTERM to the group,
// a grace period, SIGKILL to the group; Serve returns only after the process
// is reaped and any group member it left behind is killed. A lifetime also
// ends when its health pings fail, when it cannot answer after a call's
// deadline (hung), or by plan when its recycle quota or age is reached.
package grpcworker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/snakepit-go/snakepit/bridge/pb"
	"github.com/snakepit-go/snakepit/internal/auth"
	"github.com/snakepit-go/snakepit/worker"
)

// Worker is one supervised Python process slot. It implements worker.Worker.
type Worker struct {
	spec worker.Spec
	f    *Factory
	log  *slog.Logger

	mu  sync.Mutex
	cur *lifetime // set between Ready and the start of the stop
}

// lifetime is one process incarnation after its handshake.
type lifetime struct {
	p      *process
	target string // the worker's gRPC address
	conn   *grpc.ClientConn
	client pb.WorkerServiceClient
	tools  []worker.ToolSpec
	kill   chan string // Kill requests; buffered 1

	recycle chan string // planned end requested (quota reached); buffered 1

	mu       sync.Mutex
	reason   string // why the host ended it, if it did
	inflight int
	served   int
	draining bool
	drained  chan struct{} // closed once draining with no call in flight
}

// begin admits a call to this lifetime; false once it is draining for a
// recycle (the caller answers ErrWorkerUnavailable: nothing was sent).
func (lt *lifetime) begin() bool {
	lt.mu.Lock()
	defer lt.mu.Unlock()
	if lt.draining {
		return false
	}
	lt.inflight++
	return true
}

// end finishes an admitted call; quota > 0 requests a recycle once reached.
func (lt *lifetime) end(quota int) {
	lt.mu.Lock()
	defer lt.mu.Unlock()
	lt.inflight--
	lt.served++
	if quota > 0 && lt.served == quota {
		// Stop admitting now, not when supervise gets to it: a call admitted
		// in between would overrun the quota.
		lt.draining = true
		select {
		case lt.recycle <- fmt.Sprintf("served %d requests", quota):
		default:
		}
	}
	if lt.draining && lt.inflight == 0 {
		close(lt.drained)
	}
}

// drain stops admitting calls; the channel closes when none is in flight.
func (lt *lifetime) drain() <-chan struct{} {
	lt.mu.Lock()
	defer lt.mu.Unlock()
	if !lt.draining {
		lt.draining = true
		if lt.inflight == 0 {
			close(lt.drained)
		}
	}
	return lt.drained
}

var _ worker.Worker = (*Worker)(nil)

// ID implements worker.Worker.
func (w *Worker) ID() string { return w.spec.ID }

func (w *Worker) String() string { return "grpcworker " + w.spec.ID }

// PID is the current process id, 0 when none is ready.
func (w *Worker) PID() int {
	if lt := w.current(); lt != nil {
		return lt.p.pid
	}
	return 0
}

// Target is the current process's gRPC address ("" when none is ready);
// for diagnostics and tests, calls need the run's token.
func (w *Worker) Target() string {
	if lt := w.current(); lt != nil {
		return lt.target
	}
	return ""
}

func (w *Worker) current() *lifetime {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.cur
}

func (w *Worker) setCurrent(lt *lifetime) {
	w.mu.Lock()
	w.cur = lt
	w.mu.Unlock()
}

// Kill implements worker.Worker: the current process group is killed at once
// and the reason is recorded in the lifetime's CrashError.
func (w *Worker) Kill(reason string) {
	if lt := w.current(); lt != nil {
		select {
		case lt.kill <- reason:
		default:
		}
	}
}

// Serve implements suture.Service: one call is one process lifetime.
func (w *Worker) Serve(ctx context.Context) error {
	w.spec.Events.Starting(w.spec.ID)
	lt, err := w.start(ctx)
	if err != nil {
		if ctx.Err() != nil {
			// Stopped while starting: a requested stop, not a failure.
			w.spec.Events.Exited(w.spec.ID, nil)
			return nil
		}
		w.log.Error("worker failed to start", "err", err)
		w.spec.Events.Exited(w.spec.ID, err)
		return err
	}
	w.setCurrent(lt)
	w.log.Info("worker ready", "pid", lt.p.pid, "tools", len(lt.tools))
	w.spec.Events.Ready(w.spec.ID, worker.Info{PID: lt.p.pid, Tools: lt.tools})
	err = w.supervise(ctx, lt)
	w.finish(lt)
	w.spec.Events.Exited(w.spec.ID, err)
	if err != nil {
		w.log.Warn("worker exited", "pid", lt.p.pid, "err", err)
	}
	return err
}

// finish releases what a lifetime holds once its process is reaped.
func (w *Worker) finish(lt *lifetime) {
	w.setCurrent(nil)
	_ = lt.conn.Close()
	w.unregister()
}

func (w *Worker) unregister() {
	if r := w.f.opts.Recorder; r != nil {
		if err := r.Unregister(w.spec.ID); err != nil {
			w.log.Warn("cannot remove the worker's registry record", "err", err)
		}
	}
}

func (w *Worker) command() *exec.Cmd {
	o := &w.f.opts
	args := []string{"-m", "snakepit_bridge.server",
		"--adapter", o.Adapter,
		"--port", "0",
		"--worker-id", w.spec.ID,
		"--snakepit-run-id", w.spec.RunID,
	}
	if addr := o.bridgeAddress(); addr != "" {
		args = append(args, "--bridge-address", addr)
	}
	args = append(args, o.ExtraArgs...)
	cmd := exec.Command(o.Python, args...)
	cmd.Env = w.environ()
	return cmd
}

// threadDefaults keep numeric libraries from starting one thread per core
// in every worker; Options.Env overrides them.
var threadDefaults = []string{"OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS", "VECLIB_MAXIMUM_THREADS"}

func (w *Worker) environ() []string {
	o := &w.f.opts
	env := map[string]string{}
	var order []string
	set := func(k, v string) {
		if _, ok := env[k]; !ok {
			order = append(order, k)
		}
		env[k] = v
	}
	for _, kv := range os.Environ() {
		if k, v, ok := strings.Cut(kv, "="); ok {
			set(k, v)
		}
	}
	for _, k := range threadDefaults {
		set(k, "1")
	}
	set("PYTHONUNBUFFERED", "1")
	for k, v := range o.Env {
		set(k, v)
	}
	path := []string{w.f.pkgDir}
	path = append(path, o.PythonPath...)
	if existing := env["PYTHONPATH"]; existing != "" {
		path = append(path, existing)
	}
	set("PYTHONPATH", strings.Join(path, string(os.PathListSeparator)))
	set("SNAKEPIT_RUN_ID", w.spec.RunID)
	set("SNAKEPIT_WORKER_ID", w.spec.ID)
	set(auth.EnvToken, auth.Reveal(o.Token))
	out := make([]string, 0, len(order))
	for _, k := range order {
		out = append(out, k+"="+env[k])
	}
	return out
}

// start spawns the process, waits for its handshake and connects. On any
// failure the process is already reaped and its record removed.
func (w *Worker) start(ctx context.Context) (*lifetime, error) {
	o := &w.f.opts
	if r := o.Recorder; r != nil {
		if err := r.Reserve(w.spec.ID); err != nil {
			return nil, &worker.StartupError{WorkerID: w.spec.ID, Cause: fmt.Errorf("cannot reserve a registry record: %w", err),
				Hint: "the process registry is unavailable; no process was started"}
		}
	}
	p, err := startProcess(w.command(), w.log)
	if err != nil {
		w.unregister()
		return nil, &worker.StartupError{WorkerID: w.spec.ID, Cause: fmt.Errorf("cannot start %s: %w", o.Python, err),
			Hint: "check Config.Python / SNAKEPIT_PYTHON"}
	}
	if r := o.Recorder; r != nil {
		if err := r.Activate(w.spec.ID, p.pid); err != nil {
			// The reserved record and the run id in argv still let the
			// reaper and the cleanup find this process.
			w.log.Warn("cannot record the worker's pid", "pid", p.pid, "err", err)
		}
	}
	lt, err := w.handshake(ctx, p)
	if err != nil {
		if ctx.Err() != nil {
			p.terminate(o.StopGrace)
		} else {
			p.kill()
		}
		w.unregister()
		return nil, err
	}
	return lt, nil
}

func (w *Worker) startupError(p *process, cause error, hint string) error {
	return &worker.StartupError{WorkerID: w.spec.ID, PID: p.pid, Cause: cause, Stderr: p.stderrTail(500 * time.Millisecond), Hint: hint}
}

func (w *Worker) handshake(ctx context.Context, p *process) (*lifetime, error) {
	o := &w.f.opts
	deadline := time.Now().Add(o.StartupTimeout)
	timer := time.NewTimer(o.StartupTimeout)
	defer timer.Stop()
	var line string
	select {
	case line = <-p.handshake:
	case <-p.exited:
		code, sig := p.exitDescription()
		cause := fmt.Errorf("the process exited with status %d before its handshake", code)
		if sig != "" {
			cause = fmt.Errorf("the process was killed by %s before its handshake", sig)
		}
		return nil, w.startupError(p, cause, startupHint(p.stderrTail(0)))
	case <-timer.C:
		return nil, w.startupError(p, fmt.Errorf("no handshake line on stdout within %s", o.StartupTimeout),
			"the adapter's setup may be slow (raise StartupTimeout) or the process is stuck; see its stderr above")
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	hs, err := ParseHandshake(line)
	if err != nil {
		return nil, w.startupError(p, err, "the worker must print exactly one handshake line on stdout; adapters must log to stderr")
	}
	conn, err := grpc.NewClient(hs.Target(),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithPerRPCCredentials(auth.PerRPCCredentials(o.Token)),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(o.MaxMessageBytes), grpc.MaxCallSendMsgSize(o.MaxMessageBytes)),
	)
	if err != nil {
		return nil, w.startupError(p, fmt.Errorf("cannot create a gRPC client for %s: %w", hs.Target(), err), "")
	}
	client := pb.NewWorkerServiceClient(conn)
	rctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	// A process dying while we wait on RPCs must end the wait at once.
	go func() {
		select {
		case <-p.exited:
			cancel()
		case <-rctx.Done():
		}
	}()
	if _, err := client.Ping(rctx, &pb.PingRequest{Message: "hello"}, grpc.WaitForReady(true)); err != nil {
		_ = conn.Close()
		return nil, w.startupError(p, fmt.Errorf("first Ping failed: %w", err), "")
	}
	desc, err := client.DescribeTools(rctx, &pb.DescribeToolsRequest{})
	if err != nil {
		_ = conn.Close()
		return nil, w.startupError(p, fmt.Errorf("DescribeTools failed: %w", err), "")
	}
	return &lifetime{p: p, target: hs.Target(), conn: conn, client: client, tools: toolSpecsFromPB(desc.GetTools()),
		kill: make(chan string, 1), recycle: make(chan string, 1), drained: make(chan struct{})}, nil
}

// startupHint turns the usual failures into the next thing to do.
func startupHint(stderr []string) string {
	all := strings.Join(stderr, "\n")
	switch {
	case strings.Contains(all, "No module named 'snakepit_bridge"):
		return "the snakepit_bridge package is not importable; check PackageDir/PYTHONPATH"
	case strings.Contains(all, "No module named 'grpc'") || strings.Contains(all, "No module named 'google"):
		return "this interpreter lacks grpcio/protobuf; install them or set SNAKEPIT_PYTHON"
	case strings.Contains(all, "cannot load adapter"):
		return "check Config.Adapter (\"package.module.Class\") and that its module is on PythonPath"
	}
	return "see the worker's stderr above"
}

// supervise runs until the lifetime ends; nil means a requested stop.
func (w *Worker) supervise(ctx context.Context, lt *lifetime) error {
	o := &w.f.opts
	var tick <-chan time.Time
	if o.HealthInterval > 0 {
		t := time.NewTicker(o.HealthInterval)
		defer t.Stop()
		tick = t.C
	}
	var aged <-chan time.Time
	if o.RecycleAfter > 0 {
		t := time.NewTimer(o.RecycleAfter)
		defer t.Stop()
		aged = t.C
	}
	misses := 0
	for {
		select {
		case <-ctx.Done():
			w.setCurrent(nil)
			lt.p.terminate(o.StopGrace)
			return nil
		case why := <-lt.recycle:
			return w.recycle(ctx, lt, why)
		case <-aged:
			return w.recycle(ctx, lt, fmt.Sprintf("reached its maximum age of %s", o.RecycleAfter))
		case <-lt.p.exited:
			w.setCurrent(nil)
			return lt.crashError(w.spec.ID)
		case reason := <-lt.kill:
			w.setCurrent(nil)
			lt.setReason(reason)
			w.log.Warn("killing worker", "pid", lt.p.pid, "reason", reason)
			lt.p.kill()
			return lt.crashError(w.spec.ID)
		case <-tick:
			pctx, cancel := context.WithTimeout(ctx, o.HealthTimeout)
			_, err := lt.client.Ping(pctx, &pb.PingRequest{Message: "health"})
			cancel()
			if err == nil || ctx.Err() != nil {
				misses = 0
				continue
			}
			misses++
			w.log.Warn("worker health check failed", "pid", lt.p.pid, "misses", misses, "of", o.HealthMisses, "err", err)
			if misses >= o.HealthMisses {
				w.setCurrent(nil)
				lt.setReason(fmt.Sprintf("health check failed %d times in a row", misses))
				lt.p.kill()
				return lt.crashError(w.spec.ID)
			}
		}
	}
}

// recycle ends a lifetime by plan: no new calls, in-flight calls finish
// (they have their own deadlines), then the graceful stop. A stop of the
// App during the wait just stops it.
func (w *Worker) recycle(ctx context.Context, lt *lifetime, why string) error {
	w.setCurrent(nil)
	w.log.Info("recycling worker", "pid", lt.p.pid, "reason", why)
	select {
	case <-lt.drain():
	case <-ctx.Done():
	case <-lt.p.exited:
		return lt.crashError(w.spec.ID)
	}
	lt.p.terminate(w.f.opts.StopGrace)
	if ctx.Err() != nil {
		return nil
	}
	return &worker.RecycledError{WorkerID: w.spec.ID, PID: lt.p.pid, Reason: why}
}

func (lt *lifetime) setReason(r string) {
	lt.mu.Lock()
	lt.reason = r
	lt.mu.Unlock()
}

// crashError describes the ended process; valid once p.exited is closed.
func (lt *lifetime) crashError(id string) *worker.CrashError {
	lt.mu.Lock()
	reason := lt.reason
	lt.mu.Unlock()
	code, sig := lt.p.exitDescription()
	return &worker.CrashError{WorkerID: id, PID: lt.p.pid, ExitCode: code, Signal: sig, Reason: reason}
}

// crashWait is how long a failed RPC waits for the reaper to confirm that
// the process died, so the caller gets the exit status rather than a
// transport error.
const crashWait = 2 * time.Second

// callError maps an RPC failure to the caller's error: its own ctx error, a
// CrashError when the process died under the call, or a wrapped status.
func (w *Worker) callError(ctx context.Context, lt *lifetime, tool string, err error) error {
	select {
	case <-lt.p.exited:
		return lt.crashError(w.spec.ID)
	default:
	}
	if ctx.Err() != nil {
		return w.afterDeadline(ctx.Err(), lt, tool)
	}
	switch status.Code(err) {
	case codes.Unavailable, codes.Canceled, codes.Internal, codes.Unknown:
		t := time.NewTimer(crashWait)
		defer t.Stop()
		select {
		case <-lt.p.exited:
			return lt.crashError(w.spec.ID)
		case <-t.C:
		case <-ctx.Done():
			return ctx.Err()
		}
	case codes.DeadlineExceeded:
		return w.afterDeadline(context.DeadlineExceeded, lt, tool)
	case codes.ResourceExhausted:
		return fmt.Errorf("%w: call to %q on worker %s: %s; raise Config.MaxMessageBytes (now %d bytes) or pass large values in smaller pieces",
			worker.ErrMessageTooLarge, tool, w.spec.ID, status.Convert(err).Message(), w.f.opts.MaxMessageBytes)
	}
	return fmt.Errorf("snakepit: worker %s: call to %q failed: %w", w.spec.ID, tool, err)
}

// afterDeadline decides what a call that ran out of time means. gRPC gives
// up on the client side at the deadline whatever Python is doing, so the
// worker must prove it is still responsive: a worker that cannot answer a
// ping within HungGrace is hung (a wedged interpreter, a stopped process)
// and is killed, so its Starter restarts it; the caller gets
// ErrWorkerTimeout instead of its own ctx error.
func (w *Worker) afterDeadline(ctxErr error, lt *lifetime, tool string) error {
	grace := w.f.opts.HungGrace
	pctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	_, err := lt.client.Ping(pctx, &pb.PingRequest{Message: "after-deadline"})
	if err == nil {
		return ctxErr
	}
	select {
	case <-lt.p.exited:
		return lt.crashError(w.spec.ID)
	default:
	}
	reason := fmt.Sprintf("call %q ran out of time and the worker did not answer a ping within %s; considered hung", tool, grace)
	w.Kill(reason)
	return fmt.Errorf("%w: worker %s: %s (it is being restarted): %w", worker.ErrWorkerTimeout, w.spec.ID, reason, ctxErr)
}

// lifetimeFor admits a call to the current lifetime; the caller must call
// lt.end when the call is over.
func (w *Worker) lifetimeFor(tool string) (*lifetime, error) {
	lt := w.current()
	if lt == nil || !lt.begin() {
		return nil, fmt.Errorf("%w: worker %s is not ready (starting, restarting or stopped); tool %q", worker.ErrWorkerUnavailable, w.spec.ID, tool)
	}
	return lt, nil
}

func request(call *worker.Call) *pb.ExecuteToolRequest {
	args := []byte(call.Args)
	if len(args) == 0 {
		args = []byte("{}")
	}
	return &pb.ExecuteToolRequest{
		ToolName:   call.Tool,
		ArgsJson:   args,
		BinaryArgs: call.Binary,
		SessionId:  call.SessionID,
		RequestId:  call.RequestID,
	}
}

// Execute implements worker.Worker.
func (w *Worker) Execute(ctx context.Context, call *worker.Call) (*worker.Result, error) {
	lt, err := w.lifetimeFor(call.Tool)
	if err != nil {
		return nil, err
	}
	defer lt.end(w.f.opts.RecycleAfterRequests)
	resp, err := lt.client.ExecuteTool(ctx, request(call))
	if err != nil {
		return nil, w.callError(ctx, lt, call.Tool, err)
	}
	if te := resp.GetError(); te != nil {
		return nil, w.toolError(lt, call.Tool, te)
	}
	res := &worker.Result{}
	switch v := resp.GetResult().GetValue().(type) {
	case *pb.Payload_Binary:
		res.Binary = v.Binary
		if res.Binary == nil {
			res.Binary = []byte{}
		}
	case *pb.Payload_Json:
		res.JSON = v.Json
	default:
		res.JSON = []byte("null")
	}
	return res, nil
}

// ExecuteStream implements worker.Worker.
func (w *Worker) ExecuteStream(ctx context.Context, call *worker.Call, yield func(worker.Chunk) error) error {
	lt, err := w.lifetimeFor(call.Tool)
	if err != nil {
		return err
	}
	defer lt.end(w.f.opts.RecycleAfterRequests)
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := lt.client.ExecuteStreamingTool(sctx, request(call))
	if err != nil {
		return w.callError(ctx, lt, call.Tool, err)
	}
	for {
		msg, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return fmt.Errorf("snakepit: worker %s closed the stream of %q without its final marker", w.spec.ID, call.Tool)
		}
		if err != nil {
			return w.callError(ctx, lt, call.Tool, err)
		}
		if msg.GetIsFinal() {
			if te := msg.GetError(); te != nil {
				return w.toolError(lt, call.Tool, te)
			}
			return nil
		}
		c := worker.Chunk{Seq: msg.GetSeq()}
		switch v := msg.GetData().GetValue().(type) {
		case *pb.Payload_Binary:
			c.Binary = v.Binary
		case *pb.Payload_Json:
			c.JSON = v.Json
		default:
			c.JSON = []byte("null")
		}
		if err := yield(c); err != nil {
			return err
		}
	}
}

func (w *Worker) toolError(lt *lifetime, tool string, te *pb.ToolError) error {
	if te.GetType() == "UnknownTool" {
		names := make([]string, 0, len(lt.tools))
		for _, t := range lt.tools {
			names = append(names, t.Name)
		}
		return &worker.UnknownToolError{Tool: tool, Available: names}
	}
	return &worker.ToolError{Tool: tool, WorkerID: w.spec.ID, Type: te.GetType(), Message: te.GetMessage(), Traceback: te.GetTraceback()}
}

func toolSpecsFromPB(in []*pb.ToolSpec) []worker.ToolSpec {
	out := make([]worker.ToolSpec, 0, len(in))
	for _, t := range in {
		ts := worker.ToolSpec{Name: t.GetName(), Description: t.GetDescription(), SupportsStreaming: t.GetSupportsStreaming()}
		for _, p := range t.GetParameters() {
			ts.Parameters = append(ts.Parameters, worker.ParamSpec{
				Name: p.GetName(), Type: p.GetType(), Required: p.GetRequired(),
				Default: p.GetDefaultJson(), Description: p.GetDescription(),
			})
		}
		out = append(out, ts)
	}
	return out
}
