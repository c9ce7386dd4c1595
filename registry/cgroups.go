package registry

import (
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/snakepit-go/snakepit/internal/cgroup"
	bolt "go.etcd.io/bbolt"
)

// Containment policies (Options.Containment; SNAKEPIT_CGROUP when empty).
const (
	// ContainAuto uses cgroup v2 containment where the machine offers it
	// and falls back to process groups, tags and run ids otherwise.
	ContainAuto = "auto"
	// ContainOff never creates cgroups.
	ContainOff = "off"
	// ContainRequired fails the start when cgroup v2 containment is
	// unavailable.
	ContainRequired = "required"
)

// EnvContainment chooses the policy when Options.Containment is empty.
const EnvContainment = "SNAKEPIT_CGROUP"

// ErrContainment: cgroup containment was required (ContainRequired, or a
// MemoryMax/CPUMax limit) but the machine does not offer it; no worker was
// started. It matches cgroup's unavailability reason in its message. A
// worker process whose own cgroup cannot be made or entered under such a
// policy fails its start with it too (childproc).
var ErrContainment = cgroup.ErrContainment

// CheckContainment validates a Containment setting ("" included).
func CheckContainment(opt string) error {
	if opt == "" {
		return nil
	}
	_, err := policy(opt)
	return err
}

// policy is the effective containment policy.
func policy(opt string) (string, error) {
	src := "Containment"
	if opt == "" {
		opt, src = os.Getenv(EnvContainment), EnvContainment
	}
	switch opt {
	case "", ContainAuto:
		return ContainAuto, nil
	case ContainOff, ContainRequired:
		return opt, nil
	}
	return "", fmt.Errorf("%w: %s is %q; use %q, %q or %q", ErrContainment, src, opt, ContainAuto, ContainOff, ContainRequired)
}

// Contain sets up this run's cgroup v2 subtree according to the policy,
// with a cgroup for each of pools carrying its limits, records its
// directory in the run's entry (so the next start can end it if this host
// dies), and logs which containment is in force.
// An error (ErrContainment) means a required containment or limit is not
// available (the message names the pool that asked); without one,
// unavailability is a logged fallback.
func (r *Registry) Contain(opt string, pools []PoolLimits) error {
	if r.Containment() != "" {
		// A second call would find the run's directory and end it, with
		// the workers in it.
		return fmt.Errorf("%w: Contain was already called for run %s", ErrContainment, r.runID)
	}
	pol, err := policy(opt)
	if err != nil {
		return err
	}
	cps, limited := cgroupPools(pools)
	if pol == ContainOff {
		if limited != "" {
			return fmt.Errorf("%w: pool %q sets MemoryMax/CPUMax, which need cgroup containment, and it is switched off (%s=off or Containment \"off\"); unset the pool's limits or the switch", ErrContainment, limited, EnvContainment)
		}
		r.setMode(cgroup.ModeOff)
		r.log.Info("cgroup containment switched off; worker processes are contained by process groups, tags and run ids", "containment", cgroup.ModeOff)
		return nil
	}
	det := cgroup.Detect()
	run, err := cgroup.NewRun(det, r.runID, cps)
	if err != nil {
		var ce *cgroup.ControllerError
		switch {
		case pol == ContainRequired || errors.As(err, &ce):
			return fmt.Errorf("%w: %w", ErrContainment, err)
		case limited != "":
			return fmt.Errorf("%w: pool %q sets MemoryMax/CPUMax, which need cgroup v2 containment: %w", ErrContainment, limited, err)
		}
		mode := cgroup.ModeNone
		if errors.Is(err, cgroup.ErrNoPermission) {
			mode = cgroup.ModeNoPermission
		}
		r.setMode(mode)
		r.log.Info("no cgroup v2 containment; worker processes are contained by process groups, tags and run ids", "containment", mode, "reason", err.Error())
		return nil
	}
	if err := r.recordCgroup(run.Dir()); err != nil {
		_ = run.Close(time.Second)
		return err
	}
	wd, err := run.StartWatchdog()
	if err != nil {
		// The next start's reaper still ends what a dead host leaves.
		r.log.Warn("no host-death watchdog; if this host is killed, its workers' cgroups are ended by the next start or `snakepit reap`", "err", err)
	}
	r.wd = wd
	if pol == ContainRequired {
		run.Require()
	}
	r.cg.Store(run)
	r.setMode(run.Mode())
	r.log.Info("cgroup v2 containment in force: one cgroup per pool, one per worker process in it", "containment", run.Mode(), "cgroup", run.Dir(),
		"memory_accounting", run.Memory())
	for _, p := range pools {
		if p.MemoryMax > 0 || p.CPUMax > 0 {
			r.log.Info("pool limits in force", "pool", p.Name, "cgroup", run.PoolDir(p.Name), "memory_max", p.MemoryMax, "cpu_max", p.CPUMax)
		}
	}
	return nil
}

// cgroupPools converts pools for cgroup.NewRun; limited names the first
// pool with a limit ("" when none has one).
func cgroupPools(pools []PoolLimits) (out []cgroup.Pool, limited string) {
	out = make([]cgroup.Pool, len(pools))
	for i, p := range pools {
		out[i] = cgroup.Pool{Name: p.Name, Limits: cgroup.Limits{MemoryMax: p.MemoryMax, CPUMax: p.CPUMax}}
		if limited == "" && (p.MemoryMax > 0 || p.CPUMax > 0) {
			limited = p.Name
		}
	}
	return out, limited
}

func (r *Registry) setMode(m cgroup.Mode) { r.mode.Store(string(m)) }

// Containment names the containment in force for this run: "cgroup2",
// "cgroup2-hybrid", "none", "no-permission", "off"; "" before Contain.
func (r *Registry) Containment() string {
	s, _ := r.mode.Load().(string)
	return s
}

// Cgroups is this run's cgroup subtree, nil without cgroup containment.
// The App's launchers (childproc) put each process they start in a cgroup
// of it.
func (r *Registry) Cgroups() *cgroup.Run { return r.cg.Load() }

func (r *Registry) recordCgroup(dir string) error {
	host := r.host
	host.Cgroup = dir
	err := r.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketRuns).Put([]byte(r.runID), encode(host))
	})
	if err != nil {
		return fmt.Errorf("registry %s: record the run's cgroup: %w", r.path, r.mapErr(err))
	}
	r.host = host
	return nil
}

// closeCgroups ends what is left in the run's cgroups and removes them; an
// error keeps the run's entry for the next start.
func (r *Registry) closeCgroups() error {
	run := r.cg.Load()
	if run == nil {
		return nil
	}
	if r.wd != nil {
		if err := r.wd.Stop(); err != nil {
			r.log.Warn("host-death watchdog", "err", err)
		}
	}
	if pids := run.Procs(); len(pids) > 0 {
		r.log.Error("processes left in the run's cgroup at close; killing them (cgroup.kill)", "pids", pids, "cgroup", run.Dir())
	}
	if err := run.Close(r.grace); err != nil {
		r.log.Error("cannot remove the run's cgroup; the next start retries", "err", err)
		return err
	}
	return nil
}

// reapCgroups ends and removes the cgroup directories of dead runs: the
// one each run recorded, and those named for its run id where this host
// would create them. Whatever is still in them — a descendant that scrubbed
// its environment and outlived a SIGKILLed worker and host included — is
// killed by cgroup.kill: run ids are never reused, so a directory named
// for a dead run id is that run's.
func (rp *reaper) reapCgroups() {
	if len(rp.ids) == 0 {
		return // no dead run: nothing to look for (Detect reads /proc)
	}
	det := cgroup.Detect()
	for _, id := range rp.ids {
		for _, dir := range cgroup.RunDirs(det, id, rp.runs[id].cgroup) {
			pids, err := cgroup.EndDir(dir, id, rp.r.grace)
			rp.locked(func() {
				rp.rep.Cgroups++
				rp.rep.CgroupProcs += len(pids)
				rp.detail("run %s cgroup %s: %d process(es) killed by cgroup.kill", id, dir, len(pids))
				if err != nil {
					rp.fail(id, err)
				}
			})
		}
	}
}
