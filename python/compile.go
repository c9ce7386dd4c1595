package python

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"strings"
)

// compileScript writes, next to every .py file under the tree, the
// bytecode the running interpreter looks for (sys.implementation's tag,
// its optimisation level and PYTHONPYCACHEPREFIX, through
// cache_from_source) unless it is already there, so the usual case costs
// one interpreter start and a stat per file. The bytecode is hash-based
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
func Compile(ctx context.Context, interpreter, root string, env []string) error {
	cmd := exec.CommandContext(ctx, interpreter, "-S", "-c", compileScript, root)
	cmd.Env = env
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		msg := strings.TrimSpace(stderr.String())
		if i := strings.LastIndexByte(msg, '\n'); i >= 0 {
			msg = msg[i+1:] // the exception line
		}
		return fmt.Errorf("python: compiling the bytecode of %s with %s: %w (%s)", root, interpreter, err, msg)
	}
	return nil
}
