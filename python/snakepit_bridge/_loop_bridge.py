"""The sync server's bridge to the event loop of async tools.

grpcio's sync server runs every RPC in a thread of ServerThreads. A sync
tool runs right there, on its RPC's thread; async tools (and the steps of
async generators) run on one event loop — the main thread's in a worker
process, else a thread of its own started on first use (:class:`_AsyncLoop`)
— while the RPC's thread waits for them (:func:`_run_async`). Each call
registers a grpc termination callback (:meth:`_Call.on_done`) that, when the
caller gave up before the tool finished, marks the context cancelled,
cancels the async tool's task and marks a sync tool's slot abandoned.

Used by the sync servicer (_sync.py) only; grpc.aio (_aio.py) runs on the
loop itself and needs no bridge.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from typing import Any, Callable, Dict, Optional

from ._logging import log
from ._threads import CallSlots, Slot
from .context import SessionContext, _enter


class _Cancelled(Exception):
    """The call's caller gave up; nothing is sent."""


class _End:
    """Marks the end of a stream."""


_END = _End()


class _Call:
    """One RPC's link between grpc's termination callback and its tool."""

    __slots__ = ("sctx", "slots", "slot", "future", "finished")

    def __init__(self, sctx: SessionContext, slots: CallSlots) -> None:
        self.sctx = sctx
        self.slots = slots
        self.slot: Optional[Slot] = None
        self.future: Optional[_LoopCall] = None
        self.finished = False

    def on_done(self) -> None:
        # Runs on grpc's polling thread when the RPC ends, however it ends;
        # only an RPC that ended before its tool did was given up.
        if self.finished:
            return
        self.sctx._mark_cancelled()
        slot = self.slot
        if slot is not None:
            self.slots.abandon(slot)
        f = self.future
        if f is not None:
            f.cancel()


class _LoopCall:
    """A coroutine run as a task on the loop while the RPC's thread waits on
    a bare lock (cheaper than run_coroutine_threadsafe's two futures)."""

    __slots__ = ("_loop", "_coro", "_lock", "_task", "_cancel", "result", "error", "cancelled")

    def __init__(self, loop: asyncio.AbstractEventLoop, coro: Any) -> None:
        self._loop = loop
        self._coro = coro
        self._lock = threading.Lock()
        self._lock.acquire()
        self._task: Optional[asyncio.Task] = None
        self._cancel = False
        self.result: Any = None
        self.error: Optional[BaseException] = None
        self.cancelled = False

    def run(self) -> None:
        self._loop.call_soon_threadsafe(self._start)
        self._lock.acquire()

    def _start(self) -> None:  # on the loop
        try:
            task = self._loop.create_task(self._coro)
        except BaseException as e:
            self.error = e
            self._lock.release()
            return
        self._task = task
        task.add_done_callback(self._done)
        if self._cancel:
            task.cancel()

    def _done(self, task: asyncio.Task) -> None:  # on the loop
        if task.cancelled():
            self.cancelled = True
        else:
            self.error = task.exception()
            if self.error is None:
                self.result = task.result()
        self._lock.release()

    def cancel(self) -> None:  # any thread
        self._cancel = True
        task = self._task
        if task is not None:
            self._loop.call_soon_threadsafe(task.cancel)


class _AsyncLoop:
    """The event loop that runs async tools: the worker's main-thread loop
    (``attach``), or else one in a thread started on first use."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._thread: Optional[threading.Thread] = None

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        """Use ``loop`` (run by its owner, the worker's main thread)."""
        with self._lock:
            self._loop = loop

    def get(self) -> asyncio.AbstractEventLoop:
        loop = self._loop
        if loop is not None:
            return loop
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                t = threading.Thread(target=self._run, args=(loop,), name="snakepit-asyncio", daemon=True)
                t.start()
                self._thread = t
                self._loop = loop
            return self._loop

    @staticmethod
    def _run(loop: asyncio.AbstractEventLoop) -> None:
        asyncio.set_event_loop(loop)
        loop.run_forever()

    def close(self, timeout: float = 1.0) -> None:
        """Cancel what still runs on the loop and stop it (bounded wait)."""
        with self._lock:
            loop, thread = self._loop, self._thread
        if loop is None or thread is None or loop.is_closed():
            return

        async def cancel_all() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in tasks:
                t.cancel()
            if tasks:
                await asyncio.wait(tasks, timeout=timeout)

        try:
            asyncio.run_coroutine_threadsafe(cancel_all(), loop).result(timeout + 0.5)
        except BaseException:
            log.debug("cancelling async tools at stop failed", exc_info=True)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout)


def _run_async(loop: _AsyncLoop, call: _Call, coro: Any) -> Any:
    """Run a coroutine on the loop and wait for it on this thread."""
    lc = _LoopCall(loop.get(), coro)
    call.future = lc
    if call.sctx._cancelled:  # on_done ran before the call was visible to it
        lc.cancel()
    lc.run()
    call.future = None
    if lc.cancelled:
        if call.sctx._cancelled:
            raise _Cancelled()
        raise asyncio.CancelledError()
    if lc.error is not None:
        raise lc.error
    return lc.result


async def _async_call(sctx: SessionContext, fn: Callable[..., Any], kwargs: Dict[str, Any]) -> Any:
    _enter(sctx)  # the task runs in a context of its own
    return await fn(**kwargs)


async def _await_value(sctx: SessionContext, aw: Any) -> Any:
    _enter(sctx)
    return await aw


class _SyncStream:
    """A sync iterator, advanced on the RPC's thread."""

    def __init__(self, it: Any) -> None:
        self._it = it

    def next(self) -> Any:
        try:
            return next(self._it)
        except StopIteration:
            return _END

    def close(self) -> None:
        close = getattr(self._it, "close", None)
        if close is not None:
            close()


class _AsyncStream:
    """An async iterator whose steps run on the event loop, one at a time."""

    def __init__(self, loop: _AsyncLoop, call: _Call, it: Any) -> None:
        self._loop = loop
        self._call = call
        self._it = it
        self._task: Optional[asyncio.Task] = None
        self._ended = False

    async def _step(self) -> Any:
        self._task = asyncio.current_task()
        _enter(self._call.sctx)
        try:
            return await self._it.__anext__()
        except StopAsyncIteration:
            return _END
        finally:
            self._task = None

    def next(self) -> Any:
        item = _run_async(self._loop, self._call, self._step())
        if item is _END:
            self._ended = True
        return item

    async def _aclose(self) -> None:
        # A step cancelled by on_done may still be unwinding: closing an
        # async generator that runs raises "already running".
        task = self._task
        if task is not None and not task.done():
            task.cancel()
            await asyncio.wait({task})
        aclose = getattr(self._it, "aclose", None)
        if aclose is not None:
            _enter(self._call.sctx)
            await aclose()

    def close(self) -> None:
        if self._ended:
            return
        cf = asyncio.run_coroutine_threadsafe(self._aclose(), self._loop.get())

        def report(f: concurrent.futures.Future) -> None:
            if not f.cancelled() and f.exception() is not None:
                log.debug("closing an async stream failed", exc_info=f.exception())

        cf.add_done_callback(report)

