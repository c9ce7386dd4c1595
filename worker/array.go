package worker

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"unsafe"
)

// Numeric arrays travel as raw elements (a numpy ndarray a tool returned):
// Result.Binary holds them in C order, little-endian, Result.DType names
// the element type and Result.Shape the dimensions. Result.Decode turns
// them into a flat Go slice ([]float64, []float32, []int64, []int32, []int,
// []int16, []int8, []uint64, []uint32, []uint16, []uint8, []bool), with a
// conversion when the element types differ and no value is lost (any
// number into a float slice, an integer into an integer slice it fits);
// into anything else (*any, [][]float64, ...) through the array's JSON form.
// A slice of exactly the array's element type shares Binary's memory (no
// copy, as with raw bytes): writing to one changes the other.

// dtypeSize is the element size of each dtype the protocol carries.
var dtypeSize = map[string]int{
	"float64": 8, "float32": 4,
	"int64": 8, "int32": 4, "int16": 2, "int8": 1,
	"uint64": 8, "uint32": 4, "uint16": 2, "uint8": 1,
	"bool": 1,
}

// littleEndian: the host stores numbers as the wire does, so an array of
// the requested element type is one copy.
var littleEndian = func() bool {
	x := uint16(1)
	return *(*byte)(unsafe.Pointer(&x)) == 1
}()

type number interface {
	~float64 | ~float32 | ~int64 | ~int32 | ~int16 | ~int8 | ~int | ~uint64 | ~uint32 | ~uint16 | ~uint8
}

// IsArray reports whether r holds a numeric array (DType set).
func (r *Result) IsArray() bool { return r != nil && r.DType != "" }

// arrayLen is the number of elements of an array result (the product of
// Shape), once the data's length is checked against it.
func (r *Result) arrayLen() (int, error) {
	size, ok := dtypeSize[r.DType]
	if !ok {
		return 0, &DecodeError{Reason: fmt.Sprintf("the array's dtype %q is not one snakepit decodes (float64/32, int64/32/16/8, uint64/32/16/8, bool)", r.DType)}
	}
	n := uint64(1)
	for _, d := range r.Shape {
		if d != 0 && n > math.MaxInt/uint64(size)/d {
			return 0, &DecodeError{Reason: "the array's shape is too large"}
		}
		n *= d
	}
	if uint64(len(r.Binary)) != n*uint64(size) {
		return 0, &DecodeError{Reason: fmt.Sprintf("the array's data is %d bytes, its shape %v of %s needs %d", len(r.Binary), r.Shape, r.DType, n*uint64(size))}
	}
	return int(n), nil
}

func (r *Result) decodeArray(v any) error {
	n, err := r.arrayLen()
	if err != nil {
		return err
	}
	switch p := v.(type) {
	case *[]float64:
		return decodeInto(p, r, n, true)
	case *[]float32:
		return decodeInto(p, r, n, true)
	case *[]int64:
		return decodeInto(p, r, n, false)
	case *[]int32:
		return decodeInto(p, r, n, false)
	case *[]int:
		return decodeInto(p, r, n, false)
	case *[]int16:
		return decodeInto(p, r, n, false)
	case *[]int8:
		return decodeInto(p, r, n, false)
	case *[]uint64:
		return decodeInto(p, r, n, false)
	case *[]uint32:
		return decodeInto(p, r, n, false)
	case *[]uint16:
		return decodeInto(p, r, n, false)
	case *[]uint8:
		return decodeInto(p, r, n, false)
	case *[]bool:
		if r.DType != "bool" {
			return &DecodeError{Reason: fmt.Sprintf("the tool returned a %s array; decode it into a slice of that kind, not []bool", r.DType)}
		}
		out := make([]bool, n)
		for i, b := range r.Binary {
			out[i] = b != 0
		}
		*p = out
		return nil
	}
	js, err := r.arrayJSON(n)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(js, v); err != nil {
		return &DecodeError{Reason: fmt.Sprintf("%v (the tool returned a %s array of shape %v)", err, r.DType, r.Shape)}
	}
	return nil
}

// sameType reports whether T is the Go type of dtype, for a plain copy.
func sameType[T number](dtype string) bool {
	var z T
	switch any(z).(type) {
	case float64:
		return dtype == "float64"
	case float32:
		return dtype == "float32"
	case int64:
		return dtype == "int64"
	case int32:
		return dtype == "int32"
	case int16:
		return dtype == "int16"
	case int8:
		return dtype == "int8"
	case uint64:
		return dtype == "uint64"
	case uint32:
		return dtype == "uint32"
	case uint16:
		return dtype == "uint16"
	case uint8:
		return dtype == "uint8" || dtype == "bool"
	}
	return false
}

func decodeInto[T number](p *[]T, r *Result, n int, float bool) error {
	if n == 0 {
		*p = []T{}
		return nil
	}
	if littleEndian && sameType[T](r.DType) {
		var z T
		if uintptr(unsafe.Pointer(&r.Binary[0]))%unsafe.Alignof(z) == 0 {
			// No copy: the slice is Binary's memory (which the Result owns;
			// gRPC does not reuse it), as returning raw bytes would be.
			*p = unsafe.Slice((*T)(unsafe.Pointer(&r.Binary[0])), n)
			return nil
		}
		out := make([]T, n)
		copy(unsafe.Slice((*byte)(unsafe.Pointer(&out[0])), len(r.Binary)), r.Binary)
		*p = out
		return nil
	}
	out := make([]T, n)
	b := r.Binary
	isFloatSrc := r.DType == "float64" || r.DType == "float32"
	if isFloatSrc && !float {
		return &DecodeError{Reason: fmt.Sprintf("the tool returned a %s array; decode it into []float64 or []float32, not %T (that would drop fractions)", r.DType, out)}
	}
	for i := range out {
		var x T
		switch r.DType {
		case "float64":
			x = T(math.Float64frombits(binary.LittleEndian.Uint64(b[i*8:])))
		case "float32":
			x = T(math.Float32frombits(binary.LittleEndian.Uint32(b[i*4:])))
		default:
			iv, uv, signed := intAt(b, r.DType, i)
			if signed {
				x = T(iv)
				if !float && (int64(x) != iv || (iv < 0) != (x < 0)) {
					return overflow(r, out, i, strconv.FormatInt(iv, 10))
				}
			} else {
				x = T(uv)
				if !float && (uint64(x) != uv || x < 0) {
					return overflow(r, out, i, strconv.FormatUint(uv, 10))
				}
			}
		}
		out[i] = x
	}
	*p = out
	return nil
}

func overflow(r *Result, target any, i int, v string) error {
	return &DecodeError{Reason: fmt.Sprintf("element %d of the %s array (%s) does not fit %T; decode into a wider slice", i, r.DType, v, target)}
}

// intAt reads element i of an integer (or bool) array.
func intAt(b []byte, dtype string, i int) (int64, uint64, bool) {
	switch dtype {
	case "int64":
		return int64(binary.LittleEndian.Uint64(b[i*8:])), 0, true
	case "int32":
		return int64(int32(binary.LittleEndian.Uint32(b[i*4:]))), 0, true
	case "int16":
		return int64(int16(binary.LittleEndian.Uint16(b[i*2:]))), 0, true
	case "int8":
		return int64(int8(b[i])), 0, true
	case "uint64":
		return 0, binary.LittleEndian.Uint64(b[i*8:]), false
	case "uint32":
		return 0, uint64(binary.LittleEndian.Uint32(b[i*4:])), false
	case "uint16":
		return 0, uint64(binary.LittleEndian.Uint16(b[i*2:])), false
	default: // uint8, bool
		return 0, uint64(b[i]), false
	}
}

// arrayJSON is the array as nested JSON arrays following Shape (a
// 0-dimensional array is its one element).
func (r *Result) arrayJSON(n int) ([]byte, error) {
	buf := make([]byte, 0, n*8+16)
	elem := func(i int) {
		switch r.DType {
		case "float64":
			buf = appendFloat(buf, math.Float64frombits(binary.LittleEndian.Uint64(r.Binary[i*8:])), 64)
		case "float32":
			buf = appendFloat(buf, float64(math.Float32frombits(binary.LittleEndian.Uint32(r.Binary[i*4:]))), 32)
		case "bool":
			buf = strconv.AppendBool(buf, r.Binary[i] != 0)
		default:
			iv, uv, signed := intAt(r.Binary, r.DType, i)
			if signed {
				buf = strconv.AppendInt(buf, iv, 10)
			} else {
				buf = strconv.AppendUint(buf, uv, 10)
			}
		}
	}
	idx := 0
	var walk func(dim int)
	walk = func(dim int) {
		if dim == len(r.Shape) {
			elem(idx)
			idx++
			return
		}
		buf = append(buf, '[')
		for j := uint64(0); j < r.Shape[dim]; j++ {
			if j > 0 {
				buf = append(buf, ',')
			}
			walk(dim + 1)
		}
		buf = append(buf, ']')
	}
	if len(r.Shape) == 0 && n == 1 {
		elem(0)
		return buf, nil
	}
	walk(0)
	return buf, nil
}

// appendFloat writes f as JSON; NaN and ±Inf, which JSON lacks, become null.
func appendFloat(buf []byte, f float64, bits int) []byte {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return append(buf, "null"...)
	}
	return strconv.AppendFloat(buf, f, 'g', -1, bits)
}
