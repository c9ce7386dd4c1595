package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/snakepit-go/snakepit"
	"github.com/snakepit-go/snakepit/internal/testutil"
	"github.com/snakepit-go/snakepit/worker/fake"
)

// adminClient opens no keep-alive connections, so nothing lingers after a test.
var adminClient = &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 10 * time.Second}

func get(t *testing.T, url string) (int, string, http.Header) {
	t.Helper()
	resp, err := adminClient.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(body), resp.Header
}

func newFakeApp(t *testing.T, workers int) *snakepit.App {
	t.Helper()
	app, err := snakepit.New(snakepit.Config{
		Workers:       workers,
		WorkerFactory: &fake.Factory{Options: []fake.Option{fake.WithTool("echo", fake.Echo)}},
		RegistryPath:  filepath.Join(t.TempDir(), "r.db"),
		Instance:      "admin-test",
		Logger:        testutil.Logger(),
	})
	if err != nil {
		t.Fatal(err)
	}
	return app
}

// startTestAdmin serves the admin endpoints for app on 127.0.0.1:0 and
// returns the base URL; the server is shut down at the end of the test.
func startTestAdmin(t *testing.T, app *snakepit.App) string {
	t.Helper()
	srv, err := startAdmin(app, "127.0.0.1:0", testutil.Logger())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := srv.Shutdown(context.Background()); err != nil {
			t.Errorf("admin Shutdown: %v", err)
		}
	})
	return "http://" + srv.Addr().String()
}

func TestAdminEndpoints(t *testing.T) {
	app := newFakeApp(t, 2)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := app.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if _, err := app.Stop(context.Background()); err != nil {
			t.Errorf("Stop: %v", err)
		}
	})
	base := startTestAdmin(t, app)
	for range 3 {
		if _, err := app.Execute(ctx, "echo", map[string]any{"x": 1}); err != nil {
			t.Fatal(err)
		}
	}
	testutil.Eventually(t, 5*time.Second, "both workers idle", func() bool {
		return app.Stats().Pool.Workers.Idle == 2
	})

	if code, body, _ := get(t, base+"/healthz"); code != 200 || strings.TrimSpace(body) != "ok" {
		t.Errorf("/healthz: %d %q", code, body)
	}
	if code, body, _ := get(t, base+"/readyz"); code != 200 || strings.TrimSpace(body) != "ready" {
		t.Errorf("/readyz: %d %q", code, body)
	}

	code, body, hdr := get(t, base+"/status")
	if code != 200 || !strings.HasPrefix(hdr.Get("Content-Type"), "application/json") {
		t.Fatalf("/status: %d %s %q", code, hdr.Get("Content-Type"), body)
	}
	var st snakepit.Stats
	if err := json.Unmarshal([]byte(body), &st); err != nil {
		t.Fatalf("/status is not the JSON of Stats: %v\n%s", err, body)
	}
	if st.RunID != app.RunID() || st.Pool.Requests != 3 || st.Pool.Outcomes[snakepit.OutcomeSuccess] != 3 || st.Pool.Workers.Idle != 2 {
		t.Errorf("/status = %+v", st)
	}

	code, body, hdr = get(t, base+"/metrics")
	if code != 200 || !strings.HasPrefix(hdr.Get("Content-Type"), "text/plain") {
		t.Fatalf("/metrics: %d %s", code, hdr.Get("Content-Type"))
	}
	for _, want := range []string{
		`snakepit_requests_total{instance="admin-test",outcome="success",pool="default"} 3`,
		`snakepit_requests_total{instance="admin-test",outcome="tool_error",pool="default"} 0`,
		`snakepit_workers{instance="admin-test",pool="default",state="idle"} 2`,
		`snakepit_queue_depth{instance="admin-test",pool="default"} 0`,
		`snakepit_call_duration_seconds_count{instance="admin-test",pool="default"} 3`,
		"\ngo_goroutines ",
		"\nprocess_resident_memory_bytes ",
		"\npromhttp_metric_handler_requests_total{",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	if strings.Contains(body, app.RunID()) {
		t.Error("/metrics carries the run id")
	}

	// The status page is the library's (snakepit.AdminHandler).
	if code, body, hdr := get(t, base+"/status.html"); code != 200 || !strings.HasPrefix(hdr.Get("Content-Type"), "text/html") ||
		!strings.Contains(body, `<tr class="worker" data-worker="w0" data-state="idle">`) {
		t.Errorf("/status.html: %d %s\n%s", code, hdr.Get("Content-Type"), body)
	}

	if code, _, _ := get(t, base+"/nope"); code != http.StatusNotFound {
		t.Errorf("/nope: %d", code)
	}
	resp, err := adminClient.Post(base+"/healthz", "text/plain", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST /healthz: %d", resp.StatusCode)
	}
}

func TestAdminReadyzBeforeStart(t *testing.T) {
	app := newFakeApp(t, 1) // never started: no worker is ready
	base := startTestAdmin(t, app)
	code, body, _ := get(t, base+"/readyz")
	if code != http.StatusServiceUnavailable || !strings.Contains(body, "not ready: not_started: ") {
		t.Errorf("/readyz before Start: %d %q", code, body)
	}
	if code, _, _ := get(t, base+"/healthz"); code != 200 {
		t.Errorf("/healthz before Start: %d", code)
	}
	if code, body, _ := get(t, base+"/metrics"); code != 200 || !strings.Contains(body, `snakepit_workers{instance="admin-test",pool="default",state="idle"} 0`) {
		t.Errorf("/metrics before Start: %d\n%s", code, body)
	}
}

func TestAdminAddrMustBeLoopback(t *testing.T) {
	for _, addr := range []string{"127.0.0.1:9090", "127.0.0.1:0", "[::1]:9090", "localhost:9090", "127.1.2.3:80"} {
		if err := checkAdminAddr(addr); err != nil {
			t.Errorf("%s refused: %v", addr, err)
		}
	}
	for _, addr := range []string{"0.0.0.0:9090", ":9090", "[::]:9090", "192.0.2.1:9090", "example.com:9090", "127.0.0.1", "127.0.0.1:", ""} {
		if err := checkAdminAddr(addr); err == nil {
			t.Errorf("%q accepted", addr)
		}
	}
	if _, err := listenAdmin("0.0.0.0:0"); err == nil || !strings.Contains(err.Error(), "loopback") {
		t.Errorf("listenAdmin(0.0.0.0:0): %v", err)
	}

	// The command refuses before starting anything.
	reg := filepath.Join(t.TempDir(), "r.db")
	start := time.Now()
	_, errOut, code := runCmd(t, "run", "--registry", reg, "--admin", "0.0.0.0:9090")
	if code != 2 || !strings.Contains(errOut, "refusing to listen on 0.0.0.0") || !strings.Contains(errOut, "loopback") {
		t.Fatalf("run --admin 0.0.0.0:9090: code %d, stderr %s", code, errOut)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("the refusal took %s", d)
	}
}

func TestRunServesAdminUntilSIGTERM(t *testing.T) {
	reg := filepath.Join(t.TempDir(), "r.db")
	cmd := exec.Command(binary, "run", "--workers", "1", "--registry", reg, "--admin", "127.0.0.1:0")
	var stdout bytes.Buffer
	cmd.Stdout = &stdout
	errPipe, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	startKilledAtCleanup(t, cmd)
	addrRe := regexp.MustCompile(`^admin listening on (http://127\.0\.0\.1:\d+)$`)
	found := make(chan string, 1)
	var stderr bytes.Buffer
	copied := make(chan struct{})
	go func() {
		defer close(copied)
		sc := bufio.NewScanner(errPipe)
		for sc.Scan() {
			stderr.WriteString(sc.Text() + "\n")
			if m := addrRe.FindStringSubmatch(sc.Text()); m != nil {
				found <- m[1]
			}
		}
	}()
	var base string
	select {
	case base = <-found:
	case <-copied:
		_ = cmd.Wait()
		t.Fatalf("snakepit run exited before serving admin; stderr:\n%s", stderr.String())
	case <-time.After(60 * time.Second):
		t.Fatal("no admin address within 60 s")
	}
	// The ready line follows the admin line, and /readyz agrees.
	if code, body, _ := get(t, base+"/readyz"); code != 200 {
		t.Errorf("/readyz: %d %q", code, body)
	}
	if code, body, _ := get(t, base+"/metrics"); code != 200 || !strings.Contains(body, `snakepit_workers{pool="default",state="idle"} 1`) {
		t.Errorf("/metrics: %d\n%s", code, body)
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	<-copied
	if err := cmd.Wait(); err != nil {
		t.Fatalf("snakepit run exited with %v after SIGTERM; stderr:\n%s", err, stderr.String())
	}
	if !regexp.MustCompile(`^ready run_id=[a-z0-9-]+ workers=1\n$`).MatchString(stdout.String()) {
		t.Errorf("stdout = %q, want only the ready line", stdout.String())
	}
	if _, err := adminClient.Get(base + "/healthz"); err == nil {
		t.Error("the admin listener still answers after the command exited")
	}
}
