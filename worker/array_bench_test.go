package worker

import "testing"

// BenchmarkDecodeArray4MiB is the Go side of a 4 MiB float32 array result
// (docs/BENCHMARKS.md, "argument checks and typed arrays"): into its own
// element type (no copy) and into []float64 (a conversion per element).
func BenchmarkDecodeArray4MiB(b *testing.B) {
	const n = 1 << 20
	r := &Result{Binary: make([]byte, 4*n), DType: "float32", Shape: []uint64{n}}
	b.Run("float32", func(b *testing.B) {
		b.SetBytes(4 * n)
		for b.Loop() {
			var v []float32
			if err := r.Decode(&v); err != nil || len(v) != n {
				b.Fatal(err)
			}
		}
	})
	b.Run("float64", func(b *testing.B) {
		b.SetBytes(4 * n)
		for b.Loop() {
			var v []float64
			if err := r.Decode(&v); err != nil || len(v) != n {
				b.Fatal(err)
			}
		}
	})
}
