"""A snakepit worker's speed, page faults and RSS under result workloads of
a few MiB, for judging its malloc thresholds (python/snakepit_bridge/_malloc.py;
docs/BENCHMARKS.md). Run from test/bench with the Python that has grpcio and
numpy, once per setting:

    /usr/bin/python3 malloc_rss.py                              # the worker's own thresholds
    SNAKEPIT_MALLOC_TUNE=0 /usr/bin/python3 malloc_rss.py       # glibc's dynamic ones
    MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=67108864 /usr/bin/python3 malloc_rss.py

(an environment that sets MALLOC_* is left to glibc by the worker). The
client is a Python grpc stub, so ms/call is mostly the client's; the
worker's CPU, faults and RSS are the figures.
"""

import json, os, subprocess, sys, threading, time

HERE = os.path.dirname(os.path.abspath(__file__))
PY = os.path.join(os.path.dirname(os.path.dirname(HERE)), "python")
sys.path.insert(0, PY)
import grpc
from snakepit_bridge.pb import snakepit_pb2 as pb, snakepit_pb2_grpc as pbg
env = dict(os.environ, PYTHONPATH=PY + os.pathsep + HERE, SNAKEPIT_LOG_LEVEL="WARNING", SNAKEPIT_MAX_MESSAGE_BYTES=str(128 << 20))
cmd = [sys.executable, "-m", "snakepit_bridge.server", "--adapter", "bench_adapter.BenchAdapter", "--port", "0", "--max-workers", "8"]
p = subprocess.Popen(cmd, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
def status():
    d = {}
    for l in open(f"/proc/{p.pid}/status"):
        k, _, v = l.partition(":")
        if k in ("VmRSS", "VmHWM"): d[k] = int(v.split()[0]) // 1024
    f = open(f"/proc/{p.pid}/stat").read().rsplit(")", 1)[1].split()
    d["flt"] = int(f[7]); d["cpu"] = int(f[11]) + int(f[12])
    return d
try:
    line = p.stdout.readline().decode()
    ch = grpc.insecure_channel(line.split()[3], options=[("grpc.max_receive_message_length", 256 << 20)])
    stub = pbg.WorkerServiceStub(ch)
    def call(tool, n):
        r = stub.ExecuteTool(pb.ExecuteToolRequest(tool_name=tool, args_json=json.dumps({"n": n}).encode()), timeout=120)
        assert not r.HasField("error"), r.error
    call("blob", 10)
    s = status(); print(f"start: RSS {s['VmRSS']} MiB")
    call("array", 10)
    s = status(); print(f"numpy loaded: RSS {s['VmRSS']} MiB")
    for label, tool, n, conc, reps in (("4 MiB seq", "array", 1 << 20, 1, 20), ("4 MiB x8 conc", "array", 1 << 20, 8, 10),
                                       ("8 MiB seq", "array", 2 << 20, 1, 10), ("24 MiB seq", "array", 6 << 20, 1, 4), ("4 MiB bytes seq", "blob", 4 << 20, 1, 20)):
        s0 = status(); t0 = time.perf_counter()
        ths = [threading.Thread(target=lambda: [call(tool, n) for _ in range(reps)]) for _ in range(conc)]
        [t.start() for t in ths]; [t.join() for t in ths]
        dt = time.perf_counter() - t0; calls = conc * reps
        time.sleep(1.0); s1 = status()
        print(f"{label}: {dt/calls*1e3:.1f} ms/call, {(s1['cpu']-s0['cpu'])*10/calls:.1f} cpu ms/call, {(s1['flt']-s0['flt'])/calls:.0f} faults/call; idle RSS after {s1['VmRSS']} MiB, peak {s1['VmHWM']} MiB")
finally:
    p.stdin.close(); p.terminate(); p.wait(10)
