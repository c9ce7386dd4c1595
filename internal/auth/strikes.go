package auth

import (
	"context"
	"net"
	"sync"
	"sync/atomic"

	"google.golang.org/grpc/stats"
)

// DefaultStrikes is how many streams without a valid token a connection
// may have refused before a Guard closes it (Guard.Strikes). A host with a
// wrong token learns it from its first call (Unauthenticated); a connection
// that keeps sending such streams is a flood, and each of its refused
// streams still costs the server the body bytes sent before the refusal
// reached the client (up to the stream's HTTP/2 window).
const DefaultStrikes = 4

// strikeTable tracks the connections a Guard's listener accepted, so that
// the tap handle, which sees only a stream's context, can close the
// connection under it. grpc-go passes the tap handle a context derived from
// the connection's context, which its stats handler's TagConn returns
// (grpc server.go serveStreams → http2Server.HandleStreams →
// operateHeaders); TagConn finds the connection by its remote address.
type strikeTable struct {
	mu    sync.Mutex
	conns map[string]*struckConn // by RemoteAddr().String()
}

// struckConn is an accepted connection and its record.
type struckConn struct {
	net.Conn
	table   *strikeTable
	key     string
	strikes atomic.Int32
	// trusted: a stream on it carried the token, so its refusals (e.g. a
	// bound reached) are never strikes: a good client's connection is
	// never closed by the Guard.
	trusted atomic.Bool
	once    sync.Once
}

func (c *struckConn) Close() error {
	c.once.Do(func() {
		c.table.mu.Lock()
		if c.table.conns[c.key] == c {
			delete(c.table.conns, c.key)
		}
		c.table.mu.Unlock()
	})
	return c.Conn.Close()
}

// strike records a refused stream without a valid token and closes the
// connection at the limit. Closing it from the tap handle (the
// connection's reader goroutine) ends the transport: its other streams
// fail (the client sees Unavailable), which only a connection that never
// presented the token can have.
func (c *struckConn) strike(limit int) {
	if c.trusted.Load() {
		return
	}
	if int(c.strikes.Add(1)) >= limit {
		_ = c.Close()
	}
}

type strikeListener struct {
	net.Listener
	table *strikeTable
}

func (l strikeListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	sc := &struckConn{Conn: c, table: l.table, key: c.RemoteAddr().String()}
	l.table.mu.Lock()
	l.table.conns[sc.key] = sc
	l.table.mu.Unlock()
	return sc, nil
}

type connKey struct{}

// connOf is the record of the connection a stream's context belongs to;
// nil on a listener the Guard did not wrap.
func connOf(ctx context.Context) *struckConn {
	c, _ := ctx.Value(connKey{}).(*struckConn)
	return c
}

// TagConn implements stats.Handler: it puts the connection's record in the
// connection's context, which every stream's context (the tap handle's
// included) inherits.
func (t *strikeTable) TagConn(ctx context.Context, info *stats.ConnTagInfo) context.Context {
	if info.RemoteAddr == nil {
		return ctx
	}
	t.mu.Lock()
	c := t.conns[info.RemoteAddr.String()]
	t.mu.Unlock()
	if c == nil {
		return ctx
	}
	return context.WithValue(ctx, connKey{}, c)
}

func (*strikeTable) HandleConn(context.Context, stats.ConnStats)                     {}
func (*strikeTable) TagRPC(ctx context.Context, _ *stats.RPCTagInfo) context.Context { return ctx }
func (*strikeTable) HandleRPC(context.Context, stats.RPCStats)                       {}
