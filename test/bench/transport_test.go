package bench

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// BenchmarkTransport is issue 21's local-transport measure: the trivial
// call from a raw grpc-go client to the minimal servicer over loopback TCP
// against a Unix domain socket, N = 2 processes, C = 16 callers. The
// figure that matters is Go + Python CPU per call (go-cpu-µs/call +
// py-cpu-µs/call); the transport's work per call is the same whichever
// servicer is behind it. Rounds interleaved:
//
//	go test -c -o /tmp/bench.test . && for i in 1 2 3 4 5; do /tmp/bench.test -test.run '^$' -test.bench Transport -test.benchtime 3s; done
func BenchmarkTransport(b *testing.B) {
	const n, c = 2, 16
	for _, kind := range []string{"tcp", "unix"} {
		b.Run(fmt.Sprintf("%s/N=%d", kind, n), func(b *testing.B) {
			dir := b.TempDir()
			var i int
			start := func(tb testing.TB, threads int) (*exec.Cmd, io.Closer, string) {
				if kind == "tcp" {
					return startServicer(tb, threads)
				}
				i++
				return startUnixServicer(tb, threads, filepath.Join(dir, "s"+strconv.Itoa(i)+".sock"))
			}
			t := newRaw(b, n, 8, start)
			defer t.close()
			drive(b, t, c, 300)
			b.Run(fmt.Sprintf("C=%d", c), func(b *testing.B) { measure(b, t, c) })
		})
	}
}

func startUnixServicer(tb testing.TB, threads int, sock string) (*exec.Cmd, io.Closer, string) {
	cmd := exec.Command(python(tb), "minimal_servicer.py")
	cmd.Env = append(os.Environ(), "PYTHONPATH="+pythonPath(tb), "BENCH_WATCH_STDIN=1",
		"BENCH_THREADS="+strconv.Itoa(threads), "BENCH_UNIX="+sock)
	return startProc(tb, cmd, func(line string) string {
		parts := strings.Split(strings.TrimSpace(line), "|")
		if len(parts) != 5 || parts[2] != "unix" {
			return ""
		}
		return "unix:" + parts[3]
	})
}
