package cgroup

import (
	"os"
	"path/filepath"
	"testing"
)

// Leaf.Memory is anon + file_mapped of memory.stat (no page cache), and
// only for a pid the leaf holds.
func TestLeafMemoryCountsAnonAndMappedOfItsOwnProcess(t *testing.T) {
	dir := t.TempDir()
	write := func(name, text string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("cgroup.procs", "41\n42\n")
	write("memory.stat", "anon 1000\nfile 900000\nkernel 77\nfile_mapped 200\nanon_thp 0\nfile_dirty 5\n")
	l := &Leaf{dir: dir, fd: -1}
	if b, ok := l.Memory(42); !ok || b != 1200 {
		t.Fatalf("Memory(42) = %d, %v; want 1200 (anon + file_mapped), true", b, ok)
	}
	if b, ok := l.Memory(4); ok {
		t.Fatalf("Memory of a pid not in the leaf = %d, true; want not ok (measure /proc instead)", b)
	}
	for text, want := range map[string]bool{"": false, "file 5\n": false, "anon x\n": false, "anon 7": true} {
		if _, ok := parseMemoryStat(text); ok != want {
			t.Errorf("parseMemoryStat(%q) ok = %v, want %v", text, ok, want)
		}
	}
}

// The host's cgroup lies under the mount's root only on a directory
// boundary.
func TestUnderRootRespectsDirectoryBoundaries(t *testing.T) {
	for _, c := range []struct {
		cur, root, rel string
		ok             bool
	}{
		{"/user.slice/a", "/", "/user.slice/a", true},
		{"/a/b/x", "/a/b", "/x", true},
		{"/a/b", "/a/b", "", true},
		{"/a/b/x", "/a/b/", "/x", true},
		{"/a/bc/x", "/a/b", "", false},
		{"/c/x", "/a/b", "", false},
	} {
		rel, ok := underRoot(c.cur, c.root)
		if ok != c.ok || (ok && rel != c.rel) {
			t.Errorf("underRoot(%q, %q) = %q, %v; want %q, %v", c.cur, c.root, rel, ok, c.rel, c.ok)
		}
	}
}
