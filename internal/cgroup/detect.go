// Package cgroup contains each worker process, and so everything it starts,
// in a cgroup v2 directory of its own, so that a descendant that left the
// worker's process group (setsid), double-forked and scrubbed its
// environment is still found — by the kernel, not by proof we would have to
// guess — and ended with the rest (cgroup.kill).
//
// Contract:
//
//   - Detect finds the cgroup v2 hierarchy (pure v2 at /sys/fs/cgroup, or
//     the v2 mount of a hybrid machine) and the cgroup the host process is
//     in. It never changes anything; NewRun does the one write that proves
//     permission (mkdir).
//   - Layout: <v2 mount><host's cgroup>/snakepit-<run id>/<pool>/<key>-<n>.
//     The run directory is created by NewRun with one directory per pool,
//     which carries the pool's Limits (so they bound all its processes
//     together); neither holds a process itself: only the leaves do, one
//     per started worker process, so controllers can be enabled above them
//     without breaking the "no internal processes" rule. The host's own
//     cgroup is never written to (its subtree_control is left as it is);
//     see chooseBase for where controllers come from. Removal goes deepest
//     first (removeTree).
//   - Only directories this package created in this process (Run, Leaf), or
//     named exactly snakepit-<id> for a run id the registry proved dead
//     (ReapDead), are ever killed or removed. Run ids are never reused, so
//     such a name is the proof of ownership, as the run id in a process's
//     environment is for the /proc sweep.
//   - Every wait is bounded.
//
// Linux only; the package imports nothing else of snakepit.
package cgroup

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// Mode names the containment in force. It is what Stats and the logs show.
type Mode string

const (
	// ModeV2: pure cgroup v2 (/sys/fs/cgroup is cgroup2); each worker
	// process in its own cgroup.
	ModeV2 Mode = "cgroup2"
	// ModeHybrid: a cgroup v2 hierarchy mounted beside v1 controllers
	// (e.g. /sys/fs/cgroup/unified); each worker process in its own
	// cgroup, controllers usually absent (they live in v1).
	ModeHybrid Mode = "cgroup2-hybrid"
	// ModeOff: cgroups switched off (Config / SNAKEPIT_CGROUP=off).
	ModeOff Mode = "off"
	// ModeNone: no usable cgroup v2 hierarchy; process groups, tags and
	// run ids only.
	ModeNone Mode = "none"
)

// ModeNoPermission: a cgroup v2 hierarchy exists but this user may not
// create cgroups in the host's cgroup (not delegated to it); fallback as
// with ModeNone.
const ModeNoPermission Mode = "no-permission"

// Contained reports whether worker processes get cgroups under m.
func (m Mode) Contained() bool { return m == ModeV2 || m == ModeHybrid }

// ErrContainment: cgroup containment was required (the policy "required",
// or a pool's MemoryMax/CPUMax) but could not be had — for the run, or
// for one process (registry.ErrContainment is this value).
var ErrContainment = errors.New("cgroup containment unavailable or misconfigured")

// ErrUnavailable is matched by every reason cgroup containment cannot be
// used: no v2 hierarchy, no write permission (no delegation), a kernel
// without cgroup.kill.
var ErrUnavailable = errors.New("cgroup v2 containment is unavailable")

// ErrNoPermission matches an ErrUnavailable caused by missing write
// permission in the host's cgroup (no delegation).
var ErrNoPermission = fmt.Errorf("%w: no write permission", ErrUnavailable)

// Detection is what the machine offers.
type Detection struct {
	Mode Mode
	// Mount is the cgroup v2 mount point; empty with ModeNone.
	Mount string
	// Base is the directory run subtrees are created in: the host's own
	// cgroup on the v2 hierarchy.
	Base string
	// Reason says why Mode is ModeNone (or what is missing).
	Reason string
}

// procSelfCgroup and mountinfo are variables for tests.
var (
	procSelfCgroup = "/proc/self/cgroup"
	mountinfo      = "/proc/self/mountinfo"
)

// Detect looks for a cgroup v2 mount and the host's cgroup in it.
func Detect() Detection {
	mnt, root, hybrid, err := findV2Mount()
	if err != nil {
		return Detection{Mode: ModeNone, Reason: err.Error()}
	}
	cur, err := currentV2Path()
	if err != nil {
		return Detection{Mode: ModeNone, Mount: mnt, Reason: err.Error()}
	}
	rel, ok := underRoot(cur, root)
	if !ok {
		return Detection{Mode: ModeNone, Mount: mnt, Reason: fmt.Sprintf("the host's cgroup %s is outside the mounted part %s of the v2 hierarchy", cur, root)}
	}
	base := filepath.Join(mnt, rel)
	if st, err := os.Stat(base); err != nil || !st.IsDir() {
		return Detection{Mode: ModeNone, Mount: mnt, Reason: fmt.Sprintf("the host's cgroup directory %s is not visible (%v)", base, err)}
	}
	mode := ModeV2
	if hybrid {
		mode = ModeHybrid
	}
	return Detection{Mode: mode, Mount: mnt, Base: base}
}

// underRoot is cgroup path cur relative to a mount of the sub-tree root
// (root != "/" shows paths relative to it); ok is false when cur lies
// outside it — on a directory boundary, so root /a/b does not hold /a/bc.
func underRoot(cur, root string) (rel string, ok bool) {
	rel, ok = strings.CutPrefix(cur, strings.TrimSuffix(root, "/"))
	return rel, ok && (rel == "" || strings.HasPrefix(rel, "/"))
}

// findV2Mount returns the first cgroup2 mount, its root within the
// hierarchy, and whether v1 hierarchies are mounted too.
func findV2Mount() (mnt, root string, hybrid bool, err error) {
	f, err := os.Open(mountinfo)
	if err != nil {
		return "", "", false, fmt.Errorf("cannot read %s: %w", mountinfo, err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// "36 25 0:31 / /sys/fs/cgroup rw,... - cgroup2 cgroup2 rw"
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		if !ok {
			continue
		}
		a, b := strings.Fields(pre), strings.Fields(post)
		if len(a) < 5 || len(b) < 1 {
			continue
		}
		switch b[0] {
		case "cgroup":
			hybrid = true
		case "cgroup2":
			if mnt == "" {
				mnt, root = unescape(a[4]), unescape(a[3])
			}
		}
	}
	if mnt == "" {
		return "", "", false, errors.New("no cgroup2 file system is mounted (a cgroup v1 machine, or one without cgroups)")
	}
	return mnt, root, hybrid, sc.Err()
}

// unescape undoes mountinfo's octal escapes (\040 for a space).
func unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			var v byte
			if _, err := fmt.Sscanf(s[i+1:i+4], "%03o", &v); err == nil {
				b.WriteByte(v)
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// currentV2Path is the host's cgroup on the v2 hierarchy ("0::<path>").
func currentV2Path() (string, error) {
	b, err := os.ReadFile(procSelfCgroup)
	if err != nil {
		return "", fmt.Errorf("cannot read %s: %w", procSelfCgroup, err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if p, ok := strings.CutPrefix(line, "0::"); ok {
			if strings.HasSuffix(p, " (deleted)") {
				return "", fmt.Errorf("the host's cgroup %s was removed", p)
			}
			return p, nil
		}
	}
	return "", errors.New("the host process is in no cgroup v2 (no 0:: line in /proc/self/cgroup)")
}

// isCgroup2 reports whether dir is on a cgroup2 file system.
func isCgroup2(dir string) bool {
	var st unix.Statfs_t
	return unix.Statfs(dir, &st) == nil && st.Type == unix.CGROUP2_SUPER_MAGIC
}
