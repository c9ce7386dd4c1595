// Package grpcworker is the Python gRPC worker type: it spawns Python
// processes through childproc, waits for their handshake, calls their tools
// over gRPC, watches their health, and stops and reaps them.
//
// Contract (DESIGN §4–§5): argv never goes through a shell and carries the
// run id; the auth token travels only in the environment; every process is
// started by the worker's childproc.Launcher (registry record, own process
// group, parent-death signal, group-pinned reap). One Serve is one lifetime:
// it ends when the App stops, or when the current process dies, misses its
// health pings, or cannot answer after a call's deadline (hung). Within a
// lifetime the process is replaced by plan — request quota, age, memory
// (RecycleAboveRSS), a sync tool that kept running after its call was
// cancelled, or on request (Replace: a reload) — make-before-break: the
// successor starts while the current process serves and takes over once
// ready; the old one drains with its own health checks, then stops. Serve
// returns only after every process it started is reaped.
//
// # What the Python side imports
//
// The process runs a small -c bootstrap (see bootstrap) rather than
// `python -m snakepit_bridge.server`, so that the host's working directory
// is not on sys.path. sys.path is: the embedded package (Factory's
// unpacked copy of package python), Options.PythonPath, the inherited
// PYTHONPATH, then the interpreter's standard library and site-packages.
//
// # Who imports it
//
// Applications reach this package through the root package snakepit, which
// wraps it and re-exports the types its API returns; the names exported
// here beyond that are seams between snakepit's own packages.
package grpcworker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/snakepit-go/snakepit/bridge/pb"
	"github.com/snakepit-go/snakepit/childproc"
	"github.com/snakepit-go/snakepit/internal/auth"
	"github.com/snakepit-go/snakepit/internal/proc"
	"github.com/snakepit-go/snakepit/internal/wire"
	"github.com/snakepit-go/snakepit/worker"
)

// Worker is one supervised Python process slot. It implements worker.Worker.
type Worker struct {
	spec worker.Spec
	f    *Factory
	log  *slog.Logger
	gate chan struct{} // spec.ReplaceGate, or a private one

	mu       sync.Mutex
	cur      *lifetime          // the lifetime new calls go to; nil when none is ready
	spawning *childproc.Process // the process starting while there is no current one
	seq      int                // lifetimes started, for registry keys of successors

	loopDone chan struct{} // closed when the running lifetime's loop ends; nil before the first
	reqs     chan *replaceReq
	withdraw chan *replaceReq

	retiring sync.WaitGroup // replaced lifetimes still draining
}

// replaceReq is one Replace call waiting for its answer.
type replaceReq struct {
	reason string
	reply  chan error // buffered 1; answered exactly once by the loop
}

// Why a lifetime is replaced by plan; these are the keys of
// Stats.RecycleReasons, so they stay few and fixed.
const (
	reasonRequests = "request quota"
	reasonAge      = "maximum age"
	reasonIgnored  = "tool ignored cancellation"
	reasonMemory   = "memory"
)

// lifetime is one process incarnation after its handshake.
type lifetime struct {
	p      *childproc.Process
	target string // the worker's gRPC address
	conn   *grpc.ClientConn
	client pb.WorkerServiceClient
	tools  []worker.ToolSpec
	quota  int         // calls after which a replacement is asked for; 0: never
	kill   chan string // Kill requests; buffered 1

	replace chan string // planned replacement requested; buffered 1

	mu       sync.Mutex
	reason   string // why the host ended it, if it did
	inflight int
	served   int
	draining bool
	drained  chan struct{} // closed once draining with no call in flight
	over     bool          // finished: conn closed, record removed
}

// begin admits a call to this lifetime; false once it is draining (the
// caller answers ErrWorkerUnavailable: nothing was sent).
func (lt *lifetime) begin() bool {
	lt.mu.Lock()
	defer lt.mu.Unlock()
	if lt.draining {
		return false
	}
	lt.inflight++
	return true
}

// end finishes an admitted call. Reaching the quota asks for a replacement;
// the lifetime keeps serving until its successor is ready, so the quota is
// a point at which replacing starts, not a hard cap.
func (lt *lifetime) end() {
	lt.mu.Lock()
	defer lt.mu.Unlock()
	lt.inflight--
	lt.served++
	if lt.quota > 0 && lt.served == lt.quota {
		lt.requestReplace(reasonRequests)
	}
	if lt.draining && lt.inflight == 0 {
		close(lt.drained)
	}
}

func (lt *lifetime) requestReplace(reason string) {
	select {
	case lt.replace <- reason:
	default:
	}
}

func (lt *lifetime) requestKill(reason string) {
	select {
	case lt.kill <- reason:
	default:
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

// jittered spreads a recycle point over [n, 1.2n], so that workers started
// together (or fed round-robin) do not all reach it at the same moment.
func jittered[T int | time.Duration](n T) T {
	if n <= 0 {
		return n
	}
	return n + T(rand.Int64N(int64(n)/5+1))
}

var _ worker.Worker = (*Worker)(nil)

// ID implements worker.Worker.
func (w *Worker) ID() string { return w.spec.ID }

func (w *Worker) String() string { return "grpcworker " + w.spec.ID }

// PID is the current process id, 0 when none is ready.
func (w *Worker) PID() int {
	if lt := w.current(); lt != nil {
		return lt.p.PID()
	}
	return 0
}

// target is the current process's gRPC address ("" when none is ready);
// for diagnostics and tests, calls need the run's token.
func (w *Worker) target() string {
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

// clearCurrent takes lt out of rotation if it still is the current one.
func (w *Worker) clearCurrent(lt *lifetime) {
	w.mu.Lock()
	if w.cur == lt {
		w.cur = nil
	}
	w.mu.Unlock()
}

// Kill implements worker.Worker: the current process group is killed at once
// and the reason is recorded in the lifetime's CrashError; with no current
// process, the one starting is killed. A replaced process still draining is
// watched by its own health checks.
func (w *Worker) Kill(reason string) {
	w.mu.Lock()
	lt, p := w.cur, w.spawning
	w.mu.Unlock()
	switch {
	case lt != nil:
		lt.requestKill(reason)
	case p != nil:
		w.log.Warn("killing the starting worker process", "pid", p.PID(), "reason", reason)
		p.Signal(syscall.SIGKILL)
	}
}

var _ worker.Replacer = (*Worker)(nil)

// Replace implements worker.Replacer: a new process is started (running the
// adapter's current code: it imports the module afresh) while the current
// one keeps serving; once it is ready it takes every new call and the old
// one drains and stops. It holds a slot of the Spec's ReplaceGate while the
// new process starts. Replace returns nil once the new process took over;
// the new process's *worker.StartupError if it failed to start (the current
// process keeps serving; nothing is retried); an error matching
// worker.ErrWorkerUnavailable if there is no running process, or the
// lifetime ended before the new process took over; ctx.Err() if ctx ended
// first — the request is withdrawn and a new process still starting for
// it alone is stopped.
func (w *Worker) Replace(ctx context.Context, reason string) error {
	w.mu.Lock()
	cur, done := w.cur, w.loopDone
	w.mu.Unlock()
	notRunning := fmt.Errorf("%w: worker %s has no running process to replace", worker.ErrWorkerUnavailable, w.spec.ID)
	if cur == nil || done == nil {
		return notRunning
	}
	r := &replaceReq{reason: reason, reply: make(chan error, 1)}
	select {
	case w.reqs <- r:
	case <-done:
		return notRunning
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-r.reply:
		return err
	case <-ctx.Done():
	}
	select {
	case w.withdraw <- r:
	case err := <-r.reply:
		return err
	case <-done:
	}
	return ctx.Err()
}

// Serve implements suture.Service: one call is one worker lifetime, which
// may span several processes when they are replaced by plan. It returns
// after every process it started is reaped.
func (w *Worker) Serve(ctx context.Context) error {
	defer w.retiring.Wait()
	w.spec.Events.Starting(w.spec.ID)
	lt, err := w.start(ctx, w.spec.ID)
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
	w.mu.Lock()
	w.cur = lt
	w.loopDone = make(chan struct{}) // Replace requests go to this run
	w.mu.Unlock()
	w.log.Info("worker ready", "pid", lt.p.PID(), "tools", len(lt.tools))
	w.spec.Events.Ready(w.spec.ID, worker.Info{PID: lt.p.PID(), Tools: lt.tools})
	err = w.run(ctx, lt)
	w.spec.Events.Exited(w.spec.ID, err)
	if err != nil {
		w.log.Warn("worker exited", "err", err)
	}
	return err
}

// finish releases what a lifetime holds once its process is reaped.
func (w *Worker) finish(lt *lifetime) {
	w.clearCurrent(lt)
	lt.mu.Lock()
	over := lt.over
	lt.over = true
	lt.mu.Unlock()
	if !over {
		_ = lt.conn.Close()
	}
}

// bootstrap starts the worker as `python -m snakepit_bridge.server` would,
// minus the current directory: -m (and -c) put the host's working
// directory first on sys.path, so a directory holding a snakepit_bridge
// package or a module named like the adapter would silently be imported
// instead. -P / PYTHONSAFEPATH would do it but need Python 3.11; this works
// on every version: it drops the empty entry -c adds (absent under
// PYTHONSAFEPATH), leaving sys.path = the embedded package, PythonPath,
// the inherited PYTHONPATH, then the interpreter's own paths and
// site-packages (see environ). The next argument, the module name, stays
// in argv so ps, logs and tests still see "snakepit_bridge.server"; the
// bootstrap replaces it and "-c" with the module's file, as -m would.
const bootstrap = "import sys;sys.path[:1]==['']and sys.path.pop(0);" +
	"import snakepit_bridge.server as m;sys.argv[:2]=[m.__file__];m.main()"

func (w *Worker) command() *exec.Cmd {
	o := &w.f.opts
	args := []string{"-c", bootstrap, "snakepit_bridge.server",
		"--adapter", o.Adapter,
		"--port", "0",
		"--worker-id", w.spec.ID,
		"--snakepit-run-id", w.spec.RunID,
	}
	if addr := o.bridgeAddress(); addr != "" {
		args = append(args, "--bridge-address", addr)
	}
	if w.spec.Capacity > 0 {
		// Python runs that many sync calls at once: the pool never sends more.
		args = append(args, "--max-workers", strconv.Itoa(w.spec.Capacity))
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
	// The host's secrets (auth.SecretEnv) are never copied: the worker,
	// and every process its tools start, would inherit them. The run's
	// own token is set below, on purpose, for the worker alone.
	for _, kv := range os.Environ() {
		if k, v, ok := strings.Cut(kv, "="); ok && !auth.IsSecretEnv(k) {
			set(k, v)
		}
	}
	for _, k := range threadDefaults {
		set(k, "1")
	}
	set("PYTHONUNBUFFERED", "1")
	for k, v := range o.Env {
		if !auth.IsSecretEnv(k) {
			set(k, v)
		}
	}
	// sys.path order: the embedded package first (nothing shadows it), then
	// PythonPath, then the inherited PYTHONPATH. An empty entry means the
	// working directory to Python, so empty entries are dropped.
	var path []string
	for _, p := range append(append([]string{w.f.pkgDir}, o.PythonPath...), filepath.SplitList(env["PYTHONPATH"])...) {
		if p != "" {
			path = append(path, p)
		}
	}
	set("PYTHONPATH", strings.Join(path, string(os.PathListSeparator)))
	set("SNAKEPIT_RUN_ID", w.spec.RunID)
	set("SNAKEPIT_WORKER_ID", w.spec.ID)
	// After Env: the host's StopGrace decides when it SIGKILLs, so Python's
	// grace must follow it, whatever the environment says.
	set("SNAKEPIT_STOP_GRACE_S", strconv.FormatFloat(PythonStopGrace(o.StopGrace).Seconds(), 'f', -1, 64))
	set(auth.EnvToken, auth.Reveal(o.Token))
	out := make([]string, 0, len(order))
	for _, k := range order {
		out = append(out, k+"="+env[k])
	}
	return out
}

// start spawns a process recorded under key, waits for its handshake and
// connects. On any failure the process is already reaped and its record
// removed.
func (w *Worker) start(ctx context.Context, key string) (*lifetime, error) {
	o := &w.f.opts
	handshake := make(chan string, 1)
	first := true
	p, err := w.launcher().Start(w.command(), childproc.Options{Key: key, Stdout: func(line string) {
		if first {
			first = false
			handshake <- line
			return
		}
		// The contract keeps stdout for the handshake; anything else is an
		// adapter printing where it should not.
		w.log.Warn("worker wrote to stdout after the handshake", "line", line)
	}})
	if err != nil {
		se := &worker.StartupError{WorkerID: w.spec.ID, Cause: err}
		if _, short := worker.ResourceLimit(err); short {
			// The hint names the limit (StartupError derives it).
			se.Kind = worker.StartupResource
		}
		switch {
		case errors.Is(err, childproc.ErrRecord):
			se.Hint = "the process registry is unavailable; no process was started"
		case se.Kind == worker.StartupResource:
		default:
			se.Kind, se.Hint = worker.StartupInterpreter, "check Config.Python / SNAKEPIT_PYTHON"
		}
		return nil, se
	}
	w.mu.Lock()
	if w.cur == nil {
		w.spawning = p
	}
	w.mu.Unlock()
	defer func() {
		w.mu.Lock()
		if w.spawning == p {
			w.spawning = nil
		}
		w.mu.Unlock()
	}()
	lt, err := w.handshake(ctx, p, handshake)
	if err != nil {
		if ctx.Err() != nil {
			p.Stop(o.StopGrace)
		} else {
			p.Kill()
		}
		return nil, err
	}
	return lt, nil
}

// launcher is the spec's, or one without a registry for a worker built
// outside an App (tests).
func (w *Worker) launcher() *childproc.Launcher {
	if w.spec.Launcher != nil {
		return w.spec.Launcher
	}
	return &childproc.Launcher{RunID: w.spec.RunID, WorkerID: w.spec.ID, Logger: w.log}
}

// startupError describes a failed start; a process that has already died
// names the signal that ended it, so an outside kill is told from a bug.
func (w *Worker) startupError(p *childproc.Process, cause error, kind worker.StartupKind, hint string) error {
	se := &worker.StartupError{WorkerID: w.spec.ID, PID: p.PID(), Cause: cause, Stderr: p.StderrTail(500 * time.Millisecond), Kind: kind, Hint: hint}
	select {
	case <-p.Exited():
		_, se.Signal = p.ExitStatus()
	default:
	}
	return se
}

func (w *Worker) handshake(ctx context.Context, p *childproc.Process, lines <-chan string) (*lifetime, error) {
	o := &w.f.opts
	deadline := time.Now().Add(o.StartupTimeout)
	timer := time.NewTimer(o.StartupTimeout)
	defer timer.Stop()
	var line string
	select {
	case line = <-lines:
	case <-p.Exited():
		code, sig := p.ExitStatus()
		cause := fmt.Errorf("the process exited with status %d before its handshake", code)
		if sig != "" {
			cause = fmt.Errorf("the process was killed by %s before its handshake", sig)
		}
		kind, hint := classifyExit(code, p.StderrTail(0))
		return nil, w.startupError(p, cause, kind, hint)
	case <-timer.C:
		return nil, w.startupError(p, fmt.Errorf("no handshake line on stdout within %s", o.StartupTimeout), worker.StartupTimeout,
			"the adapter's setup may be slow (raise StartupTimeout) or the process is stuck; see its stderr above")
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	hs, err := parseHandshake(line)
	if err != nil {
		return nil, w.startupError(p, err, worker.StartupAdapter, "the worker must print exactly one handshake line on stdout; adapters must log to stderr")
	}
	conn, err := grpc.NewClient(hs.Target(),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithPerRPCCredentials(auth.PerRPCCredentials(o.Token)),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(o.MaxMessageBytes), grpc.MaxCallSendMsgSize(o.MaxMessageBytes)),
	)
	if err != nil {
		return nil, w.startupError(p, fmt.Errorf("cannot create a gRPC client for %s: %w", hs.Target(), err), worker.StartupUnclassified, "")
	}
	client := pb.NewWorkerServiceClient(conn)
	rctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	// A process dying while we wait on RPCs must end the wait at once.
	go func() {
		select {
		case <-p.Exited():
			cancel()
		case <-rctx.Done():
		}
	}()
	if _, err := client.Ping(rctx, &pb.PingRequest{Message: "hello"}, grpc.WaitForReady(true)); err != nil {
		_ = conn.Close()
		return nil, w.startupError(p, fmt.Errorf("first Ping failed: %w", err), worker.StartupUnclassified, "")
	}
	desc, err := client.DescribeTools(rctx, &pb.DescribeToolsRequest{})
	if err != nil {
		_ = conn.Close()
		return nil, w.startupError(p, fmt.Errorf("DescribeTools failed: %w", err), worker.StartupUnclassified, "")
	}
	return &lifetime{p: p, target: hs.Target(), conn: conn, client: client, tools: wire.ToolSpecsFromPB(desc.GetTools()),
		quota: jittered(o.RecycleAfterRequests),
		kill:  make(chan string, 1), replace: make(chan string, 1), drained: make(chan struct{})}, nil
}

// exitAdapter is the status snakepit_bridge.server exits with when the
// adapter cannot be imported, instantiated or set up (EXIT_ADAPTER).
const exitAdapter = 3

// classifyExit turns a process that exited before its handshake into the
// kind of failure and the next thing to do.
func classifyExit(code int, stderr []string) (worker.StartupKind, string) {
	all := strings.Join(stderr, "\n")
	switch {
	case strings.Contains(all, "No module named 'snakepit_bridge"):
		return worker.StartupInterpreter, "the snakepit_bridge package is not importable; check PackageDir/PYTHONPATH"
	case strings.Contains(all, "No module named 'grpc'") || strings.Contains(all, "No module named 'google"):
		return worker.StartupInterpreter, "this interpreter lacks grpcio/protobuf; install them or set SNAKEPIT_PYTHON"
	case strings.Contains(all, "failed in setup()"):
		return worker.StartupAdapter, "the adapter's setup() raised; see its traceback above"
	case code == exitAdapter || strings.Contains(all, "cannot load adapter"):
		return worker.StartupAdapter, "check Config.Adapter (\"package.module.Class\" or \"package.module:Class\") and that its module is on Config.PythonPath"
	}
	return worker.StartupUnclassified, "see the worker's stderr above"
}

// run serves lifetime lt and its planned successors until the App stops
// (nil) or the current process dies or is killed (its *worker.CrashError).
//
// A planned replacement is make-before-break: the successor process starts
// while lt keeps serving, and only once it is ready does it take new calls;
// lt then drains on its own (see retire). At most ReplaceGate's capacity of
// workers in the pool are starting a successor at once.
func (w *Worker) run(ctx context.Context, lt *lifetime) error {
	o := &w.f.opts
	w.mu.Lock()
	loopDone := w.loopDone
	w.mu.Unlock()
	defer close(loopDone)
	// Retiring processes drain until this ends: at stop, or when the
	// current process dies — then the Starter must be able to restart the
	// worker without waiting for an old process's calls, which get the
	// graceful stop (SIGTERM; Python lets in-flight calls finish within its
	// grace) instead.
	retireCtx, endRetirees := context.WithCancel(ctx)
	defer endRetirees()
	tick := w.healthTicker()
	if tick != nil {
		defer tick.Stop()
	}
	aged := newAgeTimer(o.RecycleAfter)
	defer aged.stop()
	mem := w.newMemoryWatch(lt)
	defer mem.stop()
	var (
		succ       *successor
		succReason string        // why succ was started
		planned    string        // a replacement by plan (quota, age, memory, ...) is wanted
		queued     []*replaceReq // Replace calls not yet covered by a successor
		covering   []*replaceReq // Replace calls the running successor answers
		held       bool          // we hold a slot of the replace gate
		retry      *time.Timer
		backoff    = replaceRetryMin
		misses     int
	)
	release := func() {
		if held {
			<-w.gate
			held = false
		}
	}
	answer := func(rs []*replaceReq, err error) {
		for _, r := range rs {
			r.reply <- err
		}
	}
	var ended error // why the lifetime ended, for requests still waiting
	defer func() {
		if succ != nil {
			succ.abort(w)
		}
		if retry != nil {
			retry.Stop()
		}
		release()
		why := "the worker is stopping"
		if ended != nil {
			why = ended.Error()
		}
		answer(append(covering, queued...), fmt.Errorf("%w: worker %s: the lifetime ended before its replacement took over: %s", worker.ErrWorkerUnavailable, w.spec.ID, why))
	}()
	for {
		var acquire chan<- struct{}
		if (planned != "" && retry == nil || len(queued) > 0) && succ == nil && !held {
			acquire = w.gate
		}
		var succDone <-chan struct{}
		if succ != nil {
			succDone = succ.done
		}
		var retryC <-chan time.Time
		if retry != nil {
			retryC = retry.C
		}
		select {
		case <-ctx.Done():
			w.clearCurrent(lt)
			lt.p.Stop(o.StopGrace)
			w.finish(lt)
			return nil
		case why := <-lt.replace:
			if planned == "" {
				planned = why
				w.log.Info("replacing the worker process (the current one keeps serving until its successor is ready)", "pid", lt.p.PID(), "reason", why)
			}
		case r := <-w.reqs:
			queued = append(queued, r)
			w.log.Info("replacing the worker process on request (the current one keeps serving until its successor is ready)", "pid", lt.p.PID(), "reason", r.reason)
		case r := <-w.withdraw:
			// Its caller gave up. A successor started for requests alone
			// is stopped once none of them is left.
			queued = without(queued, r)
			wasCovering := len(covering) > 0
			covering = without(covering, r)
			if wasCovering && len(covering) == 0 && planned == "" && succ != nil {
				succ.abort(w)
				succ = nil
				release()
				w.log.Info("replacement withdrawn; the current process keeps serving", "pid", lt.p.PID())
			}
		case <-aged.c():
			lt.requestReplace(reasonAge)
		case <-mem.c():
			if planned == "" && succ == nil && mem.over(w, lt) {
				lt.requestReplace(reasonMemory)
			}
			mem.reset()
		case acquire <- struct{}{}:
			held = true
			covering, queued = queued, nil
			succReason = planned
			if len(covering) > 0 {
				succReason = covering[0].reason
			}
			succ = w.startSuccessor(ctx)
		case <-succDone:
			next, err := succ.lt, succ.err
			// Its context only bounded the start; left uncancelled it
			// would stay among ctx's children for the whole lifetime, one
			// per replacement (a slow leak of ~0.5 KiB each).
			succ.cancel()
			succ = nil
			release()
			if err != nil {
				if len(covering) > 0 {
					w.log.Warn("the requested replacement process failed to start; the current one keeps serving", "reason", succReason, "err", err)
					answer(covering, err)
					covering = nil
				}
				if planned != "" {
					w.log.Warn("the replacement process failed to start; the current one keeps serving", "retry_after", backoff, "err", err)
					retry = time.NewTimer(backoff)
					backoff = min(2*backoff, replaceRetryMax)
				}
				continue
			}
			backoff = replaceRetryMin
			if retry != nil {
				retry.Stop()
				retry = nil
			}
			old := lt
			lt = next
			w.setCurrent(lt)
			misses = 0
			aged.reset(o.RecycleAfter)
			mem.restart(w, lt)
			w.log.Info("worker process replaced", "old_pid", old.p.PID(), "pid", lt.p.PID(), "reason", succReason)
			w.spec.Events.Replaced(w.spec.ID, worker.Info{PID: lt.p.PID(), Tools: lt.tools}, succReason)
			planned = ""
			answer(covering, nil)
			covering = nil
			w.retiring.Add(1)
			go func() {
				defer w.retiring.Done()
				w.retire(retireCtx, old)
			}()
		case <-retryC:
			retry = nil
		case <-lt.p.Exited():
			w.finish(lt)
			err := lt.crashError(w.spec.ID)
			ended = err
			return err
		case reason := <-lt.kill:
			w.clearCurrent(lt)
			lt.setReason(reason)
			w.log.Warn("killing worker", "pid", lt.p.PID(), "reason", reason)
			lt.p.Kill()
			w.finish(lt)
			err := lt.crashError(w.spec.ID)
			ended = err
			return err
		case <-tickC(tick):
			if w.healthCheck(ctx, lt, &misses) {
				continue
			}
			w.clearCurrent(lt)
			lt.setReason(fmt.Sprintf("health check failed %d times in a row", misses))
			lt.p.Kill()
			w.finish(lt)
			err := lt.crashError(w.spec.ID)
			ended = err
			return err
		}
	}
}

// without returns rs without r (rs is modified).
func without(rs []*replaceReq, r *replaceReq) []*replaceReq {
	for i, x := range rs {
		if x == r {
			return append(rs[:i], rs[i+1:]...)
		}
	}
	return rs
}

// Bounds of the pause before a failed replacement is tried again.
const (
	replaceRetryMin = time.Second
	replaceRetryMax = 30 * time.Second
)

// retire drains a replaced lifetime: it takes no new calls, its in-flight
// calls finish (they have their own deadlines), then it stops gracefully.
// Health checks and Kill keep working meanwhile, so a process that wedges
// while draining (SIGSTOP, a deadlock) fails its calls instead of holding
// them until the App stops.
func (w *Worker) retire(ctx context.Context, lt *lifetime) {
	o := &w.f.opts
	defer w.finish(lt)
	tick := w.healthTicker()
	if tick != nil {
		defer tick.Stop()
	}
	drained := lt.drain()
	misses := 0
	for {
		select {
		case <-drained:
			lt.p.Stop(o.StopGrace)
			return
		case <-ctx.Done():
			lt.p.Stop(o.StopGrace)
			return
		case <-lt.p.Exited():
			return
		case reason := <-lt.kill:
			lt.setReason(reason)
			w.log.Warn("killing replaced worker process", "pid", lt.p.PID(), "reason", reason)
			lt.p.Kill()
			return
		case <-tickC(tick):
			if !w.healthCheck(ctx, lt, &misses) {
				lt.setReason(fmt.Sprintf("health check failed %d times in a row while draining", misses))
				w.log.Warn("killing replaced worker process", "pid", lt.p.PID(), "reason", "health check failed while draining")
				lt.p.Kill()
				return
			}
		}
	}
}

// successor is a replacement process being started in the background.
type successor struct {
	cancel context.CancelFunc
	done   chan struct{}
	lt     *lifetime
	err    error
}

func (w *Worker) startSuccessor(ctx context.Context) *successor {
	w.mu.Lock()
	w.seq++
	key := fmt.Sprintf("%s.%d", w.spec.ID, w.seq)
	w.mu.Unlock()
	sctx, cancel := context.WithCancel(ctx)
	s := &successor{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(s.done)
		s.lt, s.err = w.start(sctx, key)
	}()
	return s
}

// abort stops a successor that has not taken over; one that became ready
// meanwhile is stopped like any other process.
func (s *successor) abort(w *Worker) {
	s.cancel()
	<-s.done
	if s.lt != nil {
		s.lt.p.Stop(w.f.opts.StopGrace)
		w.finish(s.lt)
	}
}

func (w *Worker) healthTicker() *time.Ticker {
	if w.f.opts.HealthInterval <= 0 {
		return nil
	}
	return time.NewTicker(w.f.opts.HealthInterval)
}

func tickC(t *time.Ticker) <-chan time.Time {
	if t == nil {
		return nil
	}
	return t.C
}

// healthCheck pings lt; false once HealthMisses pings in a row have failed.
// A lifetime whose cancelled calls keep running past HungGrace is asked to
// be replaced.
func (w *Worker) healthCheck(ctx context.Context, lt *lifetime, misses *int) bool {
	o := &w.f.opts
	pctx, cancel := context.WithTimeout(ctx, o.HealthTimeout)
	resp, err := lt.client.Ping(pctx, &pb.PingRequest{Message: "health"})
	cancel()
	if err == nil || ctx.Err() != nil {
		*misses = 0
		w.checkAbandoned(lt, resp)
		return true
	}
	*misses++
	w.log.Warn("worker health check failed", "pid", lt.p.PID(), "misses", *misses, "of", o.HealthMisses, "err", err)
	return *misses < o.HealthMisses
}

// ageTimer is RecycleAfter, jittered anew for each process.
type ageTimer struct{ t *time.Timer }

func newAgeTimer(d time.Duration) *ageTimer {
	a := &ageTimer{}
	a.reset(d)
	return a
}

func (a *ageTimer) reset(d time.Duration) {
	a.stop()
	if d > 0 {
		a.t = time.NewTimer(jittered(d))
	}
}

func (a *ageTimer) stop() {
	if a.t != nil {
		a.t.Stop()
		a.t = nil
	}
}

func (a *ageTimer) c() <-chan time.Time {
	if a.t == nil {
		return nil
	}
	return a.t.C
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
	code, sig := lt.p.ExitStatus()
	return &worker.CrashError{WorkerID: id, PID: lt.p.PID(), ExitCode: code, Signal: sig, Reason: reason}
}

// crashWait is how long a failed RPC waits for the reaper to confirm that
// the process died, so the caller gets the exit status rather than a
// transport error.
const crashWait = 2 * time.Second

// callError maps an RPC failure to the caller's error: its own ctx error, a
// CrashError when the process died under the call, or a wrapped status.
func (w *Worker) callError(ctx context.Context, lt *lifetime, tool string, err error) error {
	select {
	case <-lt.p.Exited():
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
		case <-lt.p.Exited():
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
		w.checkAbandonedLater(lt)
		return ctxErr
	}
	select {
	case <-lt.p.Exited():
		return lt.crashError(w.spec.ID)
	default:
	}
	reason := fmt.Sprintf("call %q ran out of time and the worker did not answer a ping within %s; considered hung", tool, grace)
	lt.requestKill(reason)
	return fmt.Errorf("%w: worker %s: %s (it is being restarted): %w", worker.ErrWorkerTimeout, w.spec.ID, reason, ctxErr)
}

// checkAbandoned asks for a replacement of lt when a cancelled call has kept
// running for HungGrace: Python cannot stop a thread, so only a new process
// gets rid of it. The abandoned call keeps its Python capacity slot until
// then (capacity is exact), so calls sent to lt meanwhile may wait for it.
func (w *Worker) checkAbandoned(lt *lifetime, resp *pb.PingResponse) {
	if resp.GetAbandonedCalls() == 0 {
		return
	}
	age := time.Duration(resp.GetOldestAbandonedSeconds() * float64(time.Second))
	if age < w.f.opts.HungGrace {
		return
	}
	w.log.Warn("a cancelled call is still running in the worker (the tool ignores cancellation); replacing the process",
		"pid", lt.p.PID(), "abandoned_calls", resp.GetAbandonedCalls(), "request_ids", resp.GetAbandonedRequestIds(), "oldest", age.Round(time.Millisecond))
	lt.requestReplace(reasonIgnored)
}

// checkAbandonedLater looks again once a cancelled call has had HungGrace
// to finish, without holding up the caller, whose call is already over.
func (w *Worker) checkAbandonedLater(lt *lifetime) {
	o := &w.f.opts
	time.AfterFunc(o.HungGrace+abandonSlack, func() {
		lt.mu.Lock()
		over := lt.over
		lt.mu.Unlock()
		if over {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), o.HealthTimeout)
		defer cancel()
		if resp, err := lt.client.Ping(ctx, &pb.PingRequest{Message: "abandoned?"}); err == nil {
			w.checkAbandoned(lt, resp)
		}
	})
}

// abandonSlack covers the delay between the host's deadline and Python
// noticing the cancellation, from which Python counts the call's age.
const abandonSlack = 200 * time.Millisecond

// lifetimeFor admits a call to the current lifetime; the caller must call
// lt.end when the call is over.
func (w *Worker) lifetimeFor(tool string) (*lifetime, error) {
	lt := w.current()
	if lt != nil && !lt.begin() {
		// It started draining between our read and begin: a successor may
		// have just taken over.
		if next := w.current(); next != lt && next != nil && next.begin() {
			return next, nil
		}
		lt = nil
	}
	if lt == nil {
		return nil, fmt.Errorf("%w: worker %s is not ready (starting, restarting or stopped); tool %q", worker.ErrWorkerUnavailable, w.spec.ID, tool)
	}
	return lt, nil
}

// Execute implements worker.Worker.
func (w *Worker) Execute(ctx context.Context, call *worker.Call) (*worker.Result, error) {
	lt, err := w.lifetimeFor(call.Tool)
	if err != nil {
		return nil, err
	}
	defer lt.end()
	resp, err := lt.client.ExecuteTool(ctx, wire.Request(call))
	if err != nil {
		return nil, w.callError(ctx, lt, call.Tool, err)
	}
	if te := resp.GetError(); te != nil {
		return nil, w.toolError(lt, call.Tool, te)
	}
	res := &worker.Result{}
	res.JSON, res.Binary = wire.Value(resp.GetResult())
	return res, nil
}

// ExecuteStream implements worker.Worker.
func (w *Worker) ExecuteStream(ctx context.Context, call *worker.Call, yield func(worker.Chunk) error) error {
	lt, err := w.lifetimeFor(call.Tool)
	if err != nil {
		return err
	}
	defer lt.end()
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := lt.client.ExecuteStreamingTool(sctx, wire.Request(call))
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
		c.JSON, c.Binary = wire.Value(msg.GetData())
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

// memoryWatch is RecycleAboveRSS: every MemoryCheckInterval (jittered per
// period) the current process's tree RSS — the worker and all its
// descendants, from /proc — is compared with the limit.
type memoryWatch struct {
	limit int64
	every time.Duration
	t     *time.Timer
	// off: this lifetime is not watched (no limit, or a fresh process
	// already above it, which a replacement would not cure).
	off bool
}

func (w *Worker) newMemoryWatch(lt *lifetime) *memoryWatch {
	m := &memoryWatch{limit: w.f.opts.RecycleAboveRSS, every: w.f.opts.MemoryCheckInterval}
	m.restart(w, lt)
	return m
}

// restart watches a new lifetime.
func (m *memoryWatch) restart(w *Worker, lt *lifetime) {
	m.off = m.limit <= 0
	if !m.off {
		if rss, err := proc.TreeRSS(lt.p.PID()); err == nil && rss >= m.limit {
			m.off = true
			w.log.Warn("a freshly started worker process is already above RecycleAboveRSS; not recycling it for memory (raise the limit)",
				"pid", lt.p.PID(), "rss_bytes", rss, "limit_bytes", m.limit)
		}
	}
	m.reset()
}

func (m *memoryWatch) reset() {
	m.stop()
	if !m.off {
		m.t = time.NewTimer(jittered(m.every))
	}
}

func (m *memoryWatch) stop() {
	if m.t != nil {
		m.t.Stop()
		m.t = nil
	}
}

func (m *memoryWatch) c() <-chan time.Time {
	if m.t == nil {
		return nil
	}
	return m.t.C
}

// over measures lt's process tree and reports whether it exceeds the limit.
func (m *memoryWatch) over(w *Worker, lt *lifetime) bool {
	rss, err := proc.TreeRSS(lt.p.PID())
	if err != nil || rss <= m.limit {
		return false
	}
	w.log.Info("worker process tree above RecycleAboveRSS; replacing it", "pid", lt.p.PID(), "rss_bytes", rss, "limit_bytes", m.limit)
	return true
}
