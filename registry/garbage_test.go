package registry

import (
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/snakepit-go/snakepit/internal/proc/proctest"
)

// Whatever bbolt says about a file that is not a database — "file size too
// small", a bad magic, a short read, a page beyond the end — Open keeps the
// bytes aside under the quarantine name and starts a fresh registry, so a
// damaged file never blocks a start.
func TestGarbageOfAnySizeIsQuarantined(t *testing.T) {
	files := map[string][]byte{}
	for _, size := range []int{0, 1, 100, 4095, 4096, 8000, 16384, 65536} {
		b := make([]byte, size)
		_, _ = rand.Read(b)
		files[fmt.Sprintf("random-%d", size)] = b
	}
	real := filepath.Join(t.TempDir(), "real.db")
	r := open(t, real, NewRunID())
	for i := range 300 {
		if err := r.Reserve(fmt.Sprintf("%s-%03d", strings.Repeat("w", 200), i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	whole, err := os.ReadFile(real)
	if err != nil {
		t.Fatal(err)
	}
	page := os.Getpagesize()
	// Cuts into the meta, freelist and data pages. (Cutting only the unused
	// tail bbolt preallocates leaves a valid database, which must be kept.)
	for _, n := range []int{page + 10, 2*page + 1, 3 * page, len(whole) / 2} {
		files[fmt.Sprintf("truncated-%d-of-%d", n, len(whole))] = whole[:n]
	}
	for name, content := range files {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "r.db")
			if err := os.WriteFile(path, content, 0o600); err != nil {
				t.Fatal(err)
			}
			log, buf := proctest.Logger(t)
			r, err := Open(Options{Path: path, Logger: log})
			if err != nil {
				t.Fatalf("Open of a %d-byte garbage file = %v; want it moved aside and a fresh registry", len(content), err)
			}
			defer r.Close()
			if err := r.Reserve("w"); err != nil {
				t.Fatalf("the fresh registry is unusable: %v", err)
			}
			moved, _ := filepath.Glob(path + ".corrupt-*")
			if len(content) == 0 {
				// An empty file is how bbolt creates a database: nothing to keep.
				if len(moved) != 0 {
					t.Fatalf("an empty file was moved aside: %v", moved)
				}
				return
			}
			if len(moved) != 1 {
				t.Fatalf("moved-aside files: %v, want exactly one", moved)
			}
			if got, _ := os.ReadFile(moved[0]); !bytes.Equal(got, content) {
				t.Fatal("the moved-aside file does not hold the original bytes")
			}
			if !strings.Contains(buf.String(), "level=WARN") {
				t.Fatalf("no warning logged: %s", buf)
			}
		})
	}
}

// Inspect (snakepit doctor) reads a damaged file without panicking: an
// error matching ErrUnavailable, or what it could read; and it leaves no
// lock behind, so Open can still move the file aside.
func TestInspectOfGarbageNeverPanics(t *testing.T) {
	real := filepath.Join(t.TempDir(), "real.db")
	r := open(t, real, NewRunID())
	for i := range 300 {
		if err := r.Reserve(fmt.Sprintf("%s-%03d", strings.Repeat("w", 200), i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	whole, err := os.ReadFile(real)
	if err != nil {
		t.Fatal(err)
	}
	page := os.Getpagesize()
	for _, n := range []int{100, page + 10, 2*page + 1, 3 * page, len(whole) / 2} {
		path := filepath.Join(t.TempDir(), "r.db")
		if err := os.WriteFile(path, whole[:n], 0o600); err != nil {
			t.Fatal(err)
		}
		if _, _, err := Inspect(path, time.Second); err != nil && !errors.Is(err, ErrUnavailable) {
			t.Fatalf("Inspect of %d of %d bytes = %v; want nil or ErrUnavailable", n, len(whole), err)
		}
		log, _ := proctest.Logger(t)
		r, err := Open(Options{Path: path, Logger: log, LockTimeout: 2 * time.Second})
		if err != nil {
			t.Fatalf("Open after Inspect of %d bytes: %v", n, err)
		}
		_ = r.Close()
	}
}
