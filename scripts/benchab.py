#!/usr/bin/env python3
"""Interleaved A/B runs of Go test binaries on a shared machine.

  benchab.py run ROUNDS BENCHTIME BENCH[,BENCH...] BIN [BIN...] > runs.txt
  benchab.py summary runs.txt [MAX_OTHERS]

run: ROUNDS rounds; in each, every binary (built with `go test -c`) runs
every benchmark once (-test.benchtime BENCHTIME, -test.count 1), so load
changes hit all of them alike. Each run is logged with how much of the
machine's CPU other processes used meanwhile (/proc/stat minus the run's
own rusage), so the rounds taken while the machine was busy can be left out.

summary: per binary and benchmark, the median (min-max) ns/op of the runs
whose other-process share was <= MAX_OTHERS (default 1: all), and, when
both BenchmarkExecute and BenchmarkExecuteStream ran, the stream's ratio to
the same binary's Execute run just before it. Linux only (/proc/stat).
"""
import collections
import os
import re
import resource
import statistics
import subprocess
import sys


def cpu_ticks() -> tuple[int, int]:
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:9]]
    busy = v[0] + v[1] + v[2] + v[5] + v[6] + v[7]
    return busy, sum(v)


def run(rounds: int, benchtime: str, benches: list[str], bins: list[str]) -> None:
    hz = os.sysconf("SC_CLK_TCK")
    for _ in range(rounds):
        for b in bins:
            for bench in benches:
                r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
                b0, t0 = cpu_ticks()
                out = subprocess.run(
                    [b, "-test.run", "^$", "-test.bench", f"^{bench}$", "-test.benchtime", benchtime,
                     "-test.count", "1", "-test.benchmem"],
                    capture_output=True, text=True, check=True).stdout
                b1, t1 = cpu_ticks()
                r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
                ours = (r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime) * hz
                others = max(0.0, (b1 - b0) - ours) / max(1, t1 - t0)
                m = re.search(r"^(Benchmark\S+)\s+\d+\s+([\d.]+) ns/op\s+(\d+) B/op\s+(\d+) allocs/op", out, re.M)
                if m is None:
                    sys.exit(f"no result from {b} {bench}:\n{out}")
                print(os.path.basename(b), m.group(1), m.group(2), m.group(3), m.group(4), f"{others:.2f}", flush=True)


def summary(path: str, max_others: float) -> None:
    by: dict[tuple[str, str], list[float]] = collections.defaultdict(list)
    mem: dict[tuple[str, str], str] = {}
    ratio: dict[str, list[float]] = collections.defaultdict(list)
    last: dict[str, float] = {}
    with open(path) as f:
        for line in f:
            b, bench, ns, nbytes, allocs, others = line.split()
            if float(others) > max_others:
                last.pop(b, None)
                continue
            by[(b, bench)].append(float(ns))
            mem[(b, bench)] = f"{nbytes} B / {allocs} allocs"
            name = bench.rsplit("-", 1)[0]
            if name == "BenchmarkExecute":
                last[b] = float(ns)
            elif name == "BenchmarkExecuteStream" and b in last:
                ratio[b].append(float(ns) / last.pop(b))
    for k in sorted(by):
        v = by[k]
        print(f"{k[0]:12} {k[1]:34} n={len(v):3} median {statistics.median(v):7.0f} ({min(v):.0f}-{max(v):.0f})  {mem[k]}")
    for b in sorted(ratio):
        v = ratio[b]
        print(f"{b:12} stream/execute per round n={len(v):3} median {statistics.median(v):.2f} ({min(v):.2f}-{max(v):.2f})")


def main() -> None:
    a = sys.argv[1:]
    if len(a) >= 5 and a[0] == "run":
        run(int(a[1]), a[2], a[3].split(","), a[4:])
    elif len(a) in (2, 3) and a[0] == "summary":
        summary(a[1], float(a[2]) if len(a) == 3 else 1.0)
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
