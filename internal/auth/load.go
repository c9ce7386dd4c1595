package auth

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"

	"google.golang.org/grpc"
)

// EnvAgentToken is the environment variable an agent (`snakepit serve`)
// and the hosts that call it read their shared token from when no token
// file is given.
const EnvAgentToken = "SNAKEPIT_AGENT_TOKEN"

// MinTokenLen is the shortest token Load accepts: the agent's token is the
// only thing between the network and the Python code it runs.
const MinTokenLen = 16

// ErrNoToken: neither a token file nor the environment variable was set.
var ErrNoToken = errors.New("snakepit: no agent token")

// Load reads a shared token from file (when non-empty) or else from the
// environment variable env, trimming surrounding white space (a trailing
// newline from `echo` or a Kubernetes Secret). The value is never part of
// an error message.
func Load(file, env string) (Token, error) {
	var v, from string
	switch {
	case file != "":
		b, err := os.ReadFile(file)
		if err != nil {
			return Token{}, fmt.Errorf("snakepit: reading the agent token: %w", err)
		}
		v, from = string(b), "token file "+file
	case os.Getenv(env) != "":
		v, from = os.Getenv(env), "$"+env
	default:
		return Token{}, fmt.Errorf("%w: pass a token file or set %s (make one with: head -c 32 /dev/urandom | base64)", ErrNoToken, env)
	}
	v = strings.TrimSpace(v)
	if len(v) < MinTokenLen {
		return Token{}, fmt.Errorf("snakepit: the agent token in %s is %d characters; use at least %d (make one with: head -c 32 /dev/urandom | base64)", from, len(v), MinTokenLen)
	}
	return Token{&v}, nil
}

// ServerOptionsExcept is ServerOptions for every method except those whose
// full name starts with one of the open prefixes (e.g. "/grpc.health.v1.",
// which Kubernetes probes call without credentials).
func ServerOptionsExcept(token Token, open ...string) []grpc.ServerOption {
	isOpen := func(method string) bool {
		for _, p := range open {
			if strings.HasPrefix(method, p) {
				return true
			}
		}
		return false
	}
	return []grpc.ServerOption{
		grpc.ChainUnaryInterceptor(func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
			if !isOpen(info.FullMethod) {
				if err := Check(ctx, token); err != nil {
					return nil, err
				}
			}
			return handler(ctx, req)
		}),
		grpc.ChainStreamInterceptor(func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
			if !isOpen(info.FullMethod) {
				if err := Check(ss.Context(), token); err != nil {
					return err
				}
			}
			return handler(srv, ss)
		}),
	}
}
