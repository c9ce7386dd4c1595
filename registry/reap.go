package registry

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/snakepit-go/snakepit/internal/proc"
	bolt "go.etcd.io/bbolt"
)

// ReapReport counts what ReapOrphans did.
type ReapReport struct {
	Runs          int // dead runs found in the file
	Reaped        int // recorded workers verified and stopped, with their process groups
	Descendants   int // other live processes carrying a dead run id, stopped one by one
	SkippedReused int // records whose pid is now another process, or unverifiable: dropped, never signalled
	AlreadyGone   int // recorded workers that had already exited
	// Cgroups counts dead runs' cgroup directories ended and removed;
	// CgroupProcs the processes cgroup.kill found in them (after the steps
	// above: those nothing else could prove ours).
	Cgroups     int
	CgroupProcs int
	// Details has one line per record or process acted on.
	Details []string
}

// reapParallelism bounds concurrent terminations; each may wait a full grace.
const reapParallelism = 32

type deadRun struct {
	records []Record
	keys    [][]byte // every worker key of the run, malformed ones included
	failed  bool     // something could not be stopped: keep the run for the next reaper
	cgroup  string   // the run's recorded cgroup directory, if any
}

// ReapOrphans stops every process of every other run recorded in the file.
// The file lock guarantees that no live instance writes to this file, so
// those runs are dead. ctx cancellation shortens the grace periods; it never
// skips a SIGKILL. Runs where something could not be stopped (or /proc could
// not be scanned) are kept for the next attempt; the returned error joins
// those failures.
func (r *Registry) ReapOrphans(ctx context.Context) (ReapReport, error) {
	began := time.Now()
	rp, err := r.newReaper()
	if err != nil {
		return ReapReport{}, err
	}
	rp.stopRecorded(ctx)
	rp.sweep(ctx)
	rp.reapCgroups()
	rp.forget()
	rep := rp.rep
	r.log.Info("orphan reaping done", "dead_runs", rep.Runs, "reaped", rep.Reaped,
		"descendants", rep.Descendants, "skipped_reused_pid", rep.SkippedReused, "already_gone", rep.AlreadyGone,
		"cgroups", rep.Cgroups, "cgroup_procs", rep.CgroupProcs,
		"failures", len(rp.errs), "took", time.Since(began).Round(time.Millisecond))
	if len(rp.errs) > 0 {
		return rep, fmt.Errorf("registry: reaping orphans left work for the next start: %w", errors.Join(rp.errs...))
	}
	return rep, nil
}

// reaper is one ReapOrphans pass; its steps are separate so tests can run
// the record step alone.
type reaper struct {
	r    *Registry
	runs map[string]*deadRun
	ids  []string // sorted keys of runs
	junk [][]byte // worker keys that belong to no run

	mu   sync.Mutex // guards rep, errs, runs[*].failed
	rep  ReapReport
	errs []error
	wg   sync.WaitGroup
	sem  chan struct{}
}

func (r *Registry) newReaper() (*reaper, error) {
	runs, junk, err := r.deadRuns()
	if err != nil {
		return nil, err
	}
	rp := &reaper{r: r, runs: runs, junk: junk, sem: make(chan struct{}, reapParallelism)}
	for id := range runs {
		rp.ids = append(rp.ids, id)
	}
	sort.Strings(rp.ids)
	rp.rep.Runs = len(runs)
	return rp, nil
}

// Callers of detail and fail hold mu.
func (rp *reaper) detail(format string, a ...any) {
	rp.rep.Details = append(rp.rep.Details, fmt.Sprintf(format, a...))
}

func (rp *reaper) fail(run string, err error) {
	if dr := rp.runs[run]; dr != nil {
		dr.failed = true
	}
	rp.errs = append(rp.errs, err)
	rp.detail("run %s: %v", run, err)
}

func (rp *reaper) locked(f func()) { rp.mu.Lock(); defer rp.mu.Unlock(); f() }

func (rp *reaper) spawn(f func()) {
	rp.wg.Add(1)
	rp.sem <- struct{}{}
	go func() {
		defer rp.wg.Done()
		defer func() { <-rp.sem }()
		f()
	}()
}

// stopRecorded stops recorded workers whose identity verifies, with their
// process groups. A record that does not verify is never acted on.
func (rp *reaper) stopRecorded(ctx context.Context) {
	for _, id := range rp.ids {
		for _, rec := range rp.runs[id].records {
			if rec.State == StateReserved {
				rp.locked(func() { rp.detail("run %s worker %s: reserved, never activated", id, rec.WorkerID) })
				continue
			}
			rp.spawn(func() {
				out, err := proc.TerminateGroup(ctx, rec.Identity(), rp.r.grace)
				rp.locked(func() {
					who := fmt.Sprintf("run %s worker %s pid %d", id, rec.WorkerID, rec.PID)
					switch {
					case errors.Is(err, proc.ErrPIDReused), errors.Is(err, proc.ErrUnverifiable):
						rp.rep.SkippedReused++
						rp.detail("%s: not ours, not signalled: %v", who, err)
					case out == proc.AlreadyGone:
						rp.rep.AlreadyGone++
						rp.detail("%s: already gone", who)
					case out == proc.Terminated || out == proc.Killed:
						rp.rep.Reaped++
						rp.detail("%s: %s", who, out)
						if err != nil {
							rp.fail(id, err)
						}
					default:
						rp.fail(id, fmt.Errorf("%s: %v: %w", who, out, err))
					}
				})
			})
		}
	}
	rp.wg.Wait()
}

// sweep stops anything else still carrying a dead run id: descendants that
// left the group, workers that were only reserved, members of a group whose
// leader is gone. Carrying a run id is the proof of ownership (run ids are
// never reused), and each is verified again when signalled.
func (rp *reaper) sweep(ctx context.Context) {
	if len(rp.ids) == 0 {
		return
	}
	found, err := proc.FindByRunID(rp.ids...)
	if err != nil {
		rp.locked(func() {
			for _, id := range rp.ids {
				rp.fail(id, fmt.Errorf("sweep /proc: %w", err))
			}
		})
		return
	}
	boot, _ := proc.BootID()
	for _, p := range found {
		rp.spawn(func() {
			stop := proc.Terminate
			if p.PGID == p.PID {
				stop = proc.TerminateGroup
			}
			out, err := stop(ctx, p.Identity(boot), rp.r.grace)
			rp.locked(func() {
				who := fmt.Sprintf("run %s pid %d (%s)", p.RunID, p.PID, p.Cmdline)
				switch {
				case out == proc.Terminated || out == proc.Killed:
					rp.rep.Descendants++
					rp.detail("%s: %s", who, out)
					if err != nil {
						rp.fail(p.RunID, err)
					}
				case out == proc.AlreadyGone:
				case errors.Is(err, proc.ErrPIDReused):
					rp.detail("%s: changed identity before it could be signalled: %v", who, err)
				default:
					rp.fail(p.RunID, fmt.Errorf("%s: %v: %w", who, out, err))
				}
			})
		})
	}
	rp.wg.Wait()
}

// forget deletes the dealt-with runs and their records, and junk keys.
func (rp *reaper) forget() {
	if len(rp.runs) == 0 && len(rp.junk) == 0 {
		return
	}
	err := rp.r.db.Update(func(tx *bolt.Tx) error {
		workers, runsB := tx.Bucket(bucketWorkers), tx.Bucket(bucketRuns)
		for _, k := range rp.junk {
			if err := workers.Delete(k); err != nil {
				return err
			}
		}
		for id, dr := range rp.runs {
			if dr.failed {
				continue
			}
			for _, k := range dr.keys {
				if err := workers.Delete(k); err != nil {
					return err
				}
			}
			if err := runsB.Delete([]byte(id)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		rp.errs = append(rp.errs, fmt.Errorf("registry: delete reaped runs: %w", rp.r.mapErr(err)))
	}
}

// deadRuns collects every run other than the current one, from the runs
// bucket and from worker keys (a run entry may be missing), plus worker keys
// that belong to no run at all.
func (r *Registry) deadRuns() (map[string]*deadRun, [][]byte, error) {
	runs := map[string]*deadRun{}
	get := func(id string) *deadRun {
		if runs[id] == nil {
			runs[id] = &deadRun{}
		}
		return runs[id]
	}
	var junk [][]byte
	err := r.view(func(tx *bolt.Tx) error {
		if err := tx.Bucket(bucketRuns).ForEach(func(k, v []byte) error {
			if id := string(k); id != r.runID {
				dr := get(id)
				if run, err := decodeRun(k, v); err == nil {
					dr.cgroup = run.Cgroup
				}
			}
			return nil
		}); err != nil {
			return err
		}
		return tx.Bucket(bucketWorkers).ForEach(func(k, v []byte) error {
			key := bytes.Clone(k) // k is only valid inside the transaction
			runID, _, ok := splitKey(k)
			if !ok {
				r.log.Warn("deleting worker record with a malformed key", "key", string(k))
				junk = append(junk, key)
				return nil
			}
			if runID == r.runID {
				return nil
			}
			dr := get(runID)
			dr.keys = append(dr.keys, key)
			rec, err := decodeRecord(k, v)
			if err != nil {
				r.log.Warn("skipping malformed worker record of a dead run; its run id is still swept", "key", string(k), "err", err)
				return nil
			}
			dr.records = append(dr.records, rec)
			return nil
		})
	})
	return runs, junk, err
}
