// Package cleanup is ApplicationCleanup: the service stopped last, which
// proves — or forces — that no process of the current run outlives the
// application.
//
// Contract:
//
//   - It does nothing while the application runs. When its context ends it
//     sweeps once: every process of this run still alive is found, from the
//     registry's records of this run (identity verified) and by scanning
//     /proc for the run id in argv or environ. Each one is logged at Error
//     level as a bug (an orderly stop should have left none), stopped with
//     SIGTERM, a grace, then SIGKILL — as a process group when it leads
//     one — and its registry record is deleted.
//   - It signals only processes that carry this run's id (a fresh id per
//     run, never reused), re-verified at the moment of signalling through a
//     pidfd; other runs and other instances are never touched. With cgroup
//     containment, processes left in the run's own cgroups (which need no
//     run id: they are the run's by construction) are reported the same way
//     and ended with cgroup.kill.
//   - The result is kept as a Report; Report.Err matches ErrSurvivors when
//     anything was found, so tests and the application can fail loudly.
//
// It must stop after every worker has been reaped and before the registry
// closes: start it after the registry service and before the pool, so the
// reverse-order stop reaches it after the pool and before the registry.
//
// # Who imports it
//
// Applications reach this package through the root package snakepit, which
// wraps it and re-exports the types its API returns; the names exported
// here beyond that are seams between snakepit's own packages.
package cleanup

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/snakepit-go/snakepit/internal/proc"
	"github.com/snakepit-go/snakepit/registry"
)

// Options configure the Service.
type Options struct {
	// RunID of the current run; required (without it nothing can be proven
	// ours and nothing is swept).
	RunID string
	// Registry returns the current run's registry, or nil; it is asked at
	// sweep time because the registry is only open once its service is
	// ready (pass registry.Service.Registry). nil means /proc scan only.
	Registry func() *registry.Registry
	// Logger; default slog.Default(). It should carry the run's
	// attributes (the App's carries run_id): records do not repeat them.
	Logger *slog.Logger
	// KillGrace between SIGTERM and SIGKILL; default 2s.
	KillGrace time.Duration
}

// ErrSurvivors: processes of this run were still alive at shutdown.
var ErrSurvivors = errors.New("processes of this run survived until shutdown")

// ErrServedTwice: a Service was served again; it sweeps one run once.
var ErrServedTwice = errors.New("cleanup: Service already served once; create a new one for a new run")

// SurvivorsError is Report.Err's error; it matches ErrSurvivors.
type SurvivorsError struct {
	RunID  string
	PIDs   []int
	Killed int
}

func (e *SurvivorsError) Error() string {
	return fmt.Sprintf("cleanup: %d process(es) of run %s survived until shutdown (pids %v, %d stopped by the sweep); something did not stop its workers — see the Error log lines for their command lines",
		len(e.PIDs), e.RunID, e.PIDs, e.Killed)
}

func (e *SurvivorsError) Is(target error) bool { return target == ErrSurvivors }

// Survivor is a process of the run the sweep found alive.
type Survivor struct {
	PID       int
	PPID      int
	PGID      int
	StartTime uint64 // clock ticks after boot (/proc/PID/stat field 22)
	Cmdline   string // argv joined by spaces, for logs only
}

// Report is the result of one Sweep.
type Report struct {
	RunID  string
	RanAt  time.Time
	Found  []Survivor // survivors, as found before they were signalled
	Killed int        // how many of them the sweep stopped (others were gone by then)
	Errors []string   // what could not be done; the processes involved may still be alive
}

// Err is non-nil, matching ErrSurvivors, when the sweep found anything.
func (r Report) Err() error {
	if len(r.Found) == 0 {
		return nil
	}
	pids := make([]int, len(r.Found))
	for i, p := range r.Found {
		pids[i] = p.PID
	}
	return &SurvivorsError{RunID: r.RunID, PIDs: pids, Killed: r.Killed}
}

// Service is the suture service; see the package comment.
type Service struct {
	opts    Options
	log     *slog.Logger
	ready   chan struct{}
	done    chan struct{}
	started atomic.Bool

	mu     sync.Mutex
	report Report
	have   bool
}

// New returns a Service for opts.
func New(opts Options) *Service {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.KillGrace <= 0 {
		opts.KillGrace = 2 * time.Second
	}
	return &Service{
		opts:  opts,
		log:   opts.Logger.With("component", "cleanup"),
		ready: make(chan struct{}),
		done:  make(chan struct{}),
	}
}

// Serve closes Ready at once, waits for ctx to end, sweeps once, stores the
// report and returns nil; the outcome is in Report, not in the error, since
// suture ignores what a stopping service returns.
func (s *Service) Serve(ctx context.Context) error {
	if !s.started.CompareAndSwap(false, true) {
		return ErrServedTwice
	}
	close(s.ready)
	<-ctx.Done()
	rep := s.Sweep()
	s.mu.Lock()
	s.report, s.have = rep, true
	s.mu.Unlock()
	close(s.done)
	return nil
}

// Ready is closed as soon as Serve runs.
func (s *Service) Ready() <-chan struct{} { return s.ready }

// Done is closed when Serve's sweep has finished and its report is stored.
func (s *Service) Done() <-chan struct{} { return s.done }

// Report returns the report of Serve's sweep; false until Serve has swept.
func (s *Service) Report() (Report, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.report, s.have
}

// String names the service in suture's logs.
func (s *Service) String() string { return "snakepit cleanup" }

func (s *Service) registry() *registry.Registry {
	if s.opts.Registry == nil {
		return nil
	}
	return s.opts.Registry()
}

// Sweep finds every live process of the run and stops it. It may be called
// directly (e.g. by an embedder's explicit cleanup) as well as by Serve.
func (s *Service) Sweep() Report {
	runID := s.opts.RunID
	rep := Report{RunID: runID, RanAt: time.Now()}
	errorf := func(format string, a ...any) { rep.Errors = append(rep.Errors, fmt.Sprintf(format, a...)) }
	if runID == "" {
		errorf("no run id configured: nothing can be proven to be ours, nothing was swept")
		s.log.Error("cleanup sweep skipped: no run id")
		return rep
	}
	boot, err := proc.BootID()
	if err != nil {
		errorf("%v", err)
		return rep
	}
	reg := s.registry()

	type key struct {
		pid   int
		start uint64
	}
	seen := map[key]bool{}
	var candidates []proc.Process
	// add reports whether p was new.
	add := func(p proc.Process, source string) bool {
		k := key{p.PID, p.StartTime}
		if seen[k] {
			return false
		}
		seen[k] = true
		candidates = append(candidates, p)
		s.log.Error(fmt.Sprintf("survivor of run %s found at shutdown; this is a bug", runID),
			"pid", p.PID, "pgid", p.PGID, "ppid", p.PPID, "cmdline", p.Cmdline, "found_by", source)
		return true
	}

	if reg != nil {
		recs, err := reg.RunRecords(runID)
		if err != nil {
			errorf("registry: %v; swept /proc only", err)
		}
		for _, rec := range recs {
			if rec.State != registry.StateActive || proc.Verify(rec.Identity()) != nil {
				continue // nothing alive to stop; the record is dropped below
			}
			if p, ok := describe(rec.Identity()); ok {
				add(p, "registry record of worker "+rec.WorkerID)
			}
		}
	}

	// Rescan after each round: a dying survivor may have forked. Three
	// rounds bound the sweep even against a fork loop.
	for round := 0; round < 3; round++ {
		found, err := proc.FindByRunID(runID)
		if err != nil {
			errorf("scan /proc: %v", err)
		}
		for _, p := range found {
			add(p, "/proc scan")
		}
		if len(candidates) == 0 {
			break
		}
		for _, p := range candidates {
			rep.Found = append(rep.Found, Survivor{PID: p.PID, PPID: p.PPID, PGID: p.PGID, StartTime: p.StartTime, Cmdline: p.Cmdline})
		}
		killed, errs := stopAll(candidates, boot, s.opts.KillGrace)
		rep.Killed += killed
		rep.Errors = append(rep.Errors, errs...)
		candidates = nil
	}

	if reg != nil {
		s.sweepCgroups(reg, &rep, add)
		s.dropRecords(reg, runID, &rep)
	}
	if len(rep.Found) > 0 {
		s.log.Error("cleanup sweep found survivors at shutdown", "found", len(rep.Found), "stopped", rep.Killed, "errors", len(rep.Errors))
	} else {
		s.log.Debug("cleanup sweep: no survivors", "errors", len(rep.Errors))
	}
	for _, e := range rep.Errors {
		s.log.Error("cleanup sweep problem", "err", e)
	}
	return rep
}

// describe returns the Process for a verified identity, for the report.
func describe(id proc.Identity) (proc.Process, bool) {
	st, err := proc.ReadStat(id.PID)
	if err != nil || st.StartTime != id.StartTime {
		return proc.Process{}, false
	}
	argv, _ := proc.Cmdline(id.PID)
	return proc.Process{PID: id.PID, PPID: st.PPID, PGID: st.PGID, StartTime: st.StartTime, RunID: id.RunID, Cmdline: strings.Join(argv, " ")}, true
}

// stopAll stops the processes concurrently (each may take a full grace).
func stopAll(ps []proc.Process, boot string, grace time.Duration) (killed int, errs []string) {
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, p := range ps {
		wg.Go(func() {
			stop := proc.Terminate
			if p.PGID == p.PID {
				stop = proc.TerminateGroup
			}
			out, err := stop(context.Background(), p.Identity(boot), grace)
			mu.Lock()
			defer mu.Unlock()
			if out == proc.Terminated || out == proc.Killed {
				killed++
			}
			if err != nil && !errors.Is(err, proc.ErrPIDReused) {
				errs = append(errs, fmt.Sprintf("stop pid %d (%s): %s: %v", p.PID, p.Cmdline, out, err))
			}
		})
	}
	wg.Wait()
	return killed, errs
}

// dropRecords deletes this run's records whose process is no longer alive,
// which after the sweep is all of them unless a stop failed; those stay for
// the next start's reaper.
func (s *Service) dropRecords(reg *registry.Registry, runID string, rep *Report) {
	recs, err := reg.RunRecords(runID)
	if err != nil {
		return // already reported above
	}
	for _, rec := range recs {
		if rec.State == registry.StateActive && proc.Verify(rec.Identity()) == nil {
			continue
		}
		if err := reg.Unregister(rec.WorkerID); err != nil {
			rep.Errors = append(rep.Errors, fmt.Sprintf("registry: drop record of worker %s: %v", rec.WorkerID, err))
			continue
		}
		s.log.Warn("dropped a worker record left at shutdown (the worker should Unregister after reaping)",
			"worker_id", rec.WorkerID, "state", rec.State, "pid", rec.PID)
	}
}

// sweepCgroups ends what is still in the run's cgroups after the rounds
// above: with cgroup containment, a process there is the run's by
// construction (it descends from a worker process forked into it), even
// one that scrubbed its environment and carries no run id. Each is
// reported as a survivor — once: not those the rounds above already
// reported, nor those gone before they could be read — then cgroup.kill
// ends them all at once.
func (s *Service) sweepCgroups(reg *registry.Registry, rep *Report, add func(proc.Process, string) bool) {
	cg := reg.Cgroups()
	if cg == nil {
		return
	}
	pids := cg.Procs()
	if len(pids) == 0 {
		return
	}
	found := 0
	for _, pid := range pids {
		st, err := proc.ReadStat(pid)
		if err != nil {
			continue
		}
		argv, _ := proc.Cmdline(pid)
		p := proc.Process{PID: pid, PPID: st.PPID, PGID: st.PGID, StartTime: st.StartTime, Cmdline: strings.Join(argv, " ")}
		if !add(p, "cgroup "+cg.Dir()) {
			continue
		}
		found++
		rep.Found = append(rep.Found, Survivor{PID: p.PID, PPID: p.PPID, PGID: p.PGID, StartTime: p.StartTime, Cmdline: p.Cmdline})
	}
	if err := cg.Kill(s.opts.KillGrace); err != nil {
		rep.Errors = append(rep.Errors, err.Error())
		return
	}
	rep.Killed += found
}
