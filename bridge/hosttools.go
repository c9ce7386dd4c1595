package bridge

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"reflect"
	"runtime/debug"
	"slices"
	"strings"
	"sync"

	"github.com/snakepit-go/snakepit/bridge/pb"
	"github.com/snakepit-go/snakepit/internal/jsonvalid"
	"github.com/snakepit-go/snakepit/worker"
	"google.golang.org/protobuf/proto"
)

// HostToolFunc is a Go function Python tools can call through the bridge.
//
// args is the JSON object of keyword arguments ("{}" when the caller sent
// none). ctx is the RPC's context: it is cancelled when the Python caller
// gives up or the bridge shuts down, so a long-running tool should watch it.
// CallFromContext(ctx) tells which session and worker made the call.
//
// The result is sent back as raw bytes if it is a []byte, otherwise as its
// JSON encoding (a json.RawMessage is sent as is, after validation). A
// returned error reaches Python as a ToolError whose type is the error's Go
// type name ("HostToolError" for plain errors.New/fmt.Errorf errors).
type HostToolFunc func(ctx context.Context, args json.RawMessage) (any, error)

// ToolError types a host tool call can produce besides a tool's own error type.
const (
	toolErrorUnknownTool      = "UnknownHostTool"
	toolErrorInvalidArguments = "InvalidArguments"
	toolErrorSerialization    = "SerializationError"
	toolErrorPanic            = "HostToolPanic"
	toolErrorResultTooLarge   = "ResultTooLarge"
	toolErrorGeneric          = "HostToolError"
)

// HostCall identifies the caller of a host tool.
type HostCall struct {
	Tool      string
	SessionID string // may be empty
	WorkerID  string // may be empty
}

type hostCallKey struct{}

// CallFromContext returns the HostCall of the host tool invocation ctx belongs to.
func CallFromContext(ctx context.Context) (HostCall, bool) {
	c, ok := ctx.Value(hostCallKey{}).(HostCall)
	return c, ok
}

type hostTool struct {
	fn   HostToolFunc
	spec worker.ToolSpec
}

// RegisterHostTool makes fn callable from Python as name. spec describes it to
// Python (ListHostTools); spec.Name may be left empty and is then set to name.
// Tools can be registered before or while the server runs.
//
// Errors (as *RegistrationError): ErrDuplicateTool if name is taken,
// ErrInvalidHostTool for an empty name, a nil fn or a spec.Name that differs
// from name.
func (s *Server) RegisterHostTool(name string, fn HostToolFunc, spec worker.ToolSpec) error {
	switch {
	case name == "":
		return &RegistrationError{Name: name, Err: ErrInvalidHostTool, Reason: "the name is empty; give the tool the name Python will call it by"}
	case fn == nil:
		return &RegistrationError{Name: name, Err: ErrInvalidHostTool, Reason: "the function is nil"}
	case spec.Name != "" && spec.Name != name:
		return &RegistrationError{Name: name, Err: ErrInvalidHostTool,
			Reason: fmt.Sprintf("spec.Name is %q; leave it empty or make it equal to the name", spec.Name)}
	}
	spec = cloneSpec(spec)
	spec.Name = name
	s.toolsMu.Lock()
	defer s.toolsMu.Unlock()
	if _, ok := s.hostTools[name]; ok {
		return &RegistrationError{Name: name, Err: ErrDuplicateTool}
	}
	s.hostTools[name] = hostTool{fn: fn, spec: spec}
	return nil
}

// hostToolList returns the specs of the registered host tools, sorted by name.
func (s *Server) hostToolList() []worker.ToolSpec {
	s.toolsMu.RLock()
	out := make([]worker.ToolSpec, 0, len(s.hostTools))
	for _, t := range s.hostTools {
		out = append(out, cloneSpec(t.spec))
	}
	s.toolsMu.RUnlock()
	slices.SortFunc(out, func(a, b worker.ToolSpec) int { return strings.Compare(a.Name, b.Name) })
	return out
}

func (s *Server) hostToolNames() []string {
	s.toolsMu.RLock()
	names := slices.Sorted(maps.Keys(s.hostTools))
	s.toolsMu.RUnlock()
	return names
}

// executeHostTool runs one call and turns every outcome into a response; it
// never returns an error, because a host tool's failure belongs to the Python
// caller, not to the transport.
//
// The recover covers everything that runs user code — the tool itself, its
// error's Error method, MarshalJSON methods of its result — because grpc-go
// does not recover handler panics: one would take down the host and every
// worker with it.
func (s *Server) executeHostTool(ctx context.Context, req *pb.ExecuteHostToolRequest) (resp *pb.ExecuteHostToolResponse) {
	name := req.GetToolName()
	s.toolsMu.RLock()
	t, ok := s.hostTools[name]
	s.toolsMu.RUnlock()
	if !ok {
		names := s.hostToolNames()
		list := "none are registered (register them with RegisterHostTool before workers call them)"
		if len(names) > 0 {
			list = "registered host tools: " + strings.Join(names, ", ")
		}
		return errResponse(toolErrorUnknownTool, fmt.Sprintf("unknown host tool %q; %s", name, list), "")
	}

	args := json.RawMessage(bytes.TrimSpace(req.GetArgsJson()))
	if len(args) == 0 {
		args = json.RawMessage("{}")
	} else if args[0] != '{' || !jsonvalid.Valid(args) {
		return errResponse(toolErrorInvalidArguments,
			fmt.Sprintf("arguments of host tool %q must be a JSON object of keyword arguments, got %s", name, describeJSON(args)), "")
	}

	if sid := req.GetSessionId(); sid != "" {
		s.sessions.touch(sid)
	}
	ctx = context.WithValue(ctx, hostCallKey{}, HostCall{Tool: name, SessionID: req.GetSessionId(), WorkerID: req.GetWorkerId()})

	defer func() {
		if v := recover(); v != nil {
			stack := string(debug.Stack())
			s.log.Error("host tool panicked; the call fails with HostToolPanic and the host keeps serving",
				"tool", name, "panic", v, "stack", stack)
			resp = errResponse(toolErrorPanic, fmt.Sprintf("host tool %q panicked: %v", name, v), stack)
		}
	}()
	result, err := t.fn(ctx, args)
	if err != nil {
		return errResponse(errorTypeName(err), err.Error(), "")
	}
	return s.encodeResult(name, result)
}

func (s *Server) encodeResult(name string, result any) *pb.ExecuteHostToolResponse {
	resp := &pb.ExecuteHostToolResponse{}
	if b, ok := result.([]byte); ok {
		resp.Result = &pb.Payload{Value: &pb.Payload_Binary{Binary: b}}
	} else {
		js, err := json.Marshal(result)
		if err != nil {
			return errResponse(toolErrorSerialization,
				fmt.Sprintf("host tool %q returned a %T that cannot be encoded as JSON: %v; return a JSON-encodable value, a json.RawMessage or a []byte", name, result, err), "")
		}
		resp.Result = &pb.Payload{Value: &pb.Payload_Json{Json: js}}
	}
	// Checked here rather than left to grpc's send limit, which would surface
	// in Python as a bare transport error without naming the tool or the fix.
	if size := proto.Size(resp); size > s.opts.MaxMessageBytes {
		return errResponse(toolErrorResultTooLarge,
			fmt.Sprintf("host tool %q returned %d bytes, more than the bridge's limit of %d; return less data or raise Options.MaxMessageBytes", name, size, s.opts.MaxMessageBytes), "")
	}
	return resp
}

func errResponse(typ, msg, traceback string) *pb.ExecuteHostToolResponse {
	return &pb.ExecuteHostToolResponse{Error: &pb.ToolError{Type: typ, Message: msg, Traceback: traceback}}
}

// errorTypeName names err's dynamic type the way Go code would spell it
// ("fs.PathError"), so Python can tell failures apart. Errors from
// errors.New and fmt.Errorf have unexported, meaningless types and become the
// generic "HostToolError".
func errorTypeName(err error) string {
	t := reflect.TypeOf(err)
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t.Name() == "" {
		return toolErrorGeneric
	}
	switch t.PkgPath() {
	case "errors", "fmt":
		return toolErrorGeneric
	}
	return t.String()
}

// describeJSON names what arrived instead of an object without echoing
// arbitrary amounts of caller data.
func describeJSON(b []byte) string {
	if !jsonvalid.Valid(b) {
		return "invalid JSON"
	}
	switch b[0] {
	case '[':
		return "a JSON array"
	case '"':
		return "a JSON string"
	case 't', 'f':
		return "a JSON boolean"
	case 'n':
		return "JSON null"
	default:
		return "a JSON number"
	}
}

func cloneSpec(s worker.ToolSpec) worker.ToolSpec {
	s.Parameters = slices.Clone(s.Parameters)
	for i := range s.Parameters {
		s.Parameters[i].Default = slices.Clone(s.Parameters[i].Default)
	}
	return s
}

// registry holds the tools Python workers registered, per worker and session.
// The empty session id holds registrations that belong to the worker as a
// whole.
type registry struct {
	mu sync.Mutex
	m  map[string]map[string]map[string]worker.ToolSpec // worker → session → name → spec
}

// register upserts specs by name, so registering the same set again changes
// nothing, and a worker that registers one tool per call loses none.
func (r *registry) register(workerID, sessionID string, specs []worker.ToolSpec) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.m == nil {
		r.m = map[string]map[string]map[string]worker.ToolSpec{}
	}
	bySession := r.m[workerID]
	if bySession == nil {
		bySession = map[string]map[string]worker.ToolSpec{}
		r.m[workerID] = bySession
	}
	byName := bySession[sessionID]
	if byName == nil {
		byName = map[string]worker.ToolSpec{}
		bySession[sessionID] = byName
	}
	for _, sp := range specs {
		byName[sp.Name] = sp
	}
}

// tools returns the union over the worker's sessions, one spec per name; for
// a name registered under several sessions, the worker-wide registration wins,
// then the one under the smallest session id, so the answer is deterministic.
func (r *registry) tools(workerID string) []worker.ToolSpec {
	r.mu.Lock()
	defer r.mu.Unlock()
	bySession := r.m[workerID]
	seen := map[string]bool{}
	var out []worker.ToolSpec
	for _, sid := range slices.Sorted(maps.Keys(bySession)) {
		for name, sp := range bySession[sid] {
			if !seen[name] {
				seen[name] = true
				out = append(out, cloneSpec(sp))
			}
		}
	}
	slices.SortFunc(out, func(a, b worker.ToolSpec) int { return strings.Compare(a.Name, b.Name) })
	return out
}

func (r *registry) dropSessions(ids []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for wid, bySession := range r.m {
		for _, id := range ids {
			delete(bySession, id)
		}
		if len(bySession) == 0 {
			delete(r.m, wid)
		}
	}
}

func (r *registry) dropWorker(workerID string) {
	r.mu.Lock()
	delete(r.m, workerID)
	r.mu.Unlock()
}
