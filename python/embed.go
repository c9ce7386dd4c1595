// Package python ships the snakepit_bridge Python package inside the Go
// binary, so a host does not depend on a checkout of this repository at run
// time.
//
// Files holds exactly the package's .py files (the explicit *.py globs keep
// __init__.py, which a directory embed would drop for its leading "_", and
// leave out __pycache__). Extract writes them to a content-addressed
// directory and returns the path to put first on PYTHONPATH; Compile
// writes the bytecode the workers' interpreter reads there (checked
// against the sources at import); grpcworker then starts the worker's snakepit_bridge.server (with a -c bootstrap that
// keeps the working directory off sys.path, see grpcworker's package doc).
//
// # Who imports it
//
// Applications reach this package through the root package snakepit, which
// wraps it and re-exports the types its API returns; the names exported
// here beyond that are seams between snakepit's own packages.
package python

import (
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"sync"
)

// files is the embedded snakepit_bridge package, rooted at this directory
// (paths look like "snakepit_bridge/server.py").
//
//go:embed snakepit_bridge/*.py snakepit_bridge/pb/*.py snakepit_bridge/examples/*.py
var files embed.FS

// digest is the first 12 hex digits of the SHA-256 over every embedded
// file's path and contents; it names the directory Extract creates. The
// embedded files never change within a process, so it is computed once,
// streaming each file into the hash (embed.FS.ReadFile would copy all of
// them onto the heap at every New).
var digest = sync.OnceValues(func() (string, error) {
	names, err := fileNames()
	if err != nil {
		return "", err
	}
	h := sha256.New()
	buf := make([]byte, 32<<10) // one for all files: io.Copy would allocate one per file
	for _, name := range names {
		if err := hashFile(h, name, buf); err != nil {
			return "", err
		}
	}
	return hex.EncodeToString(h.Sum(nil))[:12], nil
})

func hashFile(h io.Writer, name string, buf []byte) error {
	f, err := files.Open(name)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	// Length-prefixed so no two different file sets hash alike.
	fmt.Fprintf(h, "%d:%s\n%d:", len(name), name, st.Size())
	n, err := io.CopyBuffer(h, onlyReader{f}, buf)
	if err == nil && n != st.Size() {
		err = fmt.Errorf("python: embedded %s: read %d of %d bytes", name, n, st.Size())
	}
	return err
}

func fileNames() ([]string, error) {
	var names []string
	err := fs.WalkDir(files, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() {
			names = append(names, p)
		}
		return nil
	})
	sort.Strings(names)
	return names, err
}

// onlyReader hides the file's other methods so io.CopyBuffer uses the buffer.
type onlyReader struct{ io.Reader }

// Extract writes the embedded package under dir/<digest>/ and returns that
// directory (the one to put on PYTHONPATH). It is idempotent and safe for
// concurrent callers, including other processes: the files are written to
// a temporary directory inside dir and renamed into place in one step, so a
// reader never sees a half-written tree, and an existing tree with the same
// digest is reused as it is. Directories are 0755, files 0644.
func Extract(dir string) (string, error) {
	digest, err := digest()
	if err != nil {
		return "", fmt.Errorf("python: hashing embedded files: %w", err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("python: %w", err)
	}
	target := filepath.Join(dir, digest)
	if complete(target) {
		return target, nil
	}

	tmp, err := os.MkdirTemp(dir, ".extract-"+digest+"-")
	if err != nil {
		return "", fmt.Errorf("python: %w", err)
	}
	defer os.RemoveAll(tmp) // a no-op once renamed
	if err := writeTree(tmp); err != nil {
		return "", fmt.Errorf("python: extracting to %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, target); err != nil {
		// Another extractor won the race (rename onto a non-empty directory
		// fails): its tree has the same digest, so use it.
		if complete(target) {
			return target, nil
		}
		return "", fmt.Errorf("python: %w", err)
	}
	return target, nil
}

// complete reports whether an extracted tree looks whole. Trees only ever
// appear by rename, so a present package marker means a finished extraction.
func complete(target string) bool {
	for _, f := range []string{"snakepit_bridge/__init__.py", "snakepit_bridge/server.py"} {
		if st, err := os.Stat(filepath.Join(target, filepath.FromSlash(f))); err != nil || !st.Mode().IsRegular() {
			return false
		}
	}
	return true
}

func writeTree(root string) error {
	// MkdirTemp creates 0700; the tree is meant to be readable like an install.
	if err := os.Chmod(root, 0o755); err != nil {
		return err
	}
	names, err := fileNames()
	if err != nil {
		return err
	}
	for _, name := range names {
		data, err := files.ReadFile(name)
		if err != nil {
			return err
		}
		dst := filepath.Join(root, filepath.FromSlash(name))
		if err := mkdirAll(root, path.Dir(name)); err != nil {
			return err
		}
		if err := os.WriteFile(dst, data, 0o644); err != nil {
			return err
		}
		// Explicit, so the result does not depend on the caller's umask.
		if err := os.Chmod(dst, 0o644); err != nil {
			return err
		}
	}
	return nil
}

// mkdirAll creates rel (slash-separated) under root with mode 0755 exactly.
func mkdirAll(root, rel string) error {
	if rel == "." || rel == "" {
		return nil
	}
	if err := mkdirAll(root, path.Dir(rel)); err != nil {
		return err
	}
	p := filepath.Join(root, filepath.FromSlash(rel))
	if err := os.Mkdir(p, 0o755); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return nil
		}
		return err
	}
	return os.Chmod(p, 0o755)
}
