"""The worker as a real process: handshake, calls, host death, signals, exit codes."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import uuid

import grpc
import pytest

from conftest import PYTHON_DIR, TESTS_DIR, environ_has, kill_group_if_alive, pid_gone, read_line, wait_for
from snakepit_bridge.context import TOKEN_METADATA_KEY
from snakepit_bridge.pb import snakepit_pb2 as pb
from snakepit_bridge.pb import snakepit_pb2_grpc as pb_grpc

READY_RE = re.compile(rb"^SNAKEPIT_READY 1 tcp 127\.0\.0\.1:(\d+)( [a-z]+=\d+)*\n$")
SHOWCASE = "snakepit_bridge.examples.showcase.ShowcaseAdapter"


class Worker:
    """One worker subprocess in its own session; always cleaned up by the fixture."""

    def __init__(self, adapter=SHOWCASE, extra_env=None, wait_ready=True, popen_kw=None):
        self.run_id = "pytest-" + uuid.uuid4().hex[:12]
        self.token = uuid.uuid4().hex
        self.stderr_file = tempfile.TemporaryFile()
        env = dict(os.environ)
        env.update(
            PYTHONPATH=os.pathsep.join([PYTHON_DIR, TESTS_DIR]),
            SNAKEPIT_TOKEN=self.token,
            SNAKEPIT_RUN_ID=self.run_id,
            PYTHONUNBUFFERED="1",
        )
        env.pop("SNAKEPIT_TEST_IGNORE_HOST_DEATH", None)
        env.update(extra_env or {})
        self.grandchildren = []
        self.proc = subprocess.Popen(
            [
                sys.executable, "-m", "snakepit_bridge.server",
                "--adapter", adapter, "--port", "0",
                "--bridge-address", "127.0.0.1:1",
                "--worker-id", "w-e2e", "--snakepit-run-id", self.run_id,
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.stderr_file,
            bufsize=0,
            start_new_session=True,
            env=env,
            **(popen_kw or {}),
        )
        self.buf = bytearray()
        self.channel = None
        if wait_ready:
            line = read_line(self.proc.stdout.fileno(), 15, self.buf)
            m = READY_RE.match(line)
            assert m, f"bad handshake line {line!r}; stderr: {self.stderr()}"
            self.ready_line = line
            self.port = int(m.group(1))
            self.channel = grpc.insecure_channel(f"127.0.0.1:{self.port}")
            self.stub = pb_grpc.WorkerServiceStub(self.channel)

    @property
    def md(self):
        return ((TOKEN_METADATA_KEY, self.token),)

    def call(self, tool, args=None, timeout=10, **kw):
        resp = self.stub.ExecuteTool(
            pb.ExecuteToolRequest(tool_name=tool, args_json=json.dumps(args or {}).encode(), **kw),
            metadata=self.md,
            timeout=timeout,
        )
        assert not resp.HasField("error"), resp.error
        return json.loads(resp.result.json) if resp.result.WhichOneof("value") == "json" else resp.result.binary

    def stderr(self) -> str:
        self.stderr_file.seek(0)
        return self.stderr_file.read().decode(errors="replace")

    def wait_exit(self, timeout):
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"worker did not exit within {timeout}s; stderr: {self.stderr()}")

    def close(self):
        if self.channel is not None:
            self.channel.close()
        kill_group_if_alive(self.proc)
        for pid in self.grandchildren:
            # Only signal a pid that still proves it is ours (our run id).
            if not pid_gone(pid) and environ_has(pid, f"SNAKEPIT_RUN_ID={self.run_id}"):
                os.kill(pid, signal.SIGKILL)
        for f in (self.proc.stdin, self.proc.stdout):
            if f:
                try:
                    f.close()
                except OSError:
                    pass
        self.stderr_file.close()


@pytest.fixture
def start_worker():
    workers = []

    def start(**kw):
        w = Worker(**kw)
        workers.append(w)
        return w

    yield start
    for w in workers:
        w.close()


def test_handshake_reports_prefetch_only_to_a_host_that_reads_it(start_worker):
    # An older host parses four fields (five with capacity=): the field is
    # there only when the host's environment says it reads it.
    assert start_worker().ready_line.split()[4:] == []
    told = start_worker(extra_env={"SNAKEPIT_HANDSHAKE_PREFETCH": "1", "SNAKEPIT_WORKER_THREADS": "3"})
    assert told.ready_line.split()[4:] == [b"prefetch=12"]  # PREFETCH_PER_SLOT calls per slot


def test_handshake_calls_and_stdin_eof(start_worker):
    w = start_worker()
    ping = w.stub.Ping(pb.PingRequest(message="hi"), metadata=w.md, timeout=5)
    assert ping.message == "hi" and ping.pid == w.proc.pid and ping.worker_id == "w-e2e"

    d = w.stub.DescribeTools(pb.DescribeToolsRequest(), metadata=w.md, timeout=5)
    assert d.adapter == SHOWCASE and {"ping", "stream_count", "hang"} <= {t.name for t in d.tools}

    assert w.call("ping") == "pong"
    assert w.call("add", {"a": 2, "b": 3}) == 5
    assert w.call("add", {"a": 0.5, "b": 1}) == 1.5
    assert w.call("echo", {"x": [1, {"y": None}]}) == {"x": [1, {"y": None}]}
    assert w.call("none") is None
    assert w.call("bytes_echo", binary_args={"data": b"\x00\xff"}) == b"\x00\xff"
    info = w.call("worker_info")
    assert info["pid"] == w.proc.pid and info["run_id"] == w.run_id and info["worker_id"] == "w-e2e"
    assert info["adapter"] == SHOWCASE

    resp = w.stub.ExecuteTool(pb.ExecuteToolRequest(tool_name="fail", args_json=b'{"message": "x"}'), metadata=w.md, timeout=5)
    assert resp.error.type == "ValueError" and resp.error.message == "x" and "raise ValueError" in resp.error.traceback
    resp = w.stub.ExecuteTool(pb.ExecuteToolRequest(tool_name="bad_result"), metadata=w.md, timeout=5)
    assert resp.error.type == "SerializationError" and "'lock'" in resp.error.message

    chunks = list(w.stub.ExecuteStreamingTool(
        pb.ExecuteToolRequest(tool_name="stream_count", args_json=b'{"n": 4}'), metadata=w.md, timeout=5))
    assert [json.loads(c.data.json) for c in chunks[:-1]] == [{"i": i} for i in range(1, 5)]
    assert [c.seq for c in chunks[:-1]] == [1, 2, 3, 4] and chunks[-1].is_final

    assert w.call("session_counter", session_id="a")["count"] == 1
    assert w.call("session_counter", session_id="a")["count"] == 2
    assert w.call("session_counter", session_id="b")["count"] == 1
    assert w.call("counters")["calls"] >= 10  # one adapter instance for all calls

    with pytest.raises(grpc.RpcError) as ei:
        w.stub.Ping(pb.PingRequest(), timeout=5)
    assert ei.value.code() == grpc.StatusCode.UNAUTHENTICATED

    child = w.call("spawn_child", {"seconds": 60})["pid"]
    w.grandchildren.append(child)
    # /proc/PID/environ can read empty for a moment around the child's exec.
    wait_for(lambda: environ_has(child, f"SNAKEPIT_RUN_ID={w.run_id}"), timeout=5, what="the child's environment")
    # The token is not passed on to processes the tools start.
    with open(f"/proc/{child}/environ", "rb") as f:
        assert b"SNAKEPIT_TOKEN=" not in f.read()

    t0 = time.monotonic()
    w.proc.stdin.close()
    assert w.wait_exit(2) == 0
    assert time.monotonic() - t0 < 2
    wait_for(lambda: pid_gone(child), timeout=2, what="grandchild killed")
    assert "stdin reached EOF" in w.stderr()
    # Nothing but the handshake line ever reached stdout.
    assert bytes(w.buf) + w.proc.stdout.read() == b""
    assert w.token not in w.stderr()


def test_sigterm_exits_zero_with_call_in_flight(start_worker):
    w = start_worker(extra_env={"SNAKEPIT_STOP_GRACE_S": "0.3"})
    child = w.call("spawn_child", {"seconds": 60})["pid"]
    w.grandchildren.append(child)
    fut = w.stub.ExecuteTool.future(
        pb.ExecuteToolRequest(tool_name="sleep", args_json=b'{"ms": 20000}'), metadata=w.md, timeout=30
    )
    hang = w.stub.ExecuteTool.future(pb.ExecuteToolRequest(tool_name="hang"), metadata=w.md, timeout=30)
    wait_for(lambda: w.call("counters")["calls"] >= 4, what="both calls running")
    t0 = time.monotonic()
    w.proc.send_signal(signal.SIGTERM)
    assert w.wait_exit(5) == 0
    assert time.monotonic() - t0 < 3
    for f in (fut, hang):
        with pytest.raises(grpc.RpcError):
            f.result(5)
    wait_for(lambda: pid_gone(child), timeout=2, what="grandchild killed")
    err = w.stderr()
    assert "received SIGTERM" in err and "showcase teardown" in err


def test_sigint_idle_exits_zero(start_worker):
    w = start_worker()
    w.proc.send_signal(signal.SIGINT)
    assert w.wait_exit(5) == 0


def test_stream_cancel_and_hang_cancel_are_observed(start_worker):
    w = start_worker()
    it = w.stub.ExecuteStreamingTool(
        pb.ExecuteToolRequest(tool_name="stream_count", args_json=b'{"n": 100000, "delay_ms": 5}'),
        metadata=w.md,
    )
    assert next(it).seq == 1 and next(it).seq == 2
    it.cancel()
    wait_for(lambda: w.call("counters")["cancelled_streams"] == 1, what="stream cancel observed")
    with pytest.raises(grpc.RpcError) as ei:
        w.stub.ExecuteTool(pb.ExecuteToolRequest(tool_name="hang"), metadata=w.md, timeout=0.3)
    assert ei.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    wait_for(lambda: w.call("counters")["cancelled_hangs"] == 1, what="hang cancel observed")


def test_crash_exit_code(start_worker):
    w = start_worker()
    with pytest.raises(grpc.RpcError):
        w.call("crash", {"code": 7})
    assert w.wait_exit(5) == 7


def test_bad_adapter_exits_3(start_worker):
    w = start_worker(adapter="no_such_module.Adapter", wait_ready=False)
    assert w.wait_exit(10) == 3
    err = w.stderr()
    assert "snakepit: cannot load adapter 'no_such_module.Adapter': ModuleNotFoundError: No module named 'no_such_module'" in err
    assert w.proc.stdout.read() == b""


def test_missing_class_and_broken_setup_exit_3(start_worker):
    w = start_worker(adapter="noisy_adapter.Nope", wait_ready=False)
    assert w.wait_exit(10) == 3
    assert "AttributeError" in w.stderr() and "Nope" in w.stderr()
    w = start_worker(adapter="noisy_adapter.BrokenSetup", wait_ready=False)
    assert w.wait_exit(10) == 3
    assert "RuntimeError: model file missing" in w.stderr()
    w = start_worker(adapter="async_adapter.BadFlavour", wait_ready=False)
    assert w.wait_exit(10) == 3
    assert "snakepit_server = 'threads': use 'sync' or 'aio'" in w.stderr()


def test_stdout_carries_only_the_handshake(start_worker):
    w = start_worker(adapter="noisy_adapter.NoisyAdapter")
    assert w.call("shout") == "done"
    w.proc.stdin.close()
    assert w.wait_exit(2) == 0
    assert bytes(w.buf) + w.proc.stdout.read() == b""
    err = w.stderr()
    for text in ("print at import", "print in setup", "raw write to fd 1", "print in a tool", "child process stdout"):
        assert f"noisy: {text}" in err


def test_sigterm_during_setup_exits_zero(start_worker):
    w = start_worker(adapter="noisy_adapter.SlowSetup", wait_ready=False)
    wait_for(lambda: "slow setup started" in w.stderr(), timeout=10, what="setup to start")
    w.proc.send_signal(signal.SIGTERM)
    assert w.wait_exit(2) == 0
    assert w.proc.stdout.read() == b""  # never became ready


def test_stdin_eof_exits_even_with_the_event_loop_blocked(start_worker):
    w = start_worker(adapter="noisy_adapter.LoopBlocker")
    fut = w.stub.ExecuteTool.future(pb.ExecuteToolRequest(tool_name="block_loop"), metadata=w.md, timeout=30)
    wait_for(lambda: "loop blocked" in w.stderr(), timeout=10, what="the tool to block the loop")
    w.proc.stdin.close()
    assert w.wait_exit(2) == 0
    with pytest.raises(grpc.RpcError):
        fut.result(5)


def test_textstats_loads_once(start_worker):
    w = start_worker(adapter="snakepit_bridge.examples.textstats.TextStatsAdapter")
    for _ in range(3):
        r = w.call("analyze", {"text": "Great tools, no crashes. The pool is great!"})
    assert r["top"][0] == {"word": "great", "count": 2} and r["label"] == "positive"
    info = w.call("model_info")
    assert info["load_count"] == 1 and info["process_load_count"] == 1 and info["analyze_calls"] == 3


def test_parent_death_exits(tmp_path):
    """The worker's parent exits while stdin stays open: the ppid watcher must fire."""
    rfd, wfd = os.pipe()
    run_id = "pytest-" + uuid.uuid4().hex[:12]
    launcher = (
        "import subprocess, sys, os\n"
        "p = subprocess.Popen(sys.argv[1:], stdin=int(os.environ['W_STDIN']), pass_fds=[int(os.environ['W_STDIN'])], "
        "stdout=subprocess.PIPE, start_new_session=True)\n"
        "line = p.stdout.readline()\n"
        "sys.stdout.write(str(p.pid) + ' ' + line.decode())\n"
        "sys.stdout.flush()\n"
    )
    env = dict(os.environ, PYTHONPATH=PYTHON_DIR, SNAKEPIT_RUN_ID=run_id, W_STDIN=str(rfd))
    env.pop("SNAKEPIT_TEST_IGNORE_HOST_DEATH", None)
    env.pop("SNAKEPIT_TOKEN", None)
    middle = subprocess.Popen(
        [sys.executable, "-c", launcher, sys.executable, "-m", "snakepit_bridge.server",
         "--adapter", SHOWCASE, "--snakepit-run-id", run_id, "--worker-id", "w-orphan"],
        stdout=subprocess.PIPE, pass_fds=[rfd], env=env, start_new_session=True,
    )
    os.close(rfd)
    worker_pid = None
    try:
        out, _ = middle.communicate(timeout=15)
        worker_pid = int(out.split()[0])
        assert b"SNAKEPIT_READY 1 tcp 127.0.0.1:" in out
        # The launcher is gone, our write end of stdin is still open: only the ppid changed.
        wait_for(lambda: pid_gone(worker_pid), timeout=2, what="orphaned worker exit")
    finally:
        os.close(wfd)
        if worker_pid and not pid_gone(worker_pid) and environ_has(worker_pid, f"SNAKEPIT_RUN_ID={run_id}"):
            os.kill(worker_pid, signal.SIGKILL)
        if middle.poll() is None:
            middle.kill()
            middle.wait(5)


def test_ignore_host_death_knob(start_worker):
    w = start_worker(extra_env={"SNAKEPIT_TEST_IGNORE_HOST_DEATH": "1"})
    w.proc.stdin.close()
    # A negative check needs a window: without the knob the exit takes
    # milliseconds, so half a second of survival shows EOF was ignored.
    with pytest.raises(AssertionError):
        wait_for(lambda: w.proc.poll() is not None, timeout=0.5, what="exit")
    assert w.call("ping", timeout=5) == "pong"  # a leftover on purpose; the fixture kills it
    assert "test-only" in w.stderr()


@pytest.mark.parametrize(
    "adapter,env,flavour",
    [
        (SHOWCASE, {}, "grpcio sync server"),
        (SHOWCASE, {"SNAKEPIT_SERVER": "aio"}, "grpc.aio server"),
        ("async_adapter.AsyncAdapter", {}, "grpc.aio server"),
        ("async_adapter.AsyncAdapter", {"SNAKEPIT_SERVER": "sync"}, "grpcio sync server"),
        ("async_adapter.DeclaredAioShowcase", {}, "grpc.aio server"),
        ("async_adapter.DeclaredAioShowcase", {"SNAKEPIT_SERVER": "sync"}, "grpcio sync server"),
    ],
)
def test_server_flavours_keep_the_contract(start_worker, adapter, env, flavour):
    w = start_worker(adapter=adapter, extra_env=dict(env, SNAKEPIT_STOP_GRACE_S="0.3"))
    assert w.stub.Ping(pb.PingRequest(message="f"), metadata=w.md, timeout=5).message == "f"
    assert w.call("add", {"a": 1, "b": 2}) == 3
    tool = "count" if adapter == "async_adapter.AsyncAdapter" else "stream_count"
    chunks = list(w.stub.ExecuteStreamingTool(
        pb.ExecuteToolRequest(tool_name=tool, args_json=b'{"n": 3}'), metadata=w.md, timeout=5))
    assert [json.loads(c.data.json) for c in chunks[:-1]] == [{"i": i} for i in (1, 2, 3)] and chunks[-1].is_final
    with pytest.raises(grpc.RpcError) as ei:
        w.stub.Ping(pb.PingRequest(), timeout=5)
    assert ei.value.code() == grpc.StatusCode.UNAUTHENTICATED
    os.killpg(w.proc.pid, signal.SIGTERM)
    assert w.wait_exit(5) == 0
    assert flavour in w.stderr()


def test_log_lines_of_a_call_carry_its_request_id(start_worker):
    # The host's log gets the worker's stderr: each line made during a call
    # names the call, so it can be matched with the host's own records.
    w = start_worker()
    w.call("trace_context", request_id="rid-e2e-1")
    wait_for(lambda: "trace_context called" in w.stderr(), what="the tool's log line")
    line = next(l for l in w.stderr().splitlines() if "trace_context called" in l)
    assert "request_id=rid-e2e-1" in line, line


@pytest.mark.parametrize("tool", ["offload", "offload_and_wait"])
def test_aio_worker_with_a_busy_offloaded_thread_tears_down_and_exits_promptly(start_worker, tool):
    # asyncio.run would wait for the default executor's thread (30 s) after
    # the server stopped: teardown() never ran and the host had to SIGKILL.
    grace = 3.0 if tool == "offload" else 0.5
    w = start_worker(adapter="async_adapter.OffloadingAdapter", extra_env={"SNAKEPIT_STOP_GRACE_S": str(grace)})
    if tool == "offload":
        assert w.call(tool, {"seconds": 30}) is True  # idle now, its thread busy
    else:
        # A call still waiting for its thread when the stop comes: it gets
        # the grace, then is cancelled; the thread stays busy.
        fut = w.stub.ExecuteTool.future(
            pb.ExecuteToolRequest(tool_name=tool, args_json=b'{"seconds": 30}'), metadata=w.md, timeout=30
        )
    wait_for(lambda: "offloaded thread running" in w.stderr(), what="the offloaded thread running")
    t0 = time.monotonic()
    w.proc.send_signal(signal.SIGTERM)
    assert w.wait_exit(5) == 0
    took = time.monotonic() - t0
    assert "offloading teardown ran" in w.stderr(), w.stderr()
    # The grace covers only calls in flight (none when idle: the 3 s are not
    # waited out); the thread's 30 s are never waited for. The bounds leave
    # room for a loaded machine.
    assert took < (1.0 if tool == "offload" else grace + 1.0), f"stop took {took:.2f}s"
    if tool != "offload":
        with pytest.raises(grpc.RpcError):
            fut.result(5)
