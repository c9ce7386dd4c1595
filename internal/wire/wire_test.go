package wire

import (
	"errors"
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
		Parameters: []worker.ParamSpec{{Name: "a", Type: "list[int]", Required: false, Default: []byte("[2]"), Description: "x"}},
		Returns:    "dict[str, float]", Doc: "d\n\nmore",
		BatchMaxSize: 32, BatchMaxWait: 2 * time.Millisecond,
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

func TestToolErrorKinds(t *testing.T) {
	err := ToolError("f", "w1", &pb.ToolError{Type: "InvalidArgs", Message: "m", Kind: KindInvalidArgs, ArgPath: "xs[2]", Expected: "int", Got: "str 'x'"})
	var ie *worker.InvalidArgsError
	if !errors.Is(err, worker.ErrInvalidArgs) || !errors.As(err, &ie) || ie.Path != "xs[2]" || ie.Expected != "int" || ie.Got != "str 'x'" {
		t.Fatalf("invalid_args: %#v", err)
	}
	if back := ToolError("f", "w1", InvalidArgsToPB(ie)); !reflect.DeepEqual(back, err) {
		t.Fatalf("round trip: %#v, want %#v", back, err)
	}
	if err := ToolError("f", "w1", &pb.ToolError{Type: "ValueError", Message: "m"}); !errors.Is(err, worker.ErrToolFailed) || errors.Is(err, worker.ErrInvalidArgs) {
		t.Fatalf("tool failure: %#v", err)
	}
}

func TestArrayResultRoundTrip(t *testing.T) {
	in := &worker.Result{Binary: []byte{0, 0, 128, 63}, DType: "float32", Shape: []uint64{1}}
	if out := Result(ResultPayload(in)); !reflect.DeepEqual(out, in) {
		t.Fatalf("round trip: %+v, want %+v", out, in)
	}
	plain := Result(Payload(nil, []byte{1}))
	if plain.DType != "" || plain.Shape != nil {
		t.Fatalf("plain bytes gained an array header: %+v", plain)
	}
}
