// Package fake is an in-process worker type built only on the public
// contract in package worker. The pool's tests use it, and it doubles as the
// worked example of a custom worker type: nothing here is privileged, so
// anything a Python worker does to the pool, a user's own type can do too.
//
// Writing your own worker type takes four things, all visible below:
//
//	type MyWorker struct{ spec worker.Spec /* ... */ }
//
//	func (w *MyWorker) ID() string { return w.spec.ID }
//
//	// Serve is one lifetime: report Starting, get ready, report Ready,
//	// run until ctx ends or the lifetime dies, then report Exited exactly
//	// once, after everything the lifetime started is gone.
//	func (w *MyWorker) Serve(ctx context.Context) error {
//		w.spec.Events.Starting(w.spec.ID)
//		conn, err := dial(ctx) // spawn, connect, handshake ...
//		if err != nil {
//			serr := &worker.StartupError{WorkerID: w.spec.ID, Cause: err}
//			w.spec.Events.Exited(w.spec.ID, serr)
//			return serr // non-nil: the restarter tries again with backoff
//		}
//		w.spec.Events.Ready(w.spec.ID, worker.Info{Tools: conn.Tools()})
//		err = conn.Wait(ctx) // nil when ctx ended, a *worker.CrashError otherwise
//		w.spec.Events.Exited(w.spec.ID, err)
//		return err
//	}
//
//	// Execute / ExecuteStream: honour ctx (its deadline is the call's
//	// deadline), return worker.ErrWorkerUnavailable outside Ready..Exited and
//	// an error matching worker.ErrWorkerCrashed if the lifetime dies under
//	// the call.
//	func (w *MyWorker) Execute(ctx context.Context, c *worker.Call) (*worker.Result, error)
//	func (w *MyWorker) ExecuteStream(ctx context.Context, c *worker.Call, yield func(worker.Chunk) error) error
//
//	// Kill ends the lifetime now and must not block: the pool calls it from
//	// a timer when a call overran its deadline, and relies on the pending
//	// Execute returning soon after.
//	func (w *MyWorker) Kill(reason string)
//
// Then hand a worker.Factory that builds it to the application config.
package fake

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/snakepit-go/snakepit/worker"
)

// ToolFunc serves one unary tool. ctx is cancelled when the caller's ctx ends
// or when the worker's lifetime ends (crash, kill, stop).
type ToolFunc func(ctx context.Context, call *worker.Call) (*worker.Result, error)

// StreamFunc serves one streaming tool; yield blocks until the consumer has
// taken the chunk and returns an error when the consumer stopped. As for
// worker.Worker.ExecuteStream, yield must not be called after the
// StreamFunc returned (nor from two goroutines at once).
type StreamFunc func(ctx context.Context, call *worker.Call, yield func(worker.Chunk) error) error

// Echo is a ToolFunc that returns the call's arguments as its result ({} for nil).
func Echo(_ context.Context, call *worker.Call) (*worker.Result, error) {
	if call.Args == nil {
		return &worker.Result{JSON: []byte("{}")}, nil
	}
	return &worker.Result{JSON: call.Args}, nil
}

type config struct {
	specs          map[string]worker.ToolSpec
	tools          map[string]ToolFunc
	streams        map[string]StreamFunc
	batches        map[string]BatchFunc
	hang           map[string]bool
	hideTools      bool
	readyDelay     time.Duration
	failStart      error
	failStartTimes int
	pid            int
}

// Option configures a fake worker.
type Option func(*config)

// WithTool registers a unary tool.
func WithTool(name string, fn ToolFunc) Option {
	return func(c *config) { c.tools[name] = fn }
}

// WithToolSpec registers a unary tool with the spec Ready reports for it,
// e.g. one declaring MaxConcurrency or Timeout, which the pool enforces.
func WithToolSpec(spec worker.ToolSpec, fn ToolFunc) Option {
	return func(c *config) {
		c.tools[spec.Name] = fn
		c.specs[spec.Name] = spec
	}
}

// BatchFunc serves a batch tool: one result per call, in order. An error
// fails the whole request (as a process's crash would).
type BatchFunc func(ctx context.Context, calls []*worker.Call) ([]worker.BatchResult, error)

// WithBatchTool registers a batch tool (spec.BatchMaxSize > 0): the pool
// sends it batches through ExecuteBatch, and a single call through Execute
// is a batch of one.
func WithBatchTool(spec worker.ToolSpec, fn BatchFunc) Option {
	return func(c *config) {
		c.specs[spec.Name] = spec
		c.batches[spec.Name] = fn
		c.tools[spec.Name] = func(ctx context.Context, call *worker.Call) (*worker.Result, error) {
			res, err := fn(ctx, []*worker.Call{call})
			if err != nil {
				return nil, err
			}
			if len(res) != 1 {
				return nil, fmt.Errorf("fake: batch tool %q returned %d results for one call", spec.Name, len(res))
			}
			return res[0].Result, res[0].Err
		}
	}
}

// WithTools registers several unary tools.
func WithTools(tools map[string]ToolFunc) Option {
	return func(c *config) {
		for n, fn := range tools {
			c.tools[n] = fn
		}
	}
}

// WithStreamTool registers a streaming tool.
func WithStreamTool(name string, fn StreamFunc) Option {
	return func(c *config) { c.streams[name] = fn }
}

// WithHangingTool registers a tool that behaves like Python stuck in native
// code: it ignores the call's cancellation and deadline and returns (with a
// crash error) only when the lifetime ends, e.g. through Kill.
func WithHangingTool(name string) Option {
	return func(c *config) { c.hang[name] = true }
}

// WithoutToolList makes Ready report no tools, like a worker type that cannot
// describe itself; the worker still serves its registered tools.
func WithoutToolList() Option {
	return func(c *config) { c.hideTools = true }
}

// WithReadyDelay makes each lifetime take d between Starting and Ready.
func WithReadyDelay(d time.Duration) Option {
	return func(c *config) { c.readyDelay = d }
}

// WithFailStart makes the first `times` lifetimes fail before becoming ready
// with a *worker.StartupError caused by err (err itself if it already is a
// *worker.StartupError). times <= 0 means every lifetime fails.
func WithFailStart(err error, times int) Option {
	return func(c *config) { c.failStart, c.failStartTimes = err, times }
}

// WithPID sets the pid reported in Info and errors (default 0: no process).
func WithPID(pid int) Option {
	return func(c *config) { c.pid = pid }
}

// Worker is an in-process worker. Safe for concurrent use.
type Worker struct {
	spec   worker.Spec
	events worker.Events
	cfg    config
	infos  []worker.ToolSpec

	mu          sync.Mutex
	serving     bool
	life        *lifetime
	lifetimes   int
	calls       int64
	maxInFlight int
	kills       []string
}

// lifetime is one call of Serve. Calls register in an intrusive list so that
// ending the lifetime can cancel them without a goroutine per call.
type lifetime struct {
	ready   bool
	ended   bool
	endErr  error         // nil: requested stop
	done    chan struct{} // closed when the lifetime ends
	drained chan struct{} // made on end when calls are still running
	head    *inflight
	n       int
}

type inflight struct {
	cancel     context.CancelCauseFunc
	prev, next *inflight
	yerr       error // a stream's: what the consumer's yield returned
}

var inflightPool = sync.Pool{New: func() any { return new(inflight) }}

var (
	_ worker.Worker        = (*Worker)(nil)
	_ worker.BatchExecutor = (*Worker)(nil)
)

// New builds a fake worker for spec.
func New(spec worker.Spec, opts ...Option) *Worker {
	cfg := config{specs: map[string]worker.ToolSpec{}, tools: map[string]ToolFunc{}, streams: map[string]StreamFunc{}, batches: map[string]BatchFunc{}, hang: map[string]bool{}}
	for _, o := range opts {
		o(&cfg)
	}
	w := &Worker{spec: spec, events: spec.Events, cfg: cfg}
	if w.events == nil {
		w.events = nopEvents{}
	}
	if !cfg.hideTools {
		for n := range cfg.tools {
			spec, ok := cfg.specs[n]
			if !ok {
				spec = worker.ToolSpec{Name: n}
			}
			w.infos = append(w.infos, spec)
		}
		for n := range cfg.hang {
			w.infos = append(w.infos, worker.ToolSpec{Name: n})
		}
		for n := range cfg.streams {
			w.infos = append(w.infos, worker.ToolSpec{Name: n, SupportsStreaming: true})
		}
		slices.SortFunc(w.infos, func(a, b worker.ToolSpec) int {
			if a.Name < b.Name {
				return -1
			}
			if a.Name > b.Name {
				return 1
			}
			return 0
		})
	}
	return w
}

// ID returns the worker id.
func (w *Worker) ID() string { return w.spec.ID }

// String names the worker in supervisor logs.
func (w *Worker) String() string { return "fake worker " + w.spec.ID }

var (
	errAlreadyServing = errors.New("fake: Serve called while a lifetime is running")
	errHung           = errors.New("fake: hanging tool released by the end of its lifetime")
)

// Serve runs one lifetime: Starting, (ready delay), Ready, then until ctx
// ends (Exited(nil), returns nil) or the lifetime is ended by Crash or Kill
// (Exited(err), returns that *worker.CrashError so a restarter restarts it).
// In-flight calls are cancelled and have returned before Exited is reported.
func (w *Worker) Serve(ctx context.Context) error {
	w.mu.Lock()
	if w.serving {
		w.mu.Unlock()
		return errAlreadyServing
	}
	w.serving = true
	w.lifetimes++
	n := w.lifetimes
	l := &lifetime{done: make(chan struct{})}
	w.life = l
	w.mu.Unlock()
	defer func() {
		w.mu.Lock()
		w.serving = false
		w.mu.Unlock()
	}()

	w.events.Starting(w.spec.ID)

	if w.cfg.readyDelay > 0 {
		t := time.NewTimer(w.cfg.readyDelay)
		select {
		case <-ctx.Done():
		case <-l.done:
		case <-t.C:
		}
		t.Stop()
	}

	if err := ctx.Err(); err == nil && w.cfg.failStart != nil && (w.cfg.failStartTimes <= 0 || n <= w.cfg.failStartTimes) {
		var serr *worker.StartupError
		if !errors.As(w.cfg.failStart, &serr) {
			serr = &worker.StartupError{
				WorkerID: w.spec.ID, PID: w.cfg.pid, Cause: w.cfg.failStart,
				Hint: "the fake worker was configured to fail its startup",
			}
		}
		if w.end(l, serr) { // unless Kill or Crash ended it first
			w.events.Exited(w.spec.ID, serr)
			return serr
		}
	}

	w.mu.Lock()
	if !l.ended && ctx.Err() == nil {
		l.ready = true
	}
	ready := l.ready
	w.mu.Unlock()
	if ready {
		w.events.Ready(w.spec.ID, worker.Info{PID: w.cfg.pid, Tools: slices.Clone(w.infos)})
		select {
		case <-ctx.Done():
		case <-l.done:
		}
	}
	w.end(l, nil) // no-op if Crash or Kill got there first
	<-w.drained(l)
	err := l.endErr
	w.events.Exited(w.spec.ID, err)
	return err
}

// end finishes l with err (first caller wins) and cancels its calls.
func (w *Worker) end(l *lifetime, err error) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if l.ended {
		return false
	}
	l.ended = true
	l.ready = false
	l.endErr = err
	cause := err
	if cause == nil {
		cause = w.crash(0, 0, "worker stopped")
	}
	for c := l.head; c != nil; c = c.next {
		c.cancel(cause)
	}
	close(l.done)
	return true
}

// drained is closed once no call of l is running.
func (w *Worker) drained(l *lifetime) <-chan struct{} {
	w.mu.Lock()
	defer w.mu.Unlock()
	if l.n == 0 {
		c := make(chan struct{})
		close(c)
		return c
	}
	if l.drained == nil {
		l.drained = make(chan struct{})
	}
	return l.drained
}

func (w *Worker) crash(signal syscall.Signal, code int, reason string) *worker.CrashError {
	if signal != 0 {
		code = -1
	}
	return &worker.CrashError{WorkerID: w.spec.ID, PID: w.cfg.pid, ExitCode: code, Signal: signal, Reason: reason}
}

// Crash ends the current lifetime as if the process died (exit status 1):
// in-flight calls fail with a *worker.CrashError and Serve returns it.
func (w *Worker) Crash() {
	w.mu.Lock()
	l := w.life
	w.mu.Unlock()
	if l != nil {
		w.end(l, w.crash(0, 1, ""))
	}
}

// Kill ends the current lifetime as if the host sent SIGKILL; it never blocks.
func (w *Worker) Kill(reason string) {
	w.mu.Lock()
	l := w.life
	w.kills = append(w.kills, reason)
	w.mu.Unlock()
	if l != nil {
		w.end(l, w.crash(syscall.SIGKILL, -1, reason))
	}
}

// begin registers a call on the current lifetime.
func (w *Worker) begin(ctx context.Context) (context.Context, *lifetime, *inflight, error) {
	w.mu.Lock()
	l := w.life
	if l == nil || !l.ready {
		w.mu.Unlock()
		return nil, nil, nil, fmt.Errorf("%w: fake worker %s is not between Ready and Exited", worker.ErrWorkerUnavailable, w.spec.ID)
	}
	l.n++
	w.calls++
	if l.n > w.maxInFlight {
		w.maxInFlight = l.n
	}
	over := w.spec.Capacity > 0 && l.n > w.spec.Capacity
	c := inflightPool.Get().(*inflight)
	cctx, cancel := context.WithCancelCause(ctx)
	c.cancel = cancel
	c.prev, c.next = nil, l.head
	if l.head != nil {
		l.head.prev = c
	}
	l.head = c
	w.mu.Unlock()
	if over {
		// The pool promised never to exceed Spec.Capacity; make a violation loud.
		w.finish(l, c)
		return nil, nil, nil, fmt.Errorf("fake: worker %s got more than its capacity of %d concurrent calls", w.spec.ID, w.spec.Capacity)
	}
	return cctx, l, c, nil
}

// finish unregisters a call and reports how the lifetime stood when it returned.
func (w *Worker) finish(l *lifetime, c *inflight) (ended bool, endErr error) {
	w.mu.Lock()
	if c.prev != nil {
		c.prev.next = c.next
	} else {
		l.head = c.next
	}
	if c.next != nil {
		c.next.prev = c.prev
	}
	l.n--
	if l.n == 0 && l.drained != nil {
		close(l.drained)
	}
	ended, endErr = l.ended, l.endErr
	w.mu.Unlock()
	c.cancel(nil)
	*c = inflight{}
	inflightPool.Put(c)
	return ended, endErr
}

// outcome applies the lifetime's fate to a call's result: a dead process
// cannot have delivered anything, while a requested stop lets finished
// results through and turns only failures into a crash error.
func (w *Worker) outcome(ended bool, endErr error, err error) error {
	if !ended {
		return err
	}
	if endErr != nil {
		var ce *worker.CrashError
		if errors.As(endErr, &ce) {
			return ce
		}
		return w.crash(0, 1, "")
	}
	if err != nil {
		return w.crash(0, 0, "worker stopped")
	}
	return nil
}

// Execute runs a unary tool.
func (w *Worker) Execute(ctx context.Context, call *worker.Call) (*worker.Result, error) {
	fn, ok := w.cfg.tools[call.Tool]
	hang := w.cfg.hang[call.Tool]
	if !ok && !hang {
		if _, ok := w.cfg.streams[call.Tool]; ok {
			return nil, fmt.Errorf("fake: tool %q is a streaming tool; call ExecuteStream", call.Tool)
		}
		return nil, w.unknown(call.Tool)
	}
	cctx, l, c, err := w.begin(ctx)
	if err != nil {
		return nil, err
	}
	var res *worker.Result
	if hang {
		<-l.done
		err = errHung
	} else {
		res, err = fn(cctx, call)
	}
	ended, endErr := w.finish(l, c)
	if err = w.outcome(ended, endErr, err); err != nil {
		return nil, err
	}
	return res, nil
}

// ExecuteBatch runs a batch tool's calls as one request (one capacity slot).
func (w *Worker) ExecuteBatch(ctx context.Context, tool string, calls []*worker.Call) ([]worker.BatchResult, error) {
	fn, ok := w.cfg.batches[tool]
	if !ok {
		return nil, fmt.Errorf("fake: tool %q is not a batch tool", tool)
	}
	cctx, l, c, err := w.begin(ctx)
	if err != nil {
		return nil, err
	}
	w.mu.Lock()
	w.calls += int64(len(calls)) - 1 // Calls counts calls, not requests
	w.mu.Unlock()
	res, err := fn(cctx, calls)
	ended, endErr := w.finish(l, c)
	if err = w.outcome(ended, endErr, err); err != nil {
		return nil, err
	}
	return res, nil
}

// ExecuteStream runs a streaming tool; a yield error ends it and is returned.
func (w *Worker) ExecuteStream(ctx context.Context, call *worker.Call, yield func(worker.Chunk) error) error {
	fn, ok := w.cfg.streams[call.Tool]
	if !ok {
		return w.unknown(call.Tool)
	}
	cctx, l, c, err := w.begin(ctx)
	if err != nil {
		return err
	}
	finished := false
	defer func() {
		if !finished { // the consumer panicked inside yield
			w.finish(l, c)
		}
	}()
	// yerr lives in c (pooled) so that the callback is the call's only
	// allocation here; c is not reused before finish, after fn returned.
	err = fn(cctx, call, func(ch worker.Chunk) error {
		if c.yerr != nil {
			return c.yerr
		}
		if err := cctx.Err(); err != nil {
			return context.Cause(cctx)
		}
		c.yerr = yield(ch)
		return c.yerr
	})
	finished = true
	yerr := c.yerr
	ended, endErr := w.finish(l, c)
	if yerr != nil && !ended {
		return yerr
	}
	return w.outcome(ended, endErr, err)
}

func (w *Worker) unknown(tool string) error {
	names := make([]string, 0, len(w.infos))
	for _, t := range w.infos {
		names = append(names, t.Name)
	}
	return &worker.UnknownToolError{Tool: tool, Available: names}
}

// Lifetimes is how many times Serve has been called.
func (w *Worker) Lifetimes() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.lifetimes
}

// Calls is how many calls were accepted (reached a tool) over all lifetimes.
func (w *Worker) Calls() int64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.calls
}

// InFlight is the number of calls running now.
func (w *Worker) InFlight() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.life == nil {
		return 0
	}
	return w.life.n
}

// MaxInFlight is the most calls that ever ran at once.
func (w *Worker) MaxInFlight() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.maxInFlight
}

// Kills returns the reasons Kill was called with, oldest first.
func (w *Worker) Kills() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.kills)
}

// IsReady reports whether the current lifetime takes calls.
func (w *Worker) IsReady() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.life != nil && w.life.ready
}

// Factory builds fake workers and remembers them by id.
type Factory struct {
	// Options apply to every worker.
	Options []Option
	// PerWorker, if set, adds options for one worker (e.g. make "w2" fail to start).
	PerWorker func(spec worker.Spec) []Option

	mu    sync.Mutex
	built map[string]*Worker
	order []string
}

var _ worker.Factory = (*Factory)(nil)

// NewWorker builds a worker; it implements worker.Factory.
func (f *Factory) NewWorker(spec worker.Spec) (worker.Worker, error) {
	opts := slices.Clone(f.Options)
	if f.PerWorker != nil {
		opts = append(opts, f.PerWorker(spec)...)
	}
	w := New(spec, opts...)
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.built == nil {
		f.built = map[string]*Worker{}
	}
	if _, dup := f.built[spec.ID]; !dup {
		f.order = append(f.order, spec.ID)
	}
	f.built[spec.ID] = w
	return w, nil
}

// Worker returns the worker built for id, or nil.
func (f *Factory) Worker(id string) *Worker {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.built[id]
}

// Workers returns the workers built so far, in build order.
func (f *Factory) Workers() []*Worker {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]*Worker, 0, len(f.order))
	for _, id := range f.order {
		out = append(out, f.built[id])
	}
	return out
}

type nopEvents struct{}

func (nopEvents) Starting(string)                      {}
func (nopEvents) Ready(string, worker.Info)            {}
func (nopEvents) Exited(id string, _ error)            {}
func (nopEvents) Recycled(string, worker.Info, string) {}
