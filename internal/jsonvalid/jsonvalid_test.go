package jsonvalid

import (
	"encoding/json"
	"strings"
	"testing"
)

// cases are inputs whose verdict is pinned twice: by the want column and
// by encoding/json.Valid (the contract is "exactly what it accepts").
var cases = []struct {
	in   string
	want bool
}{
	{``, false}, {` `, false}, {`{}`, true}, {` {} `, true}, {"\t\n\r{}\r\n\t", true},
	{`{`, false}, {`}`, false}, {`{}}`, false}, {`{} {}`, false}, {`[]`, true}, {`[`, false},
	{`[1,]`, false}, {`[,1]`, false}, {`[1 2]`, false}, {`[1,2]`, true}, {`[ 1 , 2 ]`, true},
	{`{"a":1}`, true}, {`{"a":1,}`, false}, {`{"a" 1}`, false}, {`{"a":}`, false}, {`{a:1}`, false},
	{`{"a":1 "b":2}`, false}, {`{"a":[1,{"b":null}],"c":{"d":[]}}`, true}, {`{"a":1]`, false}, {`[1}`, false},
	{`{1:2}`, false}, {`{"a":1,"a":2}`, true}, {`{,}`, false}, {`{"a":1,,"b":2}`, false},
	{`0`, true}, {`-0`, true}, {`01`, false}, {`-`, false}, {`-a`, false}, {`1.`, false}, {`1.5`, true},
	{`.5`, false}, {`1e5`, true}, {`1E+5`, true}, {`1e-5`, true}, {`1e`, false}, {`1e+`, false},
	{`-1.25e-10`, true}, {`+1`, false}, {`1x`, false}, {`0x10`, false}, {`1.e5`, false}, {`00`, false},
	{`true`, true}, {`false`, true}, {`null`, true}, {`tru`, false}, {`truex`, false}, {`nul`, false},
	{`True`, false}, {`[true,false,null]`, true}, {`NaN`, false}, {`Infinity`, false},
	{`""`, true}, {`"abc"`, true}, {`"`, false}, {`"abc`, false}, {`"a\"b"`, true}, {`"a\\"`, true},
	{`"\/\b\f\n\r\t"`, true}, {`"\x"`, false}, {`"\'"`, false}, {`"\u00e9"`, true}, {`"\u00E9"`, true},
	{`"\u00g9"`, false}, {`"\u00e"`, false}, {`"\u"`, false}, {`"\`, false}, {`"\ud800"`, true},
	{`"\udc00\ud800"`, true}, {"\"a\x00b\"", false}, {"\"a\x1fb\"", false}, {"\"a\tb\"", false},
	{"\"a\x7fb\"", true}, {"\"\xff\xfe\"", true}, {"\"\xc3\xa9\"", true}, {"\"\xed\xa0\x80\"", true},
	{"\xef\xbb\xbf{}", false}, {"{}\x00", false}, {"\"12345678\\n12345678\"", true},
	{"\"1234567\"\"", false}, {"\"123456789012345\x01\"", false}, {`"12345678"`, true},
	{`[[[[[[[[]]]]]]]]`, true}, {`[[[[[[[[]]]]]]]`, false}, {`[{"a":[{"b":[{}]}]}]`, true},
}

func TestValidTable(t *testing.T) {
	for _, c := range cases {
		if got := Valid([]byte(c.in)); got != c.want {
			t.Errorf("Valid(%q) = %v, want %v", c.in, got, c.want)
		}
		if std := json.Valid([]byte(c.in)); std != c.want {
			t.Errorf("encoding/json.Valid(%q) = %v: the table is wrong", c.in, std)
		}
	}
}

// TestValidDepth: encoding/json refuses more than 10,000 nested containers;
// so does Valid, for arrays, objects and a mix, at the boundary.
func TestValidDepth(t *testing.T) {
	for _, depth := range []int{63, 64, 65, 9999, maxDepth, maxDepth + 1, 3 * maxDepth} {
		arr := strings.Repeat("[", depth) + strings.Repeat("]", depth)
		obj := strings.Repeat(`{"k":`, depth-1) + "{}" + strings.Repeat("}", depth-1)
		mix := strings.Repeat(`[{"k":`, depth/2) + "0" + strings.Repeat("}]", depth/2)
		for _, in := range []string{arr, obj, mix} {
			got, want := Valid([]byte(in)), json.Valid([]byte(in))
			if got != want {
				t.Errorf("depth %d (%.12s…): Valid = %v, encoding/json = %v", depth, in, got, want)
			}
			if want != (depth <= maxDepth) && in != mix {
				t.Errorf("depth %d: encoding/json says %v: maxDepth is not its limit", depth, want)
			}
		}
	}
}

// TestValidNoAllocation: the call path runs it on every pre-encoded
// argument, so it must not allocate, whatever the input.
func TestValidNoAllocation(t *testing.T) {
	deep := []byte(strings.Repeat("[", 5000) + strings.Repeat("]", 5000))
	big := []byte(`{"a":"` + strings.Repeat("xé\\n", 1000) + `","b":[1,2.5e3,true,null]}`)
	for _, in := range [][]byte{deep, big, []byte("{")} {
		if n := testing.AllocsPerRun(20, func() { Valid(in) }); n != 0 {
			t.Errorf("Valid(%.10q…) allocates %v times", in, n)
		}
	}
}

// TestSpecialEveryPosition: the 8-byte skip must notice a stop byte in any
// lane and must not stop on any other byte (including ≥ 0x80).
func TestSpecialEveryPosition(t *testing.T) {
	for b := 0; b < 256; b++ {
		stop := b < 0x20 || b == '"' || b == '\\'
		for lane := 0; lane < 8; lane++ {
			buf := []byte("aaaaaaaa")
			buf[lane] = byte(b)
			w := uint64(0)
			for k := 7; k >= 0; k-- {
				w = w<<8 | uint64(buf[k])
			}
			if got := special(w) != 0; got != stop {
				t.Fatalf("byte %#x in lane %d: special = %v, want %v", b, lane, got, stop)
			}
		}
	}
}

// FuzzValid is the differential proof: Valid and encoding/json.Valid agree
// on every input. `make fuzz-jsonvalid` runs it for a minute; plain
// `go test` runs the seeds.
func FuzzValid(f *testing.F) {
	for _, c := range cases {
		f.Add([]byte(c.in))
	}
	for _, s := range []string{
		`{"a":1,"b":2,"pad":"xxxxxxxxxxxxxxxxxxxxxxxx"}`,
		`{"s":"\u00e9\ud83d\ude00 \"quoted\" \\ \/","n":[-0.0,1e308,-1E-308,123456789012345678901234567890]}`,
		`[{"k":[{"k":[{"k":[]}]}]},{"":""}]`, "  \n[\t1 ,\r2 ]\n", `{"a":"12345678\u0041234567\"8"}`,
		"\"\x80\xbf\xc0\xc1\xf5\xff\"", `[1,2,3,]`, `{"a":1}x`, `"abcdefg\`,
		`{"long":"` + strings.Repeat("0123456789", 25) + `\n` + strings.Repeat("z", 40) + `","x":"` + strings.Repeat("y", 300) + `"}`,
		`["` + strings.Repeat("q", 200) + "\x05" + `"]`, `["` + strings.Repeat("q", 200),
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if got, want := Valid(data), json.Valid(data); got != want {
			t.Fatalf("Valid(%q) = %v, encoding/json.Valid = %v", data, got, want)
		}
	})
}

// TestStringStopAnyOffset: a quote, backslash escape or control byte at any
// offset of a long string body is seen by the 32- and 8-byte skips and by
// the long-body shortcut (plainBody, after 160 plain bytes).
func TestStringStopAnyOffset(t *testing.T) {
	for _, stop := range []string{`"`, `\n`, `\u0041`, `\q`, "\x01", "\x1f", `\`, "\xff"} {
		for at := 0; at < 420; at++ {
			for tail := 0; tail < 40; tail += 13 {
				in := []byte(`["` + strings.Repeat("a", at) + stop + strings.Repeat("b", tail) + `"]`)
				if got, want := Valid(in), json.Valid(in); got != want {
					t.Fatalf("Valid(%q) = %v, encoding/json.Valid = %v", in, got, want)
				}
			}
		}
	}
}
