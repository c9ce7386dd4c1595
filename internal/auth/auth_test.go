package auth

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestNewToken(t *testing.T) {
	seen := map[string]bool{}
	for range 100 {
		tok := Reveal(NewToken())
		raw, err := base64.RawURLEncoding.DecodeString(tok)
		if err != nil {
			t.Fatalf("token %q is not base64url: %v", tok, err)
		}
		if len(raw) != 32 {
			t.Fatalf("token carries %d bytes, want 32", len(raw))
		}
		if seen[tok] {
			t.Fatalf("duplicate token %q", tok)
		}
		seen[tok] = true
	}
}

func TestCheck(t *testing.T) {
	const raw = "secret-token"
	tok := tokenOf(raw)
	in := func(vals ...string) context.Context {
		md := metadata.MD{}
		for _, v := range vals {
			md.Append(MetadataKey, v)
		}
		return metadata.NewIncomingContext(context.Background(), md)
	}
	tests := []struct {
		name   string
		ctx    context.Context
		expect Token
		ok     bool
	}{
		{"right", in(raw), tok, true},
		{"no metadata", context.Background(), tok, false},
		{"no entry", in(), tok, false},
		{"wrong", in("nope"), tok, false},
		{"prefix", in(raw[:5]), tok, false},
		{"longer", in(raw + "x"), tok, false},
		{"empty sent", in(""), tok, false},
		{"duplicate entries, one right", in("nope", raw), tok, true},
		// An unconfigured server must not accept a client that also sends nothing.
		{"empty expected, empty sent", in(""), Token{}, false},
		{"empty expected, none sent", context.Background(), Token{}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := Check(tc.ctx, tc.expect)
			if tc.ok {
				if err != nil {
					t.Fatalf("Check: %v, want nil", err)
				}
				return
			}
			if status.Code(err) != codes.Unauthenticated {
				t.Fatalf("Check: %v, want Unauthenticated", err)
			}
			if !tc.expect.IsZero() && strings.Contains(err.Error(), Reveal(tc.expect)) {
				t.Fatalf("error %q echoes the token", err)
			}
		})
	}
}

// TestOverGRPC runs the server and client interceptors over a real
// loopback connection, unary (Check) and streaming (Watch).
func TestOverGRPC(t *testing.T) {
	token := NewToken()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(ServerOptions(token)...)
	hs := health.NewServer()
	healthpb.RegisterHealthServer(srv, hs)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(lis) }()
	t.Cleanup(func() {
		hs.Shutdown()
		srv.Stop()
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})

	dial := func(t *testing.T, extra ...grpc.DialOption) healthpb.HealthClient {
		t.Helper()
		opts := append([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}, extra...)
		cc, err := grpc.NewClient(lis.Addr().String(), opts...)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cc.Close() })
		return healthpb.NewHealthClient(cc)
	}
	clients := map[string]struct {
		client healthpb.HealthClient
		want   codes.Code
	}{
		"with token":  {dial(t, ClientOptions(token)...), codes.OK},
		"no token":    {dial(t), codes.Unauthenticated},
		"wrong token": {dial(t, ClientOptions(NewToken())...), codes.Unauthenticated},
	}
	for name, c := range clients {
		t.Run(name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()

			_, err := c.client.Check(ctx, &healthpb.HealthCheckRequest{})
			if got := status.Code(err); got != c.want {
				t.Fatalf("unary Check: code %v (%v), want %v", got, err, c.want)
			}
			if err != nil && strings.Contains(err.Error(), Reveal(token)) {
				t.Fatalf("rejection echoes the token: %v", err)
			}

			stream, err := c.client.Watch(ctx, &healthpb.HealthCheckRequest{})
			if err != nil {
				t.Fatalf("Watch: %v", err)
			}
			resp, err := stream.Recv()
			if got := status.Code(err); got != c.want {
				t.Fatalf("stream Recv: code %v (%v), want %v", got, err, c.want)
			}
			if c.want == codes.OK && resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
				t.Fatalf("stream status %v, want SERVING", resp.GetStatus())
			}
		})
	}
}

// ClientOptions sends the token, and only the token, on unary and
// streaming calls over plaintext loopback, whatever outgoing metadata the
// caller's context carries (a wrong token there must not reach the server).
func TestClientOptionsSendOnlyTheToken(t *testing.T) {
	token := NewToken()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	seen := make(chan metadata.MD, 2)
	note := func(ctx context.Context) {
		md, _ := metadata.FromIncomingContext(ctx)
		seen <- md
	}
	srv := grpc.NewServer(
		grpc.ChainUnaryInterceptor(func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			note(ctx)
			return h(ctx, req)
		}, UnaryServerInterceptor(token)),
		grpc.ChainStreamInterceptor(func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, h grpc.StreamHandler) error {
			note(ss.Context())
			return h(srv, ss)
		}, StreamServerInterceptor(token)))
	hs := health.NewServer()
	healthpb.RegisterHealthServer(srv, hs)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(lis) }()
	defer func() {
		hs.Shutdown()
		srv.Stop()
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
	}()
	cc, err := grpc.NewClient(lis.Addr().String(), append(ClientOptions(token), grpc.WithTransportCredentials(insecure.NewCredentials()))...)
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	client := healthpb.NewHealthClient(cc)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ctx = metadata.AppendToOutgoingContext(ctx, MetadataKey, "wrong", "x-other", "v")
	if _, err := client.Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
		t.Fatalf("unary Check: %v", err)
	}
	stream, err := client.Watch(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatalf("Watch: %v", err)
	}
	if _, err := stream.Recv(); err != nil {
		t.Fatalf("stream Recv: %v", err)
	}
	for _, kind := range []string{"unary", "stream"} {
		md := <-seen
		if got := md.Get(MetadataKey); len(got) != 1 || got[0] != Reveal(token) {
			t.Errorf("%s call carried %d token values, want exactly the run's token", kind, len(got))
		}
		if got := md.Get("x-other"); len(got) != 0 {
			t.Errorf("%s call carried the caller's outgoing metadata x-other=%q", kind, got)
		}
	}
}

func tokenOf(s string) Token { return Token{&s} }

// The token must not leave through any printed or encoded form, including
// reflection over unexported fields, which never calls a method.
func TestTokenCannotBePrinted(t *testing.T) {
	tok := NewToken()
	raw := Reveal(tok)
	type holder struct {
		tok    Token
		Public Token
	}
	h := holder{tok, tok}
	var out []string
	for _, v := range []any{tok, &tok, h, &h, []Token{tok}, map[string]Token{"k": tok}} {
		for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%X", "%d"} {
			out = append(out, fmt.Sprintf(verb, v))
		}
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, string(b))
	}
	var buf bytes.Buffer
	for _, hd := range []slog.Handler{slog.NewTextHandler(&buf, nil), slog.NewJSONHandler(&buf, nil)} {
		slog.New(hd).Info("m", "tok", tok, "holder", h, "ptr", &h, slog.Group("g", "t", tok))
	}
	out = append(out, buf.String())
	for _, s := range out {
		if strings.Contains(s, raw) {
			t.Fatalf("the token leaked: %s", s)
		}
	}
	if raw == "" || Reveal(tok) != raw {
		t.Fatal("Reveal must return the secret")
	}
}

func TestLoadFromFileAndEnv(t *testing.T) {
	dir := t.TempDir()
	f := dir + "/token"
	if err := os.WriteFile(f, []byte("  0123456789abcdefXYZ\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tok, err := Load(f, "SNAKEPIT_TEST_NO_SUCH_VAR")
	if err != nil || Reveal(tok) != "0123456789abcdefXYZ" {
		t.Fatalf("Load(file) = %v, %v", tok, err)
	}
	t.Setenv("SNAKEPIT_TEST_TOKEN", "fedcba9876543210fedcba")
	if tok, err := Load("", "SNAKEPIT_TEST_TOKEN"); err != nil || Reveal(tok) != "fedcba9876543210fedcba" {
		t.Fatalf("Load(env) = %v, %v", tok, err)
	}
	// Taken out of the environment, so no child inherits it; still there
	// for a second Load in this process.
	if v, ok := os.LookupEnv("SNAKEPIT_TEST_TOKEN"); ok {
		t.Fatalf("the token is still in the environment after Load: %d bytes", len(v))
	}
	if tok, err := Load("", "SNAKEPIT_TEST_TOKEN"); err != nil || Reveal(tok) != "fedcba9876543210fedcba" {
		t.Fatalf("second Load(env) = %v, %v", tok, err)
	}
	if _, err := Load("", "SNAKEPIT_TEST_NO_SUCH_VAR"); !errors.Is(err, ErrNoToken) {
		t.Fatalf("Load(nothing) = %v, want ErrNoToken", err)
	}
	t.Setenv("SNAKEPIT_TEST_TOKEN", "short-secret")
	_, err = Load("", "SNAKEPIT_TEST_TOKEN")
	if err == nil || strings.Contains(err.Error(), "short-secret") {
		t.Fatalf("Load(short) = %v, want an error that does not quote the token", err)
	}
}

func TestSecretEnvNamesBothTokens(t *testing.T) {
	for _, name := range []string{EnvToken, EnvAgentToken} {
		if !IsSecretEnv(name) {
			t.Errorf("%s is not in SecretEnv: workers would inherit it", name)
		}
	}
	if IsSecretEnv("SNAKEPIT_RUN_ID") {
		t.Error("SNAKEPIT_RUN_ID is not a secret: the host finds a worker's descendants by it")
	}
}
