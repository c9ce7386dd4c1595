package bridge

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/snakepit-go/snakepit/bridge/pb"
	"github.com/snakepit-go/snakepit/internal/auth"
	"github.com/snakepit-go/snakepit/worker"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

func TestNewValidatesOptions(t *testing.T) {
	tests := []struct {
		name  string
		opts  Options
		field string
	}{
		{"no token", Options{}, "Token"},
		{"bad network", Options{Token: testToken, Network: "udp"}, "Network"},
		{"socket dir without unix", Options{Token: testToken, SocketDir: "/tmp/x"}, "SocketDir"},
		{"negative ttl", Options{Token: testToken, SessionTTL: -1}, "SessionTTL"},
		{"negative sweep", Options{Token: testToken, SweepInterval: -1}, "SweepInterval"},
		{"negative max sessions", Options{Token: testToken, MaxSessions: -1}, "MaxSessions"},
		{"negative max bytes", Options{Token: testToken, MaxMessageBytes: -1}, "MaxMessageBytes"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(tc.opts)
			var oe *OptionsError
			if !errors.Is(err, ErrInvalidOptions) || !errors.As(err, &oe) || oe.Field != tc.field {
				t.Fatalf("New: %v, want *OptionsError for %s", err, tc.field)
			}
		})
	}

	s, err := New(Options{Token: testToken})
	if err != nil {
		t.Fatal(err)
	}
	o := s.opts
	if o.Network != "tcp" || o.SessionTTL != time.Hour || o.SweepInterval != time.Minute || o.MaxSessions != 10_000 || o.MaxMessageBytes != 16<<20 || o.Now == nil || o.Logger == nil {
		t.Fatalf("defaults not applied: %+v", o)
	}
}

func TestListensOnLoopbackOnly(t *testing.T) {
	s, client := startServer(t, Options{})
	if !strings.HasPrefix(s.String(), "bridge(127.0.0.1:") {
		t.Fatalf("String() = %q", s.String())
	}
	host, port, err := net.SplitHostPort(s.Addr())
	if err != nil {
		t.Fatalf("Addr %q: %v", s.Addr(), err)
	}
	if host != "127.0.0.1" {
		t.Fatalf("listening on %q, want 127.0.0.1", host)
	}
	if _, err := client.ListHostTools(testCtx(t), &pb.ListHostToolsRequest{}); err != nil {
		t.Fatalf("call over loopback: %v", err)
	}

	// The same port on any other local address must refuse connections.
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		t.Fatal(err)
	}
	checked := 0
	for _, a := range addrs {
		ipn, ok := a.(*net.IPNet)
		if !ok || ipn.IP.IsLoopback() || ipn.IP.To4() == nil {
			continue
		}
		conn, err := net.DialTimeout("tcp4", net.JoinHostPort(ipn.IP.String(), port), 2*time.Second)
		if err == nil {
			_ = conn.Close()
			t.Fatalf("bridge port %s accepts connections on %s", port, ipn.IP)
		}
		checked++
	}
	if checked == 0 {
		t.Log("no non-loopback IPv4 address on this machine; checked the address only")
	}
}

func TestSessionRPCs(t *testing.T) {
	clock := newFakeClock()
	s, client := startServer(t, Options{Now: clock.Now})
	ctx := testCtx(t)

	info, err := client.InitializeSession(ctx, &pb.InitializeSessionRequest{SessionId: "s1", Metadata: map[string]string{"user": "ada"}})
	if err != nil {
		t.Fatalf("InitializeSession: %v", err)
	}
	if info.GetSessionId() != "s1" || info.GetTtlSeconds() != 3600 || info.GetMetadata()["user"] != "ada" || info.GetCreatedUnixMs() != clock.Now().UnixMilli() {
		t.Fatalf("InitializeSession = %v", info)
	}
	// Idempotent: the same id again returns the existing session unchanged.
	again, err := client.InitializeSession(ctx, &pb.InitializeSessionRequest{SessionId: "s1", Metadata: map[string]string{"user": "eve"}, TtlSeconds: 5})
	if err != nil || again.GetMetadata()["user"] != "ada" || again.GetTtlSeconds() != 3600 {
		t.Fatalf("repeat InitializeSession = %v, %v", again, err)
	}

	clock.Advance(time.Minute)
	got, err := client.GetSession(ctx, &pb.GetSessionRequest{SessionId: "s1"})
	if err != nil {
		t.Fatalf("GetSession: %v", err)
	}
	if got.GetLastAccessedUnixMs() != clock.Now().UnixMilli() {
		t.Fatalf("GetSession did not touch: %v", got)
	}
	if list := s.Sessions().List(); len(list) != 1 || list[0].ID != "s1" {
		t.Fatalf("Sessions().List() = %+v", list)
	}

	_, err = client.GetSession(ctx, &pb.GetSessionRequest{SessionId: "nope"})
	if status.Code(err) != codes.NotFound {
		t.Fatalf("GetSession unknown: %v, want NotFound", err)
	}
	_, err = client.GetSession(ctx, &pb.GetSessionRequest{SessionId: "bad id"})
	if status.Code(err) != codes.InvalidArgument {
		t.Fatalf("GetSession invalid id: %v, want InvalidArgument", err)
	}
	_, err = client.InitializeSession(ctx, &pb.InitializeSessionRequest{SessionId: "s2", TtlSeconds: -1})
	if status.Code(err) != codes.InvalidArgument {
		t.Fatalf("InitializeSession negative ttl: %v, want InvalidArgument", err)
	}

	cl, err := client.CleanupSession(ctx, &pb.CleanupSessionRequest{SessionId: "s1"})
	if err != nil || !cl.GetExisted() {
		t.Fatalf("CleanupSession = %v, %v", cl, err)
	}
	cl, err = client.CleanupSession(ctx, &pb.CleanupSessionRequest{SessionId: "s1"})
	if err != nil || cl.GetExisted() {
		t.Fatalf("second CleanupSession = %v, %v", cl, err)
	}
	if _, err := client.GetSession(ctx, &pb.GetSessionRequest{SessionId: "s1"}); status.Code(err) != codes.NotFound {
		t.Fatalf("GetSession after cleanup: %v, want NotFound", err)
	}
}

func TestSessionExpiryOverRPC(t *testing.T) {
	clock := newFakeClock()
	_, client := startServer(t, Options{Now: clock.Now})
	ctx := testCtx(t)
	if _, err := client.InitializeSession(ctx, &pb.InitializeSessionRequest{SessionId: "s", TtlSeconds: 10}); err != nil {
		t.Fatal(err)
	}
	clock.Advance(9 * time.Second)
	hb, err := client.Heartbeat(ctx, &pb.HeartbeatRequest{WorkerId: "w1", SessionId: "s"})
	if err != nil || !hb.GetSessionValid() {
		t.Fatalf("Heartbeat within TTL = %v, %v", hb, err)
	}
	clock.Advance(9 * time.Second) // 18 s after creation, 9 s after the heartbeat touched it
	if _, err := client.GetSession(ctx, &pb.GetSessionRequest{SessionId: "s"}); err != nil {
		t.Fatalf("GetSession 9 s after the heartbeat: %v", err)
	}
	clock.Advance(10 * time.Second)
	_, err = client.GetSession(ctx, &pb.GetSessionRequest{SessionId: "s"})
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "expired") {
		t.Fatalf("GetSession after TTL: %v, want FailedPrecondition 'expired'", err)
	}
	hb, err = client.Heartbeat(ctx, &pb.HeartbeatRequest{WorkerId: "w1", SessionId: "s"})
	if err != nil || hb.GetSessionValid() {
		t.Fatalf("Heartbeat after expiry = %v, %v; want session_valid false", hb, err)
	}
}

func TestSessionQuotaOverRPC(t *testing.T) {
	_, client := startServer(t, Options{MaxSessions: 1})
	ctx := testCtx(t)
	if _, err := client.InitializeSession(ctx, &pb.InitializeSessionRequest{SessionId: "a"}); err != nil {
		t.Fatal(err)
	}
	_, err := client.InitializeSession(ctx, &pb.InitializeSessionRequest{SessionId: "b"})
	if status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), "MaxSessions") {
		t.Fatalf("InitializeSession past quota: %v, want ResourceExhausted naming MaxSessions", err)
	}
}

func TestSweeperRuns(t *testing.T) {
	clock := newFakeClock()
	s := newServer(t, Options{Now: clock.Now, SweepInterval: time.Millisecond})
	if _, err := s.Sessions().Create("s", nil, time.Second); err != nil {
		t.Fatal(err)
	}
	run(t, s)
	clock.Advance(2 * time.Second)
	deadline := time.Now().Add(waitLimit)
	for stored(s.Sessions()) != 0 {
		if time.Now().After(deadline) {
			t.Fatal("the sweeper did not remove the expired session")
		}
		time.Sleep(time.Millisecond) // polling observable state, not waiting for a guess
	}
}

func stored(ss *Sessions) int {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	return len(ss.m)
}

func TestHeartbeat(t *testing.T) {
	clock := newFakeClock()
	s, client := startServer(t, Options{Now: clock.Now})
	ctx := testCtx(t)
	if _, ok := s.lastHeartbeat("w1"); ok {
		t.Fatal("LastHeartbeat before any heartbeat reports one")
	}
	hb, err := client.Heartbeat(ctx, &pb.HeartbeatRequest{WorkerId: "w1"})
	if err != nil {
		t.Fatal(err)
	}
	if !hb.GetSessionValid() || hb.GetServerTimeUnixMs() != clock.Now().UnixMilli() {
		t.Fatalf("Heartbeat without session = %v; want session_valid and the server's time", hb)
	}
	if at, ok := s.lastHeartbeat("w1"); !ok || !at.Equal(clock.Now()) {
		t.Fatalf("LastHeartbeat = %v, %v", at, ok)
	}
	clock.Advance(time.Second)
	if _, err := client.Heartbeat(ctx, &pb.HeartbeatRequest{WorkerId: "w1", SessionId: "unknown"}); err != nil {
		t.Fatal(err)
	}
	if at, _ := s.lastHeartbeat("w1"); !at.Equal(clock.Now()) {
		t.Fatalf("LastHeartbeat not updated: %v", at)
	}
	s.ForgetWorker("w1")
	if _, ok := s.lastHeartbeat("w1"); ok {
		t.Fatal("LastHeartbeat after ForgetWorker reports one")
	}
}

func TestRegisterTools(t *testing.T) {
	s, client := startServer(t, Options{})
	ctx := testCtx(t)
	tools := []*pb.ToolSpec{
		{Name: "add", Description: "adds", Parameters: []*pb.ParamSpec{
			{Name: "a", Type: "int", Required: true},
			{Name: "b", Type: "int", DefaultJson: []byte("1"), Description: "second"},
		}},
		{Name: "stream", SupportsStreaming: true},
	}
	for range 2 { // registering the same set twice must not duplicate anything
		resp, err := client.RegisterTools(ctx, &pb.RegisterToolsRequest{WorkerId: "w1", Tools: tools})
		if err != nil {
			t.Fatalf("RegisterTools: %v", err)
		}
		if got := strings.Join(resp.GetNames(), ","); got != "add,stream" {
			t.Fatalf("names = %s", got)
		}
	}
	got := s.registeredTools("w1")
	if len(got) != 2 {
		t.Fatalf("RegisteredTools = %+v, want 2 tools", got)
	}
	add := got[0]
	if add.Name != "add" || add.Description != "adds" || len(add.Parameters) != 2 ||
		!add.Parameters[0].Required || add.Parameters[0].Default != nil ||
		string(add.Parameters[1].Default) != "1" || add.Parameters[1].Description != "second" ||
		!got[1].SupportsStreaming {
		t.Fatalf("specs did not survive the round trip: %+v", got)
	}

	// Session-scoped registrations add to the worker's set and leave with the session.
	if _, err := client.InitializeSession(ctx, &pb.InitializeSessionRequest{SessionId: "sess"}); err != nil {
		t.Fatal(err)
	}
	if _, err := client.RegisterTools(ctx, &pb.RegisterToolsRequest{WorkerId: "w1", SessionId: "sess", Tools: []*pb.ToolSpec{{Name: "scoped"}, {Name: "add", Description: "shadow"}}}); err != nil {
		t.Fatal(err)
	}
	got = s.registeredTools("w1")
	if names := specNames(got); names != "add,scoped,stream" || got[0].Description != "adds" {
		t.Fatalf("after session registration: %s (add: %q); want worker-wide add to win", names, got[0].Description)
	}
	if _, err := client.CleanupSession(ctx, &pb.CleanupSessionRequest{SessionId: "sess"}); err != nil {
		t.Fatal(err)
	}
	if names := specNames(s.registeredTools("w1")); names != "add,stream" {
		t.Fatalf("after CleanupSession: %s, want add,stream", names)
	}
	if len(s.registeredTools("w2")) != 0 {
		t.Fatal("another worker sees w1's tools")
	}
	s.ForgetWorker("w1")
	if len(s.registeredTools("w1")) != 0 {
		t.Fatal("ForgetWorker kept the tools")
	}

	bad := []*pb.RegisterToolsRequest{
		{Tools: tools}, // no worker id
		{WorkerId: "w1", Tools: []*pb.ToolSpec{{Name: ""}}},
		{WorkerId: "w1", Tools: []*pb.ToolSpec{{Name: "x", Parameters: []*pb.ParamSpec{{Name: "p", DefaultJson: []byte("{nope")}}}}},
		{WorkerId: "w1", SessionId: "bad id", Tools: tools},
	}
	for i, req := range bad {
		if _, err := client.RegisterTools(ctx, req); status.Code(err) != codes.InvalidArgument {
			t.Errorf("bad request %d: %v, want InvalidArgument", i, err)
		}
	}
}

func specNames(specs []worker.ToolSpec) string {
	var out []string
	for _, s := range specs {
		out = append(out, s.Name)
	}
	return strings.Join(out, ",")
}

// allRPCs calls every HostService method once.
func allRPCs(ctx context.Context, c pb.HostServiceClient) map[string]error {
	errs := map[string]error{}
	_, errs["InitializeSession"] = c.InitializeSession(ctx, &pb.InitializeSessionRequest{SessionId: "s"})
	_, errs["GetSession"] = c.GetSession(ctx, &pb.GetSessionRequest{SessionId: "s"})
	_, errs["Heartbeat"] = c.Heartbeat(ctx, &pb.HeartbeatRequest{WorkerId: "w", SessionId: "s"})
	_, errs["RegisterTools"] = c.RegisterTools(ctx, &pb.RegisterToolsRequest{WorkerId: "w", Tools: []*pb.ToolSpec{{Name: "t"}}})
	_, errs["ListHostTools"] = c.ListHostTools(ctx, &pb.ListHostToolsRequest{})
	_, errs["ExecuteHostTool"] = c.ExecuteHostTool(ctx, &pb.ExecuteHostToolRequest{ToolName: "echo"})
	_, errs["CleanupSession"] = c.CleanupSession(ctx, &pb.CleanupSessionRequest{SessionId: "s"})
	return errs
}

func TestAuthentication(t *testing.T) {
	s, good := startServer(t, Options{})
	if err := s.RegisterHostTool("echo", echoTool, worker.ToolSpec{}); err != nil {
		t.Fatal(err)
	}
	ctx := testCtx(t)
	for method, err := range allRPCs(ctx, good) {
		if err != nil {
			t.Errorf("%s with the token: %v", method, err)
		}
	}
	s.ForgetWorker("w")

	clients := map[string]pb.HostServiceClient{
		"no token":    dial(t, s.Addr()),
		"wrong token": dial(t, s.Addr(), auth.ClientOptions(auth.NewToken())...),
		"empty token": dial(t, s.Addr(), auth.ClientOptions(auth.Token{})...),
	}
	for name, c := range clients {
		for method, err := range allRPCs(ctx, c) {
			if status.Code(err) != codes.Unauthenticated {
				t.Errorf("%s, %s: %v, want Unauthenticated", name, method, err)
				continue
			}
			if strings.Contains(err.Error(), auth.Reveal(testToken)) {
				t.Errorf("%s, %s: rejection echoes the token", name, method)
			}
		}
	}
	// Nothing the rejected calls asked for happened.
	if len(s.Sessions().List()) != 0 || len(s.registeredTools("w")) != 0 {
		t.Fatal("a rejected call changed server state")
	}
}

func TestMessageSizeLimit(t *testing.T) {
	const limit = 4096
	s, client := startServer(t, Options{MaxMessageBytes: limit})
	ctx := testCtx(t)
	big := make([]byte, 2*limit)
	if err := s.RegisterHostTool("blob", func(context.Context, json.RawMessage) (any, error) { return big, nil }, worker.ToolSpec{}); err != nil {
		t.Fatal(err)
	}
	if err := s.RegisterHostTool("echo", echoTool, worker.ToolSpec{}); err != nil {
		t.Fatal(err)
	}

	args := `{"pad":"` + strings.Repeat("x", 2*limit) + `"}`
	_, err := client.ExecuteHostTool(ctx, &pb.ExecuteHostToolRequest{ToolName: "echo", ArgsJson: []byte(args)})
	if status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), "larger than max") {
		t.Fatalf("oversized request: %v, want ResourceExhausted 'larger than max'", err)
	}

	resp, err := client.ExecuteHostTool(ctx, &pb.ExecuteHostToolRequest{ToolName: "blob"})
	if err != nil {
		t.Fatalf("oversized result: %v; want a ToolError, not a transport failure", err)
	}
	if te := resp.GetError(); te.GetType() != toolErrorResultTooLarge || !strings.Contains(te.GetMessage(), "MaxMessageBytes") {
		t.Fatalf("oversized result: %v, want ResultTooLarge naming MaxMessageBytes", resp)
	}

	// Just under the limit still works, and the server kept serving.
	small := `{"pad":"` + strings.Repeat("x", limit/2) + `"}`
	resp, err = client.ExecuteHostTool(ctx, &pb.ExecuteHostToolRequest{ToolName: "echo", ArgsJson: []byte(small)})
	if err != nil || resp.GetError() != nil {
		t.Fatalf("message under the limit: %v, %v", resp, err)
	}
	if proto.Size(resp) > limit {
		t.Fatalf("test is wrong: response of %d bytes", proto.Size(resp))
	}
}

// The token is checked from the headers, before the body is read: a request
// without it is refused as Unauthenticated even when its body is over the
// receive limit (a server that read the body first would answer
// ResourceExhausted, after buffering it).
func TestUnauthenticatedBodyIsNotRead(t *testing.T) {
	const limit = 4096
	s, _ := startServer(t, Options{MaxMessageBytes: limit})
	c := dial(t, s.Addr(), grpc.WithDefaultCallOptions(grpc.MaxCallSendMsgSize(1<<20)))
	args := `{"pad":"` + strings.Repeat("x", 256<<10) + `"}`
	_, err := c.ExecuteHostTool(testCtx(t), &pb.ExecuteHostToolRequest{ToolName: "echo", ArgsJson: []byte(args)})
	if status.Code(err) != codes.Unauthenticated {
		t.Fatalf("oversized request without the token: %v, want Unauthenticated", err)
	}
}

func TestUnixSocket(t *testing.T) {
	s := newServer(t, Options{Network: "unix"})
	stop := run(t, s)
	addr := s.Addr()
	if !strings.HasPrefix(addr, "unix:/") {
		t.Fatalf("Addr = %q, want unix:/abs/path", addr)
	}
	path := strings.TrimPrefix(addr, "unix:")
	dir := filepath.Dir(path)
	fi, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if perm := fi.Mode().Perm(); perm != 0o700 {
		t.Fatalf("socket dir mode %#o, want 0700", perm)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm()&0o077 != 0 {
		t.Fatalf("socket %s: %v, %v", path, fi.Mode(), err)
	}

	client := dial(t, addr, auth.ClientOptions(testToken)...)
	ctx := testCtx(t)
	if _, err := client.InitializeSession(ctx, &pb.InitializeSessionRequest{SessionId: "u"}); err != nil {
		t.Fatalf("call over the unix socket: %v", err)
	}
	if _, err := dial(t, addr).ListHostTools(ctx, &pb.ListHostToolsRequest{}); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("unix socket without token: %v, want Unauthenticated", err)
	}

	if err := stop(); err != nil {
		t.Fatalf("Serve: %v", err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("socket dir %s still exists after Serve returned (%v)", dir, err)
	}
}

func TestUnixSocketDir(t *testing.T) {
	t.Run("created when missing", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "sock")
		s := newServer(t, Options{Network: "unix", SocketDir: dir})
		stop := run(t, s)
		if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o700 {
			t.Fatalf("SocketDir: %v, %v; want created 0700", fi, err)
		}
		if !strings.HasPrefix(s.Addr(), "unix:"+dir+"/") {
			t.Fatalf("Addr %q not inside %s", s.Addr(), dir)
		}
		_ = stop()
		if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("SocketDir created by Serve still exists: %v", err)
		}
	})
	t.Run("existing private dir is kept", func(t *testing.T) {
		dir := t.TempDir()
		if err := os.Chmod(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		s := newServer(t, Options{Network: "unix", SocketDir: dir})
		stop := run(t, s)
		path := strings.TrimPrefix(s.Addr(), "unix:")
		_ = stop()
		if _, err := os.Stat(dir); err != nil {
			t.Fatalf("user's SocketDir removed: %v", err)
		}
		if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("socket file left behind: %v", err)
		}
	})
	t.Run("shared dir refused", func(t *testing.T) {
		dir := t.TempDir()
		if err := os.Chmod(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		s := newServer(t, Options{Network: "unix", SocketDir: dir})
		err := s.Serve(context.Background())
		if err == nil || !strings.Contains(err.Error(), "0700") {
			t.Fatalf("Serve with a 0755 SocketDir: %v, want an error asking for 0700", err)
		}
	})
	t.Run("path too long", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), strings.Repeat("d", 120))
		s := newServer(t, Options{Network: "unix", SocketDir: dir})
		err := s.Serve(context.Background())
		if err == nil || !strings.Contains(err.Error(), "shorter") {
			t.Fatalf("Serve with a long SocketDir: %v, want an error asking for a shorter one", err)
		}
	})
}

func TestRestartKeepsAddress(t *testing.T) {
	for _, network := range []string{"tcp", "unix"} {
		t.Run(network, func(t *testing.T) {
			s := newServer(t, Options{Network: network})
			stop := run(t, s)
			first := s.Addr()
			if _, err := s.Sessions().Create("kept", nil, 0); err != nil {
				t.Fatal(err)
			}
			if err := stop(); err != nil {
				t.Fatal(err)
			}
			run(t, s)
			if s.Addr() != first {
				t.Fatalf("restarted on %s, want the previous %s", s.Addr(), first)
			}
			// Ready stays closed from the first Serve, so the restarted
			// listener may not be up yet; WaitForReady is how a worker rides
			// out a bridge restart too.
			client := dial(t, s.Addr(), auth.ClientOptions(testToken)...)
			if _, err := client.GetSession(testCtx(t), &pb.GetSessionRequest{SessionId: "kept"}, grpc.WaitForReady(true)); err != nil {
				t.Fatalf("after restart: %v", err)
			}
		})
	}
}

func TestServeTwiceConcurrently(t *testing.T) {
	s := newServer(t, Options{})
	run(t, s)
	if err := s.Serve(context.Background()); !errors.Is(err, errAlreadyServing) {
		t.Fatalf("second concurrent Serve: %v", err)
	}
}

func TestShutdownCancelsInflightCalls(t *testing.T) {
	s := newServer(t, Options{})
	s.stopGrace = 20 * time.Millisecond
	started := make(chan struct{})
	cancelled := make(chan struct{})
	if err := s.RegisterHostTool("block", func(ctx context.Context, _ json.RawMessage) (any, error) {
		close(started)
		<-ctx.Done()
		close(cancelled)
		return nil, ctx.Err()
	}, worker.ToolSpec{}); err != nil {
		t.Fatal(err)
	}
	stop := run(t, s)
	client := dial(t, s.Addr(), auth.ClientOptions(testToken)...)
	callErr := make(chan error, 1)
	go func() {
		_, err := client.ExecuteHostTool(testCtx(t), &pb.ExecuteHostToolRequest{ToolName: "block"})
		callErr <- err
	}()
	waitFor(t, started, "host tool start")

	if err := stop(); err != nil {
		t.Fatalf("Serve: %v", err)
	}
	waitFor(t, cancelled, "host tool cancellation")
	select {
	case err := <-callErr:
		if err == nil {
			t.Fatal("in-flight call succeeded across shutdown")
		}
	case <-time.After(waitLimit):
		t.Fatal("client call did not end")
	}
}

func waitFor(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(waitLimit):
		t.Fatalf("timed out waiting for %s", what)
	}
}
