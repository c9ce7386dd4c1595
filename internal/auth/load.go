package auth

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"

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

// SecretEnv lists the environment variables that carry snakepit secrets:
// the run's token (handed to each worker on purpose, which takes it out of
// its own environment at once) and the agent token. It is the one rule for
// what a worker's environment must not inherit from the host: grpcworker
// drops these names from what it copies, so neither a worker nor anything
// its tools start sees a secret meant for the Go process. (TLS material is
// passed as file paths in flags, never in the environment.)
var SecretEnv = []string{EnvToken, EnvAgentToken}

// IsSecretEnv reports whether the environment variable name is in SecretEnv.
func IsSecretEnv(name string) bool {
	for _, s := range SecretEnv {
		if name == s {
			return true
		}
	}
	return false
}

// envLoaded keeps the secrets Load took out of the environment, by variable
// name, so that a second Load in the same process (an agent and a host's
// remote workers in one program, or several hosts' factories) still finds
// them.
var envLoaded sync.Map

// Load reads a shared token from file (when non-empty) or else from the
// environment variable env, trimming surrounding white space (a trailing
// newline from `echo` or a Kubernetes Secret). The value is never part of
// an error message. A value read from env is removed from the process
// environment (os.Unsetenv), so no child this process starts, by any
// means, inherits it; later Loads of env in this process get the value
// from memory unless env was set again.
func Load(file, env string) (Token, error) {
	var v, from string
	switch {
	case file != "":
		b, err := os.ReadFile(file)
		if err != nil {
			return Token{}, fmt.Errorf("snakepit: reading the agent token: %w", err)
		}
		v, from = string(b), "token file "+file
	default:
		if e := os.Getenv(env); e != "" {
			envLoaded.Store(env, e)
			_ = os.Unsetenv(env)
		}
		e, ok := envLoaded.Load(env)
		if !ok {
			return Token{}, fmt.Errorf("%w: pass a token file or set %s (make one with: head -c 32 /dev/urandom | base64)", ErrNoToken, env)
		}
		v, from = e.(string), "$"+env
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
	return []grpc.ServerOption{
		grpc.ChainUnaryInterceptor(func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
			if !isOpen(info.FullMethod, open) {
				if err := Check(ctx, token); err != nil {
					return nil, err
				}
			}
			return handler(ctx, req)
		}),
		grpc.ChainStreamInterceptor(func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
			if !isOpen(info.FullMethod, open) {
				if err := Check(ss.Context(), token); err != nil {
					return err
				}
			}
			return handler(srv, ss)
		}),
	}
}
