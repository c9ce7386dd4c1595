package jsonvalid

import (
	"encoding/json"
	"strconv"
	"strings"
	"testing"
)

// benchInputs are the argument shapes of issue 21's figures: a big string
// (worker.BenchmarkEncodeArgsLarge's shape), a list of floats, and a list of
// small records, at 100 KiB and 4 MiB.
func benchInputs() map[string][]byte {
	out := map[string][]byte{}
	for _, size := range []int{100 << 10, 4 << 20} {
		kib := strconv.Itoa(size>>10) + "KiB"
		out["string/"+kib] = []byte(`{"a":1,"b":2,"pad":"` + strings.Repeat("x", size) + `"}`)
		var nums, recs strings.Builder
		nums.WriteString(`{"v":[`)
		for i := 0; nums.Len() < size; i++ {
			nums.WriteString(strconv.FormatFloat(float64(i)*1.0137, 'g', -1, 64) + ",")
		}
		nums.WriteString(`0]}`)
		recs.WriteString(`{"rows":[`)
		for i := 0; recs.Len() < size; i++ {
			recs.WriteString(`{"id":` + strconv.Itoa(i) + `,"name":"item ` + strconv.Itoa(i) + `","ok":true,"tags":["a","b"]},`)
		}
		recs.WriteString(`{}]}`)
		out["floats/"+kib] = []byte(nums.String())
		out["records/"+kib] = []byte(recs.String())
	}
	return out
}

// BenchmarkValid against encoding/json.Valid, in MB/s:
//
//	go test -run '^$' -bench Valid -count 5 ./internal/jsonvalid/
func BenchmarkValid(b *testing.B) {
	for _, name := range []string{"string/100KiB", "string/4096KiB", "floats/100KiB", "floats/4096KiB", "records/100KiB", "records/4096KiB"} {
		in := benchInputs()[name]
		if !Valid(in) || !json.Valid(in) {
			b.Fatalf("%s is not valid JSON", name)
		}
		b.Run(name+"/jsonvalid", func(b *testing.B) {
			b.SetBytes(int64(len(in)))
			for range b.N {
				Valid(in)
			}
		})
		b.Run(name+"/encoding-json", func(b *testing.B) {
			b.SetBytes(int64(len(in)))
			for range b.N {
				json.Valid(in)
			}
		})
	}
}
