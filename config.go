package snakepit

import (
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/trace"

	"github.com/snakepit-go/snakepit/discovery"
	"github.com/snakepit-go/snakepit/registry"
	"github.com/snakepit-go/snakepit/remote"
	"github.com/snakepit-go/snakepit/worker"
)

// DefaultAdapter is the showcase adapter shipped with snakepit_bridge.
const DefaultAdapter = "snakepit_bridge.examples.showcase.ShowcaseAdapter"

// MinMessageBytes is the smallest usable Config.MaxMessageBytes: below it a
// worker's tool descriptions (sent in one message at every start) and
// ordinary arguments and results no longer fit, so every start would fail.
const MinMessageBytes = 64 << 10

// MinRecycleRSS is the smallest usable Config.RecycleAboveRSS: a Python
// interpreter with grpc loaded is already about 30–40 MiB, so a lower limit
// would make every process "too big" from its first breath.
const MinRecycleRSS = 32 << 20

// Config configures an App. The zero value of every field means its default.
//
// The fields a PoolConfig also has (workers, adapter, interpreter,
// environment, capacity, recycling, health, limits) describe the default
// pool, named DefaultPool, which App.Execute and the other App methods use;
// Pools adds named pools, each inheriting those fields where it leaves
// them unset. The others (registry, stop, sessions, discovery, metrics,
// logging) are the App's, shared by every pool.
type Config struct {
	// Workers is the number of local worker processes of a fixed-size
	// pool (default 4, or 0 when Discovery is set: a pool of remote
	// workers only). Leave it 0 in an elastic pool (MaxWorkers).
	Workers int
	// MinWorkers and MaxWorkers make the pool elastic (MaxWorkers >
	// MinWorkers >= 0; see docs/SCALING.md and package autoscale): it
	// starts with MinWorkers, adds a worker when a call has waited
	// ScaleUpAfter for one (at most one per ScaleUpInterval, never beyond
	// MaxWorkers), and removes workers idle for IdleTimeout, never below
	// MinWorkers. With MinWorkers 0 the App is ready at once and the first
	// call starts a worker (that call waits at most its queue timeout).
	// Setting Workers as well is ErrInvalidConfig: in an elastic pool the
	// initial size is MinWorkers. A named pool (Pools) can be elastic on
	// its own; see PoolConfig for how the size is inherited.
	MinWorkers, MaxWorkers int
	// IdleTimeout: an elastic pool removes a worker that took no call for
	// this long (default autoscale.DefaultIdleTimeout, 60 s).
	IdleTimeout time.Duration
	// ScaleUpAfter: an elastic pool grows once the oldest call waiting for
	// a worker has waited this long (default autoscale.DefaultScaleUpAfter,
	// 200 ms). ScaleUpInterval bounds the growth rate: at most one new
	// worker per interval (default autoscale.DefaultScaleUpInterval, 1 s).
	ScaleUpAfter    time.Duration
	ScaleUpInterval time.Duration
	// MinReady local workers make the App ready; the rest keep starting
	// (default: all).
	MinReady int
	// Capacity is the number of concurrent calls per worker (default
	// DefaultCapacity, 8; an adapter with snakepit_thread_safe = False
	// gets 1 whatever this says).
	Capacity int
	// DisableSerialTools lets every tool use a worker's whole Capacity. By
	// default a tool whose calls take ≥ 2 ms and are measured to gain
	// nothing from running side by side in one process (pure Python, which
	// takes turns on the GIL) runs one call per worker, the others queued
	// (Stats().Pool.SerialTools lists them). Set it for a CPU-bound tool
	// whose calls vary widely in length: sharing the process then lets
	// the short calls finish first. It also stops the pool sending a
	// worker short calls beyond its Capacity (README, "Capacity"), which
	// relies on the same measure.
	DisableSerialTools bool

	// Adapter is the Python adapter class, "package.module.Class" or
	// "package.module:Class"; another form is ErrInvalidConfig.
	Adapter string
	// Python is the interpreter. Empty: SNAKEPIT_PYTHON, a virtualenv, then
	// candidates with grpc (its compiled core for that interpreter) and
	// protobuf >= 3.20, found without importing them; `snakepit doctor` does
	// the real import (see grpcworker.FindPython).
	Python string
	// PythonPath is prepended (after snakepit_bridge) to the workers' PYTHONPATH;
	// the host's working directory is never on the workers' sys.path.
	PythonPath []string
	// Env is added to every worker's environment (wins over defaults such
	// as OMP_NUM_THREADS=1).
	Env map[string]string

	// Instance names the registry file so several apps on one machine never
	// share one (default "default"): 1–64 letters, digits, '_', '.', '-',
	// not starting with '-' or '.'. RegistryPath overrides the file path.
	Instance     string
	RegistryPath string

	StartupTimeout time.Duration // per worker handshake (default 30 s)
	// ReadyTimeout bounds how long a call made while no worker is ready
	// waits for one before it fails with ErrNotReady (default 30 s); raise
	// it when workers are slow to start and calls should wait them out.
	ReadyTimeout time.Duration
	StopGrace    time.Duration // SIGTERM → SIGKILL per worker (default 2 s)
	// StopTimeout is the App's whole stop budget, worst case included
	// (calls that ignore cancellation, workers that ignore SIGTERM): every
	// inner stop timeout is derived from it, and the drain of in-flight
	// calls gets what the rest leaves. Default DefaultStopTimeout (8 s).
	// Embedded in a suture supervisor, that supervisor's Timeout must
	// exceed it with margin (suture's default 10 s does), or the parent
	// returns while the App is still stopping its processes. A StopGrace
	// that leaves no room for the rest is ErrInvalidConfig.
	StopTimeout    time.Duration
	HealthInterval time.Duration // worker ping period (default 5 s; negative disables)
	HealthMisses   int           // failed pings before a restart (default 3)
	// HungGrace: a call whose worker has not returned it (or, after its
	// deadline, not proved alive) this long after its context ended gets a
	// *WorkerTimeoutError and the worker is restarted (default 2 s).
	HungGrace time.Duration
	// RecycleAfterRequests / RecycleAfter restart a worker process after it
	// served that many calls / reached that age (0: never), letting its
	// in-flight calls finish first: a bound on slow leaks in Python code.
	//
	// Recycling is make-before-break: the new process starts while the old
	// one serves, takes over once ready, and the old one drains. Recycle
	// points are spread over [N, 1.2·N] per process so that workers do not
	// recycle together.
	RecycleAfterRequests int
	RecycleAfter         time.Duration
	// RecycleAboveRSS recycles a worker process, make-before-break
	// (Stats.RecycleReasons["memory"]), once the memory of its whole
	// process tree exceeds this many bytes (0: never): its cgroup's
	// memory.stat anon + file_mapped (no page cache) where cgroup
	// containment is in force with the memory controller, else the resident memory of the worker plus every
	// descendant, summed from /proc/PID/statm. Shared pages
	// count once per process, so the sum errs high. A fresh process
	// already above the limit is not recycled for memory (logged).
	RecycleAboveRSS int64
	// Containment chooses cgroup v2 containment of worker processes:
	// "auto" puts each worker process (so everything it starts) in a
	// cgroup of its own where the machine allows it and falls back to
	// process groups, tags and run ids otherwise (logged; Stats.Containment
	// says which); "off" never uses cgroups; "required" fails Start with
	// ErrContainment when they are unavailable. Empty: $SNAKEPIT_CGROUP,
	// else "auto". See docs/GUARANTEES.md §4c.
	Containment string
	// MemoryMax (bytes, memory.max) and CPUMax (CPUs, cpu.max; 0.5 is half
	// a core) limit the default pool's cgroup, and each named pool's that
	// sets none of its own (PoolConfig): all the pool's worker processes
	// and everything they start, together (0: no limit). An elastic pool's
	// growth and a make-before-break recycle stay inside the limit, so
	// leave one worker of headroom. They need cgroup v2 with the memory /
	// cpu controller delegated to the host's cgroup (or its parent);
	// otherwise Start fails with ErrContainment naming the pool rather than
	// run unlimited. See docs/GUARANTEES.md §4c.
	MemoryMax int64
	CPUMax    float64
	// MemoryCheckInterval is how often RecycleAboveRSS is measured
	// (default 10 s, grpcworker.DefaultMemoryCheckInterval), jittered to
	// [d, 1.2d] per period. Measuring does not wait for calls to finish:
	// the recycle is make-before-break, so no call is disturbed.
	MemoryCheckInterval time.Duration
	// RecycleConcurrency bounds how many workers recycle their process at
	// once — recycles and App.Reload alike (default 1).
	RecycleConcurrency int
	StartupFailures    int // consecutive failed starts before a worker is given up (default 3)
	// RetryGivenUpAfter is how long a given-up worker rests before it is
	// tried again (default 30 s), so a fixed environment heals the pool
	// without a restart. Starts killed by a signal from outside (SIGKILL,
	// SIGTERM, …) do not count as failed starts.
	RetryGivenUpAfter time.Duration

	MaxQueue     int           // waiting calls beyond which ErrPoolSaturated (default 1000)
	QueueTimeout time.Duration // how long a call may wait for a worker (default 5 s)

	// SessionTTL is how long the host keeps a session's state (the store
	// Python tools read and write through ctx) after its last use; default 1 h.
	SessionTTL time.Duration
	// SessionAffinityTTL is how long a session sticks to the worker that
	// served it last (see WithAffinity); after that its next call may go
	// to any worker. Default 60 s.
	SessionAffinityTTL time.Duration
	MaxSessions        int // default 10,000
	MaxMessageBytes    int // gRPC message limit (default 16 MiB, at least MinMessageBytes)

	// WorkerFactory replaces the Python gRPC worker with another worker type.
	WorkerFactory worker.Factory

	// Discovery, when set, lists agent endpoints (`snakepit serve` on other
	// hosts; see docs/SCALING.md): the App joins a remote worker (package
	// remote) to the default pool for each endpoint that appears, fed by
	// the agent's default pool, and drains and removes it when it
	// vanishes (PoolConfig.Discovery does the same for a named pool). Use
	// discovery.DNS with a Kubernetes headless Service, or
	// discovery.Static. Local and remote workers
	// share the pool. The App is ready once local workers are (MinReady)
	// and the first poll has been applied; calls made before a remote
	// worker is connected wait for it up to ReadyTimeout.
	Discovery discovery.Source
	// DiscoveryInterval is how often Discovery is polled (default
	// discovery.DefaultInterval, 10 s); a remote worker that fails
	// triggers a poll at once.
	DiscoveryInterval time.Duration
	// Remote configures the remote workers: the agents' token (a file, or
	// $SNAKEPIT_AGENT_TOKEN), TLS, health checks. Its zero
	// MaxMessageBytes takes each pool's (a named pool's own, else this
	// Config's); whether a remote worker is hung
	// is the pool's decision, after HungGrace.
	Remote remote.Options

	// Pools adds named pools beside the default one, each with its own
	// workers and settings, in one tree with one registry, one bridge and
	// one cleanup; call them through App.Pool(name). Names are unique,
	// not DefaultPool, 1–32 characters of [A-Za-z0-9_-] starting with a
	// letter (they go into worker ids, registry records and metric
	// labels). See PoolConfig for what a pool inherits.
	Pools []PoolConfig

	// Metrics, when set, gets the App's Prometheus collector (see
	// NewCollector) registered by New; a registration error, such as a
	// second App with the same Instance on one Registerer, fails New.
	// Nil (the default) exports nothing.
	Metrics prometheus.Registerer

	// TracerProvider gives the tracer of the client span every Execute
	// and ExecuteStream starts (see the README's Tracing); nil: the
	// global one (otel.GetTracerProvider), which records nothing until
	// the application installs an SDK.
	TracerProvider trace.TracerProvider

	Logger *slog.Logger
}

// setDefaults applies and checks the App-wide settings; the per-pool ones
// (the top-level fields that describe the default pool, and Pools) are
// resolved and checked by pools, once for every pool.
func (c *Config) setDefaults() error {
	if c.DiscoveryInterval < 0 {
		return fmt.Errorf("%w: DiscoveryInterval is negative (%s)", ErrInvalidConfig, c.DiscoveryInterval)
	}
	if c.StopGrace == 0 {
		c.StopGrace = worker.DefaultStopGrace
	}
	if c.StopTimeout == 0 {
		c.StopTimeout = DefaultStopTimeout
	}
	for name, d := range map[string]time.Duration{"StopGrace": c.StopGrace, "StopTimeout": c.StopTimeout, "SessionTTL": c.SessionTTL} {
		if d < 0 {
			return fmt.Errorf("%w: %s is negative (%s)", ErrInvalidConfig, name, d)
		}
	}
	if c.MaxSessions < 0 {
		return fmt.Errorf("%w: MaxSessions must not be negative", ErrInvalidConfig)
	}
	if err := registry.CheckContainment(c.Containment); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidConfig, err)
	}
	if c.Instance != "" {
		if err := registry.ValidInstance(c.Instance); err != nil {
			return fmt.Errorf("%w: Instance: %w", ErrInvalidConfig, err)
		}
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return nil
}
