package grpcworker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/snakepit-go/snakepit/bridge/pb"
	"github.com/snakepit-go/snakepit/childproc"
	"github.com/snakepit-go/snakepit/internal/auth"
	"github.com/snakepit-go/snakepit/internal/wire"
	"github.com/snakepit-go/snakepit/worker"
)

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
		// Python runs that many sync calls at once; the pool sends more only
		// up to the prefetch its handshake reports, and those wait there.
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
	if _, ok := env[envLogLevel]; !ok {
		// Python writes what the host's logger would keep (Env wins).
		set(envLogLevel, pythonLevel(w.log))
	}
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
	// Python's server and its channel to the host use the host's limit, so
	// a message one end accepts is never refused by the other.
	set("SNAKEPIT_MAX_MESSAGE_BYTES", strconv.Itoa(o.MaxMessageBytes))
	// This host reads the handshake's prefetch field: a worker adds it only
	// when told, so a newer snakepit_bridge still starts under an older host.
	set(envHandshakePrefetch, "1")
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
	}, Stderr: func(log *slog.Logger) childproc.LineSink { return newStderrLog(log, auth.Reveal(o.Token)) },
		Secrets: []string{auth.Reveal(o.Token)}})
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
	if w.cur.Load() == nil {
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

// stderrDrain bounds the wait for a dead process's last stderr lines (a
// descendant may hold the pipe open).
const stderrDrain = 500 * time.Millisecond

// startupError describes a failed start; a process that has already died
// names the signal that ended it, so an outside kill is told from a bug.
func (w *Worker) startupError(p *childproc.Process, cause error, kind worker.StartupKind, hint string) error {
	se := &worker.StartupError{WorkerID: w.spec.ID, PID: p.PID(), Cause: cause, Stderr: p.StderrTail(stderrDrain), Kind: kind, Hint: hint}
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
		if sig != 0 {
			cause = fmt.Errorf("the process was killed by %s before its handshake", worker.SignalName(sig))
		}
		// The readers may not have drained the traceback yet when the
		// exit is seen: waiting (as startupError does) keeps the
		// classification and forgetProbe from missing its last lines.
		tail := p.StderrTail(stderrDrain)
		kind, hint := classifyExit(code, tail)
		if lacksPackages(strings.Join(tail, "\n")) {
			// The interpreter check passed (maybe remembered): it must
			// not vouch for this interpreter again without looking.
			forgetProbe(o.Python)
		}
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
	conn, err := grpc.NewClient(hs.Target(), dialOptions(o)...)
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
	// The first call waits for the connection (WaitForReady); a Ping
	// before it would cost both sides one more call for nothing.
	desc, err := client.DescribeTools(rctx, &pb.DescribeToolsRequest{}, grpc.WaitForReady(true))
	if err != nil {
		_ = conn.Close()
		return nil, w.startupError(p, fmt.Errorf("DescribeTools failed: %w", err), worker.StartupUnclassified, "")
	}
	return w.newLifetime(&lifetime{p: p, target: hs.Target(), capacity: hs.Capacity, prefetch: hs.Prefetch, conn: conn, client: client, tools: wire.ToolSpecsFromPB(desc.GetTools()),
		quota: jittered(o.RecycleAfterRequests),
		kill:  make(chan string, 1), recycle: make(chan string, 1), drained: make(chan struct{})}), nil
}

// flowWindow is the HTTP/2 flow-control window the host gives a worker's
// replies, per stream and per connection: the most grpc's dynamic window
// would grow to (its BDP limit, 16 MiB).
const flowWindow = 16 << 20

// dialOptions are the options of the client conn to a worker process: no
// TLS (loopback or a private socket), the run's token on every RPC, the
// message limit both ways, and a static flow-control window. grpc's
// default (a dynamic window) keeps estimating the link's bandwidth-delay
// product with a PING per round trip for as long as data flows: against a
// worker, 0.19 PINGs out, 0.19 acks in and 0.18 WINDOW_UPDATEs out per
// trivial call (counted on the wire, docs/BENCHMARKS.md), work on both
// sides for a loopback link whose window only ever needs to be large.
func dialOptions(o *Options) []grpc.DialOption {
	return append(auth.ClientOptions(o.Token),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(o.MaxMessageBytes), grpc.MaxCallSendMsgSize(o.MaxMessageBytes)),
		grpc.WithStaticStreamWindowSize(flowWindow), grpc.WithStaticConnWindowSize(flowWindow),
	)
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
	case lacksPackages(all):
		return worker.StartupInterpreter, "this interpreter lacks grpcio/protobuf; install them or set SNAKEPIT_PYTHON"
	case strings.Contains(all, "failed in setup()"):
		return worker.StartupAdapter, "the adapter's setup() raised; see its traceback above"
	case code == exitAdapter || strings.Contains(all, "cannot load adapter"):
		return worker.StartupAdapter, "check Config.Adapter (\"package.module.Class\" or \"package.module:Class\") and that its module is on Config.PythonPath"
	}
	return worker.StartupUnclassified, "see the worker's stderr above"
}

// lacksPackages reports whether a worker's stderr says grpc or protobuf
// could not be imported: missing, or present without a part it needs (a
// compiled core built for another interpreter: "cannot import name
// 'cygrpc' from 'grpc._cython'").
func lacksPackages(stderr string) bool {
	for _, s := range []string{"No module named 'grpc'", "No module named 'grpc.", "No module named 'google",
		"from 'grpc'", "from 'grpc.", "from 'google.protobuf"} {
		if strings.Contains(stderr, s) {
			return true
		}
	}
	return false
}
