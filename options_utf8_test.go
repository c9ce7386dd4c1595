package snakepit

import (
	"errors"
	"testing"
)

// A session id or binary argument name that is not UTF-8 cannot cross the
// wire (protobuf strings): it must be refused as the caller's mistake before
// dispatch, not fail at marshalling as if the worker were broken.
func TestCallOptionsRefuseInvalidUTF8(t *testing.T) {
	for _, tc := range []struct {
		name string
		opt  CallOption
		want error
	}{
		{"session", WithSession("s\xff"), ErrInvalidConfig},
		{"binary name", WithBinary("b\xff", []byte{0xff}), ErrInvalidArgs},
	} {
		var o callOptions
		tc.opt(&o)
		if !errors.Is(o.err, tc.want) {
			t.Errorf("%s: err = %v, want %v", tc.name, o.err, tc.want)
		}
	}
	var o callOptions
	WithSession("sé")(&o)
	WithBinary("ключ", []byte{0xff, 0})(&o)
	if o.err != nil || o.session != "sé" || len(o.binary["ключ"]) != 2 {
		t.Fatalf("valid UTF-8 refused: %+v", o)
	}
}
