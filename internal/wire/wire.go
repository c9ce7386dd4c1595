// Package wire converts between the protocol's messages (bridge/pb) and the
// worker contract's types, in one place for every side that speaks the
// protocol: the Python worker type, the bridge, the agent and the remote
// worker type. A field added to ToolSpec is carried by all of them or none.
package wire

import (
	"encoding/json"
	"math"
	"slices"
	"time"

	"github.com/snakepit-go/snakepit/bridge/pb"
	"github.com/snakepit-go/snakepit/worker"
)

// ToolSpecFromPB copies s; nothing of the result aliases the message.
func ToolSpecFromPB(s *pb.ToolSpec) worker.ToolSpec {
	out := worker.ToolSpec{
		Name: s.GetName(), Description: s.GetDescription(), SupportsStreaming: s.GetSupportsStreaming(),
		MaxConcurrency: int(min(s.GetMaxConcurrency(), math.MaxInt32)),
		Timeout:        secondsToDuration(s.GetTimeoutSeconds()),
		Returns:        s.GetReturns(), Doc: s.GetDoc(),
		BatchMaxSize: int(min(s.GetBatchMaxSize(), math.MaxInt32)),
		BatchMaxWait: secondsToDuration(s.GetBatchMaxWaitMs() / 1000),
	}
	for _, p := range s.GetParameters() {
		var def json.RawMessage
		if len(p.GetDefaultJson()) > 0 {
			def = slices.Clone(p.GetDefaultJson())
		}
		out.Parameters = append(out.Parameters, worker.ParamSpec{
			Name: p.GetName(), Type: p.GetType(), Required: p.GetRequired(), Default: def, Description: p.GetDescription(),
		})
	}
	return out
}

// ToolSpecsFromPB converts a tool list.
func ToolSpecsFromPB(in []*pb.ToolSpec) []worker.ToolSpec {
	out := make([]worker.ToolSpec, 0, len(in))
	for _, t := range in {
		out = append(out, ToolSpecFromPB(t))
	}
	return out
}

// ToolSpecToPB copies s into a message.
func ToolSpecToPB(s worker.ToolSpec) *pb.ToolSpec {
	out := &pb.ToolSpec{
		Name: s.Name, Description: s.Description, SupportsStreaming: s.SupportsStreaming,
		MaxConcurrency: uint32(min(max(s.MaxConcurrency, 0), math.MaxInt32)),
		TimeoutSeconds: max(s.Timeout, 0).Seconds(),
		Returns:        s.Returns, Doc: s.Doc,
		BatchMaxSize:   uint32(min(max(s.BatchMaxSize, 0), math.MaxInt32)),
		BatchMaxWaitMs: float64(max(s.BatchMaxWait, 0)) / float64(time.Millisecond),
	}
	for _, p := range s.Parameters {
		out.Parameters = append(out.Parameters, &pb.ParamSpec{
			Name: p.Name, Type: p.Type, Required: p.Required, DefaultJson: slices.Clone(p.Default), Description: p.Description,
		})
	}
	return out
}

// secondsToDuration converts a declared timeout; what is not a positive,
// finite number of seconds that fits a time.Duration means none.
func secondsToDuration(s float64) time.Duration {
	if !(s > 0) || s >= math.MaxInt64/float64(time.Second) {
		return 0
	}
	return time.Duration(s * float64(time.Second))
}

// Request is the wire form of call; absent Args travel as {}.
func Request(call *worker.Call) *pb.ExecuteToolRequest {
	args := []byte(call.Args)
	if len(args) == 0 {
		args = []byte("{}")
	}
	return &pb.ExecuteToolRequest{
		ToolName: call.Tool, ArgsJson: args, BinaryArgs: call.Binary,
		SessionId: call.SessionID, RequestId: call.RequestID, Metadata: call.Metadata,
	}
}

// BatchRequest is the wire form of calls of one batch tool sent as one
// request (calls carry no session: a batch is not tied to one).
func BatchRequest(tool string, calls []*worker.Call) *pb.ExecuteToolRequest {
	items := make([]*pb.BatchItem, len(calls))
	for i, c := range calls {
		args := []byte(c.Args)
		if len(args) == 0 {
			args = []byte("{}")
		}
		items[i] = &pb.BatchItem{ArgsJson: args, BinaryArgs: c.Binary, RequestId: c.RequestID, Metadata: c.Metadata}
	}
	return &pb.ExecuteToolRequest{ToolName: tool, Batch: items}
}

// Value splits a payload into a JSON value or bytes. Empty bytes stay bytes
// (a non-nil empty slice), so a caller can tell them from JSON; a payload
// with neither is JSON null.
func Value(p *pb.Payload) (json.RawMessage, []byte) {
	switch v := p.GetValue().(type) {
	case *pb.Payload_Binary:
		if v.Binary == nil {
			return nil, []byte{}
		}
		return nil, v.Binary
	case *pb.Payload_Json:
		return v.Json, nil
	default:
		return json.RawMessage("null"), nil
	}
}

// Payload is the wire form of a value: bytes when bin is non-nil, else JSON.
func Payload(js json.RawMessage, bin []byte) *pb.Payload {
	if bin != nil {
		return &pb.Payload{Value: &pb.Payload_Binary{Binary: bin}}
	}
	return &pb.Payload{Value: &pb.Payload_Json{Json: js}}
}

// KindInvalidArgs is ToolError.kind of arguments the worker refused (or the
// tool raised InvalidArgs for): the host's ErrInvalidArgs.
const KindInvalidArgs = "invalid_args"

// ToolError maps a tool failure the worker reported: a *worker.InvalidArgsError
// when its kind says the arguments did not fit, else a *worker.ToolError.
// (An "UnknownTool" error is the caller's to map: it knows the tool list.)
func ToolError(tool, workerID string, te *pb.ToolError) error {
	if te.GetKind() == KindInvalidArgs {
		return &worker.InvalidArgsError{
			Tool: tool, WorkerID: workerID, Path: te.GetArgPath(), Expected: te.GetExpected(), Got: te.GetGot(),
			Message: te.GetMessage(), Traceback: te.GetTraceback(),
		}
	}
	return &worker.ToolError{Tool: tool, WorkerID: workerID, Type: te.GetType(), Message: te.GetMessage(), Traceback: te.GetTraceback()}
}

// InvalidArgsToPB is the wire form of e (an agent passing it on to its host).
func InvalidArgsToPB(e *worker.InvalidArgsError) *pb.ToolError {
	return &pb.ToolError{
		Type: "InvalidArgs", Message: e.Message, Traceback: e.Traceback,
		Kind: KindInvalidArgs, ArgPath: e.Path, Expected: e.Expected, Got: e.Got,
	}
}

// Result is a unary call's result: JSON, bytes, or a numeric array (bytes
// with its dtype and shape).
func Result(p *pb.Payload) *worker.Result {
	r := &worker.Result{}
	r.JSON, r.Binary = Value(p)
	if r.JSON == nil && p.GetDtype() != "" {
		r.DType, r.Shape = p.GetDtype(), p.GetShape()
	}
	return r
}

// ResultPayload is the wire form of r, its array header included.
func ResultPayload(r *worker.Result) *pb.Payload {
	p := Payload(r.JSON, r.Binary)
	if r.Binary != nil && r.DType != "" {
		p.Dtype, p.Shape = r.DType, r.Shape
	}
	return p
}
