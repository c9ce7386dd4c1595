"""Shared test helpers: an in-process worker server and process utilities.

Every helper that starts something also stops it; synchronisation is by
polling observable state against a deadline, never by fixed sleeps.
"""

from __future__ import annotations

import os
import select
import signal
import sys
import time
from typing import Any, Callable, Optional

import grpc
import pytest

PYTHON_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
if PYTHON_DIR not in sys.path:
    sys.path.insert(0, PYTHON_DIR)

from snakepit_bridge.context import TOKEN_METADATA_KEY, HostClient  # noqa: E402
from snakepit_bridge.pb import snakepit_pb2 as pb  # noqa: E402
from snakepit_bridge.pb import snakepit_pb2_grpc as pb_grpc  # noqa: E402
from snakepit_bridge._threads import CallSlots  # noqa: E402
from snakepit_bridge.server import WorkerServicer, create_server  # noqa: E402


def wait_for(pred: Callable[[], Any], timeout: float = 5.0, interval: float = 0.01, what: str = "condition") -> Any:
    """Poll ``pred`` until it returns a truthy value or the deadline passes."""
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def pid_gone(pid: int) -> bool:
    """True when ``pid`` no longer runs (absent, or a zombie nobody reaped yet)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return True
    return state in ("Z", "X")


def environ_has(pid: int, entry: str) -> bool:
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            return entry.encode() in f.read().split(b"\0")
    except OSError:
        return False


def read_line(fd: int, timeout: float, buf: Optional[bytearray] = None) -> bytes:
    """Read one line from a raw fd within ``timeout`` (b"" on EOF)."""
    buf = bytearray() if buf is None else buf
    deadline = time.monotonic() + timeout
    while b"\n" not in buf:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"no complete line within {timeout}s (got {bytes(buf)!r})")
        r, _, _ = select.select([fd], [], [], left)
        if not r:
            continue
        chunk = os.read(fd, 4096)
        if not chunk:
            return bytes(buf)
        buf.extend(chunk)
    line, _, rest = bytes(buf).partition(b"\n")
    buf[:] = rest
    return line + b"\n"


class InProcServer:
    """A WorkerServicer on the worker's grpcio sync server, in this process."""

    def __init__(self, adapter: object, token: str = "", host: Optional[HostClient] = None, threads: int = 4) -> None:
        self.slots = CallSlots(threads)
        self.token = token
        self.servicer = WorkerServicer(
            adapter,
            adapter_name="tests.Sample",
            worker_id="w-test",
            run_id="run-test",
            host=host,
            slots=self.slots,
        )
        self.server, self.port = create_server(self.servicer, token=token)
        self.server.start()
        self.channel = grpc.insecure_channel(f"127.0.0.1:{self.port}")
        self.stub = pb_grpc.WorkerServiceStub(self.channel)

    @property
    def md(self) -> tuple:
        return ((TOKEN_METADATA_KEY, self.token),) if self.token else ()

    def execute(self, tool: str, args: bytes = b"", timeout: float = 10, **fields: Any) -> pb.ExecuteToolResponse:
        req = pb.ExecuteToolRequest(tool_name=tool, args_json=args, **fields)
        return self.stub.ExecuteTool(req, metadata=self.md, timeout=timeout)

    def stream(self, tool: str, args: bytes = b"", timeout: float = 10, **fields: Any) -> list:
        req = pb.ExecuteToolRequest(tool_name=tool, args_json=args, **fields)
        return list(self.stub.ExecuteStreamingTool(req, metadata=self.md, timeout=timeout))

    def close(self) -> None:
        self.channel.close()
        self.server.stop(0).wait(10)
        self.servicer.close()


@pytest.fixture
def make_server():
    servers: list = []

    def make(adapter: object, **kw: Any) -> InProcServer:
        s = InProcServer(adapter, **kw)
        servers.append(s)
        return s

    yield make
    for s in servers:
        s.close()


def kill_group_if_alive(proc) -> None:
    """Stop a worker started with start_new_session=True, group included.

    Its pid is its pgid and cannot be reused while it is unreaped, so the
    group signal can only reach processes of this test.
    """
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(2)
        except Exception:
            pass
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(5)
