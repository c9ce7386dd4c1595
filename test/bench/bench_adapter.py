"""The adapter the side-by-side benchmark runs in snakepit's workers.

``add`` is the same trivial work as minimal_servicer.py's ExecuteTool (the
showcase adapter's add also counts calls under a lock); ``aadd`` is its
async twin (blob and array serve the array benchmark). BenchAdapter has both, so the worker serves it with grpcio's
sync server (an async tool hops to the event loop); AsyncBenchAdapter has
only ``aadd``, so it is served with grpc.aio (no hop); DeclaredAioBenchAdapter
is BenchAdapter with ``snakepit_server = "aio"``. ``badd`` is ``add`` as a
batch tool (@tool(batch=Batch(max_size=32, max_wait_ms=2))).
"""

from __future__ import annotations

from snakepit_bridge import Batch, BaseAdapter, tool


class BenchAdapter(BaseAdapter):
    @tool
    def add(self, a: float, b: float) -> float:
        return a + b

    @tool(batch=Batch(max_size=32, max_wait_ms=2))
    def badd(self, a: list[float], b: list[float]) -> list[float]:
        """add as a batch tool (dynamic batching)."""
        return [x + y for x, y in zip(a, b)]

    @tool
    def blob(self, n: int) -> bytes:
        """n zero bytes, as minimal_servicer.py's blob (array_test.go)."""
        return b"\x00" * n

    @tool
    def array(self, n: int):
        """A float32 numpy array of n elements (array_test.go)."""
        import numpy as np

        return np.arange(n, dtype=np.float32)

    @tool
    async def aadd(self, a: float, b: float) -> float:
        return a + b


class AsyncBenchAdapter(BaseAdapter):
    @tool
    async def aadd(self, a: float, b: float) -> float:
        return a + b


class DeclaredAioBenchAdapter(BenchAdapter):
    """BenchAdapter declared for grpc.aio: its async tool runs in its RPC's
    task, its sync tool hops into a thread."""

    snakepit_server = "aio"


class ArgsBenchAdapter(BaseAdapter):
    """The large-argument benchmark's tool: the same work as the minimal
    servicer on ``{"a": 1, "b": 2, "pad": "xxx…"}`` (decode all, add two)."""

    @tool
    def add(self, a: float, b: float, pad: str = "") -> float:
        return a + b


class CPUBenchAdapter(BaseAdapter):
    """A CPU-bound pure-Python tool (holds the GIL throughout), for the
    default-Capacity check: ``burn`` loops ``n`` times."""

    @tool
    def burn(self, n: int) -> int:
        acc = 0
        for i in range(n):
            acc = (acc + i * i) % 1000003
        return acc


class IOBenchAdapter(BaseAdapter):
    """A tool that waits (2 ms asleep, the GIL released), as one calling a
    database or a service does: it needs every thread of the worker
    (interleave_test.go, the tool threads' width)."""

    @tool
    def add(self, a: float, b: float) -> float:
        import time

        time.sleep(0.002)
        return a + b
