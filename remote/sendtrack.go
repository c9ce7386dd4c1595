package remote

import (
	"context"
	"sync/atomic"

	"google.golang.org/grpc/stats"
)

// sendTrack follows one call through grpc-go's attempts: sent is whether
// the current attempt put its request headers on a connection. grpc-go
// starts another attempt (stats.Begin again: its transparent retry; no
// retry policy is configured) only after one that never reached the agent
// or that the agent refused unprocessed (a GOAWAY naming a lower stream,
// REFUSED_STREAM). So a call whose last attempt sent no headers provably
// never reached the agent's handler, let alone its Python.
type sendTrack struct{ sent atomic.Bool }

type sendKey struct{}

func (t *sendTrack) notSent() bool { return !t.sent.Load() }

// tracked returns ctx carrying a new sendTrack.
func tracked(ctx context.Context) (context.Context, *sendTrack) {
	t := &sendTrack{}
	return context.WithValue(ctx, sendKey{}, t), t
}

// sendStats is the stats.Handler that feeds sendTrack.
type sendStats struct{}

func (sendStats) TagRPC(ctx context.Context, _ *stats.RPCTagInfo) context.Context { return ctx }

func (sendStats) HandleRPC(ctx context.Context, s stats.RPCStats) {
	t, _ := ctx.Value(sendKey{}).(*sendTrack)
	if t == nil {
		return
	}
	switch s.(type) {
	case *stats.Begin:
		t.sent.Store(false)
	case *stats.OutHeader:
		t.sent.Store(true)
	}
}

func (sendStats) TagConn(ctx context.Context, _ *stats.ConnTagInfo) context.Context { return ctx }

func (sendStats) HandleConn(context.Context, stats.ConnStats) {}
