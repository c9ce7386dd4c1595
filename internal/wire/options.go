package wire

import (
	"context"
	"time"

	"github.com/snakepit-go/snakepit/bridge/pb"
	"github.com/snakepit-go/snakepit/pool"
)

// A call's pool options (pool.CallOptions) are not part of worker.Call: a
// worker runs a call, it does not queue or retry it. A worker that hands
// calls on to another pool (package remote, to an agent's) needs them, so
// the App puts them in the call's context — only when one differs from the
// default, so a call without any pays nothing — and the remote worker sends
// them in ExecuteToolRequest.options.

type optionsKey struct{}

// WithCallOptions returns ctx carrying o; ctx itself when o is the default.
// Observer and ArgsChecked are this process's and never sent, so they do
// not count: the App sets ArgsChecked on every call, which had made every
// call pay for a context and a boxed CallOptions.
func WithCallOptions(ctx context.Context, o pool.CallOptions) context.Context {
	o.Observer, o.ArgsChecked = nil, false
	if o == (pool.CallOptions{}) {
		return ctx
	}
	return context.WithValue(ctx, optionsKey{}, o)
}

// CallOptionsFrom returns the options WithCallOptions put in ctx, or the
// default.
func CallOptionsFrom(ctx context.Context) pool.CallOptions {
	o, _ := ctx.Value(optionsKey{}).(pool.CallOptions)
	return o
}

// OptionsToPB is the wire form of o; nil for the default.
func OptionsToPB(o pool.CallOptions) *pb.CallOptions {
	if o == (pool.CallOptions{}) {
		return nil
	}
	// Rounded up: a positive timeout must not become 0 (the default).
	us := (o.QueueTimeout + time.Microsecond - 1) / time.Microsecond
	return &pb.CallOptions{Idempotent: o.Idempotent, Affinity: pb.CallOptions_Affinity(o.Affinity), QueueTimeoutUs: uint64(max(us, 0))}
}

// OptionsFromPB is the inverse of OptionsToPB. An affinity this version does
// not know stays out of range, so the receiving pool rejects the call
// (ErrInvalidCall) rather than running it with weaker affinity.
func OptionsFromPB(p *pb.CallOptions) pool.CallOptions {
	if p == nil {
		return pool.CallOptions{}
	}
	a := p.GetAffinity()
	if a < 0 || a > 255 {
		a = 255 // AffinityMode is a uint8: keep it out of range, not wrapped
	}
	qt := time.Duration(min(p.GetQueueTimeoutUs(), uint64(1<<63-1)/uint64(time.Microsecond))) * time.Microsecond
	return pool.CallOptions{Idempotent: p.GetIdempotent(), Affinity: pool.AffinityMode(a), QueueTimeout: qt}
}
