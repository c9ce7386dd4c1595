package integration

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/snakepit-go/snakepit"
	"github.com/snakepit-go/snakepit/internal/testutil"
)

const contractAdapter = "contract_adapter.ContractAdapter"

func contractApp(t *testing.T, workers int) *snakepit.App {
	t.Helper()
	return newApp(t, snakepit.Config{Workers: workers, Adapter: contractAdapter, PythonPath: healingPath(t)})
}

// needNumpy skips unless the workers' Python has numpy.
func needNumpy(t testing.TB) {
	t.Helper()
	py := os.Getenv("SNAKEPIT_PYTHON")
	if py == "" {
		py = "python3"
	}
	if err := exec.Command(py, "-c", "import numpy").Run(); err != nil {
		t.Skipf("numpy is not installed for %s (scripts/install-python-deps.sh installs it)", py)
	}
}

func TestInvalidArgsAreTypedAndNeverToolErrors(t *testing.T) {
	app := contractApp(t, 1)
	ctx := ctxT(t)
	cases := []struct {
		tool           string
		args           any
		path, expected string
		got            string
	}{
		{"scale", map[string]any{"xs": []any{1, 2, "x"}}, "xs[2]", "int", "str 'x'"},
		{"scale", map[string]any{"xs": []any{1}, "factor": true}, "factor", "float", "bool True"},
		{"scale", map[string]any{}, "xs", "list[int]", "missing"},
		{"scale", map[string]any{"xs": []any{}, "nope": 1}, "nope", "", "int 1"},
		{"configure", map[string]any{"cfg": map[string]any{"name": 5, "sizes": []int{}}}, "cfg.name", "str", "int 5"},
		{"configure", map[string]any{"cfg": map[string]any{"name": "n", "sizes": []int{1}, "mode": "medium"}}, "cfg.mode", "Mode", "str 'medium'"},
		{"async_scale", map[string]any{"xs": "1,2"}, "xs", "list[int]", "str '1,2'"},
		{"sorted_only", map[string]any{"xs": []int{2, 1}}, "xs", "sorted list[int]", ""},
	}
	for _, c := range cases {
		_, err := app.Execute(ctx, c.tool, c.args)
		if !errors.Is(err, snakepit.ErrInvalidArgs) || errors.Is(err, snakepit.ErrToolFailed) {
			t.Errorf("%s %v: want ErrInvalidArgs and not ErrToolFailed, got %v", c.tool, c.args, err)
			continue
		}
		var ie *snakepit.InvalidArgsError
		if !errors.As(err, &ie) {
			t.Errorf("%s: not a *InvalidArgsError: %#v", c.tool, err)
			continue
		}
		if ie.Path != c.path || ie.Expected != c.expected || ie.Got != c.got {
			t.Errorf("%s: path %q expected %q got %q; want %q %q %q (%v)", c.tool, ie.Path, ie.Expected, ie.Got, c.path, c.expected, c.got, err)
		}
	}
	// A call that fits runs, with the dataclass and Enum built for the tool.
	out, err := snakepit.Decode[map[string]any](app.Execute(ctx, "configure", map[string]any{"cfg": map[string]any{"name": "n", "sizes": []int{1, 2}, "mode": "slow"}}))
	if err != nil || out["total"] != float64(3) || out["mode"] != "slow" {
		t.Fatalf("configure: %v %v", out, err)
	}
}

func TestToolsDescribeParametersReturnsAndDocs(t *testing.T) {
	app := contractApp(t, 1)
	var scale *snakepit.ToolSpec
	for _, s := range app.Tools() {
		if s.Name == "scale" {
			scale = &s
		}
	}
	if scale == nil {
		t.Fatal("scale not listed")
	}
	if scale.Returns != "list[float]" || !strings.Contains(scale.Doc, "Multiply each x by factor.\n\nArgs:") || scale.Description != "Multiply each x by factor." {
		t.Errorf("returns %q doc %q description %q", scale.Returns, scale.Doc, scale.Description)
	}
	want := []snakepit.ParamSpec{
		{Name: "xs", Type: "list[int]", Required: true, Description: "the numbers."},
		{Name: "factor", Type: "float", Default: []byte("1.0"), Description: "the multiplier."},
	}
	if !reflect.DeepEqual(scale.Parameters, want) {
		t.Errorf("parameters %+v, want %+v", scale.Parameters, want)
	}
}

func TestResultsAsToolsProduceThem(t *testing.T) {
	app := contractApp(t, 1)
	ctx := ctxT(t)
	out, err := snakepit.Decode[map[string]any](app.Execute(ctx, "stamps", nil))
	want := map[string]any{
		"when": "2024-01-02T03:04:05+00:00", "price": "9.99", "tags": []any{"a", "b"}, "mode": "slow",
		"cfg": map[string]any{"name": "c", "sizes": []any{float64(1)}, "mode": "fast"},
	}
	if err != nil || !reflect.DeepEqual(out, want) {
		t.Fatalf("stamps: %v %v, want %v", out, err, want)
	}
}

func TestNumpyArrayResultsDecode(t *testing.T) {
	needNumpy(t)
	app := contractApp(t, 1)
	ctx := ctxT(t)
	res, err := app.Execute(ctx, "array", map[string]any{"n": 5})
	if err != nil {
		t.Fatal(err)
	}
	if res.DType != "float32" || !reflect.DeepEqual(res.Shape, []uint64{5}) || len(res.Binary) != 20 {
		t.Fatalf("array header: dtype %q shape %v %d bytes", res.DType, res.Shape, len(res.Binary))
	}
	f64, err := snakepit.Decode[[]float64](res, nil)
	if err != nil || !reflect.DeepEqual(f64, []float64{0, 1, 2, 3, 4}) {
		t.Fatalf("Decode[[]float64]: %v %v", f64, err)
	}
	f32, err := snakepit.Decode[[]float32](res, nil)
	if err != nil || !reflect.DeepEqual(f32, []float32{0, 1, 2, 3, 4}) {
		t.Fatalf("Decode[[]float32]: %v %v", f32, err)
	}
	i64, err := snakepit.Decode[[]int64](app.Execute(ctx, "array", map[string]any{"n": 3, "dtype": "int32"}))
	if err != nil || !reflect.DeepEqual(i64, []int64{0, 1, 2}) {
		t.Fatalf("Decode[[]int64] of int32: %v %v", i64, err)
	}
	m, err := snakepit.Decode[[][]int](app.Execute(ctx, "matrix", nil))
	if err != nil || !reflect.DeepEqual(m, [][]int{{0, 1, 2}, {3, 4, 5}}) {
		t.Fatalf("matrix: %v %v", m, err)
	}
	mix, err := snakepit.Decode[map[string]any](app.Execute(ctx, "numpy_mix", nil))
	if err != nil || !reflect.DeepEqual(mix, map[string]any{"mean": 1.5, "n": float64(3), "row": []any{float64(0), float64(1), float64(2)}}) {
		t.Fatalf("numpy_mix: %v %v", mix, err)
	}
}

func TestAdapterWithoutToolsDoesNotStart(t *testing.T) {
	for _, c := range []struct{ adapter, says string }{
		{"contract_adapter.NoTools", "defines no tools: decorate the methods"},
		{"contract_adapter.NotAnAdapter", "is not an adapter"},
	} {
		app := buildApp(t, snakepit.Config{Workers: 1, Adapter: c.adapter, PythonPath: healingPath(t)})
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		err := app.Start(ctx)
		if err == nil {
			stopApp(t, app)
			cancel()
			t.Fatalf("%s: Start succeeded", c.adapter)
		}
		var se *snakepit.StartupError
		if !errors.As(err, &se) {
			t.Errorf("%s: want a *StartupError, got %v", c.adapter, err)
		} else if se.Class().String() != "adapter" || !strings.Contains(err.Error(), c.says) {
			t.Errorf("%s: kind %s, message:\n%s", c.adapter, se.Class(), err)
		}
		_, _ = app.Stop(ctx)
		cancel()
	}
}

// BenchmarkArray4MiB compares a 4 MiB float32 numpy array returned as a typed
// array (binary + dtype/shape, decoded into []float32) with the same 4 MiB
// returned as raw bytes: the same array's tobytes() (what a tool sends by
// hand) and a plain bytes object (figures in docs/BENCHMARKS.md).
func BenchmarkArray4MiB(b *testing.B) {
	needNumpy(b)
	const n = 1 << 20 // float32: 4 MiB
	app, err := snakepit.New(snakepit.Config{Workers: 1, Adapter: contractAdapter, PythonPath: healingPath(nil),
		RegistryPath: b.TempDir() + "/r.db", Logger: testutil.Logger()})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	if err := app.Start(ctx); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _, _ = app.Stop(context.Background()) })
	// One call of each first: the worker's numpy import and its heap's
	// first growth are one-time costs, not part of any path's figure.
	for _, tool := range []string{"array", "array_bytes"} {
		if _, err := app.Execute(ctx, tool, map[string]any{"n": n}); err != nil {
			b.Fatal(err)
		}
	}
	b.Run("numpy-float32-decoded", func(b *testing.B) {
		b.SetBytes(4 * n)
		for b.Loop() {
			v, err := snakepit.Decode[[]float32](app.Execute(ctx, "array", map[string]any{"n": n}))
			if err != nil || len(v) != n {
				b.Fatal(len(v), err)
			}
		}
	})
	b.Run("numpy-tobytes-raw", func(b *testing.B) {
		b.SetBytes(4 * n)
		for b.Loop() {
			r, err := app.Execute(ctx, "array_bytes", map[string]any{"n": n})
			if err != nil || len(r.Binary) != 4*n {
				b.Fatal(err)
			}
		}
	})
	b.Run("raw-bytes", func(b *testing.B) {
		b.SetBytes(4 * n)
		for b.Loop() {
			r, err := app.Execute(ctx, "blob", map[string]any{"n": 4 * n})
			if err != nil || len(r.Binary) != 4*n {
				b.Fatal(err)
			}
		}
	})
}
