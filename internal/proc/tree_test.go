package proc_test

import (
	"os"
	"testing"

	"github.com/snakepit-go/snakepit/internal/proc"
	"github.com/snakepit-go/snakepit/internal/proc/proctest"
)

func TestDescendantsAndTreeRSSCoverTheWholeTree(t *testing.T) {
	c := proctest.Start(t, proctest.Spec{GroupMates: 1, OwnGroup: 1})
	kids, err := proc.Descendants(c.PID)
	if err != nil {
		t.Fatal(err)
	}
	found := map[int]bool{}
	for _, k := range kids {
		found[k.PID] = true
	}
	for _, k := range c.Kids {
		if !found[k.PID] {
			t.Errorf("Descendants(%d) = %+v misses child %d (pgid %d)", c.PID, kids, k.PID, k.PGID)
		}
	}
	own, err := proc.RSS(c.PID)
	if err != nil || own <= 0 {
		t.Fatalf("RSS = %d, %v", own, err)
	}
	tree, err := proc.TreeRSS(c.PID)
	if err != nil || tree <= own {
		t.Fatalf("TreeRSS = %d, %v; want more than the leader's own %d", tree, err, own)
	}
	if _, err := proc.RSS(1 << 30); err == nil {
		t.Fatal("RSS of a pid that does not exist succeeded")
	}
	if self, err := proc.TreeRSS(os.Getpid()); err != nil || self <= 0 {
		t.Fatalf("TreeRSS(self) = %d, %v", self, err)
	}
}

func TestKillTaggedKillsOnlyExactCarriers(t *testing.T) {
	mine := proctest.Start(t, proctest.Spec{EnvRunID: "run-tag-1", Env: []string{"TAG_T=abc"}})
	otherTag := proctest.Start(t, proctest.Spec{EnvRunID: "run-tag-1", Env: []string{"TAG_T=abcd"}})
	otherRun := proctest.Start(t, proctest.Spec{EnvRunID: "run-tag-2", Env: []string{"TAG_T=abc"}})
	killed, err := proc.KillTagged("run-tag-1", "TAG_T", "abc", 0)
	if err != nil {
		t.Fatal(err)
	}
	want := map[int]bool{mine.PID: true}
	for _, k := range mine.Kids {
		want[k.PID] = true
	}
	if len(killed) != len(want) {
		t.Fatalf("KillTagged killed %+v, want exactly the tagged tree %v", killed, want)
	}
	for _, k := range killed {
		if !want[k.PID] {
			t.Fatalf("KillTagged killed %d, not of the tagged tree %v", k.PID, want)
		}
		if proctest.Alive(k.PID, k.StartTime) {
			t.Fatalf("%d is alive after KillTagged returned", k.PID)
		}
	}
	for _, c := range []*proctest.Child{otherTag, otherRun} {
		if !proctest.Alive(c.PID, c.StartTime) {
			t.Fatalf("pid %d without the exact run id and tag was killed", c.PID)
		}
	}
}
