package grpcworker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/snakepit-go/snakepit/internal/auth"
	"github.com/snakepit-go/snakepit/python"
	"github.com/snakepit-go/snakepit/worker"
)

// Options configure every worker a Factory builds.
type Options struct {
	// Python is the interpreter; empty means FindPython("").
	Python string
	// Adapter is the Python adapter class, "package.module.Class" or
	// "package.module:Class" (see CheckAdapter).
	Adapter string
	// PythonPath entries are put on PYTHONPATH after snakepit's own package
	// (so user adapters in their own directories can be imported); the
	// working directory is not on sys.path (see the package doc).
	PythonPath []string
	// Env is added to the worker's environment and wins over the defaults
	// (thread limits) and the host's environment.
	Env map[string]string
	// ExtraArgs are appended to the worker's argv.
	ExtraArgs []string
	// BridgeAddress is where the worker calls back into the host; Factory.With
	// replaces it with a source read at every process start.
	BridgeAddress string
	bridgeSource  func() string
	// Token authenticates both directions; it travels in the environment
	// only, and its type keeps it out of logs and formatted values.
	Token auth.Token
	// PackageDir is where the embedded snakepit_bridge package is unpacked;
	// empty means the user cache directory.
	PackageDir string

	StartupTimeout time.Duration // handshake + first RPCs; default 30 s
	StopGrace      time.Duration // SIGTERM → SIGKILL; default 2 s; Python's own grace is derived (PythonStopGrace)
	HealthInterval time.Duration // ping period; default 5 s; negative disables
	HealthTimeout  time.Duration // one ping's deadline; default min(2 s, HealthInterval)
	HealthMisses   int           // consecutive failed pings before a restart; default 3
	// HungGrace: a cancelled call still running in Python this long after
	// its cancellation gets the process recycled (checkAbandoned); default
	// 2 s. Whether the worker is hung is the pool's decision, after its own
	// HungGrace (the App passes both the same value).
	HungGrace time.Duration
	// RecycleAfterRequests ends a lifetime after it has served this many
	// calls (0: never); RecycleAfter ends it at this age (0: never). A
	// recycling worker takes no new calls, lets its in-flight calls finish,
	// then stops gracefully and is started afresh — a bound on slow leaks
	// in long-running Python code.
	RecycleAfterRequests int
	RecycleAfter         time.Duration
	// RecycleAboveRSS recycles the process (make-before-break, reason
	// "memory") once the resident memory of its whole tree — the worker
	// and every descendant, summed from /proc — exceeds this many bytes
	// (0: never). It is measured every MemoryCheckInterval (default
	// DefaultMemoryCheckInterval), jittered to [d, 1.2d] per period.
	RecycleAboveRSS     int64
	MemoryCheckInterval time.Duration
	MaxMessageBytes     int // gRPC message limit both ways; default 16 MiB
	Logger              *slog.Logger
}

// PythonStopGrace is how long the Python worker lets its in-flight calls
// run after SIGTERM (it is passed as SNAKEPIT_STOP_GRACE_S) when the host
// SIGKILLs the process group stopGrace after that SIGTERM. This is the one
// place the relation is written: Python's grace is strictly less, three
// quarters, so the last quarter is left for what follows the grace —
// cancelling the calls still running, the adapter's teardown(), killing
// the worker's descendants — and a worker that uses its whole grace still
// exits on its own instead of being killed mid-teardown. The default
// StopGrace, 2 s, gives Python 1.5 s.
func PythonStopGrace(stopGrace time.Duration) time.Duration {
	return stopGrace * 3 / 4
}

// DefaultMemoryCheckInterval is how often RecycleAboveRSS is checked: a
// scan of /proc per worker, cheap at this pace, and memory leaks are slow.
const DefaultMemoryCheckInterval = 10 * time.Second

// ErrBadOptions: the worker options are unusable. It is
// snakepit.ErrInvalidConfig (worker.ErrInvalidConfig).
var ErrBadOptions = worker.ErrInvalidConfig

// adapterRE is what snakepit_bridge.server's load_adapter_class accepts:
// a module path and a class, joined by the last '.' or by one ':' (after
// which a nested class may follow, "module:Outer.Inner").
var adapterRE = regexp.MustCompile(`^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*[.:][A-Za-z_]\w*(\.[A-Za-z_]\w*)*$`)

// CheckAdapter reports an adapter name the Python worker could not load
// for its form alone, before any process is started.
func CheckAdapter(name string) error {
	if name == "" {
		return errors.New("empty; name a Python class as \"package.module.Class\" (e.g. snakepit_bridge.examples.showcase.ShowcaseAdapter)")
	}
	if !adapterRE.MatchString(name) {
		return fmt.Errorf("%q is not a class path; name the adapter class as \"package.module.Class\" or \"package.module:Class\"", name)
	}
	return nil
}

func (o *Options) setDefaults() error {
	if err := CheckAdapter(o.Adapter); err != nil {
		return fmt.Errorf("%w: Adapter: %w", ErrBadOptions, err)
	}
	if o.StartupTimeout == 0 {
		o.StartupTimeout = 30 * time.Second
	}
	if o.StopGrace == 0 {
		o.StopGrace = worker.DefaultStopGrace
	}
	if o.HealthInterval == 0 {
		o.HealthInterval = 5 * time.Second
	}
	if o.HealthTimeout == 0 {
		// A ping may take as long as its period, capped: a slow machine
		// must not make a healthy worker look hung.
		o.HealthTimeout = 2 * time.Second
		if o.HealthInterval > 0 && o.HealthInterval < o.HealthTimeout {
			o.HealthTimeout = o.HealthInterval
		}
	}
	if o.HungGrace == 0 {
		o.HungGrace = worker.DefaultHungGrace
	}
	if o.HealthMisses == 0 {
		o.HealthMisses = 3
	}
	if o.MaxMessageBytes == 0 {
		o.MaxMessageBytes = worker.DefaultMaxMessageBytes
	}
	if o.MemoryCheckInterval == 0 {
		o.MemoryCheckInterval = DefaultMemoryCheckInterval
	}
	if o.StartupTimeout < 0 || o.StopGrace < 0 || o.HealthTimeout < 0 || o.HungGrace < 0 || o.RecycleAfterRequests < 0 || o.RecycleAfter < 0 || o.HealthMisses < 0 || o.MaxMessageBytes < 0 || o.RecycleAboveRSS < 0 || o.MemoryCheckInterval < 0 {
		return fmt.Errorf("%w: timeouts, HealthMisses, MaxMessageBytes and the recycle limits must not be negative", ErrBadOptions)
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return nil
}

// Factory builds Python gRPC workers; it implements worker.Factory.
type Factory struct {
	opts   Options
	pkgDir string
}

// NewFactory validates opts, finds the interpreter and unpacks the embedded
// Python package once, so that per-worker starts do none of that work.
func NewFactory(opts Options) (*Factory, error) {
	if err := opts.setDefaults(); err != nil {
		return nil, err
	}
	py, err := FindPython(opts.Python)
	if err != nil {
		return nil, err
	}
	opts.Python = py
	base := opts.PackageDir
	if base == "" {
		cache, err := os.UserCacheDir()
		if err != nil {
			cache = os.TempDir()
		}
		base = filepath.Join(cache, "snakepit", "python")
	}
	if err := os.MkdirAll(base, 0o755); err != nil {
		return nil, fmt.Errorf("snakepit: cannot create the Python package directory %s: %w (set PackageDir to a writable directory)", base, err)
	}
	dir, err := python.Extract(base)
	if err != nil {
		return nil, fmt.Errorf("snakepit: cannot unpack the snakepit_bridge package into %s: %w", base, err)
	}
	f := &Factory{opts: opts, pkgDir: dir}
	ctx, cancel := context.WithTimeout(context.Background(), compileTimeout)
	defer cancel()
	if err := python.Compile(ctx, py, dir, f.compileEnv()); err != nil {
		opts.Logger.Warn("workers will compile snakepit_bridge from source at every start", "err", err)
	}
	return f, nil
}

// compileTimeout bounds NewFactory's one-off bytecode compilation (about
// 0.3 s of CPU the first time, one interpreter start afterwards).
const compileTimeout = 30 * time.Second

// compileEnv is the part of a worker's environment that decides where its
// interpreter looks for bytecode (the inherited one plus Options.Env).
func (f *Factory) compileEnv() []string {
	env := []string{}
	for _, kv := range os.Environ() {
		if k, _, ok := strings.Cut(kv, "="); ok && !auth.IsSecretEnv(k) {
			env = append(env, kv)
		}
	}
	for k, v := range f.opts.Env {
		if !auth.IsSecretEnv(k) {
			env = append(env, k+"="+v)
		}
	}
	return env
}

// NewWorker implements worker.Factory.
func (f *Factory) NewWorker(spec worker.Spec) (worker.Worker, error) {
	if spec.ID == "" || spec.Events == nil {
		return nil, fmt.Errorf("%w: worker spec needs an ID and Events", ErrBadOptions)
	}
	log := spec.Logger
	if log == nil {
		log = f.opts.Logger
	}
	gate := spec.RecycleGate
	if gate == nil {
		gate = make(chan struct{}, 1)
	}
	return &Worker{
		spec:     spec,
		f:        f,
		gate:     gate,
		reqs:     make(chan *recycleReq),
		withdraw: make(chan *recycleReq),
		log:      log.With("worker_id", spec.ID),
	}, nil
}

// With returns a copy of the factory bound to a bridge address source,
// which exists only once the App's tree is running. The source is read at
// every process start, so a worker restarted after the bridge moved
// connects to where it listens now.
func (f *Factory) With(bridgeAddress func() string) *Factory {
	c := *f
	c.opts.bridgeSource = bridgeAddress
	return &c
}

// bridgeAddress is where this process start should call back into the host.
func (o *Options) bridgeAddress() string {
	if o.bridgeSource != nil {
		return o.bridgeSource()
	}
	return o.BridgeAddress
}
