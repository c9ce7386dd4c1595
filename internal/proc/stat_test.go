package proc

import (
	"errors"
	"fmt"
	"os"
	"testing"
)

func statLine(pid int, comm string, state byte, ppid, pgid int, start uint64) string {
	// Fields 3..22 then a few more, as the kernel prints them.
	return fmt.Sprintf("%d (%s) %c %d %d 6388 0 -1 4194560 96 0 1 0 0 0 0 0 20 0 1 0 %d 2355200 150 18446744073709551615 0 0\n",
		pid, comm, state, ppid, pgid, start)
}

func TestParseStat(t *testing.T) {
	for _, comm := range []string{"sleep", "a b", "x) S 1 2 3 (y", "))((", "", "python3 -m x"} {
		line := statLine(4242, comm, 'S', 17, 4242, 987654321)
		st, err := parseStat([]byte(line))
		if err != nil {
			t.Fatalf("comm %q: %v", comm, err)
		}
		want := Stat{PID: 4242, Comm: comm, State: 'S', PPID: 17, PGID: 4242, StartTime: 987654321}
		if st != want {
			t.Errorf("comm %q: got %+v, want %+v", comm, st, want)
		}
	}
	for _, bad := range []string{
		"", "1", "1 (x)", "(x) S 1 2", "x (y) S 1 2 3",
		"0 (x) S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19",
		"5 (x) SS 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19",
		"5 (x) S -1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19",
		"5 (x) S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 -19",
		"5 (x S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19",
	} {
		if _, err := parseStat([]byte(bad)); !errors.Is(err, errBadStat) {
			t.Errorf("parseStat(%q) = %v, want errBadStat", bad, err)
		}
	}
}

// FuzzParseStat: arbitrary bytes never panic, and whatever parses is
// self-consistent.
func FuzzParseStat(f *testing.F) {
	f.Add([]byte(statLine(1, "init", 'S', 0, 1, 5)))
	f.Add([]byte(statLine(77, "a) (b", 'Z', 1, 77, 1<<40)))
	f.Add([]byte("12 (x) R"))
	f.Add([]byte("(((((((("))
	f.Fuzz(func(t *testing.T, b []byte) {
		st, err := parseStat(b)
		if err != nil {
			if !errors.Is(err, errBadStat) {
				t.Fatalf("error %v does not wrap errBadStat", err)
			}
			return
		}
		if st.PID <= 0 || st.PPID < 0 || st.PGID < 0 {
			t.Fatalf("accepted impossible ids: %+v", st)
		}
	})
}

// FuzzParseStatComm: any executable name, however hostile, round-trips, and
// the numeric fields after it are never confused with text inside it.
func FuzzParseStatComm(f *testing.F) {
	f.Add("sleep", 100, 1, 100, uint64(12345))
	f.Add(") R 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 (", 2, 1, 3, uint64(1))
	f.Add("a\x00b", 9, 0, 9, uint64(0))
	f.Fuzz(func(t *testing.T, comm string, pid, ppid, pgid int, start uint64) {
		if pid <= 0 || ppid < 0 || pgid < 0 {
			t.Skip()
		}
		st, err := parseStat([]byte(statLine(pid, comm, 'R', ppid, pgid, start)))
		if err != nil {
			t.Fatalf("comm %q: %v", comm, err)
		}
		want := Stat{PID: pid, Comm: comm, State: 'R', PPID: ppid, PGID: pgid, StartTime: start}
		if st != want {
			t.Fatalf("got %+v, want %+v", st, want)
		}
	})
}

func TestSplitNUL(t *testing.T) {
	for in, want := range map[string][]string{
		"":           nil,
		"\x00":       nil,
		"a\x00b\x00": {"a", "b"},
		"a\x00\x00b": {"a", "", "b"},
		"x=1\x00y=2": {"x=1", "y=2"},
	} {
		got := splitNUL([]byte(in))
		if fmt.Sprint(got) != fmt.Sprint(want) || len(got) != len(want) {
			t.Errorf("splitNUL(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestRunIDMatchingIsExact(t *testing.T) {
	set := map[string]bool{"abc": true}
	for _, tc := range []struct {
		argv, env []string
		want      bool
	}{
		{argv: []string{"py", RunIDFlag, "abc"}, want: true},
		{argv: []string{"py", RunIDFlag + "=abc"}, want: true},
		{env: []string{"A=1", RunIDEnv + "=abc"}, want: true},
		{argv: []string{"py", RunIDFlag, "abcd"}},
		{argv: []string{"py", RunIDFlag, "ab"}},
		{argv: []string{"py", RunIDFlag + "=abcd"}},
		{argv: []string{"py", "abc"}},
		{argv: []string{"py", "--snakepit-run-idabc"}},
		{argv: []string{"py", RunIDFlag}},
		{argv: []string{"py", "x" + RunIDFlag, "abc"}},
		{env: []string{RunIDEnv + "=abcd", RunIDEnv + "=xabc", "X" + RunIDEnv + "=abc", RunIDEnv + "= abc"}},
	} {
		got := argvRunID(tc.argv, set) != "" || envRunID(tc.env, set) != ""
		if got != tc.want {
			t.Errorf("argv %q env %q: got %v, want %v", tc.argv, tc.env, got, tc.want)
		}
	}
}

func TestSelfAndAncestorsAreSkipped(t *testing.T) {
	skip := selfAndAncestors()
	if !skip[os.Getpid()] || !skip[os.Getppid()] {
		t.Fatalf("selfAndAncestors() = %v, want self %d and parent %d", skip, os.Getpid(), os.Getppid())
	}
}
