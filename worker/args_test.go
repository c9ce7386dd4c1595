package worker

import (
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

func TestEncodeArgs(t *testing.T) {
	ok := map[string]struct {
		in   any
		want string
	}{
		"nil":          {nil, "{}"},
		"map":          {map[string]any{"a": 1}, `{"a":1}`},
		"struct":       {struct{ X int }{3}, `{"X":3}`},
		"raw":          {json.RawMessage(` {"b":true} `), `{"b":true}`},
		"bytes":        {[]byte(`{"c":null}`), `{"c":null}`},
		"json null":    {json.RawMessage("null"), "{}"},
		"empty raw":    {json.RawMessage(""), "{}"},
		"nil map":      {map[string]any(nil), "{}"},
		"nested array": {map[string]any{"l": []int{1, 2}}, `{"l":[1,2]}`},
	}
	for name, c := range ok {
		got, err := EncodeArgs("t", c.in)
		if err != nil || string(got) != c.want {
			t.Errorf("%s: got %s, %v; want %s", name, got, err, c.want)
		}
	}
	bad := map[string]any{
		"channel":     make(chan int),
		"func in map": map[string]any{"f": func() {}},
		"array":       []int{1},
		"string":      "x",
		"number":      3,
		"bool":        true,
		"invalid raw": json.RawMessage(`{"a":`),
		"raw array":   json.RawMessage(`[1]`),
	}
	for name, in := range bad {
		_, err := EncodeArgs("t", in)
		var ae *ArgsError
		if !errors.Is(err, ErrInvalidArgs) || !errors.As(err, &ae) || ae.Tool != "t" {
			t.Errorf("%s: want *ArgsError, got %v", name, err)
		}
	}
}

func FuzzEncodeArgs(f *testing.F) {
	f.Add([]byte(`{"a":1}`))
	f.Add([]byte(`[1,2]`))
	f.Add([]byte(`null`))
	f.Add([]byte(`"s"`))
	f.Fuzz(func(t *testing.T, raw []byte) {
		out, err := EncodeArgs("t", json.RawMessage(raw))
		if err != nil {
			if !errors.Is(err, ErrInvalidArgs) {
				t.Fatalf("untyped error %v", err)
			}
			return
		}
		var m map[string]any
		if uerr := json.Unmarshal(out, &m); uerr != nil {
			t.Fatalf("accepted %q, which is not a JSON object: %v", raw, uerr)
		}
	})
}

func TestErrorsMatchTheirSentinels(t *testing.T) {
	cases := map[error]error{
		&CrashError{WorkerID: "w", ExitCode: 1}:                ErrWorkerCrashed,
		&StartupError{WorkerID: "w", Cause: errors.New("x")}:   ErrStartup,
		&ToolError{Tool: "t", Type: "ValueError"}:              ErrToolFailed,
		&UnknownToolError{Tool: "t", Available: []string{"a"}}: ErrUnknownTool,
		&ArgsError{Tool: "t"}:                                  ErrInvalidArgs,
		&DecodeError{Reason: "r"}:                              ErrDecode,
	}
	for err, want := range cases {
		if !errors.Is(err, want) || err.Error() == "" {
			t.Errorf("%T does not match %v", err, want)
		}
	}
	ce := &CrashError{WorkerID: "w0", PID: 12, ExitCode: -1, Signal: syscall.SIGKILL, Reason: "health check failed"}
	if msg := ce.Error(); msg != "snakepit: worker w0 (pid 12) was killed by SIGKILL (health check failed); it is being restarted — retry the call, or mark it idempotent to retry automatically" {
		t.Errorf("CrashError message: %s", msg)
	}
}

// BenchmarkEncodeArgsLarge is the host's whole pass over a pre-encoded
// argument (the App's call path scans it once, here; the pool trusts it).
func BenchmarkEncodeArgsLarge(b *testing.B) {
	for _, size := range []int{100 << 10, 4 << 20} {
		raw := json.RawMessage(`{"a":1,"b":2,"pad":"` + strings.Repeat("x", size) + `"}`)
		b.Run(strconv.Itoa(size>>10)+"KiB", func(b *testing.B) {
			b.SetBytes(int64(len(raw)))
			for range b.N {
				if _, err := EncodeArgs("t", raw); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
