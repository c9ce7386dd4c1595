package doctor

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/snakepit-go/snakepit/internal/proc"
	"github.com/snakepit-go/snakepit/registry"
)

// lockWait is how long the registry check waits for bbolt's lock: a live
// holder keeps it for its whole run, so a short wait tells.
const lockWait = 300 * time.Millisecond

// checkRegistry reports whether a run could open the registry (writable,
// not locked by a live instance) and what dead runs left behind in it.
func checkRegistry(o Options) []Check {
	path := o.RegistryPath
	if path == "" {
		return []Check{{Name: "registry", Status: Fail, Detail: "no registry path: the state directory is unknown",
			Fix: "set XDG_STATE_HOME or HOME, or give --registry PATH"}}
	}
	if c, ok := writable(path); !ok {
		return []Check{c, {Name: "leftovers", Status: Skip, Detail: "registry not readable"}}
	}
	runs, recs, err := registry.Inspect(path, lockWait)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return []Check{
			{Name: "registry", Status: Pass, Detail: path + " does not exist yet; its directory is writable"},
			{Name: "leftovers", Status: Pass, Detail: "no registry, so no dead runs"},
		}
	case errors.Is(err, registry.ErrLocked):
		return []Check{
			{Name: "registry", Status: Fail, Detail: err.Error(),
				Fix: "stop the instance that holds it, or give this pool its own --instance NAME or --registry PATH"},
			{Name: "leftovers", Status: Skip, Detail: "the registry belongs to a running instance"},
		}
	case err != nil:
		return []Check{
			{Name: "registry", Status: Fail, Detail: err.Error(),
				Fix: "move the file aside (a run would quarantine a corrupt one) or give --registry PATH"},
			{Name: "leftovers", Status: Skip, Detail: "registry not readable"},
		}
	}
	return []Check{
		{Name: "registry", Status: Pass, Detail: path + " is writable and not locked"},
		leftovers(path, runs, recs),
	}
}

// writable says whether a run could create or write path: the file itself
// when it exists, else the nearest existing directory on the way to it.
func writable(path string) (Check, bool) {
	target := path
	for {
		if _, err := os.Stat(target); err == nil {
			break
		}
		parent := filepath.Dir(target)
		if parent == target {
			break
		}
		target = parent
	}
	if err := unix.Access(target, unix.W_OK); err != nil {
		return Check{Name: "registry", Status: Fail, Detail: fmt.Sprintf("%s: %s is not writable (%v)", path, target, err),
			Fix: "give this user write access to " + target + ", or give --registry PATH in a writable directory"}, false
	}
	return Check{}, true
}

// leftovers reports the records of dead runs: a process that still lives
// (its identity verifies, or it carries a dead run's id) fails the check,
// records alone only warn; both are what `snakepit reap` clears.
func leftovers(path string, runs []registry.Run, recs []registry.Record) Check {
	dead := map[string]bool{}
	for _, r := range runs {
		dead[r.RunID] = true
	}
	var live []string
	seen := map[int]bool{}
	for _, rec := range recs {
		dead[rec.RunID] = true
		if rec.PID > 0 && proc.Verify(rec.Identity()) == nil {
			seen[rec.PID] = true
			live = append(live, fmt.Sprintf("pid %d (run %s, worker %s)", rec.PID, rec.RunID, rec.WorkerID))
		}
	}
	ids := make([]string, 0, len(dead))
	for id := range dead {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	if len(ids) > 0 {
		// Descendants that left the group, workers only reserved.
		if ps, err := proc.FindByRunID(ids...); err == nil {
			for _, p := range ps {
				if !seen[p.PID] {
					live = append(live, fmt.Sprintf("pid %d (run %s)", p.PID, p.RunID))
				}
			}
		}
	}
	reap := "snakepit reap --registry " + path
	switch {
	case len(live) > 0:
		return Check{Name: "leftovers", Status: Fail,
			Detail: fmt.Sprintf("%d process(es) of dead runs still live: %s", len(live), strings.Join(live, ", ")),
			Fix:    "run `" + reap + "` (a pool's start reaps them too, but they hold memory and ports until then)"}
	case len(recs) > 0 || len(runs) > 0:
		return Check{Name: "leftovers", Status: Warn,
			Detail: fmt.Sprintf("%d dead run(s) with %d record(s) and no live process", len(ids), len(recs)),
			Fix:    "run `" + reap + "` to clear them (the next start does it too)"}
	}
	return Check{Name: "leftovers", Status: Pass, Detail: "no dead runs recorded"}
}
