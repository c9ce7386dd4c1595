"""Shared test helpers: an in-process worker server and process utilities.

Every helper that starts something also stops it; synchronisation is by
polling observable state against a deadline, never by fixed sleeps.
"""

from __future__ import annotations

import asyncio
import os
import select
import signal
import sys
import time
import threading
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
from snakepit_bridge._aio import AioWorkerServicer, create_aio_server  # noqa: E402
from snakepit_bridge._threads import CallSlots, ToolThreads  # noqa: E402
from snakepit_bridge._serving import server_threads  # noqa: E402
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
    """A worker servicer on the worker's grpcio sync server ("sync"), or on a
    grpc.aio server in a background loop thread ("aio"), in this process."""

    def __init__(
        self, adapter: object, token: str = "", host: Optional[HostClient] = None, threads: int = 4, flavour: str = "sync",
        tools: Optional[dict] = None,
    ) -> None:
        self.flavour = flavour
        self.token = token
        common = dict(adapter_name="tests.Sample", worker_id="w-test", run_id="run-test", host=host, tools=tools)
        if flavour == "sync":
            self.slots = CallSlots(threads)
            self.servicer = WorkerServicer(adapter, slots=self.slots, **common)
            self.threads = server_threads(threads)
            self.server, self.port = create_server(self.servicer, token=token, threads=self.threads)
            self.server.start()
        else:
            self.executor = ToolThreads(threads, name="test-tool")
            self.loop = asyncio.new_event_loop()
            self.thread = threading.Thread(target=self.loop.run_forever, name="test-aio", daemon=True)
            self.thread.start()

            async def start() -> Any:
                servicer = AioWorkerServicer(adapter, executor=self.executor, **common)
                server, port = create_aio_server(servicer, token=token)
                await server.start()
                return server, port, servicer

            self.server, self.port, self.servicer = asyncio.run_coroutine_threadsafe(start(), self.loop).result(10)
        self.channel = grpc.insecure_channel(f"127.0.0.1:{self.port}")
        self.stub = pb_grpc.WorkerServiceStub(self.channel)

    def busy(self) -> int:
        """Sync tool calls that count toward the worker's size now."""
        return self.slots.running if self.flavour == "sync" else self.executor._counted

    def waiting(self) -> int:
        """Sync tool calls waiting for room (a slot; aio: a thread)."""
        return self.slots._waiting if self.flavour == "sync" else len(self.executor._queue)

    def queued(self) -> int:
        """Tool calls beyond the capacity waiting for a thread (sync server)."""
        return self.threads.backlog if self.flavour == "sync" else 0

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
        if self.flavour == "sync":
            self.server.stop(0).wait(10)
            self.servicer.close()
            return
        asyncio.run_coroutine_threadsafe(self.server.stop(0), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()
        self.executor.shutdown(wait=False, cancel_futures=True)


@pytest.fixture(params=["sync", "aio"])
def make_server(request):
    """Servers of both flavours: every test that uses it runs for each."""
    servers: list = []

    def make(adapter: object, **kw: Any) -> InProcServer:
        kw.setdefault("flavour", request.param)
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
