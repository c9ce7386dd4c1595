package auth

import (
	"context"
	"net"
	"strconv"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/tap"
)

// Defaults of the bounds a Guard puts on a server. The agent exports them
// under its own names; the bridge uses them as they are.
const (
	// DefaultStreamsPerConn is HTTP/2's SETTINGS_MAX_CONCURRENT_STREAMS: a
	// well-behaved client (grpc-go, grpcio) queues its calls past it rather
	// than failing them, so it costs a legitimate caller waiting, not errors.
	DefaultStreamsPerConn = 256
	// DefaultStreams bounds authenticated streams across all connections. A
	// host sends an agent at most the capacity the agent advertises, so this
	// only binds when more than DefaultStreams/capacity hosts share one agent.
	DefaultStreams = 1024
	// DefaultOpenStreams bounds streams that carry no valid token (possible
	// only on the open methods, i.e. health): each may buffer a message of
	// the server's receive limit, so this is what bounds the memory an
	// unauthenticated peer can pin. Kubernetes' readiness and liveness
	// probes each send one Check at a time.
	DefaultOpenStreams = 2
	// MaxHeaderListBytes bounds one request's headers, which the transport
	// must read before the token can be checked (grpc-go's default is
	// 16 MiB). The token header is under 100 bytes; trace headers a few
	// hundred.
	MaxHeaderListBytes = 64 << 10
)

// StreamLimitMessage starts the message of the codes.ResourceExhausted
// status a stream over a Guard's bound gets, so a client can tell it from a
// message over the size limit (the same code).
const StreamLimitMessage = "snakepit: too many concurrent calls"

// IsStreamLimit reports whether err is a Guard's stream-limit rejection.
func IsStreamLimit(err error) bool {
	s, ok := status.FromError(err)
	return ok && s.Code() == codes.ResourceExhausted && strings.HasPrefix(s.Message(), StreamLimitMessage)
}

// Guard protects a gRPC server with the token before any request body is
// read. grpc-go runs interceptors only after the whole request message has
// arrived (up to the receive limit, per stream), so an interceptor alone
// lets a peer without the token make the server buffer streams × limit
// bytes. The Guard's tap handle (grpc.InTapHandle) runs when a stream's
// headers arrive: a stream without the token is refused there, before it
// exists, and the body its client sends is discarded by the transport as it
// arrives.
type Guard struct {
	Token Token
	// Open are method-name prefixes callable without the token (e.g.
	// "/grpc.health.v1.Health/", which Kubernetes probes call without it).
	Open []string
	// StreamsPerConn, Streams and OpenStreams: zero means the Default.
	// Streams < 0: no bound across connections (for a server whose
	// token holders are its own processes, each with one connection).
	StreamsPerConn uint32
	Streams        int
	OpenStreams    int
	// LimitHint tells, in the stream-limit message, which setting raises
	// Streams (e.g. "raise --max-streams (agent.Options.MaxStreams)").
	LimitHint string
	// Strikes: how many streams without a valid token (refused, or over
	// OpenStreams) a connection accepted by the listener Armed returns may
	// have refused before the Guard closes it; 0: DefaultStrikes; negative:
	// never. A connection on which any stream carried the token is never
	// closed. The source of a connection closed so has its next
	// connections wait (strikes.go): without that wait, a flood of open
	// methods reconnected at once and each new stream that took a freed
	// open slot began buffering a body again (measured: twice the RSS).
	Strikes int
}

// ServerOptions returns the tap handle, the stream and header bounds, and
// the token interceptors (kept as a second check: they cost one hash per
// call, and protect a handler even if the tap is ever bypassed).
func (g Guard) ServerOptions() []grpc.ServerOption {
	return g.options(nil)
}

// Armed is ServerOptions plus ln wrapped so that the Guard can close a
// connection after Strikes refused streams (serve the returned listener).
func (g Guard) Armed(ln net.Listener) ([]grpc.ServerOption, net.Listener) {
	if g.Strikes < 0 {
		return g.options(nil), ln
	}
	table := &strikeTable{conns: map[string]*struckConn{}, penalties: map[string]penalty{}}
	return g.options(table), strikeListener{Listener: ln, table: table}
}

func (g Guard) options(table *strikeTable) []grpc.ServerOption {
	if g.StreamsPerConn == 0 {
		g.StreamsPerConn = DefaultStreamsPerConn
	}
	if g.Streams == 0 {
		g.Streams = DefaultStreams
	}
	if g.OpenStreams <= 0 {
		g.OpenStreams = DefaultOpenStreams
	}
	if g.Strikes == 0 {
		g.Strikes = DefaultStrikes
	}
	t := &tapper{g: g, open: make(chan struct{}, g.OpenStreams)}
	if g.Streams > 0 {
		t.streams = make(chan struct{}, g.Streams)
	}
	opts := []grpc.ServerOption{
		grpc.InTapHandle(t.handle),
		grpc.MaxConcurrentStreams(g.StreamsPerConn),
		grpc.MaxHeaderListSize(MaxHeaderListBytes),
	}
	if table != nil {
		opts = append(opts, grpc.StatsHandler(table))
	}
	return append(opts, ServerOptionsExcept(g.Token, g.Open...)...)
}

type tapper struct {
	g Guard
	// streams and open are semaphores: a slot is taken when a stream is
	// admitted and given back when the stream's context ends, which the
	// transport does on every way a stream can end (done, reset, deadline,
	// connection closed). The tap runs on the connection's reader goroutine
	// and must not block, so a full semaphore refuses at once.
	streams, open chan struct{}
}

func (t *tapper) handle(ctx context.Context, info *tap.Info) (context.Context, error) {
	sem := t.streams
	conn := connOf(ctx) // nil unless the listener is Armed
	if checkMD(info.Header, t.g.Token) != nil {
		if !isOpen(info.FullMethodName, t.g.Open) {
			if conn != nil {
				conn.strike(t.g.Strikes)
			}
			return nil, status.Error(codes.Unauthenticated, rejectMessage)
		}
		sem = t.open
	} else if conn != nil {
		conn.trusted.Store(true)
	}
	if sem == nil {
		return ctx, nil
	}
	select {
	case sem <- struct{}{}:
	default:
		if sem == t.open && conn != nil {
			conn.strike(t.g.Strikes)
		}
		msg := StreamLimitMessage + " on this server (" + strconv.Itoa(cap(sem)) + " at once); retry later"
		if sem == t.streams && t.g.LimitHint != "" {
			msg += ", or " + t.g.LimitHint
		}
		return nil, status.Error(codes.ResourceExhausted, msg)
	}
	context.AfterFunc(ctx, func() { <-sem })
	return ctx, nil
}

func isOpen(method string, open []string) bool {
	for _, p := range open {
		if strings.HasPrefix(method, p) {
			return true
		}
	}
	return false
}
