package childproc

import (
	"bytes"
	"strings"
	"testing"
)

func collect(in string) []string {
	var out []string
	readLines(strings.NewReader(in), func(l string) { out = append(out, l) })
	return out
}

func TestReadLinesSplitsAndKeepsALastLineWithoutNewline(t *testing.T) {
	got := collect("a\nbb\n\nccc")
	want := []string{"a", "bb", "", "ccc"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("got %q, want %q", got, want)
	}
}

func TestReadLinesCutsOverLongLinesAndGoesOn(t *testing.T) {
	big := strings.Repeat("x", 2<<20)
	got := collect(big + "\nafter\n")
	if len(got) != 2 || got[1] != "after" {
		t.Fatalf("got %d lines, last %q; want the long line and then \"after\"", len(got), got[len(got)-1])
	}
	if !strings.HasPrefix(got[0], strings.Repeat("x", MaxLine)) || !strings.Contains(got[0], "2031616 more bytes dropped") {
		t.Fatalf("the long line was not cut with a marker: %q…", got[0][MaxLine-5:])
	}
}

func FuzzReadLines(f *testing.F) {
	f.Add([]byte("a\nb"), 3)
	f.Add(bytes.Repeat([]byte("y"), 70000), 1)
	f.Fuzz(func(t *testing.T, data []byte, reps int) {
		in := bytes.Repeat(data, 1+int(uint(reps)%4))
		lines := 0
		readLines(bytes.NewReader(in), func(l string) {
			lines++
			if len(l) > MaxLine+64 {
				t.Fatalf("line of %d bytes, over the bound", len(l))
			}
		})
		if want := bytes.Count(in, []byte("\n")); lines < want {
			t.Fatalf("%d lines for %d newlines: reading stopped early", lines, want)
		}
	})
}
