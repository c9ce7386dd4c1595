package doctor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/snakepit-go/snakepit/grpcworker"
	"github.com/snakepit-go/snakepit/internal/auth"
	"github.com/snakepit-go/snakepit/python"
)

// probeScript reports versions and imports as one JSON line. It loads the
// adapter with the worker's own loader (snakepit_bridge.server), so what
// passes here is what a worker would import.
const probeScript = `import json, sys
r = {"python": sys.version.split()[0]}
def attempt(key, f):
    try:
        r[key] = f()
    except BaseException as e:
        r[key + "_error"] = "%s: %s" % (type(e).__name__, e)
def grpc_version():
    import grpc
    return grpc.__version__
def protobuf_version():
    import google.protobuf
    return google.protobuf.__version__
def bridge():
    import snakepit_bridge.server
    return snakepit_bridge.__file__
attempt("grpcio", grpc_version)
attempt("protobuf", protobuf_version)
attempt("bridge", bridge)
if len(sys.argv) > 1 and "bridge" in r:
    def adapter():
        from snakepit_bridge.server import load_adapter_class
        c = load_adapter_class(sys.argv[1])
        return c.__module__ + "." + c.__qualname__
    attempt("adapter", adapter)
print(json.dumps(r))
`

type probeResult struct {
	Python        string `json:"python"`
	GRPC          string `json:"grpcio"`
	GRPCError     string `json:"grpcio_error"`
	Protobuf      string `json:"protobuf"`
	ProtobufError string `json:"protobuf_error"`
	Bridge        string `json:"bridge"`
	BridgeError   string `json:"bridge_error"`
	Adapter       string `json:"adapter"`
	AdapterError  string `json:"adapter_error"`
}

const fixPython = "install grpcio and protobuf for one interpreter and point snakepit at it: " +
	"apt-get install -y python3-grpcio python3-protobuf (then --python /usr/bin/python3 or SNAKEPIT_PYTHON), " +
	"or python3 -m venv .venv && .venv/bin/pip install grpcio protobuf (.venv is found automatically)"

// checkPython runs the interpreter discovery as the App does, then one
// Python process that imports grpc, protobuf, snakepit_bridge and the
// adapter with the worker's sys.path.
func checkPython(ctx context.Context, o Options) []Check {
	var out []Check
	chosen, rejected, err := grpcworker.DiscoverPython(o.Python)
	if err != nil {
		var de *grpcworker.DiscoveryError
		detail := err.Error()
		if errors.As(err, &de) {
			detail = "no interpreter has grpcio and protobuf>=3.20 installed; tried " + describeCandidates(de.Tried)
		}
		out = append(out, Check{Name: "python", Status: Fail, Detail: detail, Fix: fixPython})
		return out
	}
	detail := fmt.Sprintf("%s, found as %s", chosen.Path, describeSource(chosen.Source))
	if len(rejected) > 0 {
		detail += "; rejected before it: " + describeCandidates(rejected)
	}
	pkgDir, err := bridgeDir()
	if err != nil {
		out = append(out, Check{Name: "python", Status: Fail, Detail: detail + "; " + err.Error(),
			Fix: "make the user cache directory writable (XDG_CACHE_HOME) or set HOME"})
		return out
	}
	res, err := runProbe(ctx, o, chosen.Path, pkgDir)
	if err != nil {
		out = append(out, Check{Name: "python", Status: Fail, Detail: detail + "; " + err.Error(), Fix: fixPython})
		return out
	}
	out = append(out, Check{Name: "python", Status: Pass, Detail: "Python " + res.Python + " at " + detail})
	out = append(out, versionCheck(res))
	if res.BridgeError != "" {
		out = append(out, Check{Name: "snakepit_bridge", Status: Fail, Detail: "cannot import: " + res.BridgeError,
			Fix: "the embedded package was unpacked to " + pkgDir + "; a missing module above is a Python dependency to install for " + chosen.Path})
	} else {
		out = append(out, Check{Name: "snakepit_bridge", Status: Pass, Detail: "importable from " + res.Bridge})
	}
	if o.Adapter != "" {
		out = append(out, adapterCheck(o, res))
	}
	return out
}

func versionCheck(res probeResult) Check {
	if res.GRPCError != "" || res.ProtobufError != "" {
		return Check{Name: "grpcio/protobuf", Status: Fail, Detail: strings.TrimSpace(res.GRPCError + " " + res.ProtobufError), Fix: fixPython}
	}
	return Check{Name: "grpcio/protobuf", Status: Pass, Detail: "grpcio " + res.GRPC + ", protobuf " + res.Protobuf}
}

func adapterCheck(o Options, res probeResult) Check {
	switch {
	case res.BridgeError != "":
		return Check{Name: "adapter", Status: Fail, Detail: o.Adapter + ": not checked, snakepit_bridge does not import",
			Fix: "fix the snakepit_bridge check first"}
	case res.AdapterError != "":
		return Check{Name: "adapter", Status: Fail, Detail: o.Adapter + ": " + res.AdapterError,
			Fix: "give the adapter as package.module.Class and its directory with --pythonpath (now: " + pathOrNone(o.PythonPath) + "); install what it imports for this interpreter"}
	}
	return Check{Name: "adapter", Status: Pass, Detail: res.Adapter + " imports"}
}

func pathOrNone(p []string) string {
	if len(p) == 0 {
		return "none"
	}
	return strings.Join(p, ":")
}

// runProbe runs probeScript with the sys.path a worker gets: the embedded
// package, PythonPath, then the inherited PYTHONPATH.
func runProbe(ctx context.Context, o Options, py, pkgDir string) (probeResult, error) {
	ctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	args := []string{"-c", probeScript}
	if o.Adapter != "" {
		args = append(args, o.Adapter)
	}
	cmd := exec.CommandContext(ctx, py, args...)
	path := append([]string{pkgDir}, o.PythonPath...)
	path = append(path, filepath.SplitList(os.Getenv("PYTHONPATH"))...)
	// Adapter code runs here: it gets no secret of the host's, as in a
	// worker (auth.SecretEnv).
	cmd.Env = append(withoutSecrets(os.Environ()), "PYTHONPATH="+strings.Join(nonEmpty(path), string(os.PathListSeparator)))
	cmd.Dir = os.TempDir() // the working directory must not shadow anything, as in a worker
	// An adapter whose import starts a child that keeps stdout open must
	// not hold Output past the timeout.
	cmd.WaitDelay = time.Second
	out, err := cmd.Output()
	if ctx.Err() != nil {
		return probeResult{}, fmt.Errorf("the interpreter did not answer within %s", o.Timeout)
	}
	var res probeResult
	if jerr := json.Unmarshal(lastLine(out), &res); jerr != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) && len(ee.Stderr) > 0 {
			return probeResult{}, fmt.Errorf("the interpreter failed: %s", lastLine(ee.Stderr))
		}
		return probeResult{}, fmt.Errorf("the interpreter's answer was unreadable (%v): %q", jerr, lastLine(out))
	}
	return res, nil
}

func nonEmpty(ss []string) []string {
	var out []string
	for _, s := range ss {
		if s != "" {
			out = append(out, s)
		}
	}
	return out
}

func lastLine(b []byte) []byte {
	s := strings.TrimSpace(string(b))
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		s = s[i+1:]
	}
	return []byte(s)
}

// bridgeDir unpacks the embedded package where the App does by default.
func bridgeDir() (string, error) {
	cache, err := os.UserCacheDir()
	if err != nil {
		cache = os.TempDir()
	}
	base := filepath.Join(cache, "snakepit", "python")
	if err := os.MkdirAll(base, 0o755); err != nil {
		return "", fmt.Errorf("cannot create %s: %w", base, err)
	}
	return python.Extract(base)
}

func describeSource(s string) string {
	switch s {
	case "Config.Python":
		return "--python (Config.Python)"
	case "SNAKEPIT_PYTHON":
		return "$SNAKEPIT_PYTHON"
	case "VIRTUAL_ENV":
		return "the active virtualenv ($VIRTUAL_ENV)"
	case ".venv":
		return "a .venv in this directory or above"
	case "PATH":
		return "the first on PATH that imports grpc"
	case "system":
		return "the system interpreter (the first that imports grpc)"
	}
	return s
}

func describeCandidates(cs []grpcworker.Candidate) string {
	parts := make([]string, 0, len(cs))
	for _, c := range cs {
		parts = append(parts, fmt.Sprintf("%s (%s): %s", c.Path, c.Source, c.Problem))
	}
	return strings.Join(parts, "; ")
}

// withoutSecrets drops the variables auth.IsSecretEnv names.
func withoutSecrets(env []string) []string {
	out := make([]string, 0, len(env))
	for _, kv := range env {
		if name, _, _ := strings.Cut(kv, "="); !auth.IsSecretEnv(name) {
			out = append(out, kv)
		}
	}
	return out
}
