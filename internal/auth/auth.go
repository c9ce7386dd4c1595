// Package auth carries the run's shared secret on every gRPC call between the
// Go host and its Python workers, in both directions.
//
// Both servers bind loopback (or a private unix socket) only, but loopback is
// shared by every local user and process, so the token is what proves a
// caller belongs to this run. It travels in the MetadataKey metadata entry and
// reaches a worker only through its environment (EnvToken), never argv, which
// any local user can read from /proc.
//
// The token is a bearer secret over plaintext loopback: it stops other local
// users, not someone who can already read this process's memory or environ.
package auth

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"fmt"
	"io"
	"log/slog"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

const (
	// MetadataKey is the gRPC metadata entry that carries the token. It is
	// lower case because HTTP/2 header names must be.
	MetadataKey = "x-snakepit-token"
	// EnvToken is the environment variable a worker reads its token from.
	EnvToken = "SNAKEPIT_TOKEN"
)

// rejectMessage deliberately names neither the expected nor the received
// token, so a rejection can be logged anywhere without leaking the secret.
const rejectMessage = "missing or wrong snakepit token"

// Token is the run's shared secret. Its value cannot be printed: fmt (every
// verb, also %#v), slog and encoding/json see only Redacted, and because the
// value sits behind a pointer, a struct holding a Token in an unexported
// field — which fmt prints by reflection, without calling any method —
// shows an address, not the secret. (A *string, not a pointer to a struct:
// fmt dereferences pointers to structs at the top level, including when it
// reports a bad verb for a nested field.) So an App, its options or a suture dump
// of them can be logged anywhere. Only Reveal returns the value, for the
// few places it must go on the wire.
type Token struct{ s *string }

// Redacted is what every printed form of a Token shows.
const Redacted = "[snakepit token redacted]"

// NewToken returns 32 bytes from crypto/rand, base64url-encoded without
// padding (43 characters), safe to put in metadata and environment variables.
func NewToken() Token {
	var b [32]byte
	// crypto/rand.Read never fails on supported platforms (Go ≥ 1.24 aborts
	// the program instead), so there is no error worth returning.
	_, _ = rand.Read(b[:])
	v := base64.RawURLEncoding.EncodeToString(b[:])
	return Token{&v}
}

// Reveal returns the secret. It is a function of this internal package, not
// a method, so code outside the module cannot call it on a Token it holds;
// use it only for the worker's environment (EnvToken), outgoing metadata and
// the server-side comparison.
func Reveal(t Token) string {
	if t.s == nil {
		return ""
	}
	return *t.s
}

// RedactIn returns line with every non-empty secret replaced by Redacted:
// the one rule for text a child process wrote (it may print the token it
// was given) before that text reaches a log, an error or a tail.
func RedactIn(line string, secrets ...string) string {
	for _, v := range secrets {
		if v != "" && strings.Contains(line, v) {
			line = strings.ReplaceAll(line, v, Redacted)
		}
	}
	return line
}

// IsZero reports a Token that was never generated.
func (t Token) IsZero() bool { return Reveal(t) == "" }

func (t Token) String() string   { return Redacted }
func (t Token) GoString() string { return Redacted }

// Format covers every fmt verb, so %x or %q cannot bypass String.
func (t Token) Format(f fmt.State, _ rune) { _, _ = io.WriteString(f, Redacted) }

// LogValue implements slog.LogValuer.
func (t Token) LogValue() slog.Value { return slog.StringValue(Redacted) }

// MarshalJSON and MarshalText keep encoders (and slog's JSON and text
// handlers) from reaching the value.
func (t Token) MarshalJSON() ([]byte, error) { return []byte(`"` + Redacted + `"`), nil }
func (t Token) MarshalText() ([]byte, error) { return []byte(Redacted), nil }

// Check reports whether ctx carries token in its incoming metadata. It returns
// nil or a codes.Unauthenticated status error.
//
// An empty expected token rejects every call: an unconfigured server must fail
// closed rather than accept callers that also forgot to send a token.
func Check(ctx context.Context, token Token) error {
	md, _ := metadata.FromIncomingContext(ctx)
	return checkMD(md, token)
}

// checkMD is Check on the request headers themselves (the tap handle has
// them before any context carries them).
func checkMD(md metadata.MD, token Token) error {
	if token.IsZero() {
		return status.Error(codes.Unauthenticated, rejectMessage)
	}
	want := sha256.Sum256([]byte(Reveal(token)))
	ok := 0
	for _, got := range md.Get(MetadataKey) {
		// Comparing digests keeps the comparison constant-time even when the
		// lengths differ (ConstantTimeCompare returns early on a length
		// mismatch, which would leak the token's length).
		h := sha256.Sum256([]byte(got))
		ok |= subtle.ConstantTimeCompare(h[:], want[:])
	}
	if ok != 1 {
		return status.Error(codes.Unauthenticated, rejectMessage)
	}
	return nil
}

// UnaryServerInterceptor rejects unary calls that lack token with
// codes.Unauthenticated before the handler runs.
func UnaryServerInterceptor(token Token) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		if err := Check(ctx, token); err != nil {
			return nil, err
		}
		return handler(ctx, req)
	}
}

// StreamServerInterceptor rejects streaming calls that lack token with
// codes.Unauthenticated before the handler runs.
func StreamServerInterceptor(token Token) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		if err := Check(ss.Context(), token); err != nil {
			return err
		}
		return handler(srv, ss)
	}
}

// ServerOptions installs both interceptors; use it so that a service added
// later with streaming methods cannot be left unprotected by accident.
func ServerOptions(token Token) []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.ChainUnaryInterceptor(UnaryServerInterceptor(token)),
		grpc.ChainStreamInterceptor(StreamServerInterceptor(token)),
	}
}

// ClientOptions returns the dial options that attach token to every call,
// unary and streaming. It does not choose transport credentials; loopback
// callers usually add grpc.WithTransportCredentials(insecure.NewCredentials()).
//
// Interceptors rather than grpc.WithPerRPCCredentials, for the cost per
// call (issue 21): per-RPC credentials make grpc build an audience URL,
// call GetRequestMetadata (a new map) and copy it into another map, lower-
// casing every key, on every RPC. Here the metadata is built once and each
// call only puts it in its context. It replaces any outgoing metadata the
// caller's context carries: a worker or an agent receives the token and
// nothing else from a caller's context (nothing reads other metadata; what
// a call carries travels in its request).
func ClientOptions(token Token) []grpc.DialOption {
	md := metadata.MD{MetadataKey: {Reveal(token)}} // read only from here on: shared by every call
	unary := func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		return invoker(metadata.NewOutgoingContext(ctx, md), method, req, reply, cc, opts...)
	}
	stream := func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
		return streamer(metadata.NewOutgoingContext(ctx, md), desc, cc, method, opts...)
	}
	return []grpc.DialOption{grpc.WithChainUnaryInterceptor(unary), grpc.WithChainStreamInterceptor(stream)}
}
