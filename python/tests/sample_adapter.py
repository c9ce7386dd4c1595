"""A test adapter covering every tool shape the worker supports.

Events on the instance let tests observe what happened inside the worker
(cancellation seen, generator closed) by polling, not by sleeping.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import threading
from typing import Any, AsyncIterator, Dict, Iterator, List

from snakepit_bridge import BaseAdapter, SessionContext, current_context, tool


_probe: contextvars.ContextVar[str] = contextvars.ContextVar("sample_probe", default="unset")


class Opaque:
    """A value with no JSON form."""


class SampleAdapter(BaseAdapter):
    def __init__(self) -> None:
        self.stubborn_started = threading.Event()
        self.stubborn_release = threading.Event()
        self.blocked_runs = 0
        self.sync_started = threading.Event()
        self.sync_saw_cancel = threading.Event()
        self.async_started = threading.Event()
        self.async_cancelled = threading.Event()
        self.gen_started = threading.Event()
        self.gen_closed = threading.Event()
        self.agen_started = threading.Event()
        self.agen_closed = threading.Event()

    # limits and tracing ---------------------------------------------------------
    @tool(max_concurrency=2, timeout=1.5)
    def limited(self) -> int:
        return 1

    @tool
    def trace_info(self, ctx: SessionContext) -> Dict[str, str]:
        logging.getLogger("sample.trace").warning("inside a traced call")
        return {"traceparent": ctx.traceparent, "tracestate": ctx.tracestate, "trace_id": ctx.trace_id, "span_id": ctx.span_id}

    # unary --------------------------------------------------------------------
    @tool
    def add(self, a: int, b: int = 2) -> int:
        """Add two ints."""
        return a + b

    @tool
    async def async_add(self, a: float, b: float) -> float:
        await asyncio.sleep(0)
        return a + b

    @tool
    def anything(self, **kwargs: Any) -> Dict[str, Any]:
        return {"got": sorted(kwargs)}

    @tool
    def data(self, kind: str) -> Any:
        return {
            "dict": {"a": 1, "b": [1, 2, {"c": None}]},
            "list": [1, "two", 3.5, True, None],
            "none": None,
            "str": "héllo ✓",
            "bytes": b"\x00\x01\xff",
            "bytearray": bytearray(b"ab"),
            "memoryview": memoryview(b"mv"),
            "set": Opaque(),
            "nested_set": {"x": [1, Opaque()]},
            "object": object(),
            "nan": float("nan"),
            "tuple": (1, 2),
        }[kind]

    @tool
    def blob_len(self, blob: bytes, extra: int = 0) -> int:
        return len(blob) + extra

    @tool
    def fail(self, message: str = "boom") -> None:
        raise ValueError(message)

    @tool
    def inner_type_error(self) -> None:
        return len(5)  # type: ignore[arg-type]

    @tool
    def sys_exit(self) -> None:
        raise SystemExit(7)

    @tool
    def whoami(self, ctx: SessionContext) -> Dict[str, Any]:
        return {
            "session_id": ctx.session_id,
            "request_id": ctx.request_id,
            "worker_id": ctx.worker_id,
            "run_id": ctx.run_id,
            "metadata": ctx.metadata,
            "tool": ctx.tool_name,
            "current_is_ctx": current_context() is ctx,
        }

    @tool
    async def async_whoami(self, context) -> Dict[str, Any]:
        return {"session_id": context.session_id, "current_is_ctx": current_context() is context}

    @tool
    def wait_for_cancel(self, ctx: SessionContext) -> str:
        self.sync_started.set()
        if ctx.wait_cancelled(10):
            self.sync_saw_cancel.set()
            return "cancelled"
        return "not cancelled"

    @tool
    async def async_wait(self) -> None:
        self.async_started.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            self.async_cancelled.set()
            raise

    @tool
    def call_host(self, name: str, ctx: SessionContext, args: dict = None) -> Any:
        return ctx.call_host_tool(name, **(args or {}))

    @tool
    def host_facts(self, ctx: SessionContext) -> Dict[str, Any]:
        return {"valid": ctx.heartbeat(), "tools": [t["name"] for t in ctx.list_host_tools()]}

    @tool
    async def async_call_host(self, name: str, ctx: SessionContext, args: dict = None) -> Any:
        return await ctx.acall_host_tool(name, **(args or {}))

    @tool
    def stubborn(self) -> str:
        """Ignores cancellation until the test releases it."""
        self.blocked_runs += 1
        self.stubborn_started.set()
        self.stubborn_release.wait(10)
        return "released"

    @tool
    def probe_contextvar(self, value: str) -> str:
        """Sets a contextvar and returns what it was before (never leaks across calls)."""
        before = _probe.get()
        _probe.set(value)
        return before

    @tool
    def returns_awaitable(self, x: int) -> Any:
        async def later() -> Dict[str, Any]:
            await asyncio.sleep(0)
            return {"x": x, "current_is_ctx": current_context().tool_name == "returns_awaitable"}

        return later()

    # streaming ----------------------------------------------------------------
    @tool
    def gen_ctx(self, ctx: SessionContext) -> Iterator[bool]:
        for _ in range(2):
            yield current_context() is ctx and ctx.session_id == "s-gen"

    @tool
    async def agen_ctx(self, ctx: SessionContext) -> AsyncIterator[bool]:
        for _ in range(2):
            await asyncio.sleep(0)
            yield current_context() is ctx and ctx.session_id == "s-agen"

    @tool(description="count with a sync generator")
    def gen(self, n: int) -> Iterator[Dict[str, int]]:
        for i in range(1, n + 1):
            yield {"i": i}

    @tool
    async def agen(self, n: int) -> AsyncIterator[Any]:
        for i in range(1, n + 1):
            await asyncio.sleep(0)
            yield {"i": i}

    @tool
    def gen_fail(self, n: int) -> Iterator[int]:
        for i in range(1, n + 1):
            yield i
        raise RuntimeError(f"failed after {n}")

    @tool
    async def agen_fail(self, n: int) -> AsyncIterator[int]:
        for i in range(1, n + 1):
            yield i
        raise KeyError("missing")

    @tool
    def gen_bad_item(self) -> Iterator[Any]:
        yield 1
        yield Opaque()
        yield 3

    @tool
    def gen_bytes(self) -> Iterator[bytes]:
        yield b"ab"
        yield {"j": 1}  # type: ignore[misc]

    @tool(supports_streaming=True)
    def flagged(self, n: int) -> List[int]:
        return list(range(n))

    @tool
    def gen_endless(self, ctx: SessionContext) -> Iterator[int]:
        self.gen_started.set()
        i = 0
        try:
            while not ctx.cancelled:
                i += 1
                yield i
                ctx.wait_cancelled(0.005)
        finally:
            self.gen_closed.set()

    @tool
    async def agen_endless(self) -> AsyncIterator[int]:
        self.agen_started.set()
        i = 0
        try:
            while True:
                i += 1
                yield i
                await asyncio.sleep(0.005)
        finally:
            self.agen_closed.set()
