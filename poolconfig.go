package snakepit

import (
	"fmt"
	"math"
	"time"

	"github.com/snakepit-go/snakepit/discovery"
	"github.com/snakepit-go/snakepit/grpcworker"
	"github.com/snakepit-go/snakepit/registry"
	"github.com/snakepit-go/snakepit/worker"
)

// DefaultPool is the name of the pool the top-level Config fields describe
// and App.Execute, App.Tools, App.Stats().Pool and the other App methods
// use. Its worker ids carry no prefix (w0, w1, …), as before named pools.
const DefaultPool = "default"

// maxPoolName bounds a pool name: it prefixes worker ids, which are argv,
// environment values, registry keys and log fields.
const maxPoolName = 32

// PoolConfig configures one named pool of Config.Pools. A field left at
// its zero value takes the top-level Config field of the same name (which
// describes the default pool), and then that field's default: a pool
// states only what sets it apart. PythonPath and Env, when set, replace
// the top-level ones rather than adding to them. The size is one setting:
// a pool that sets any of Workers, MinWorkers and MaxWorkers inherits none
// of them (a fixed pool beside an elastic default stays fixed, and the
// other way round), and only an elastic pool inherits IdleTimeout,
// ScaleUpAfter and ScaleUpInterval. The field docs of Config say what each
// one does.
type PoolConfig struct {
	// Name routes calls (App.Pool(Name)), prefixes the pool's worker ids
	// ("<Name>.w0") and is the pool label of its metrics.
	Name string

	Workers  int
	MinReady int
	Capacity int

	// DisableSerialTools turns the serial-tools rule off for this pool
	// (see Config.DisableSerialTools). It is OR-ed with Config's: set
	// there, it is off for every pool, and a pool cannot turn it back on.
	DisableSerialTools bool

	MinWorkers, MaxWorkers int
	IdleTimeout            time.Duration
	ScaleUpAfter           time.Duration
	ScaleUpInterval        time.Duration

	Adapter    string
	Python     string
	PythonPath []string
	Env        map[string]string
	// WorkerFactory replaces the Python worker for this pool (then Adapter,
	// Python, PythonPath and Env are unused).
	WorkerFactory worker.Factory

	// Discovery, when set, lists `snakepit serve` agents whose pool of
	// this Name feeds this pool: one remote worker per endpoint, joined
	// and removed as Config.Discovery does for the default pool (which
	// feeds on the agents' default pool). Not inherited: a pool without it
	// has local workers only. A pool with it inherits no size (Workers,
	// MinWorkers, MaxWorkers): it has remote workers only unless it sets
	// one. Config.DiscoveryInterval and Config.Remote (token,
	// TLS, health checks) apply to every pool's agents. An agent without
	// the pool fails the remote worker's start with ErrUnknownPool.
	Discovery discovery.Source

	StartupTimeout time.Duration
	ReadyTimeout   time.Duration
	HealthInterval time.Duration
	HealthMisses   int
	HungGrace      time.Duration

	RecycleAfterRequests int
	RecycleAfter         time.Duration
	RecycleAboveRSS      int64
	MemoryCheckInterval  time.Duration
	RecycleConcurrency   int

	// MemoryMax and CPUMax bound the pool's cgroup: all its worker
	// processes and everything they start, together (Config.MemoryMax).
	MemoryMax int64
	CPUMax    float64

	StartupFailures   int
	RetryGivenUpAfter time.Duration

	MaxQueue           int
	QueueTimeout       time.Duration
	SessionAffinityTTL time.Duration
	MaxMessageBytes    int
}

// inherit fills p's unset fields from the top-level Config: the one place
// that says what a pool takes from it (all but Discovery, which names
// agents' pools of the pool's own name). The default pool is the empty
// PoolConfig named DefaultPool inheriting everything, so the top-level
// fields and a named pool's follow one set of rules (setDefaults).
func (c *Config) inherit(p PoolConfig) PoolConfig {
	// A pool fed by agents states its own local workers, if any: the
	// default pool's size is no guess at how many it wants beside them.
	if p.Workers == 0 && p.MinWorkers == 0 && p.MaxWorkers == 0 && (p.Discovery == nil || p.Name == DefaultPool) {
		p.Workers, p.MinWorkers, p.MaxWorkers = c.Workers, c.MinWorkers, c.MaxWorkers
		// MinReady is a count of those workers: it goes with the size,
		// never onto a size the pool set itself.
		set(&p.MinReady, c.MinReady)
	}
	if p.elastic() {
		// A fixed pool's own values of these stay errors (setDefaults).
		set(&p.IdleTimeout, c.IdleTimeout)
		set(&p.ScaleUpAfter, c.ScaleUpAfter)
		set(&p.ScaleUpInterval, c.ScaleUpInterval)
	}
	set(&p.Capacity, c.Capacity)
	p.DisableSerialTools = p.DisableSerialTools || c.DisableSerialTools
	set(&p.Adapter, c.Adapter)
	set(&p.Python, c.Python)
	if p.PythonPath == nil {
		p.PythonPath = c.PythonPath
	}
	if p.Env == nil {
		p.Env = c.Env
	}
	if p.WorkerFactory == nil {
		p.WorkerFactory = c.WorkerFactory
	}
	set(&p.StartupTimeout, c.StartupTimeout)
	set(&p.ReadyTimeout, c.ReadyTimeout)
	set(&p.HealthInterval, c.HealthInterval)
	set(&p.HealthMisses, c.HealthMisses)
	set(&p.HungGrace, c.HungGrace)
	set(&p.RecycleAfterRequests, c.RecycleAfterRequests)
	set(&p.RecycleAfter, c.RecycleAfter)
	set(&p.RecycleAboveRSS, c.RecycleAboveRSS)
	set(&p.MemoryCheckInterval, c.MemoryCheckInterval)
	set(&p.RecycleConcurrency, c.RecycleConcurrency)
	set(&p.MemoryMax, c.MemoryMax)
	set(&p.CPUMax, c.CPUMax)
	set(&p.StartupFailures, c.StartupFailures)
	set(&p.RetryGivenUpAfter, c.RetryGivenUpAfter)
	set(&p.MaxQueue, c.MaxQueue)
	set(&p.QueueTimeout, c.QueueTimeout)
	set(&p.SessionAffinityTTL, c.SessionAffinityTTL)
	set(&p.MaxMessageBytes, c.MaxMessageBytes)
	return p
}

// set gives *dst the inherited value v when *dst is unset (zero).
func set[T comparable](dst *T, v T) {
	var zero T
	if *dst == zero {
		*dst = v
	}
}

// pools resolves every pool, the default one first, and checks the
// names: non-empty, unique, not DefaultPool, a safe charset.
func (c *Config) pools() ([]PoolConfig, error) {
	out := make([]PoolConfig, 0, 1+len(c.Pools))
	out = append(out, c.inherit(PoolConfig{Name: DefaultPool, Discovery: c.Discovery}))
	seen := map[string]bool{DefaultPool: true}
	for i, p := range c.Pools {
		if err := validPoolName(p.Name); err != nil {
			return nil, fmt.Errorf("%w: Pools[%d]: %w", ErrInvalidConfig, i, err)
		}
		if seen[p.Name] {
			return nil, fmt.Errorf("%w: Pools[%d]: the name %q is taken (%q is the top-level fields' pool); give each pool its own name", ErrInvalidConfig, i, p.Name, DefaultPool)
		}
		seen[p.Name] = true
		out = append(out, c.inherit(p))
	}
	elastic := false
	for i := range out {
		if err := out[i].setDefaults(out[i].Discovery != nil); err != nil {
			return nil, err
		}
		elastic = elastic || out[i].elastic()
	}
	if !elastic && (c.IdleTimeout != 0 || c.ScaleUpAfter != 0 || c.ScaleUpInterval != 0) {
		return nil, fmt.Errorf("%w: IdleTimeout, ScaleUpAfter and ScaleUpInterval apply to an elastic pool and no pool is one; set MaxWorkers above MinWorkers, or use Workers for a fixed size", ErrInvalidConfig)
	}
	return out, nil
}

func validPoolName(name string) error {
	if name == "" || len(name) > maxPoolName {
		return fmt.Errorf("pool name %q must be 1 to %d characters", name, maxPoolName)
	}
	for i, ch := range []byte(name) {
		switch {
		case ch >= 'a' && ch <= 'z', ch >= 'A' && ch <= 'Z':
		case i > 0 && (ch >= '0' && ch <= '9' || ch == '_' || ch == '-'):
		default:
			return fmt.Errorf("pool name %q: use letters, digits, '_' and '-', starting with a letter (character %d is %q)", name, i, ch)
		}
	}
	return nil
}

// where prefixes a named pool's configuration errors with its name; the
// default pool's name the top-level fields, as they always did.
func (p *PoolConfig) where() string {
	if p.Name == DefaultPool {
		return ""
	}
	return fmt.Sprintf("pool %q: ", p.Name)
}

// setDefaults applies the per-pool defaults and checks the per-pool
// settings, for every pool alike. remoteOnly: Discovery adds the pool's
// workers, so it may start with none.
func (p *PoolConfig) setDefaults(remoteOnly bool) error {
	at := p.where()
	if err := p.setElastic(); err != nil {
		return err
	}
	if p.Workers == 0 && !remoteOnly && !p.elastic() {
		p.Workers = 4
	}
	if p.Workers < 0 {
		return fmt.Errorf("%w: %sWorkers is %d; use at least 1", ErrInvalidConfig, at, p.Workers)
	}
	if p.MinReady < 0 || p.MinReady > p.Workers {
		return fmt.Errorf("%w: %sMinReady %d must be between 0 and Workers (%d)", ErrInvalidConfig, at, p.MinReady, p.Workers)
	}
	if p.Capacity < 0 {
		return fmt.Errorf("%w: %sCapacity is %d; use at least 1", ErrInvalidConfig, at, p.Capacity)
	}
	if p.Capacity == 0 {
		p.Capacity = worker.DefaultCapacity
	}
	if p.Adapter == "" {
		p.Adapter = DefaultAdapter
	}
	if err := grpcworker.CheckAdapter(p.Adapter); err != nil {
		return fmt.Errorf("%w: %sAdapter: %w", ErrInvalidConfig, at, err)
	}
	durations := []struct {
		name string
		d    time.Duration
	}{{"StartupTimeout", p.StartupTimeout}, {"ReadyTimeout", p.ReadyTimeout}, {"QueueTimeout", p.QueueTimeout}, {"SessionAffinityTTL", p.SessionAffinityTTL}, {"HungGrace", p.HungGrace}, {"RecycleAfter", p.RecycleAfter}, {"RetryGivenUpAfter", p.RetryGivenUpAfter}, {"MemoryCheckInterval", p.MemoryCheckInterval}}
	for _, d := range durations {
		if d.d < 0 {
			return fmt.Errorf("%w: %s%s is negative (%s)", ErrInvalidConfig, at, d.name, d.d)
		}
	}
	if p.MaxQueue < 0 || p.RecycleAfterRequests < 0 || p.MaxMessageBytes < 0 || p.HealthMisses < 0 || p.StartupFailures < 0 || p.RecycleConcurrency < 0 {
		return fmt.Errorf("%w: %sMaxQueue, RecycleAfterRequests, MaxMessageBytes, HealthMisses, StartupFailures and RecycleConcurrency must not be negative", ErrInvalidConfig, at)
	}
	if p.RecycleAboveRSS < 0 {
		return fmt.Errorf("%w: %sRecycleAboveRSS is negative (%d); use 0 for no memory limit", ErrInvalidConfig, at, p.RecycleAboveRSS)
	}
	if p.RecycleAboveRSS != 0 && p.RecycleAboveRSS < MinRecycleRSS {
		return fmt.Errorf("%w: %sRecycleAboveRSS is %d bytes; a Python worker alone needs more, use at least %d (MinRecycleRSS) or 0", ErrInvalidConfig, at, p.RecycleAboveRSS, MinRecycleRSS)
	}
	if p.MemoryMax < 0 || p.CPUMax < 0 || math.IsNaN(p.CPUMax) || math.IsInf(p.CPUMax, 0) {
		return fmt.Errorf("%w: %sMemoryMax (%d) and CPUMax (%g) must be finite and not negative; use 0 for no limit", ErrInvalidConfig, at, p.MemoryMax, p.CPUMax)
	}
	if p.MaxMessageBytes != 0 && p.MaxMessageBytes < MinMessageBytes {
		return fmt.Errorf("%w: %sMaxMessageBytes is %d; raise it to at least %d (MinMessageBytes) or leave it 0 for the default", ErrInvalidConfig, at, p.MaxMessageBytes, MinMessageBytes)
	}
	return nil
}

// elastic reports whether the pool grows and shrinks (MaxWorkers set).
func (p *PoolConfig) elastic() bool { return p.MaxWorkers > 0 }

// setElastic checks the elastic settings and makes MinWorkers the initial
// Workers: the one place where Workers, MinWorkers and MaxWorkers relate.
func (p *PoolConfig) setElastic() error {
	at := p.where()
	if p.MaxWorkers < 0 {
		return fmt.Errorf("%w: %sMaxWorkers is %d; use 0 for a fixed-size pool or a bound above MinWorkers", ErrInvalidConfig, at, p.MaxWorkers)
	}
	if !p.elastic() {
		if p.MinWorkers != 0 || p.IdleTimeout != 0 || p.ScaleUpAfter != 0 || p.ScaleUpInterval != 0 {
			return fmt.Errorf("%w: %sMinWorkers, IdleTimeout, ScaleUpAfter and ScaleUpInterval apply to an elastic pool; set MaxWorkers above MinWorkers, or use Workers for a fixed size", ErrInvalidConfig, at)
		}
		return nil
	}
	switch {
	case p.Workers != 0:
		return fmt.Errorf("%w: %sWorkers is %d with MaxWorkers %d; an elastic pool starts with MinWorkers, so leave Workers 0 (or drop MinWorkers/MaxWorkers for a fixed size)", ErrInvalidConfig, at, p.Workers, p.MaxWorkers)
	case p.MinWorkers < 0 || p.MinWorkers >= p.MaxWorkers:
		return fmt.Errorf("%w: %sMinWorkers %d must be at least 0 and below MaxWorkers %d (equal bounds: use Workers)", ErrInvalidConfig, at, p.MinWorkers, p.MaxWorkers)
	case p.IdleTimeout < 0 || p.ScaleUpAfter < 0 || p.ScaleUpInterval < 0:
		return fmt.Errorf("%w: %sIdleTimeout, ScaleUpAfter and ScaleUpInterval must not be negative (0: the default)", ErrInvalidConfig, at)
	}
	p.Workers = p.MinWorkers
	return nil
}

// workerPrefix is what the pool's worker ids start with: none for the
// default pool, "<name>." for the others. Pool names have no '.', so an
// id's pool is the part before its first '.'.
func (p *PoolConfig) workerPrefix() string {
	if p.Name == DefaultPool {
		return ""
	}
	return p.Name + "."
}

// cgroupLimits are the pools' cgroup limits for the registry.
func cgroupLimits(pcs []appPool) []registry.PoolLimits {
	out := make([]registry.PoolLimits, len(pcs))
	for i := range pcs {
		pc := &pcs[i].cfg
		out[i] = registry.PoolLimits{Name: pc.Name, MemoryMax: pc.MemoryMax, CPUMax: pc.CPUMax}
	}
	return out
}
