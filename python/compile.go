package python

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// compileScript writes, next to every .py file under the tree, the
// bytecode the running interpreter looks for (sys.implementation's tag,
// its optimisation level and PYTHONPYCACHEPREFIX, through
// cache_from_source) unless it is already there. The bytecode is hash-based
// and checked: the interpreter compares it with the source's hash at every
// import, so an edited source is never shadowed by stale bytecode (a
// timestamp .pyc could be, after an edit within the same second).
// py_compile writes each file atomically, so concurrent hosts may race.
const compileScript = `import os, sys, importlib.util as u
todo = [os.path.join(d, f) for d, _, fs in os.walk(sys.argv[1]) for f in fs if f.endswith(".py")]
todo = [p for p in todo if not os.path.exists(u.cache_from_source(p))]
if todo:
    import py_compile
    for p in todo:
        py_compile.compile(p, doraise=True, invalidation_mode=py_compile.PycInvalidationMode.CHECKED_HASH)
`

// Compile writes the bytecode of the extracted tree at root for the
// interpreter, run with env (the workers' environment: PYTHONOPTIMIZE and
// PYTHONPYCACHEPREFIX decide where bytecode is looked for). Without it
// every worker compiles snakepit_bridge from source at start whenever
// bytecode is not written back (PYTHONDONTWRITEBYTECODE, a read-only
// tree), while grpc's modules come with their bytecode installed. Errors
// are worth a warning only: the workers still run from source.
//
// A marker file in root, named by the interpreter (its resolved path, size
// and mtime, so an upgrade in place is a new interpreter) and the settings
// that move bytecode, records a finished compilation, so a later host
// starts no interpreter at all for it.
func Compile(ctx context.Context, interpreter, root string, env []string) error {
	marker := filepath.Join(root, ".bytecode-"+interpreterKey(interpreter, env))
	if _, err := os.Stat(marker); err == nil {
		return nil
	}
	cmd := exec.CommandContext(ctx, interpreter, "-S", "-c", compileScript, root)
	cmd.Env = env
	// A cancelled ctx kills the interpreter; a child of it holding stderr
	// must not hold Run beyond that.
	cmd.WaitDelay = time.Second
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		msg := strings.TrimSpace(stderr.String())
		if i := strings.LastIndexByte(msg, '\n'); i >= 0 {
			msg = msg[i+1:] // the exception line
		}
		return fmt.Errorf("python: compiling the bytecode of %s with %s: %w (%s)", root, interpreter, err, msg)
	}
	if err := os.WriteFile(marker, nil, 0o644); err != nil {
		return fmt.Errorf("python: %w", err)
	}
	return nil
}

// interpreterKey names what decides which bytecode files an interpreter
// reads: the interpreter itself and the environment settings that move or
// rename them (the last value of a repeated variable wins, as in exec).
func interpreterKey(interpreter string, env []string) string {
	h := sha256.New()
	resolved, err := filepath.EvalSymlinks(interpreter)
	if err != nil {
		resolved = interpreter
	}
	fmt.Fprintf(h, "%s\x00", resolved)
	if st, err := os.Stat(resolved); err == nil {
		fmt.Fprintf(h, "%d\x00%d\x00", st.Size(), st.ModTime().UnixNano())
	}
	vars := map[string]string{}
	for _, kv := range env {
		if k, v, ok := strings.Cut(kv, "="); ok && (k == "PYTHONPYCACHEPREFIX" || k == "PYTHONOPTIMIZE") {
			vars[k] = v
		}
	}
	fmt.Fprintf(h, "%s\x00%s", vars["PYTHONPYCACHEPREFIX"], vars["PYTHONOPTIMIZE"])
	return hex.EncodeToString(h.Sum(nil))[:12]
}
