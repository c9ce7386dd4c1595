package auth

import (
	"context"
	"fmt"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/stats"
	"google.golang.org/grpc/status"
)

// payloads counts the request messages a server received and the RPCs it
// began: a stream refused by the tap handle has neither.
type payloads struct{ in, begun atomic.Int64 }

func (p *payloads) TagRPC(ctx context.Context, _ *stats.RPCTagInfo) context.Context { return ctx }
func (p *payloads) HandleRPC(_ context.Context, s stats.RPCStats) {
	switch s.(type) {
	case *stats.InPayload:
		p.in.Add(1)
	case *stats.Begin:
		p.begun.Add(1)
	}
}
func (p *payloads) TagConn(ctx context.Context, _ *stats.ConnTagInfo) context.Context { return ctx }
func (p *payloads) HandleConn(context.Context, stats.ConnStats)                       {}

// guarded serves the health service behind g, receiving messages of up to
// maxRecv bytes, and returns a client factory and the server's counters.
func guarded(t *testing.T, g Guard, maxRecv int) (func(...grpc.DialOption) healthpb.HealthClient, *payloads) {
	return serveGuarded(t, g, maxRecv, false)
}

// serveGuarded is guarded; armed serves through Guard.Armed.
func serveGuarded(t *testing.T, g Guard, maxRecv int, armed bool) (func(...grpc.DialOption) healthpb.HealthClient, *payloads) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &payloads{}
	gopts := g.ServerOptions()
	if armed {
		gopts, lis = g.Armed(lis)
	}
	srv := grpc.NewServer(append(gopts, grpc.MaxRecvMsgSize(maxRecv), grpc.StatsHandler(p))...)
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
	return func(extra ...grpc.DialOption) healthpb.HealthClient {
		opts := append([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithDefaultCallOptions(grpc.MaxCallSendMsgSize(64 << 20))}, extra...)
		cc, err := grpc.NewClient(lis.Addr().String(), opts...)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cc.Close() })
		return healthpb.NewHealthClient(cc)
	}, p
}

func TestGuardRejectsFromHeadersBeforeTheBody(t *testing.T) {
	token := NewToken()
	dial, p := guarded(t, Guard{Token: token}, 1<<20)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, size := range []int{8 << 20, 100} { // over and under the 1 MiB receive limit
		big := &healthpb.HealthCheckRequest{Service: strings.Repeat("x", size)}
		_, err := dial().Check(ctx, big)
		// Over the limit, an interceptor-only server answers ResourceExhausted:
		// it reads the body before any check runs.
		if status.Code(err) != codes.Unauthenticated {
			t.Fatalf("%d-byte request without a token: %v, want Unauthenticated", size, err)
		}
	}
	if in, begun := p.in.Load(), p.begun.Load(); in != 0 || begun != 0 {
		t.Fatalf("the server received %d request messages and began %d RPCs without a token; want none", in, begun)
	}
	// The same server serves a caller with the token.
	if _, err := dial(ClientOptions(token)...).Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
		t.Fatalf("Check with the token: %v", err)
	}
	if p.in.Load() != 1 {
		t.Fatalf("received %d messages, want 1", p.in.Load())
	}
}

// holdWatch opens a Watch and waits for its first answer, so the stream is
// admitted and stays open until ctx ends.
func holdWatch(t *testing.T, ctx context.Context, c healthpb.HealthClient) {
	t.Helper()
	w, err := c.Watch(ctx, &healthpb.HealthCheckRequest{})
	if err == nil {
		_, err = w.Recv()
	}
	if err != nil {
		t.Fatalf("Watch: %v", err)
	}
}

// eventually polls f until it returns nil or the deadline passes.
func eventually(t *testing.T, what string, f func() error) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %v", what, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestGuardBoundsStreamsAndGivesSlotsBack(t *testing.T) {
	token := NewToken()
	open := "/" + healthpb.Health_ServiceDesc.ServiceName + "/"
	dial, _ := guarded(t, Guard{Token: token, Open: []string{open}, Streams: 1, OpenStreams: 1, LimitHint: "raise Limit"}, 1<<20)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for name, c := range map[string]healthpb.HealthClient{"with token": dial(ClientOptions(token)...), "open method, no token": dial()} {
		t.Run(name, func(t *testing.T) {
			hold, release := context.WithCancel(ctx)
			defer release()
			holdWatch(t, hold, c)
			_, err := c.Check(ctx, &healthpb.HealthCheckRequest{})
			if !IsStreamLimit(err) {
				t.Fatalf("second call over a bound of 1: %v, want the stream limit", err)
			}
			if hint := strings.Contains(status.Convert(err).Message(), "raise Limit"); hint != (name == "with token") {
				t.Fatalf("message %q: the hint belongs to the token holders' bound only", status.Convert(err).Message())
			}
			release()
			// The slot comes back when the server sees the stream end.
			eventually(t, "call after the held stream ended", func() error {
				_, err := c.Check(ctx, &healthpb.HealthCheckRequest{})
				return err
			})
		})
	}
	// The two bounds are separate: unauthenticated probes cannot use up the
	// token holders' slots.
	hold, release := context.WithCancel(ctx)
	defer release()
	holdWatch(t, hold, dial())
	if _, err := dial(ClientOptions(token)...).Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
		t.Fatalf("a token holder while the open slot is taken: %v", err)
	}
}

// dialCounter counts the TCP connections a client opened.
type dialCounter struct{ n atomic.Int64 }

func (d *dialCounter) option() grpc.DialOption {
	return grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
		c, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
		if err == nil {
			d.n.Add(1)
		}
		return c, err
	})
}

func TestArmedGuardClosesAConnectionAfterStrikes(t *testing.T) {
	token := NewToken()
	const strikes = 3
	g := Guard{Token: token, Streams: 1, Strikes: strikes}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	t.Run("no token", func(t *testing.T) {
		dial, _ := serveGuarded(t, g, 1<<20, true)
		var d dialCounter
		c := dial(append(ClientOptions(NewToken()), d.option())...) // a wrong token
		for i := range strikes {
			_, err := c.Check(ctx, &healthpb.HealthCheckRequest{})
			// The last strike's refusal may be cut by the close itself.
			if code := status.Code(err); code != codes.Unauthenticated && (i < strikes-1 || code != codes.Unavailable) {
				t.Fatalf("call %d without the token: %v", i+1, err)
			}
		}
		// The client reconnects for the next call: a second connection.
		eventually(t, "a new connection after the strikes", func() error {
			_, _ = c.Check(ctx, &healthpb.HealthCheckRequest{})
			if n := d.n.Load(); n != 2 {
				return fmt.Errorf("%d connections, want 2", n)
			}
			return nil
		})
	})

	t.Run("no token, open method over its bound", func(t *testing.T) {
		g := g
		g.Open, g.OpenStreams = []string{"/" + healthpb.Health_ServiceDesc.ServiceName + "/"}, 1
		dial, _ := serveGuarded(t, g, 1<<20, true)
		hold, release := context.WithCancel(ctx)
		defer release()
		holdWatch(t, hold, dial()) // the one open slot, from another connection
		var d dialCounter
		c := dial(d.option())
		for i := range strikes {
			_, err := c.Check(ctx, &healthpb.HealthCheckRequest{})
			if !IsStreamLimit(err) && (i < strikes-1 || status.Code(err) != codes.Unavailable) {
				t.Fatalf("call %d over the open bound: %v", i+1, err)
			}
		}
		eventually(t, "a new connection after the strikes", func() error {
			_, _ = c.Check(ctx, &healthpb.HealthCheckRequest{})
			if n := d.n.Load(); n != 2 {
				return fmt.Errorf("%d connections, want 2", n)
			}
			return nil
		})
	})

	t.Run("with token, over the bounds", func(t *testing.T) {
		dial, _ := serveGuarded(t, g, 1<<20, true)
		var d dialCounter
		c := dial(append(ClientOptions(token), d.option())...)
		hold, release := context.WithCancel(ctx)
		defer release()
		holdWatch(t, hold, c)
		for range 3 * strikes { // refusals, but not strikes: it has the token
			if _, err := c.Check(ctx, &healthpb.HealthCheckRequest{}); !IsStreamLimit(err) {
				t.Fatalf("over the bound: %v, want the stream limit", err)
			}
		}
		if n := d.n.Load(); n != 1 {
			t.Fatalf("%d connections, want 1: a connection with the token was closed", n)
		}
	})

	t.Run("token once, then none", func(t *testing.T) {
		dial, _ := serveGuarded(t, g, 1<<20, true)
		var d dialCounter
		c := dial(d.option()) // no token but on the first call
		withToken := metadata.NewOutgoingContext(ctx, metadata.Pairs(MetadataKey, Reveal(token)))
		if _, err := c.Check(withToken, &healthpb.HealthCheckRequest{}); err != nil {
			t.Fatalf("Check with the token: %v", err)
		}
		for range 3 * strikes {
			if _, err := c.Check(ctx, &healthpb.HealthCheckRequest{}); status.Code(err) != codes.Unauthenticated {
				t.Fatalf("Check without the token: %v, want Unauthenticated", err)
			}
		}
		if n := d.n.Load(); n != 1 {
			t.Fatalf("%d connections, want 1: a connection that presented the token was closed", n)
		}
	})
}

func TestStrikePenaltyGrowsPerSourceAndIsBounded(t *testing.T) {
	tb := &strikeTable{conns: map[string]*struckConn{}, penalties: map[string]penalty{}}
	if w := tb.waitFor("10.0.0.1"); w != 0 {
		t.Fatalf("a source never struck waits %v", w)
	}
	want := penaltyBase
	for range 10 {
		tb.penalize("10.0.0.1")
		if w := tb.waitFor("10.0.0.1"); w != want {
			t.Fatalf("wait %v, want %v", w, want)
		}
		want = min(2*want, penaltyMax)
	}
	if w := tb.waitFor("10.0.0.2"); w != 0 {
		t.Fatalf("another source waits %v: the penalty is per source", w)
	}
	for i := range maxPenalized + 10 {
		tb.penalize(fmt.Sprintf("10.1.%d.%d", i/256, i%256))
	}
	if n := len(tb.penalties); n > maxPenalized {
		t.Fatalf("%d penalized sources, bound %d", n, maxPenalized)
	}
}

// A penalized connection's wait ends when the connection is closed (the
// server stopping does not wait out penalties).
func TestPenaltyWaitEndsOnClose(t *testing.T) {
	a, b := net.Pipe()
	defer b.Close()
	c := &struckConn{Conn: a, table: &strikeTable{conns: map[string]*struckConn{}}, closed: make(chan struct{}), wait: time.Hour}
	done := make(chan error, 1)
	go func() { _, err := c.Read(make([]byte, 1)); done <- err }()
	_ = c.Close()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("Read on a closed connection succeeded")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Read still waiting out its penalty after Close")
	}
}
