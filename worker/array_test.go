package worker

import (
	"encoding/binary"
	"errors"
	"math"
	"reflect"
	"testing"
)

func f32Array(vals ...float32) *Result {
	b := make([]byte, 4*len(vals))
	for i, v := range vals {
		binary.LittleEndian.PutUint32(b[i*4:], math.Float32bits(v))
	}
	return &Result{Binary: b, DType: "float32", Shape: []uint64{uint64(len(vals))}}
}

func i64Array(shape []uint64, vals ...int64) *Result {
	b := make([]byte, 8*len(vals))
	for i, v := range vals {
		binary.LittleEndian.PutUint64(b[i*8:], uint64(v))
	}
	return &Result{Binary: b, DType: "int64", Shape: shape}
}

func TestDecodeArray(t *testing.T) {
	r := f32Array(1.5, -2, 3)
	var f32 []float32
	if err := r.Decode(&f32); err != nil || !reflect.DeepEqual(f32, []float32{1.5, -2, 3}) {
		t.Fatalf("[]float32: %v %v", f32, err)
	}
	var f64 []float64
	if err := r.Decode(&f64); err != nil || !reflect.DeepEqual(f64, []float64{1.5, -2, 3}) {
		t.Fatalf("[]float64 from float32: %v %v", f64, err)
	}
	var ints []int64
	if err := r.Decode(&ints); !errors.Is(err, ErrDecode) {
		t.Fatalf("float32 into []int64 must fail (fractions), got %v", err)
	}

	m := i64Array([]uint64{2, 2}, 1, -2, 300, 4)
	var i32 []int32
	if err := m.Decode(&i32); err != nil || !reflect.DeepEqual(i32, []int32{1, -2, 300, 4}) {
		t.Fatalf("[]int32 from int64: %v %v", i32, err)
	}
	var i8 []int8
	if err := m.Decode(&i8); !errors.Is(err, ErrDecode) {
		t.Fatalf("300 into int8 must fail, got %v %v", i8, err)
	}
	var u []uint64
	if err := m.Decode(&u); !errors.Is(err, ErrDecode) {
		t.Fatalf("-2 into uint64 must fail, got %v %v", u, err)
	}
	var nested [][]float64
	if err := m.Decode(&nested); err != nil || !reflect.DeepEqual(nested, [][]float64{{1, -2}, {300, 4}}) {
		t.Fatalf("[][]float64 through JSON: %v %v", nested, err)
	}
	var anyv any
	if err := i64Array(nil, 7).Decode(&anyv); err != nil || anyv != float64(7) {
		t.Fatalf("0-d array into any: %v %v", anyv, err)
	}

	bad := &Result{Binary: []byte{1, 2, 3}, DType: "float32", Shape: []uint64{1}}
	if err := bad.Decode(&f32); !errors.Is(err, ErrDecode) {
		t.Fatalf("short data: %v", err)
	}
	odd := &Result{Binary: []byte{1, 2}, DType: "complex64", Shape: []uint64{1}}
	if err := odd.Decode(&f32); !errors.Is(err, ErrDecode) {
		t.Fatalf("unknown dtype: %v", err)
	}
	var bs []bool
	if err := (&Result{Binary: []byte{1, 0}, DType: "bool", Shape: []uint64{2}}).Decode(&bs); err != nil || !reflect.DeepEqual(bs, []bool{true, false}) {
		t.Fatalf("[]bool: %v %v", bs, err)
	}
	// Plain bytes still refuse Decode.
	if err := (&Result{Binary: []byte{1}}).Decode(&f32); !errors.Is(err, ErrDecode) {
		t.Fatalf("plain bytes: %v", err)
	}
}

func TestInvalidArgsError(t *testing.T) {
	var err error = &InvalidArgsError{Tool: "f", Path: "xs[2]", Message: "argument 'xs[2]': expected int, got str 'x'"}
	if !errors.Is(err, ErrInvalidArgs) || errors.Is(err, ErrToolFailed) {
		t.Fatalf("Is: %v", err)
	}
	var ie *InvalidArgsError
	if !errors.As(err, &ie) || ie.Path != "xs[2]" {
		t.Fatal("As")
	}
}
