package grpcworker

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// ErrPythonNotFound: no interpreter with grpc (and its compiled core) and
// protobuf >= 3.20 was found.
var ErrPythonNotFound = errors.New("snakepit: no usable Python interpreter")

// Candidate is one interpreter the discovery looked at.
type Candidate struct {
	Path    string // as given or resolved
	Source  string // where it came from: "Config.Python", "SNAKEPIT_PYTHON", "VIRTUAL_ENV", ".venv", "PATH", "system"
	Problem string // why it was rejected; empty for the chosen one
}

// DiscoveryError lists every interpreter tried and says how to fix it.
type DiscoveryError struct {
	Tried []Candidate
}

func (e *DiscoveryError) Error() string {
	var b strings.Builder
	b.WriteString("snakepit: no Python interpreter with grpcio and protobuf>=3.20 was found; tried:\n")
	for _, c := range e.Tried {
		fmt.Fprintf(&b, "  - %s (%s): %s\n", c.Path, c.Source, c.Problem)
	}
	b.WriteString("fix: install the packages for one interpreter and point snakepit at it, e.g.\n" +
		"  apt-get install -y python3-grpcio python3-protobuf   # Debian/Ubuntu, then SNAKEPIT_PYTHON=/usr/bin/python3\n" +
		"  python3 -m venv .venv && .venv/bin/pip install grpcio protobuf   # any OS; .venv is found automatically\n" +
		"or run scripts/install-python-deps.sh from the snakepit repository")
	return b.String()
}

// Is makes errors.Is(err, ErrPythonNotFound) true.
func (e *DiscoveryError) Is(target error) bool { return target == ErrPythonNotFound }

// probeTimeout bounds one interpreter check; a wedged interpreter must not
// hang Start.
const probeTimeout = 15 * time.Second

// probeScript checks that grpc and google.protobuf are installed by finding
// them, without importing them: importing them cost as much CPU as one more
// worker (a fifth of a 4-worker start, issue 21 "a lean start"). It also
// checks the two common ways an installed package still cannot serve a
// worker: grpc built for another interpreter (its compiled core must be there
// with one of this interpreter's extension suffixes), and protobuf older than
// 3.20 (no google.protobuf.internal.builder, which the generated snakepit_pb2
// needs; the worker imports it lazily, on its first host call, so without
// this check such a protobuf would fail mid-call instead of at start). A
// package that passes and still cannot load fails the workers' start, with
// its traceback; `snakepit doctor` does the real imports. The messages match
// Python's own and say what to install.
//
// It runs with the worker's sys.path minus snakepit's own entries: the
// working directory, which -c puts first, is dropped as the worker's
// bootstrap drops it. On success it prints, NUL separated, what it relied
// on, each as "dev ino size mtime_ns path" or "- path" when absent: every
// sys.path entry and the user site-packages, listed only once it exists
// (stat'ed before the search, so a package installed during it shows as a
// change), then grpc's package, its compiled core and
// protobuf's builder; probe re-stats them to tell whether a remembered
// pass still holds.
const probeScript = `import importlib.util as u,importlib.machinery as m,os,sys
sys.path[:1]==['']and sys.path.pop(0)
def st(x):
 try:s=os.stat(x);return'%d %d %d %d %s'%(s.st_dev,s.st_ino,s.st_size,s.st_mtime_ns,x)
 except (OSError,ValueError):return'- '+x
r=[st(x) for x in sys.path]
t=sys.modules.get('site')
if getattr(t,'ENABLE_USER_SITE',0):r.append(st(t.getusersitepackages()))
def need(n):
 try:s=u.find_spec(n)
 except ImportError:s=None
 if s is None:sys.exit("ModuleNotFoundError: No module named '%s'"%n)
 return s
g=need('grpc');p=need('google.protobuf')
d=os.path.join(os.path.dirname(g.origin or ''),'_cython')
c=[x for x in(os.path.join(d,'cygrpc'+y)for y in m.EXTENSION_SUFFIXES)if os.path.exists(x)]
if not c:sys.exit("ImportError: grpc in %s has no compiled core (cygrpc) for this interpreter: install grpcio for it"%os.path.dirname(d))
l=list(p.submodule_search_locations or [])
b=[x for x in(os.path.join(y,'internal','builder'+z)for y in l for z in('.py','.pyc'))if os.path.exists(x)]
if not b:sys.exit("ImportError: cannot import name 'builder' from 'google.protobuf.internal' (%s): protobuf is older than 3.20; install protobuf>=3.20 for this interpreter"%os.pathsep.join(l))
sys.stdout.write('\0'.join(r+[st(g.origin or ''),st(c[0]),st(b[0])]))
`

// probeUncached runs the check: the problem ("" when it passed) and, when
// it passed, what it relied on (see probeScript).
func probeUncached(path string) (problem, reliedOn string) {
	ctx, cancel := context.WithTimeout(context.Background(), probeTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, path, "-c", probeScript)
	// A child of the interpreter holding a pipe must not hold the wait
	// beyond the timeout.
	cmd.WaitDelay = time.Second
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if err == nil {
		return "", stdout.String()
	}
	var ee *exec.Error
	if errors.As(err, &ee) {
		return "cannot run it: " + ee.Err.Error(), ""
	}
	msg := strings.TrimSpace(stderr.String())
	if i := strings.LastIndex(msg, "\n"); i >= 0 {
		msg = msg[i+1:]
	}
	if msg == "" {
		msg = err.Error()
	}
	return msg, ""
}

// FindPython returns the interpreter to run workers with. An explicit choice
// (Config.Python, then SNAKEPIT_PYTHON) is used or rejected, never silently
// replaced; otherwise an active or project virtualenv, then the usual
// system candidates, the first with grpc (with its compiled core for that
// interpreter) and protobuf >= 3.20, found without importing them (see
// probeScript; `snakepit doctor` does the real import). A passed check is
// remembered (see probe), so a restarted host usually starts no
// interpreter here.
func FindPython(explicit string) (string, error) {
	c, _, err := DiscoverPython(explicit)
	return c.Path, err
}

// DiscoverPython is FindPython telling why: the chosen interpreter with its
// Source, and the candidates rejected before it (each with its Problem).
// On failure the error is a *DiscoveryError listing the same candidates.
func DiscoverPython(explicit string) (chosen Candidate, rejected []Candidate, err error) {
	path, source, tried, err := discover(explicit)
	return Candidate{Path: path, Source: source}, tried, err
}

func discover(explicit string) (_, _ string, _ []Candidate, _ error) {
	var tried []Candidate
	check := func(path, source string) (string, bool) {
		resolved := path
		if !strings.ContainsRune(path, os.PathSeparator) {
			lp, err := exec.LookPath(path)
			if err != nil {
				tried = append(tried, Candidate{Path: path, Source: source, Problem: "not found on PATH"})
				return "", false
			}
			resolved = lp
		}
		if p := probe(resolved); p != "" {
			tried = append(tried, Candidate{Path: resolved, Source: source, Problem: p})
			return "", false
		}
		return resolved, true
	}
	if explicit != "" {
		if p, ok := check(explicit, "Config.Python"); ok {
			return p, "Config.Python", tried, nil
		}
		return "", "", tried, &DiscoveryError{Tried: tried}
	}
	if env := os.Getenv("SNAKEPIT_PYTHON"); env != "" {
		if p, ok := check(env, "SNAKEPIT_PYTHON"); ok {
			return p, "SNAKEPIT_PYTHON", tried, nil
		}
		return "", "", tried, &DiscoveryError{Tried: tried}
	}
	type cand struct{ path, source string }
	var cands []cand
	if venv := os.Getenv("VIRTUAL_ENV"); venv != "" {
		cands = append(cands, cand{filepath.Join(venv, "bin", "python"), "VIRTUAL_ENV"})
	}
	if wd, err := os.Getwd(); err == nil {
		for dir := wd; ; dir = filepath.Dir(dir) {
			p := filepath.Join(dir, ".venv", "bin", "python")
			if _, err := os.Stat(p); err == nil {
				cands = append(cands, cand{p, ".venv"})
				break
			}
			if filepath.Dir(dir) == dir {
				break
			}
		}
	}
	cands = append(cands,
		cand{"python3", "PATH"},
		cand{"/usr/bin/python3", "system"},
		cand{"/usr/local/bin/python3", "system"},
		cand{"python", "PATH"},
	)
	seen := map[string]bool{}
	for _, c := range cands {
		if seen[c.path] {
			continue
		}
		seen[c.path] = true
		if _, err := os.Stat(c.path); err != nil && strings.ContainsRune(c.path, os.PathSeparator) {
			tried = append(tried, Candidate{Path: c.path, Source: c.source, Problem: "does not exist"})
			continue
		}
		if p, ok := check(c.path, c.source); ok {
			return p, c.source, tried, nil
		}
	}
	return "", "", tried, &DiscoveryError{Tried: tried}
}
