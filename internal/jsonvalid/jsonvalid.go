// Package jsonvalid reports whether bytes are one syntactically valid JSON
// value. It accepts exactly what encoding/json.Valid accepts — RFC 8259
// syntax, surrounding whitespace, at most 10,000 nested arrays and objects,
// and (like encoding/json) any bytes ≥ 0x20 inside strings, invalid UTF-8
// and unpaired \u surrogates included, because those are decoded to U+FFFD
// rather than refused — and the differential fuzz test FuzzValid holds it
// to that. It exists because the host validates every pre-encoded call
// argument before dispatch and encoding/json's validator runs at ~250 MB/s
// (issue 21): this one skips string bodies eight bytes at a time, keeps the
// nesting on a fixed bit stack (no recursion, no allocation) and never
// panics on any input.
package jsonvalid

import (
	"bytes"
	"encoding/binary"
)

// maxDepth is encoding/json's maxNestingDepth: deeper input is invalid
// there, so it is here.
const maxDepth = 10000

// Valid reports whether data is one valid JSON value, exactly as
// encoding/json.Valid does.
func Valid(data []byte) bool {
	// Bit d of the stack is 1 when the container open at depth d is an
	// object, 0 for an array: 157 words on the stack, never on the heap.
	var stack [(maxDepth + 63) / 64]uint64
	n := len(data)
	i, depth := 0, 0
value:
	i = skipSpace(data, i)
	if i >= n {
		return false
	}
	switch data[i] {
	case '{':
		if depth == maxDepth {
			return false
		}
		stack[depth>>6] |= 1 << (depth & 63)
		depth++
		if i = skipSpace(data, i+1); i < n && data[i] == '}' {
			i++
			depth--
			goto next
		}
		goto key
	case '[':
		if depth == maxDepth {
			return false
		}
		stack[depth>>6] &^= 1 << (depth & 63)
		depth++
		if i = skipSpace(data, i+1); i < n && data[i] == ']' {
			i++
			depth--
			goto next
		}
		goto value
	case '"':
		if i = skipString(data, i+1); i < 0 {
			return false
		}
	case 't':
		if i = literal(data, i, "true"); i < 0 {
			return false
		}
	case 'f':
		if i = literal(data, i, "false"); i < 0 {
			return false
		}
	case 'n':
		if i = literal(data, i, "null"); i < 0 {
			return false
		}
	default:
		if i = skipNumber(data, i); i < 0 {
			return false
		}
	}
next: // a value ended at i
	i = skipSpace(data, i)
	if depth == 0 {
		return i == n
	}
	if i >= n {
		return false
	}
	if d := depth - 1; stack[d>>6]&(1<<(d&63)) != 0 {
		switch data[i] {
		case ',':
			i = skipSpace(data, i+1)
			goto key
		case '}':
			i++
			depth--
			goto next
		}
		return false
	}
	switch data[i] {
	case ',':
		i++
		goto value
	case ']':
		i++
		depth--
		goto next
	}
	return false
key: // at i (past whitespace) an object key must start
	if i >= n || data[i] != '"' {
		return false
	}
	if i = skipString(data, i+1); i < 0 {
		return false
	}
	if i = skipSpace(data, i); i >= n || data[i] != ':' {
		return false
	}
	i++
	goto value
}

func skipSpace(data []byte, i int) int {
	for i < len(data) {
		switch data[i] {
		case ' ', '\t', '\n', '\r':
			i++
		default:
			return i
		}
	}
	return i
}

func literal(data []byte, i int, word string) int {
	if len(data)-i < len(word) || string(data[i:i+len(word)]) != word {
		return -1
	}
	return i + len(word)
}

const (
	ones  = 0x0101010101010101
	highs = 0x8080808080808080
)

// special reports (as a non-zero word) whether any of the 8 bytes of w is a
// control character (< 0x20), '"' or '\\': the bytes a string body cannot
// skip. Each term is the classic exact "has a zero/less-than byte" test,
// so the OR of them has no false negatives or positives for the word as a
// whole (which byte it was is left to the byte loop).
func special(w uint64) uint64 {
	less := (w - ones*0x20) &^ w
	quote := w ^ (ones * '"')
	quote = (quote - ones) &^ quote
	bslash := w ^ (ones * '\\')
	bslash = (bslash - ones) &^ bslash
	return (less | quote | bslash) & highs
}

// skipString returns the index just past the closing quote of the string
// whose body starts at i, or -1.
func skipString(data []byte, i int) int {
	n := len(data)
	for {
		// Four words per step: the OR of their tests lets the CPU overlap
		// them (~1.3× one word per step on long bodies, this VM).
		for run := 0; i+32 <= n; run++ {
			b := data[i : i+32 : i+32]
			if special(binary.LittleEndian.Uint64(b[:8]))|special(binary.LittleEndian.Uint64(b[8:16]))|
				special(binary.LittleEndian.Uint64(b[16:24]))|special(binary.LittleEndian.Uint64(b[24:])) != 0 {
				break
			}
			i += 32
			if run == 4 {
				if end := plainBody(data, i); end >= 0 {
					return end
				}
			}
		}
		for i+8 <= n && special(binary.LittleEndian.Uint64(data[i:])) == 0 {
			i += 8
		}
		for i < n && data[i] >= 0x20 && data[i] != '"' && data[i] != '\\' {
			i++
		}
		if i >= n {
			return -1
		}
		switch data[i] {
		case '"':
			return i + 1
		case '\\':
		default: // a control character
			return -1
		}
		if i++; i >= n {
			return -1
		}
		switch data[i] {
		case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
			i++
		case 'u':
			if n-i < 5 || !isHex(data[i+1]) || !isHex(data[i+2]) || !isHex(data[i+3]) || !isHex(data[i+4]) {
				return -1
			}
			i += 5
		default:
			return -1
		}
	}
}

// plainBody is the long string's shortcut: bytes.IndexByte (vectorised)
// finds the next quote and the next backslash, and one lean pass checks
// the span for control bytes. It returns the index past the closing quote
// when the body from i is plain up to it, else -1 (the caller goes on from
// i, byte-exact, so an escape or a stray byte costs one more pass at most).
func plainBody(data []byte, i int) int {
	q := bytes.IndexByte(data[i:], '"')
	if q < 0 || bytes.IndexByte(data[i:i+q], '\\') >= 0 || hasControl(data[i:i+q]) {
		return -1
	}
	return i + q + 1
}

// hasControl reports whether b holds a byte < 0x20.
func hasControl(b []byte) bool {
	const lim = ones * 0x20
	for len(b) >= 32 {
		w0, w1 := binary.LittleEndian.Uint64(b[:8]), binary.LittleEndian.Uint64(b[8:16])
		w2, w3 := binary.LittleEndian.Uint64(b[16:24]), binary.LittleEndian.Uint64(b[24:32])
		if ((w0-lim)&^w0|(w1-lim)&^w1|(w2-lim)&^w2|(w3-lim)&^w3)&highs != 0 {
			return true
		}
		b = b[32:]
	}
	for _, c := range b {
		if c < 0x20 {
			return true
		}
	}
	return false
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

// skipNumber returns the index just past the number starting at i, or -1.
// What follows it is the caller's to check (encoding/json refuses "01" and
// "1x" there too).
func skipNumber(data []byte, i int) int {
	n := len(data)
	if data[i] == '-' {
		if i++; i >= n {
			return -1
		}
	}
	switch c := data[i]; {
	case c == '0':
		i++
	case '1' <= c && c <= '9':
		i = skipDigits(data, i+1)
	default:
		return -1
	}
	if i < n && data[i] == '.' {
		if i++; i >= n || !isDigit(data[i]) {
			return -1
		}
		i = skipDigits(data, i+1)
	}
	if i < n && (data[i] == 'e' || data[i] == 'E') {
		if i++; i < n && (data[i] == '+' || data[i] == '-') {
			i++
		}
		if i >= n || !isDigit(data[i]) {
			return -1
		}
		i = skipDigits(data, i+1)
	}
	return i
}

func skipDigits(data []byte, i int) int {
	for i < len(data) && isDigit(data[i]) {
		i++
	}
	return i
}
