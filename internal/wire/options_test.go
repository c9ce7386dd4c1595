package wire

import (
	"context"
	"testing"
	"time"

	"github.com/snakepit-go/snakepit/bridge/pb"
	"github.com/snakepit-go/snakepit/pool"
)

func TestCallOptionsRoundTrip(t *testing.T) {
	if OptionsToPB(pool.CallOptions{}) != nil {
		t.Fatal("default options travel as nil")
	}
	if ctx := context.Background(); WithCallOptions(ctx, pool.CallOptions{}) != ctx {
		t.Fatal("default options must not wrap the context")
	}
	// What the App sets on every call (its arguments were checked) is not sent.
	if ctx := context.Background(); WithCallOptions(ctx, pool.CallOptions{ArgsChecked: true}) != ctx {
		t.Fatal("options that differ from the default only in ArgsChecked must not wrap the context")
	}
	for _, o := range []pool.CallOptions{
		{Idempotent: true},
		{Affinity: pool.AffinityStrictFailFast, QueueTimeout: 250 * time.Millisecond},
		{Affinity: pool.AffinityStrictQueue, QueueTimeout: time.Microsecond},
	} {
		got := OptionsFromPB(OptionsToPB(CallOptionsFrom(WithCallOptions(context.Background(), o))))
		if got != o {
			t.Fatalf("%+v came back as %+v", o, got)
		}
	}
	// A positive timeout below the wire's unit is not the default.
	if got := OptionsFromPB(OptionsToPB(pool.CallOptions{QueueTimeout: time.Nanosecond})); got.QueueTimeout != time.Microsecond {
		t.Fatalf("1 ns queue timeout came back as %s; want 1 µs", got.QueueTimeout)
	}
	// An affinity from a newer host stays out of range: the pool rejects it.
	if got := OptionsFromPB(&pb.CallOptions{Affinity: 7}); got.Affinity <= pool.AffinityStrictFailFast {
		t.Fatalf("unknown affinity 7 came back as %s; want it out of range", got.Affinity)
	}
	if got := OptionsFromPB(&pb.CallOptions{Affinity: 256}); got.Affinity <= pool.AffinityStrictFailFast {
		t.Fatalf("unknown affinity 256 came back as %s; want it out of range, not wrapped", got.Affinity)
	}
}
