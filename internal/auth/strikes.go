package auth

import (
	"context"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/stats"
)

// DefaultStrikes is how many streams without a valid token a connection
// may have refused before a Guard closes it (Guard.Strikes). A host with a
// wrong token learns it from its first call (Unauthenticated); a connection
// that keeps sending such streams is a flood, and each of its refused
// streams still costs the server the body bytes sent before the refusal
// reached the client (up to the stream's HTTP/2 window).
const DefaultStrikes = 4

// The penalty on a source address whose connections were closed for
// strikes: its next connections wait before the server reads their first
// byte, penaltyBase after one such close, doubling with each one to
// penaltyMax, forgotten penaltyFor after the last. It costs a flood a
// reconnect and the wait per Strikes refusals (a grpc client's calls wait
// for the connection). The wait is on the connection's own goroutine, so
// the accept loop and every open connection go on; a host with the token
// connecting from the same address (NAT, loopback) waits for its new
// connection too, at most penaltyMax.
const (
	penaltyBase = 20 * time.Millisecond
	penaltyMax  = time.Second
	penaltyFor  = 10 * time.Second
	// maxPenalized bounds the table of penalized addresses; past it a new
	// address is not penalized (the Strikes close still applies).
	maxPenalized = 4096
)

// strikeTable tracks the connections a Guard's listener accepted, so that
// the tap handle, which sees only a stream's context, can close the
// connection under it. grpc-go passes the tap handle a context derived from
// the connection's context, which its stats handler's TagConn returns
// (grpc server.go serveStreams → http2Server.HandleStreams →
// operateHeaders); TagConn finds the connection by its remote address.
type strikeTable struct {
	mu        sync.Mutex
	conns     map[string]*struckConn // by RemoteAddr().String()
	penalties map[string]penalty     // by source IP
}

type penalty struct {
	wait  time.Duration
	until time.Time
}

// penalize records a connection from ip closed for strikes.
func (t *strikeTable) penalize(ip string) {
	now := time.Now()
	t.mu.Lock()
	defer t.mu.Unlock()
	p, ok := t.penalties[ip]
	if !ok && len(t.penalties) >= maxPenalized {
		for k, v := range t.penalties {
			if now.After(v.until) {
				delete(t.penalties, k)
			}
		}
		if len(t.penalties) >= maxPenalized {
			return
		}
	}
	if !ok || now.After(p.until) {
		p.wait = penaltyBase
	} else {
		p.wait = min(2*p.wait, penaltyMax)
	}
	p.until = now.Add(penaltyFor)
	t.penalties[ip] = p
}

// waitFor is how long a new connection from ip waits (0: none).
func (t *strikeTable) waitFor(ip string) time.Duration {
	t.mu.Lock()
	defer t.mu.Unlock()
	p, ok := t.penalties[ip]
	if !ok || time.Now().After(p.until) {
		return 0
	}
	return p.wait
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
	closed  chan struct{}
	// wait: the source's penalty, served before the first Read.
	wait     time.Duration
	waitOnce sync.Once
	struck   sync.Once
}

func (c *struckConn) Read(b []byte) (int, error) {
	c.waitOnce.Do(func() {
		if c.wait <= 0 {
			return
		}
		t := time.NewTimer(c.wait)
		defer t.Stop()
		select {
		case <-t.C:
		case <-c.closed: // the server stopped: the Read below fails at once
		}
	})
	return c.Conn.Read(b)
}

func (c *struckConn) Close() error {
	c.once.Do(func() {
		close(c.closed)
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
		c.struck.Do(func() { c.table.penalize(sourceIP(c.RemoteAddr())) })
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
	sc := &struckConn{Conn: c, table: l.table, key: c.RemoteAddr().String(), closed: make(chan struct{}),
		wait: l.table.waitFor(sourceIP(c.RemoteAddr()))}
	l.table.mu.Lock()
	l.table.conns[sc.key] = sc
	l.table.mu.Unlock()
	return sc, nil
}

// sourceIP is a's IP without the port (a itself if it has none).
func sourceIP(a net.Addr) string {
	if ta, ok := a.(*net.TCPAddr); ok {
		return ta.IP.String()
	}
	return a.String()
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
