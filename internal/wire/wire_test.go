package wire

import (
	"math"
	"reflect"
	"testing"
	"time"

	"github.com/snakepit-go/snakepit/bridge/pb"
	"github.com/snakepit-go/snakepit/worker"
)

func TestToolSpecRoundTrip(t *testing.T) {
	in := worker.ToolSpec{
		Name: "t", Description: "d", SupportsStreaming: true, MaxConcurrency: 3, Timeout: 1500 * time.Millisecond,
		Parameters: []worker.ParamSpec{{Name: "a", Type: "int", Required: false, Default: []byte("2"), Description: "x"}},
	}
	if out := ToolSpecFromPB(ToolSpecToPB(in)); !reflect.DeepEqual(out, in) {
		t.Fatalf("round trip: %+v, want %+v", out, in)
	}
}

func TestDeclaredLimitsOutOfRangeMeanNone(t *testing.T) {
	for _, s := range []float64{-1, 0, math.NaN(), math.Inf(1), 1e300} {
		if d := ToolSpecFromPB(&pb.ToolSpec{TimeoutSeconds: s}).Timeout; d != 0 {
			t.Errorf("timeout_seconds %v became %s, want none", s, d)
		}
	}
	if n := ToolSpecFromPB(&pb.ToolSpec{MaxConcurrency: math.MaxUint32}).MaxConcurrency; n != math.MaxInt32 {
		t.Errorf("max_concurrency 2^32-1 became %d, want it capped at %d", n, math.MaxInt32)
	}
}

func TestValueKeepsEmptyBytesApartFromJSON(t *testing.T) {
	for _, c := range []struct {
		p        *pb.Payload
		js, bin  string
		isBinary bool
	}{
		{Payload(nil, []byte{}), "", "", true},
		{Payload(nil, []byte("ab")), "", "ab", true},
		{Payload([]byte(`{"a":1}`), nil), `{"a":1}`, "", false},
		{&pb.Payload{}, "null", "", false},
		{nil, "null", "", false},
	} {
		js, bin := Value(c.p)
		if (bin != nil) != c.isBinary || string(js) != c.js || string(bin) != c.bin {
			t.Errorf("Value(%v) = %q, %q", c.p, js, bin)
		}
	}
}
