package integration

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/snakepit-go/snakepit"
)

// snakepitMirror is where a checkout of Snakepit (the Elixir project) may be
// on a development machine. The test below is skipped where it is absent:
// none of Snakepit's files are part of this repository.
const snakepitMirror = "/work/.mirror/nshkrdotcom+snakepit/repo"

// extractSnakepitAdapters copies Snakepit's shipped adapters, unchanged,
// into <tmp>/myapp (showcase/, template.py, threaded_showcase.py): what a
// user migrating would do. Returns the directory to put on PythonPath.
func extractSnakepitAdapters(t *testing.T) string {
	t.Helper()
	if _, err := os.Stat(snakepitMirror); err != nil {
		t.Skip("no Snakepit checkout at " + snakepitMirror)
	}
	dir := t.TempDir()
	const prefix = "priv/python/snakepit_bridge/adapters/"
	out, err := exec.Command("git", "--git-dir", snakepitMirror, "ls-tree", "-r", "--name-only", "HEAD", prefix).Output()
	if err != nil {
		t.Skipf("cannot list Snakepit's adapters: %v", err)
	}
	for _, name := range strings.Fields(string(out)) {
		data, err := exec.Command("git", "--git-dir", snakepitMirror, "show", "HEAD:"+name).Output()
		if err != nil {
			t.Fatal(err)
		}
		dst := filepath.Join(dir, "myapp", strings.TrimPrefix(name, prefix))
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(dst, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// TestSnakepitShippedShowcase runs Snakepit's own ShowcaseAdapter, copied
// unchanged into a user package, and calls a representative set of its
// tools (unary and streaming) from Go.
func TestSnakepitShippedShowcase(t *testing.T) {
	dir := extractSnakepitAdapters(t)
	app := newApp(t, snakepit.Config{Workers: 1, Adapter: "myapp.showcase.ShowcaseAdapter", PythonPath: []string{dir}})
	ctx := ctxT(t)
	unary := []struct {
		tool string
		args map[string]any
	}{
		{"ping", map[string]any{"message": "hi"}},
		{"echo", map[string]any{"x": 1}},
		{"add", map[string]any{"a": 1, "b": 2}},
		{"adapter_info", nil},
		{"telemetry_demo", map[string]any{"delay_ms": 1}},
		{"serialization_demo", nil},
		{"basic_echo", map[string]any{"message": "m"}},
		{"basic_add", map[string]any{"a": 1, "b": 2}},
		{"process_text", map[string]any{"text": "abc", "operation": "reverse"}},
		{"get_stats", nil},
		{"ml_analyze_text", map[string]any{"text": "hello world"}},
		{"concurrent_demo", map[string]any{"task_count": 2}},
		{"init_session", nil},
		{"set_counter", map[string]any{"value": 5}},
		{"get_counter", nil},
		{"increment_counter", nil},
		{"get_worker_info", map[string]any{"call_number": 1}},
		{"lightweight_task", map[string]any{"iteration": 3}},
		{"sleep_task", map[string]any{"duration_ms": 1, "task_number": 1}},
		{"create_tensor", map[string]any{"name": "t", "shape": []int{2, 2}}},
		{"create_embedding", map[string]any{"text": "x", "dimensions": 4}},
		{"load_sample_data", map[string]any{"dataset": "iris", "split": 0.8}},
		{"cleanup", nil},
	}
	streams := []struct {
		tool string
		args map[string]any
	}{
		{"stream_data", map[string]any{"count": 2, "delay": 0}},
		{"stream_progress", map[string]any{"steps": 2, "delay_ms": 0}},
		{"stream_fibonacci", map[string]any{"count": 3}},
		{"generate_dataset", map[string]any{"rows": 20, "chunk_size": 10}},
	}
	answered := 0
	for _, c := range unary {
		res, err := app.Execute(ctx, c.tool, c.args, snakepit.WithSession("showcase"))
		if err != nil {
			t.Logf("%s: %v", c.tool, err)
			continue
		}
		answered++
		t.Logf("%s: %.120s", c.tool, res.JSON)
	}
	for _, c := range streams {
		n, failed := 0, error(nil)
		for _, err := range app.ExecuteStream(ctx, c.tool, c.args, snakepit.WithSession("showcase")) {
			if err != nil {
				failed = err
				break
			}
			n++
		}
		if failed != nil || n == 0 {
			t.Logf("%s (stream): %d chunks, %v", c.tool, n, failed)
			continue
		}
		answered++
		t.Logf("%s (stream): %d chunks", c.tool, n)
	}
	total := len(unary) + len(streams)
	t.Logf("Snakepit's ShowcaseAdapter, unchanged: %d of %d tools answered", answered, total)
	if answered < total*3/4 {
		t.Fatalf("only %d of %d showcase tools answered", answered, total)
	}
}

// TestSnakepitShippedThreadedAndTemplate: Snakepit's threaded showcase with
// Capacity > 1, and its template (which only errors, by design).
func TestSnakepitShippedThreadedAndTemplate(t *testing.T) {
	dir := extractSnakepitAdapters(t)
	ctx := ctxT(t)
	app := newApp(t, snakepit.Config{Workers: 1, Capacity: 4, Adapter: "myapp.threaded_showcase.ThreadedShowcaseAdapter", PythonPath: []string{dir}})
	for _, c := range []struct {
		tool string
		args map[string]any
	}{
		{"ping", map[string]any{"message": "x"}},
		{"compute_intensive", map[string]any{"data": []float64{1, 2, 3}, "iterations": 10}},
		{"matrix_multiply", map[string]any{"input_vector": make([]float64, 100)}},
		{"get_adapter_stats", nil},
	} {
		if res, err := app.Execute(ctx, c.tool, c.args); err != nil {
			t.Errorf("threaded %s: %v", c.tool, err)
		} else {
			t.Logf("threaded %s: %.120s", c.tool, res.JSON)
		}
	}
	tmpl := newApp(t, snakepit.Config{Workers: 1, Adapter: "myapp.template.TemplateAdapter", PythonPath: []string{dir}})
	var te *snakepit.ToolError
	if _, err := tmpl.Execute(ctx, "anything", nil); err == nil || !asToolError(err, &te) || te.Type != "NotImplementedError" {
		t.Fatalf("template: want its NotImplementedError, got %v", err)
	}
}

func asToolError(err error, te **snakepit.ToolError) bool { return errors.As(err, te) }
