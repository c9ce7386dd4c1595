package bridge

import (
	"context"
	"encoding/json"
	"errors"
	"github.com/snakepit-go/snakepit/internal/testutil"
	"io/fs"
	"log/slog"
	"strings"
	"testing"

	"github.com/snakepit-go/snakepit/bridge/pb"
	"github.com/snakepit-go/snakepit/worker"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func echoTool(_ context.Context, args json.RawMessage) (any, error) { return args, nil }

func TestRegisterHostTool(t *testing.T) {
	s := newServer(t, Options{})
	spec := worker.ToolSpec{Description: "echoes", Parameters: []worker.ParamSpec{{Name: "x", Type: "any", Default: json.RawMessage(`{"a":1}`)}}}
	if err := s.RegisterHostTool("echo", echoTool, spec); err != nil {
		t.Fatalf("RegisterHostTool: %v", err)
	}
	err := s.RegisterHostTool("echo", echoTool, worker.ToolSpec{})
	if !errors.Is(err, ErrDuplicateTool) {
		t.Fatalf("duplicate: %v, want ErrDuplicateTool", err)
	}
	var re *RegistrationError
	if !errors.As(err, &re) || re.Name != "echo" {
		t.Fatalf("duplicate: %#v, want *RegistrationError", err)
	}
	for name, call := range map[string]func() error{
		"empty name":    func() error { return s.RegisterHostTool("", echoTool, worker.ToolSpec{}) },
		"nil fn":        func() error { return s.RegisterHostTool("x", nil, worker.ToolSpec{}) },
		"name mismatch": func() error { return s.RegisterHostTool("x", echoTool, worker.ToolSpec{Name: "y"}) },
	} {
		if err := call(); !errors.Is(err, ErrInvalidHostTool) {
			t.Errorf("%s: %v, want ErrInvalidHostTool", name, err)
		}
	}
	if err := s.RegisterHostTool("alpha", echoTool, worker.ToolSpec{Name: "alpha"}); err != nil {
		t.Fatal(err)
	}

	// The registry keeps its own copy of the spec.
	spec.Parameters[0].Default[2] = 'X'
	tools := s.hostToolList()
	if specNames(tools) != "alpha,echo" {
		t.Fatalf("HostTools = %s", specNames(tools))
	}
	if tools[1].Name != "echo" || string(tools[1].Parameters[0].Default) != `{"a":1}` {
		t.Fatalf("HostTools()[1] = %+v", tools[1])
	}
	tools[1].Parameters[0].Name = "changed"
	if s.hostToolList()[1].Parameters[0].Name != "x" {
		t.Fatal("HostTools shares its specs with callers")
	}
}

type quotaError struct{ Left int }

func (e *quotaError) Error() string { return "quota exhausted" }

type fieldError struct{ msg string }

func (e *fieldError) Error() string { return e.msg }

type panickyJSON struct{}

func (panickyJSON) MarshalJSON() ([]byte, error) { panic("marshal boom") }

func TestExecuteHostTool(t *testing.T) {
	var logs testutil.Buffer
	s, client := startServer(t, Options{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	type point struct {
		X, Y int
	}
	reg := map[string]HostToolFunc{
		"echo":   echoTool,
		"struct": func(context.Context, json.RawMessage) (any, error) { return point{1, 2}, nil },
		"nil":    func(context.Context, json.RawMessage) (any, error) { return nil, nil },
		"bytes":  func(context.Context, json.RawMessage) (any, error) { return []byte{0, 1, 0xff}, nil },
		"raw":    func(context.Context, json.RawMessage) (any, error) { return json.RawMessage(`{"pre": "encoded"}`), nil },
		"badraw": func(context.Context, json.RawMessage) (any, error) { return json.RawMessage(`{nope`), nil },
		"chan":   func(context.Context, json.RawMessage) (any, error) { return make(chan int), nil },
		"plain":  func(context.Context, json.RawMessage) (any, error) { return nil, errors.New("disk on fire") },
		"wrapped": func(context.Context, json.RawMessage) (any, error) {
			return nil, &fs.PathError{Op: "open", Path: "/x", Err: fs.ErrNotExist}
		},
		"custom": func(context.Context, json.RawMessage) (any, error) { return nil, &quotaError{} },
		"panic":  func(context.Context, json.RawMessage) (any, error) { panic("boom") },
		"nilerr": func(context.Context, json.RawMessage) (any, error) {
			var e *fieldError // a typed nil whose Error method dereferences it
			return nil, e
		},
		"badmarshal": func(context.Context, json.RawMessage) (any, error) { return panickyJSON{}, nil },
		"caller": func(ctx context.Context, _ json.RawMessage) (any, error) {
			c, ok := CallFromContext(ctx)
			return map[string]any{"ok": ok, "tool": c.Tool, "session": c.SessionID, "worker": c.WorkerID}, nil
		},
	}
	for name, fn := range reg {
		if err := s.RegisterHostTool(name, fn, worker.ToolSpec{Description: name + " tool"}); err != nil {
			t.Fatal(err)
		}
	}
	ctx := testCtx(t)

	list, err := client.ListHostTools(ctx, &pb.ListHostToolsRequest{})
	if err != nil || len(list.GetTools()) != len(reg) || list.GetTools()[0].GetName() != "badmarshal" || list.GetTools()[0].GetDescription() != "badmarshal tool" {
		t.Fatalf("ListHostTools = %v, %v", list, err)
	}

	tests := []struct {
		tool, args string
		json       string // expected JSON result
		binary     []byte // expected binary result
		errType    string // expected ToolError type
		errHas     string // substring of the ToolError message
	}{
		{tool: "echo", args: `{"a": [1, 2]}`, json: `{"a": [1, 2]}`},
		{tool: "echo", args: ``, json: `{}`},
		{tool: "echo", args: "  \n", json: `{}`},
		{tool: "struct", json: `{"X":1,"Y":2}`},
		{tool: "nil", json: `null`},
		{tool: "bytes", binary: []byte{0, 1, 0xff}},
		{tool: "raw", json: `{"pre":"encoded"}`},
		{tool: "caller", json: `{"ok":true,"session":"s9","tool":"caller","worker":"w4"}`},
		{tool: "echo", args: `[1]`, errType: "InvalidArguments", errHas: "a JSON array"},
		{tool: "echo", args: `"x"`, errType: "InvalidArguments", errHas: "JSON object"},
		{tool: "echo", args: `null`, errType: "InvalidArguments", errHas: "JSON null"},
		{tool: "echo", args: `{"a":`, errType: "InvalidArguments", errHas: "invalid JSON"},
		{tool: "echo", args: `{} {}`, errType: "InvalidArguments", errHas: "invalid JSON"},
		{tool: "badraw", errType: "SerializationError", errHas: `"badraw"`},
		{tool: "chan", errType: "SerializationError", errHas: "chan int"},
		{tool: "plain", errType: "HostToolError", errHas: "disk on fire"},
		{tool: "wrapped", errType: "fs.PathError", errHas: "open /x"},
		{tool: "custom", errType: "bridge.quotaError", errHas: "quota exhausted"},
		{tool: "panic", errType: "HostToolPanic", errHas: "boom"},
		{tool: "nilerr", errType: "HostToolPanic", errHas: "nil pointer"},
		{tool: "badmarshal", errType: "HostToolPanic", errHas: "marshal boom"},
		{tool: "missing", errType: "UnknownHostTool", errHas: "badmarshal, badraw, bytes"},
	}
	for _, tc := range tests {
		t.Run(tc.tool+" "+tc.args, func(t *testing.T) {
			resp, err := client.ExecuteHostTool(ctx, &pb.ExecuteHostToolRequest{ToolName: tc.tool, ArgsJson: []byte(tc.args), SessionId: "s9", WorkerId: "w4"})
			if err != nil {
				t.Fatalf("ExecuteHostTool: %v; tool failures must arrive as ToolError", err)
			}
			if tc.errType != "" {
				te := resp.GetError()
				if te.GetType() != tc.errType || !strings.Contains(te.GetMessage(), tc.errHas) || resp.GetResult() != nil {
					t.Fatalf("got %v, want ToolError %s containing %q", resp, tc.errType, tc.errHas)
				}
				return
			}
			if resp.GetError() != nil {
				t.Fatalf("unexpected ToolError %v", resp.GetError())
			}
			if tc.binary != nil {
				if _, ok := resp.GetResult().GetValue().(*pb.Payload_Binary); !ok || string(resp.GetResult().GetBinary()) != string(tc.binary) {
					t.Fatalf("result %v, want binary %v", resp.GetResult(), tc.binary)
				}
				return
			}
			got := resp.GetResult().GetJson()
			if _, ok := resp.GetResult().GetValue().(*pb.Payload_Json); !ok || !jsonEqual(t, got, []byte(tc.json)) {
				t.Fatalf("result %s, want JSON %s", got, tc.json)
			}
		})
	}

	// The panic was logged with its stack, and the server still serves.
	if l := logs.String(); !strings.Contains(l, "host tool panicked") || !strings.Contains(l, "goroutine") {
		t.Fatalf("panic not logged with a stack:\n%s", l)
	}
	resp, err := client.ExecuteHostTool(ctx, &pb.ExecuteHostToolRequest{ToolName: "panic"})
	if err != nil || !strings.Contains(resp.GetError().GetTraceback(), "hosttools_test.go") {
		t.Fatalf("second panic: %v, %v; want a ToolError whose traceback names the panicking code", resp, err)
	}
	resp, err = client.ExecuteHostTool(ctx, &pb.ExecuteHostToolRequest{ToolName: "nil"})
	if err != nil || resp.GetError() != nil {
		t.Fatalf("call after panics: %v, %v", resp, err)
	}
}

func jsonEqual(t *testing.T, a, b []byte) bool {
	t.Helper()
	var x, y any
	if err := json.Unmarshal(a, &x); err != nil {
		t.Fatalf("result is not JSON: %s", a)
	}
	if err := json.Unmarshal(b, &y); err != nil {
		t.Fatalf("bad test JSON: %s", b)
	}
	xs, _ := json.Marshal(x)
	ys, _ := json.Marshal(y)
	return string(xs) == string(ys)
}

func TestUnknownHostToolWithNoneRegistered(t *testing.T) {
	_, client := startServer(t, Options{})
	resp, err := client.ExecuteHostTool(testCtx(t), &pb.ExecuteHostToolRequest{ToolName: "x"})
	if err != nil || resp.GetError().GetType() != toolErrorUnknownTool || !strings.Contains(resp.GetError().GetMessage(), "none are registered") {
		t.Fatalf("got %v, %v", resp, err)
	}
}

func TestExecuteHostToolTouchesSession(t *testing.T) {
	clock := newFakeClock()
	s, client := startServer(t, Options{Now: clock.Now})
	if err := s.RegisterHostTool("echo", echoTool, worker.ToolSpec{}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Sessions().Create("s", nil, 0); err != nil {
		t.Fatal(err)
	}
	clock.Advance(30 * 60e9)
	if _, err := client.ExecuteHostTool(testCtx(t), &pb.ExecuteHostToolRequest{ToolName: "echo", SessionId: "s"}); err != nil {
		t.Fatal(err)
	}
	if l := s.Sessions().List(); len(l) != 1 || !l[0].LastAccess.Equal(clock.Now()) {
		t.Fatalf("session not touched by a host tool call: %+v", l)
	}
}

func TestCancelledCallerCancelsHostTool(t *testing.T) {
	s, client := startServer(t, Options{})
	started := make(chan struct{})
	observed := make(chan error, 1)
	if err := s.RegisterHostTool("block", func(ctx context.Context, _ json.RawMessage) (any, error) {
		close(started)
		<-ctx.Done()
		observed <- ctx.Err()
		return nil, ctx.Err()
	}, worker.ToolSpec{}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	callErr := make(chan error, 1)
	go func() {
		_, err := client.ExecuteHostTool(ctx, &pb.ExecuteHostToolRequest{ToolName: "block"})
		callErr <- err
	}()
	waitFor(t, started, "host tool start")
	cancel()
	select {
	case err := <-observed:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("tool saw %v, want context.Canceled", err)
		}
	case <-testCtx(t).Done():
		t.Fatal("the host tool's ctx was not cancelled when its caller gave up")
	}
	if err := <-callErr; status.Code(err) != codes.Canceled {
		t.Fatalf("caller got %v, want Canceled", err)
	}
}
