package bridge

import (
	"context"
	"encoding/json"
	"errors"
	"math"
	"slices"
	"time"

	"github.com/snakepit-go/snakepit/bridge/pb"
	"github.com/snakepit-go/snakepit/internal/wire"
	"github.com/snakepit-go/snakepit/worker"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// hostService adapts Server to the generated interface; it is unexported so
// the RPC methods do not clutter Server's API.
type hostService struct {
	pb.UnimplementedHostServiceServer
	s *Server
}

func (h *hostService) InitializeSession(_ context.Context, req *pb.InitializeSessionRequest) (*pb.SessionInfo, error) {
	secs := req.GetTtlSeconds()
	if secs < 0 || secs > math.MaxInt64/int64(time.Second) {
		return nil, status.Errorf(codes.InvalidArgument, "ttl_seconds is %d; use 0 for the host's default (%v) or a positive number of seconds", secs, h.s.opts.SessionTTL)
	}
	sess, err := h.s.sessions.Create(req.GetSessionId(), req.GetMetadata(), time.Duration(secs)*time.Second)
	if err != nil {
		return nil, sessionStatus(err)
	}
	return sessionToPB(sess), nil
}

func (h *hostService) GetSession(_ context.Context, req *pb.GetSessionRequest) (*pb.SessionInfo, error) {
	sess, err := h.s.sessions.Get(req.GetSessionId())
	if err != nil {
		return nil, sessionStatus(err)
	}
	return sessionToPB(sess), nil
}

func (h *hostService) CleanupSession(_ context.Context, req *pb.CleanupSessionRequest) (*pb.CleanupSessionResponse, error) {
	if err := validateSessionID(req.GetSessionId()); err != nil {
		return nil, sessionStatus(err)
	}
	return &pb.CleanupSessionResponse{Existed: h.s.sessions.Delete(req.GetSessionId())}, nil
}

// Heartbeat counts as access to the session it names: a worker that keeps
// asking about a session is still using it.
func (h *hostService) Heartbeat(_ context.Context, req *pb.HeartbeatRequest) (*pb.HeartbeatResponse, error) {
	now := h.s.opts.Now()
	if wid := req.GetWorkerId(); wid != "" {
		h.s.hbMu.Lock()
		h.s.heartbeats[wid] = now
		h.s.hbMu.Unlock()
	}
	valid := true
	if sid := req.GetSessionId(); sid != "" {
		_, err := h.s.sessions.Get(sid)
		valid = err == nil
	}
	return &pb.HeartbeatResponse{SessionValid: valid, ServerTimeUnixMs: now.UnixMilli()}, nil
}

func (h *hostService) RegisterTools(_ context.Context, req *pb.RegisterToolsRequest) (*pb.RegisterToolsResponse, error) {
	if req.GetWorkerId() == "" {
		return nil, status.Error(codes.InvalidArgument, "worker_id is empty; send the id the worker was started with (--worker-id)")
	}
	if sid := req.GetSessionId(); sid != "" {
		if err := validateSessionID(sid); err != nil {
			return nil, sessionStatus(err)
		}
	}
	specs := make([]worker.ToolSpec, 0, len(req.GetTools()))
	names := make([]string, 0, len(req.GetTools()))
	for i, t := range req.GetTools() {
		if t.GetName() == "" {
			return nil, status.Errorf(codes.InvalidArgument, "tools[%d] has no name; every registered tool needs the name it is called by", i)
		}
		for _, p := range t.GetParameters() {
			if d := p.GetDefaultJson(); len(d) > 0 && !json.Valid(d) {
				return nil, status.Errorf(codes.InvalidArgument, "tool %q parameter %q: default_json is not valid JSON; send the JSON encoding of the default, or nothing when there is none", t.GetName(), p.GetName())
			}
		}
		specs = append(specs, wire.ToolSpecFromPB(t))
		if !slices.Contains(names, t.GetName()) {
			names = append(names, t.GetName())
		}
	}
	h.s.registered.register(req.GetWorkerId(), req.GetSessionId(), specs)
	return &pb.RegisterToolsResponse{Names: names}, nil
}

func (h *hostService) ListHostTools(context.Context, *pb.ListHostToolsRequest) (*pb.ListHostToolsResponse, error) {
	tools := h.s.hostToolList()
	out := &pb.ListHostToolsResponse{Tools: make([]*pb.ToolSpec, 0, len(tools))}
	for _, t := range tools {
		out.Tools = append(out.Tools, wire.ToolSpecToPB(t))
	}
	return out, nil
}

func (h *hostService) ExecuteHostTool(ctx context.Context, req *pb.ExecuteHostToolRequest) (*pb.ExecuteHostToolResponse, error) {
	return h.s.executeHostTool(ctx, req), nil
}

func sessionToPB(s Session) *pb.SessionInfo {
	return &pb.SessionInfo{
		SessionId:          s.ID,
		CreatedUnixMs:      s.CreatedAt.UnixMilli(),
		LastAccessedUnixMs: s.LastAccess.UnixMilli(),
		TtlSeconds:         ttlSeconds(s.TTL),
		Metadata:           s.Metadata,
	}
}

// ttlSeconds rounds up so that a sub-second TTL set from Go does not read as
// 0, which on the wire means "the host's default".
func ttlSeconds(d time.Duration) int64 {
	secs := int64(d / time.Second)
	if d%time.Second != 0 {
		secs++
	}
	return secs
}

// sessionStatus maps session errors to status codes; the message is the
// error's own, which already says what to do.
func sessionStatus(err error) error {
	code := codes.Internal
	switch {
	case errors.Is(err, ErrInvalidSessionID):
		code = codes.InvalidArgument
	case errors.Is(err, ErrSessionNotFound):
		code = codes.NotFound
	case errors.Is(err, ErrSessionExpired):
		code = codes.FailedPrecondition
	case errors.Is(err, ErrSessionQuota):
		code = codes.ResourceExhausted
	}
	return status.Error(code, err.Error())
}
