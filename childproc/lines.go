package childproc

import (
	"bufio"
	"fmt"
	"io"
)

// MaxLine bounds one line read from a child's stdout or stderr. Longer lines
// are cut: the first MaxLine bytes are kept, followed by a marker saying how
// many bytes were dropped. Reading always goes on, so a child printing a
// 2 MiB line never blocks on a full pipe.
const MaxLine = 64 << 10

// readLines calls fn for every line of r (without its newline) until r
// ends. It never stops early: a line over MaxLine bytes is cut, the rest of
// it read and discarded.
func readLines(r io.Reader, fn func(line string)) {
	br := bufio.NewReaderSize(r, 4096)
	var buf []byte
	dropped := 0
	for {
		chunk, err := br.ReadSlice('\n')
		complete := err == nil
		if complete {
			chunk = chunk[:len(chunk)-1]
		}
		if room := MaxLine - len(buf); room > 0 {
			buf = append(buf, chunk[:min(room, len(chunk))]...)
			dropped += len(chunk) - min(room, len(chunk))
		} else {
			dropped += len(chunk)
		}
		if complete || (err != nil && err != bufio.ErrBufferFull && (len(buf) > 0 || dropped > 0)) {
			fn(cut(buf, dropped))
			buf, dropped = buf[:0], 0
		}
		if err != nil && err != bufio.ErrBufferFull {
			return
		}
	}
}

func cut(line []byte, dropped int) string {
	if dropped == 0 {
		return string(line)
	}
	return fmt.Sprintf("%s… [line cut: %d more bytes dropped]", line, dropped)
}
