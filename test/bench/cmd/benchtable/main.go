// Command benchtable turns `go test -bench SideBySide -count K` output (on
// stdin) into the markdown table of docs/BENCHMARKS.md: the median of each
// metric over the K runs, and every row's calls/s and Python CPU relative to
// the go-plugin and grpc-sync rows with the same N and C. The ratios are
// paired: make bench-sidebyside runs every row once per round, so the i-th
// run of each row shares its round's machine load; a ratio is the median of
// the K per-round ratios (with their range for Python CPU), which a load
// change during the run moves far less than a ratio of medians.
package main

import (
	"bufio"
	"fmt"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

var line = regexp.MustCompile(`^BenchmarkSideBySide/(\S+?)(-\d+)?\s+\d+\s+(.*)$`)

func median(v []float64) float64 {
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// key is "N=1/C=8" of a name like "snakepit/N=1/cap=8/C=8".
func key(name string) string {
	var n, c string
	for _, p := range strings.Split(name, "/") {
		if strings.HasPrefix(p, "N=") {
			n = p
		}
		if strings.HasPrefix(p, "C=") {
			c = p
		}
	}
	return n + "/" + c
}

func main() {
	metrics := map[string]map[string][]float64{}
	var order []string
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		m := line.FindStringSubmatch(sc.Text())
		if m == nil {
			continue
		}
		name := m[1]
		if metrics[name] == nil {
			metrics[name] = map[string][]float64{}
			order = append(order, name)
		}
		f := strings.Fields(m[3])
		for i := 0; i+1 < len(f); i += 2 {
			v, err := strconv.ParseFloat(f[i], 64)
			if err == nil {
				metrics[name][f[i+1]] = append(metrics[name][f[i+1]], v)
			}
		}
	}
	med := func(name, metric string) float64 {
		v := metrics[name][metric]
		if len(v) == 0 {
			return 0
		}
		return median(v)
	}
	base := map[string]string{} // "impl|N/C" -> name
	for _, name := range order {
		base[strings.SplitN(name, "/", 2)[0]+"|"+key(name)] = name
	}
	// perRound: the per-round ratios of name's metric to impl's row with the
	// same N and C (nil when there is no such row or the runs do not pair).
	perRound := func(name, impl, metric string) []float64 {
		b, ok := base[impl+"|"+key(name)]
		if !ok {
			return nil
		}
		x, y := metrics[name][metric], metrics[b][metric]
		if len(x) == 0 || len(x) != len(y) {
			return nil
		}
		r := make([]float64, len(x))
		for i := range x {
			if y[i] == 0 {
				return nil
			}
			r[i] = x[i] / y[i]
		}
		return r
	}
	ratio := func(name, impl, metric string) string {
		r := perRound(name, impl, metric)
		if r == nil {
			return "–"
		}
		return fmt.Sprintf("%.2f×", median(r))
	}
	spread := func(name, impl, metric string) string {
		r := perRound(name, impl, metric)
		if r == nil {
			return "–"
		}
		s := append([]float64(nil), r...)
		sort.Float64s(s)
		return fmt.Sprintf("%.2f–%.2f", s[0], s[len(s)-1])
	}
	fmt.Println("| benchmark | runs | calls/s | Python CPU µs/call | Go CPU µs/call | calls/s vs go-plugin | calls/s vs grpc-sync | Python CPU vs grpc-sync | (range over rounds) |")
	fmt.Println("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
	for _, name := range order {
		fmt.Printf("| %s | %d | %.0f | %.0f | %.0f | %s | %s | %s | %s |\n", name, len(metrics[name]["calls/s"]),
			med(name, "calls/s"), med(name, "py-cpu-µs/call"), med(name, "go-cpu-µs/call"),
			ratio(name, "go-plugin", "calls/s"), ratio(name, "grpc-sync", "calls/s"), ratio(name, "grpc-sync", "py-cpu-µs/call"),
			spread(name, "grpc-sync", "py-cpu-µs/call"))
	}
	// Dynamic batching: the batch tool against its unbatched twin and
	// go-plugin, paired per round (rows batch-*).
	header := false
	for _, name := range order {
		if !strings.HasPrefix(name, "batch-snakepit/") {
			continue
		}
		if !header {
			fmt.Println()
			fmt.Println("| batch row | calls/s vs unbatched (range) | calls/s vs go-plugin (range) | latency (ns/op) vs unbatched (range) |")
			fmt.Println("|---|---:|---:|---:|")
			header = true
		}
		fmt.Printf("| %s | %s (%s) | %s (%s) | %s (%s) |\n", name,
			ratio(name, "batch-unbatched", "calls/s"), spread(name, "batch-unbatched", "calls/s"),
			ratio(name, "batch-go-plugin", "calls/s"), spread(name, "batch-go-plugin", "calls/s"),
			ratio(name, "batch-unbatched", "ns/op"), spread(name, "batch-unbatched", "ns/op"))
	}
}
