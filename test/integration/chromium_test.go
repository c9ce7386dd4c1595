package integration

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/snakepit-go/snakepit/internal/proc"
)

// chromiumNames are the binaries tried, after $SNAKEPIT_CHROMIUM.
var chromiumNames = []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome"}

// findChromium returns a Chromium binary or skips the test, saying how to
// get one.
func findChromium(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("SNAKEPIT_CHROMIUM"); p != "" {
		if _, err := exec.LookPath(p); err != nil {
			t.Fatalf("$SNAKEPIT_CHROMIUM=%s: %v", p, err)
		}
		return p
	}
	for _, n := range chromiumNames {
		if p, err := exec.LookPath(n); err == nil {
			return p
		}
	}
	t.Skipf("no Chromium binary found ($SNAKEPIT_CHROMIUM unset; none of %s on PATH): the status page's browser test needs one; "+
		"install it with scripts/install-browser.sh (Debian's chromium package, as root) or point $SNAKEPIT_CHROMIUM at one", strings.Join(chromiumNames, ", "))
	return ""
}

// chromiumTimeout bounds one headless run (a cold start on a loaded
// machine takes seconds, not minutes).
const chromiumTimeout = 90 * time.Second

// runChromium runs headless Chromium with args and returns its stdout.
// It runs in a process group of its own with a private profile directory;
// once the browser has exited (or timed out), the group is killed while its
// leader is still unreaped (so the group id cannot name anyone else's), and
// the test fails if any process of the group or of the profile survives.
func runChromium(t *testing.T, bin string, args ...string) []byte {
	t.Helper()
	profile := t.TempDir()
	base := []string{
		"--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--no-default-browser-check",
		"--disable-extensions", "--disable-sync", "--disable-background-networking", "--disable-component-update",
		"--disable-default-apps", "--disable-breakpad", "--disable-dev-shm-usage", "--mute-audio", "--hide-scrollbars",
		"--user-data-dir=" + profile,
	}
	cmd := exec.Command(bin, append(base, args...)...)
	cmd.Env = append(os.Environ(), "HOME="+profile, "XDG_CONFIG_HOME="+profile, "XDG_CACHE_HOME="+profile)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", bin, err)
	}
	pgid := cmd.Process.Pid
	exited := make(chan error, 1)
	go func() {
		// Wait for the exit without reaping: the zombie leader keeps the
		// group id ours until the group is killed below.
		var info unix.Siginfo
		for {
			err := unix.Waitid(unix.P_PID, pgid, &info, unix.WEXITED|unix.WNOWAIT, nil)
			if !errors.Is(err, unix.EINTR) {
				exited <- err
				return
			}
		}
	}()
	timedOut := false
	select {
	case <-exited:
	case <-time.After(chromiumTimeout):
		timedOut = true
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		<-exited
	}
	_ = syscall.Kill(-pgid, syscall.SIGKILL) // helpers that outlived the browser
	werr := cmd.Wait()
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		left := chromiumLeft(pgid, profile)
		if len(left) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Chromium processes survived the kill of their group: %v", left)
		}
	}
	switch {
	case timedOut:
		t.Fatalf("%s did not finish within %s; stderr:\n%s", bin, chromiumTimeout, tail(stderr.String()))
	case werr != nil:
		t.Fatalf("%s %s: %v; stderr:\n%s", bin, strings.Join(args, " "), werr, tail(stderr.String()))
	}
	return stdout.Bytes()
}

// chromiumLeft lists the live processes in group pgid or whose command line
// names the profile directory (a helper that left the group).
func chromiumLeft(pgid int, profile string) []string {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return []string{err.Error()}
	}
	var left []string
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		st, err := proc.ReadStat(pid)
		if err != nil || st.Zombie() {
			continue
		}
		argv, _ := proc.Cmdline(pid)
		if st.PGID == pgid || strings.Contains(strings.Join(argv, " "), profile) {
			left = append(left, strconv.Itoa(pid)+" "+st.Comm)
		}
	}
	return left
}

func tail(s string) string {
	if len(s) > 4000 {
		return "…" + s[len(s)-4000:]
	}
	return s
}
