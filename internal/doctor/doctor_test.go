package doctor

import (
	"bytes"
	"strings"
	"testing"

	"github.com/snakepit-go/snakepit/internal/auth"
)

func TestReportTextAndVerdict(t *testing.T) {
	r := Report{OK: true, Checks: []Check{
		{Name: "a", Status: Pass, Detail: "fine", Fix: "not shown"},
		{Name: "b", Status: Warn, Detail: "slow", Fix: "do x"},
		{Name: "c", Status: Skip, Detail: "n/a"},
	}}
	var b bytes.Buffer
	if err := r.WriteText(&b); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{"PASS  a: fine\n", "WARN  b: slow\n      fix: do x\n", "SKIP  c: n/a\n", "every required check passed"} {
		if !strings.Contains(out, want) {
			t.Errorf("text report lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "not shown") {
		t.Errorf("a passed check's fix is printed:\n%s", out)
	}
}

func TestNeededNoFileGrowsWithWorkers(t *testing.T) {
	if NeededNoFile(0) != baseFDs || NeededNoFile(4) != baseFDs+4*fdsPerWorker || NeededNoFile(-1) != baseFDs {
		t.Fatalf("NeededNoFile: 0→%d 4→%d -1→%d", NeededNoFile(0), NeededNoFile(4), NeededNoFile(-1))
	}
}

// The machine-dependent checks run anywhere without panicking and say
// what they found.
func TestSystemChecksReport(t *testing.T) {
	for _, c := range []Check{checkProc(), checkPdeathsig(), checkCgroup(), checkNoFile(1), checkBytecodeEnv()} {
		if c.Name == "" || c.Detail == "" || (c.Status != Pass && c.Status != Warn && c.Status != Fail) {
			t.Errorf("check %+v", c)
		}
		if c.Status != Pass && c.Fix == "" {
			t.Errorf("%s is %s without a fix", c.Name, c.Status)
		}
	}
}

// The adapter probe's interpreter gets none of the host's secrets.
func TestProbeEnvironmentHasNoSecrets(t *testing.T) {
	env := withoutSecrets([]string{"HOME=/h", auth.EnvToken + "=tok", auth.EnvAgentToken + "=a", "PATH=/bin"})
	if strings.Join(env, " ") != "HOME=/h PATH=/bin" {
		t.Fatalf("probe environment %q", env)
	}
}
