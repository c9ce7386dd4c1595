"""The thread pool that runs sync tools.

Why not ``concurrent.futures.ThreadPoolExecutor``: Python cannot stop a
thread. A sync tool that ignores its call's cancellation (a deadline, a
caller that gave up) keeps its thread; with a fixed-size pool, a handful of
such calls leave a worker that answers pings but runs nothing. Here a call
whose caller gave up while its thread still runs is *abandoned*: it stops
counting toward the pool's size, so a fresh thread may take the next call,
and it is reported (``abandoned()``) until its thread returns, so the host
can replace the process that carries it.

At most ``size`` calls that still have a caller run at once; the host sizes
it from the worker's capacity. Spare threads exit after a minute idle.
"""

from __future__ import annotations

import collections
import concurrent.futures
import threading
import time
from typing import Any, Callable, Deque, Dict, List, Tuple

IDLE_EXIT_S = 60.0


class _Call:
    __slots__ = ("fn", "args", "future", "counted", "running", "request_id", "abandoned_at")

    def __init__(self, fn: Callable[..., Any], args: Tuple[Any, ...]) -> None:
        self.fn = fn
        self.args = args
        self.future: concurrent.futures.Future = concurrent.futures.Future()
        self.counted = False
        self.running = False
        self.request_id = ""
        self.abandoned_at = 0.0


class ToolThreads:
    """Runs callables in threads; see the module docstring."""

    def __init__(self, size: int, name: str = "snakepit-tool") -> None:
        self.size = max(1, int(size))
        self._name = name
        self._cv = threading.Condition()
        self._queue: Deque[_Call] = collections.deque()
        self._threads = 0
        self._idle = 0
        self._wakes = 0  # notifies sent to idle threads that have not woken yet
        self._counted = 0
        self._calls: Dict[int, _Call] = {}  # id(future) -> call, while not finished
        self._abandoned: Dict[int, _Call] = {}
        self._closed = False

    def submit(self, fn: Callable[..., Any], *args: Any) -> concurrent.futures.Future:
        call = _Call(fn, args)
        with self._cv:
            if self._closed:
                raise RuntimeError("the tool thread pool is shut down")
            self._queue.append(call)
            self._calls[id(call.future)] = call
            self._wake_locked()
        return call.future

    def abandon(self, future: concurrent.futures.Future, request_id: str = "") -> None:
        """The caller of ``future`` gave up. A call still queued is dropped;
        a running one stops counting toward the size until it returns."""
        with self._cv:
            call = self._calls.get(id(future))
            if call is None:
                return
            if not call.running:
                try:
                    self._queue.remove(call)
                except ValueError:
                    pass
                del self._calls[id(future)]
                future.cancel()
                return
            if call.counted:
                call.counted = False
                self._counted -= 1
                call.request_id = request_id
                call.abandoned_at = time.monotonic()
                self._abandoned[id(future)] = call
                self._wake_locked()

    def abandoned(self) -> Tuple[int, float, List[str]]:
        """(count, age in seconds of the oldest, request ids) of abandoned
        calls whose threads are still running."""
        with self._cv:
            calls = list(self._abandoned.values())
        if not calls:
            return 0, 0.0, []
        now = time.monotonic()
        oldest = max(now - c.abandoned_at for c in calls)
        return len(calls), oldest, [c.request_id for c in calls]

    def shutdown(self, wait: bool = False, cancel_futures: bool = True) -> None:
        """Stop taking calls; queued ones are cancelled. Never waits for a
        running tool (it may never return): the process exits regardless."""
        with self._cv:
            self._closed = True
            if cancel_futures:
                while self._queue:
                    call = self._queue.popleft()
                    self._calls.pop(id(call.future), None)
                    call.future.cancel()
            self._cv.notify_all()

    # -- internals ---------------------------------------------------------

    def _wake_locked(self) -> None:
        # One thread per queued call that may run now: an idle thread that
        # was already notified but has not woken yet is spoken for, so a
        # burst of submits must not count it twice (a lost wake-up would
        # serialise the burst).
        runnable = min(len(self._queue), self.size - self._counted)
        while runnable > 0:
            runnable -= 1
            if self._idle > self._wakes:
                self._wakes += 1
                self._cv.notify()
                continue
            self._threads += 1
            threading.Thread(target=self._loop, name=f"{self._name}-{self._threads}", daemon=True).start()

    def _take_locked(self) -> "_Call | None":
        while True:
            if self._queue and self._counted < self.size:
                call = self._queue.popleft()
                call.counted = call.running = True
                self._counted += 1
                return call
            if self._closed:
                return None
            self._idle += 1
            woke = self._cv.wait(timeout=IDLE_EXIT_S)
            self._idle -= 1
            if woke and self._wakes > 0:
                self._wakes -= 1
            if not woke and not self._queue and self._threads > self.size:
                return None

    def _loop(self) -> None:
        while True:
            with self._cv:
                call = self._take_locked()
                if call is None:
                    self._threads -= 1
                    return
            if call.future.set_running_or_notify_cancel():
                try:
                    result = call.fn(*call.args)
                except BaseException as e:  # handed to the awaiting coroutine
                    call.future.set_exception(e)
                else:
                    call.future.set_result(result)
            with self._cv:
                if call.counted:
                    self._counted -= 1
                call.running = call.counted = False
                self._calls.pop(id(call.future), None)
                self._abandoned.pop(id(call.future), None)
                self._wake_locked()
