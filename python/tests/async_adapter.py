"""An adapter whose tools are all async: the worker serves it with grpc.aio."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import AsyncIterator, Dict

from snakepit_bridge import BaseAdapter, SessionContext, current_context, tool


class AsyncAdapter(BaseAdapter):
    @tool
    async def add(self, a: int, b: int = 2) -> int:
        return a + b

    @tool
    async def whoami(self, ctx: SessionContext) -> Dict[str, object]:
        await asyncio.sleep(0)
        return {"session_id": ctx.session_id, "current_is_ctx": current_context() is ctx}

    @tool
    async def count(self, n: int) -> AsyncIterator[Dict[str, int]]:
        for i in range(1, n + 1):
            await asyncio.sleep(0)
            yield {"i": i}


from snakepit_bridge.examples.showcase import ShowcaseAdapter  # noqa: E402


class DeclaredAioShowcase(ShowcaseAdapter):
    """The mixed showcase adapter, declared for grpc.aio by its author."""

    snakepit_server = "aio"


class BadFlavour(BaseAdapter):
    snakepit_server = "threads"

    @tool
    def noop(self) -> None:
        return None


def _busy(seconds: float) -> None:
    logging.getLogger("tests.offload").warning("offloaded thread running")
    time.sleep(seconds)


class OffloadingAdapter(BaseAdapter):
    """All async, offloading blocking work with asyncio.to_thread (the
    default executor): a worker whose thread is still busy when it is told
    to stop must still run teardown() and exit promptly."""

    def __init__(self) -> None:
        self._background: list = []

    @tool
    async def offload(self, seconds: float) -> bool:
        # Fire and forget: the call returns at once, the thread keeps going.
        self._background.append(asyncio.ensure_future(asyncio.to_thread(_busy, seconds)))
        await asyncio.sleep(0)
        return True

    @tool
    async def offload_and_wait(self, seconds: float) -> bool:
        await asyncio.to_thread(_busy, seconds)
        return True

    def teardown(self) -> None:
        logging.getLogger("tests.offload").warning("offloading teardown ran")
