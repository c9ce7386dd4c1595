package grpcworker

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// The interpreter check costs a Python start (tens of ms of CPU, a large
// share of a small pool's start), so a passed check is remembered, in this
// process and on disk under the user cache directory, so a restarted host
// does not pay it again. A failed check is never remembered: the user's fix
// (installing grpcio) must be seen by the very next New.
//
// An entry is found by a key naming everything that decides what the
// check saw before it ran (probeKey), and is used only while every file
// the check relied on still has the inode, size and mtime the check saw
// (the sys.path directories, grpc's package and compiled core, protobuf's
// builder). Installing, removing or upgrading a package changes a
// site-packages directory's mtime, so it makes the next check real. Any
// cache failure (no cache directory, read-only, a corrupt or foreign file)
// only means the check runs; it is never an error. A worker that still
// cannot import grpc or protobuf drops the entry (forgetProbe).

// probeEnv are the variables that change where the interpreter finds
// modules: sys.path (PYTHONPATH, PYTHONHOME, PYTHONPLATLIBDIR) and the user
// site-packages (PYTHONNOUSERSITE, PYTHONUSERBASE, HOME; without HOME the
// user's passwd entry, hence the uid in the key). VIRTUAL_ENV is not one:
// Python ignores it (a virtualenv is found by the pyvenv.cfg next to the
// interpreter, which the key stats). PYTHONSAFEPATH is not either: the
// check drops the working directory from sys.path itself, as the worker's
// bootstrap does.
var probeEnv = []string{"PYTHONPATH", "PYTHONHOME", "PYTHONPLATLIBDIR", "PYTHONNOUSERSITE", "PYTHONUSERBASE", "HOME"}

// probeCacheMaxAge: entries not rewritten for this long are removed when a
// new one is written, so interpreters that are gone (a test's temporary
// virtualenv) do not pile up. A live one only pays one check again.
const probeCacheMaxAge = 30 * 24 * time.Hour

// probeCacheMagic starts every cache file; a file without it is not used.
const probeCacheMagic = "snakepit-interpreter-check-1\x00"

// probeMemo holds the passed checks of this process: key -> the files they
// relied on (probeUncached's output, as written to disk).
var probeMemo sync.Map

// probe returns "" when the interpreter at path can run a worker, otherwise
// why not. A remembered pass is used while its key and files still match.
func probe(path string) string {
	key, ok := probeKey(path)
	if ok {
		if v, hit := probeMemo.Load(key); hit && reliedOnUnchanged(v.(string)) {
			return ""
		}
		if out, hit := readProbeCache(key, path); hit {
			probeMemo.Store(key, out)
			return ""
		}
	}
	problem, out := probeUncached(path)
	// Checked at once: an output in another form (not our script's) is
	// not remembered, nor one whose files changed while it ran.
	if problem == "" && ok && reliedOnUnchanged(out) {
		probeMemo.Store(key, out)
		writeProbeCache(key, path, out)
	}
	return problem
}

// forgetProbe drops the remembered pass of path (a worker it vouched for
// could not import grpc or protobuf), so the next start checks it again.
func forgetProbe(path string) {
	key, ok := probeKey(path)
	if !ok {
		return
	}
	probeMemo.Delete(key)
	if f, ok := probeCacheFile(key); ok {
		_ = os.Remove(f)
	}
}

// probeKey names what decides what the check sees, apart from the files it
// reports: the check itself (its script), the interpreter as named and as
// resolved, with the identity of its file (an upgrade in place is a new
// interpreter), the pyvenv.cfg files that would make it a virtualenv, the
// probeEnv variables and the user. false: the interpreter cannot be
// stat'ed or is a script (isScript), so nothing is remembered.
func probeKey(path string) (string, bool) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return "", false
	}
	real, err := filepath.EvalSymlinks(abs)
	if err != nil {
		return "", false
	}
	h := sha256.New()
	fmt.Fprintf(h, "%s\x00%s\x00%s\x00", probeScript, abs, real)
	exe, ok := statLine(real)
	if !ok || (isScript(real) && !rememberScripts) {
		return "", false
	}
	// Python looks for pyvenv.cfg next to the interpreter as invoked and
	// one directory up.
	dir := filepath.Dir(abs)
	for _, f := range []string{real, filepath.Join(dir, "pyvenv.cfg"), filepath.Join(filepath.Dir(dir), "pyvenv.cfg")} {
		if f == real {
			fmt.Fprintf(h, "%s\x00", exe)
			continue
		}
		line, _ := statLine(f)
		fmt.Fprintf(h, "%s\x00", line)
	}
	for _, k := range probeEnv {
		v, set := os.LookupEnv(k)
		if k == "PYTHONPATH" || k == "PYTHONHOME" {
			// Python resolves their relative entries (and an empty one)
			// against the working directory: "vendor" is another
			// directory in another one.
			v = absList(v)
		}
		fmt.Fprintf(h, "%s=%t:%s\x00", k, set, v)
	}
	fmt.Fprintf(h, "uid=%d", os.Getuid())
	return hex.EncodeToString(h.Sum(nil))[:32], true
}

// rememberScripts lets tests remember the pass of a wrapper script that
// counts its runs; a real host never does (see isScript).
var rememberScripts = false

// isScript reports whether the file at path starts with "#!": a wrapper
// such as a pyenv or asdf shim picks the interpreter it runs from what
// the key cannot see (the working directory's .python-version, a global
// setting, its own environment variables), so a pass remembered for it
// could vouch for another interpreter. Unreadable: treated as a script.
func isScript(path string) bool {
	f, err := os.Open(path)
	if err != nil {
		return true
	}
	defer f.Close()
	var head [2]byte
	n, _ := f.Read(head[:])
	return n == 2 && string(head[:]) == "#!"
}

// absList is the path list v with every entry made absolute.
func absList(v string) string {
	if v == "" {
		return v
	}
	parts := filepath.SplitList(v)
	for i, p := range parts {
		if abs, err := filepath.Abs(p); err == nil {
			parts[i] = abs
		}
	}
	return strings.Join(parts, string(os.PathListSeparator))
}

// statLine is "dev ino size mtime_ns path" for an existing file, the form
// probeScript prints, or "- path" when it cannot be stat'ed.
func statLine(path string) (string, bool) {
	fi, err := os.Stat(path)
	if err != nil {
		return "- " + path, false
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return "- " + path, false
	}
	return fmt.Sprintf("%d %d %d %d %s", uint64(st.Dev), st.Ino, st.Size, st.Mtim.Nano(), path), true
}

// reliedOnUnchanged reports whether every file of a check's output (NUL
// separated statLine forms) is as the check saw it: present files with the
// same identity, absent ones still absent.
func reliedOnUnchanged(out string) bool {
	items := strings.Split(out, "\x00")
	if len(items) < 3 { // at least grpc, its core and protobuf's builder
		return false
	}
	for _, item := range items {
		path, absent := strings.CutPrefix(item, "- ")
		if !absent {
			// dev ino size mtime_ns path
			f := strings.SplitN(item, " ", 5)
			if len(f) != 5 || !allDigits(f[:4]) {
				return false
			}
			path = f[4]
		}
		if now, _ := statLine(path); now != item {
			return false
		}
	}
	return true
}

func allDigits(fields []string) bool {
	for _, f := range fields {
		if _, err := strconv.ParseUint(f, 10, 64); err != nil {
			return false
		}
	}
	return true
}

// probeCacheFile is where the entry for key lives; false when there is no
// user cache directory.
func probeCacheFile(key string) (string, bool) {
	dir, err := os.UserCacheDir()
	if err != nil || dir == "" {
		return "", false
	}
	return filepath.Join(dir, "snakepit", "interpreters", key), true
}

func readProbeCache(key, path string) (string, bool) {
	f, ok := probeCacheFile(key)
	if !ok {
		return "", false
	}
	data, err := os.ReadFile(f)
	if err != nil {
		return "", false
	}
	rest, ok := bytes.CutPrefix(data, []byte(probeCacheMagic+path+"\x00"))
	if !ok {
		return "", false
	}
	out := string(rest)
	return out, reliedOnUnchanged(out)
}

// writeProbeCache stores a passed check, whole or not at all (a temporary
// file renamed into place), readable by the user alone. Failures are
// ignored: the next host checks again.
func writeProbeCache(key, path, out string) {
	f, ok := probeCacheFile(key)
	if !ok {
		return
	}
	dir := filepath.Dir(f)
	// The parent is shared with the unpacked Python package (0755, see
	// NewFactory); only the entries are private.
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return
	}
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return
	}
	tmp, err := os.CreateTemp(dir, ".tmp-")
	if err != nil {
		return
	}
	_, werr := tmp.WriteString(probeCacheMagic + path + "\x00" + out)
	if cerr := tmp.Close(); werr != nil || cerr != nil || os.Rename(tmp.Name(), f) != nil {
		_ = os.Remove(tmp.Name())
		return
	}
	pruneProbeCache(dir, f)
}

// pruneProbeCache removes the entries (and stray temporary files) not
// written for probeCacheMaxAge, except keep.
func pruneProbeCache(dir, keep string) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range entries {
		p := filepath.Join(dir, e.Name())
		if p == keep || e.IsDir() {
			continue
		}
		if fi, err := e.Info(); err == nil && time.Since(fi.ModTime()) > probeCacheMaxAge {
			if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
				return
			}
		}
	}
}
