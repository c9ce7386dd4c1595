package lifecycle

import (
	"bufio"
	"errors"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/snakepit-go/snakepit/internal/testutil"
)

// runExample starts an example binary and returns the first stdout line
// with the given prefix, the rest of its output, and its exit.
func runExample(t *testing.T, bin string, prefix string, args ...string) (*exec.Cmd, string, <-chan string, <-chan error) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan string, 16)
	drained := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			lines <- sc.Text()
		}
		_, _ = io.Copy(io.Discard, out)
		close(lines)
		close(drained)
	}()
	exited := make(chan error, 1)
	var once sync.Once
	var waitErr error
	reaped := make(chan struct{})
	wait := func() { once.Do(func() { waitErr = cmd.Wait(); close(reaped) }) }
	// Wait closes the stdout pipe: only after every line was read, or the
	// last lines (e.g. "stopped") could be lost.
	go func() { <-drained; wait(); exited <- waitErr }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill() // our child, not yet reaped: its pid is ours
		go func() {
			for range lines { // unread lines must not keep the reader from EOF
			}
		}()
		<-reaped
	})
	var first string
	deadline := time.After(60 * time.Second)
	for first == "" {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("%s exited before printing %q", filepath.Base(bin), prefix)
			}
			if strings.HasPrefix(l, prefix) {
				first = l
			}
		case <-deadline:
			t.Fatalf("%s printed no %q line within 60 s", filepath.Base(bin), prefix)
		}
	}
	return cmd, first, lines, exited
}

func runIDOf(line string) string {
	_, id, _ := strings.Cut(line, "run_id=")
	return strings.Fields(id)[0]
}

func TestEmbeddedExampleServesHTTPAndStopsCleanlyOnSIGTERM(t *testing.T) {
	bin := buildBinary(t, "embedded", "github.com/snakepit-go/snakepit/examples/embedded")
	cmd, line, lines, exited := runExample(t, bin, "listening ", "-listen", "127.0.0.1:0")
	addr := strings.Fields(strings.TrimPrefix(line, "listening "))[0]
	runID := runIDOf(line)
	resp, err := http.Get("http://" + addr + "/greet?name=ada")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(body), "hello, ada") {
		t.Fatalf("GET /greet: %d %s", resp.StatusCode, body)
	}
	if len(testutil.RunIDProcesses(t, runID)) != 2 {
		t.Fatalf("want the example's 2 workers running")
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("the example exited with %v after SIGTERM, want 0", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the example did not stop within 30 s of SIGTERM")
	}
	sawStopped := false
	for l := range lines {
		sawStopped = sawStopped || l == "stopped"
	}
	if !sawStopped {
		t.Error("the example did not report its ordered stop")
	}
	if left := testutil.RunIDProcesses(t, runID); len(left) > 0 {
		t.Fatalf("processes of the example's run alive after it exited: %+v", left)
	}
}

func TestLinesWorkerExampleRunsAndStopsCleanly(t *testing.T) {
	bin := buildBinary(t, "linesworker", "github.com/snakepit-go/snakepit/examples/linesworker")
	_, line, lines, exited := runExample(t, bin, "ready run_id=", "-once")
	var rest []string
	for l := range lines {
		rest = append(rest, l)
	}
	if err := <-exited; err != nil {
		t.Fatalf("linesworker -once exited with %v", err)
	}
	if strings.Join(rest, "\n") != "add(2, 40) = 42\nstopped" {
		t.Fatalf("output after ready: %q", rest)
	}
	if left := testutil.RunIDProcesses(t, runIDOf(line)); len(left) > 0 {
		t.Fatalf("processes of the example's run alive after it exited: %+v", left)
	}
}

// examples/embedded with an adapter directory that does not exist: it exits
// non-zero, promptly, with the Python ImportError on stderr, and leaves no
// process behind.
func TestEmbeddedExampleFailsFastOnABadAdapter(t *testing.T) {
	bin := buildBinary(t, "embedded", "github.com/snakepit-go/snakepit/examples/embedded")
	cmd := exec.Command(bin, "-listen", "127.0.0.1:0", "-adapters", filepath.Join(t.TempDir(), "nonexistent"))
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	select {
	case err := <-exited:
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() == 0 {
			t.Fatalf("the example exited with %v; want a non-zero exit", err)
		}
	case <-time.After(60 * time.Second):
		_ = cmd.Process.Kill() // our child, not yet reaped
		<-exited
		t.Fatal("the example did not exit within 60 s of a bad adapter directory")
	}
	if !strings.Contains(stderr.String(), "embedded: ") || !strings.Contains(stderr.String(), "No module named 'greeter'") {
		t.Fatalf("stderr does not end with the start error naming the ImportError:\n%s", stderr.String())
	}
	for _, l := range strings.Split(stderr.String(), "\n") {
		if _, id, ok := strings.Cut(l, "run_id="); ok {
			if left := testutil.RunIDProcesses(t, strings.Fields(id)[0]); len(left) > 0 {
				t.Fatalf("processes of the example's run alive after it exited: %+v", left)
			}
			break
		}
	}
}
