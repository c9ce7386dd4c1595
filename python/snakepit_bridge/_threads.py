"""Threads of the worker: grpc's thread pool and the sync tools' slots.

The worker serves gRPC with grpcio's sync server, so every RPC runs in a
thread of :class:`ServerThreads`, and a sync tool runs right there, on the
RPC's own thread (no second hop into a tool pool).

Why not ``concurrent.futures.ThreadPoolExecutor`` for the server: Python
cannot stop a thread. A sync tool that ignores its call's cancellation (a
deadline, a caller that gave up) keeps its thread; with a fixed-size pool, a
handful of such calls leave a worker that answers nothing, not even Ping.
:class:`ServerThreads` therefore starts a thread whenever no idle one is
free (the host bounds the concurrent calls; spare threads exit after a
minute idle), and :class:`CallSlots` does the accounting the host relies
on: at most ``size`` sync tool calls *that still have a caller* run at once
(the host sizes it from the worker's capacity, ``--max-workers``). A call
whose caller gave up while its tool still runs is *abandoned*: it stops
counting toward the size, so the next call may run, and it is reported
(``abandoned()``, in Ping) until its tool returns, so the host can replace
the process that carries it.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

IDLE_EXIT_S = 60.0

log = logging.getLogger("snakepit.worker")


# --------------------------------------------------------------------------
# The server's thread pool


_done_lock = threading.Lock()


class _Done:
    """The little of a Future that grpc's sync server uses: add_done_callback."""

    __slots__ = ("_done", "_callbacks")

    def __init__(self) -> None:
        self._done = False
        self._callbacks: Optional[List[Callable[[Any], None]]] = None

    def add_done_callback(self, fn: Callable[[Any], None]) -> None:
        with _done_lock:
            if not self._done:
                if self._callbacks is None:
                    self._callbacks = [fn]
                else:
                    self._callbacks.append(fn)
                return
        fn(self)

    def done(self) -> bool:
        return self._done

    def cancel(self) -> bool:
        return False

    def cancelled(self) -> bool:
        return False

    def _finish(self) -> None:
        with _done_lock:
            self._done = True
            callbacks, self._callbacks = self._callbacks, None
        if callbacks:
            for fn in callbacks:
                try:
                    fn(self)
                except Exception:
                    log.exception("done callback failed")


class ServerThreads:
    """An elastic thread pool for ``grpc.server``: a call never waits for a
    thread. Idle threads beyond ``keep`` exit after ``IDLE_EXIT_S``."""

    def __init__(self, keep: int = 4, name: str = "snakepit-rpc") -> None:
        self._keep = max(1, int(keep))
        self._name = name
        self._queue: "queue.SimpleQueue[Any]" = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._threads = 0
        self._idle = 0  # threads free for a new item and not yet claimed by a submit
        self._started = 0
        self._closed = False

    @property
    def threads(self) -> int:
        return self._threads

    def submit(self, fn: Callable[..., Any], *args: Any) -> _Done:
        done = _Done()
        with self._lock:
            if self._closed:
                raise RuntimeError("the server thread pool is shut down")
            if self._idle > 0:
                self._idle -= 1
                spawn = False
            else:
                self._threads += 1
                self._started += 1
                spawn = True
                n = self._started
        self._queue.put((done, fn, args))
        if spawn:
            threading.Thread(target=self._run, name=f"{self._name}-{n}", daemon=True).start()
        return done

    def shutdown(self, wait: bool = False, cancel_futures: bool = True) -> None:
        """Stop taking work. Never waits for a running call (it may never
        return): the process exits regardless."""
        with self._lock:
            self._closed = True
            n = self._threads
        for _ in range(n):
            self._queue.put(None)

    def _run(self) -> None:
        q = self._queue
        while True:
            try:
                item = q.get(timeout=IDLE_EXIT_S)
            except queue.Empty:
                with self._lock:
                    # Only an unclaimed idle credit may leave: a claimed one
                    # has an item on its way.
                    if self._idle > 0 and self._threads > self._keep:
                        self._idle -= 1
                        self._threads -= 1
                        return
                continue
            if item is None:
                with self._lock:
                    self._threads -= 1
                return
            done, fn, args = item
            try:
                fn(*args)
            except BaseException:
                log.exception("gRPC handler failed")
            done._finish()
            item = done = fn = args = None
            with self._lock:
                self._idle += 1


# --------------------------------------------------------------------------
# Capacity accounting for sync tool calls


class Slot:
    """One sync tool call's claim on a :class:`CallSlots`."""

    __slots__ = ("counted", "running", "gave_up", "request_id", "abandoned_at")

    def __init__(self, request_id: str) -> None:
        self.counted = False
        self.running = False
        self.gave_up = False
        self.request_id = request_id
        self.abandoned_at = 0.0


class CallSlots:
    """At most ``size`` sync tool calls with a caller run at once; see the
    module docstring."""

    def __init__(self, size: int) -> None:
        self.size = max(1, int(size))
        self._cv = threading.Condition(threading.Lock())
        self._counted = 0
        self._waiting = 0
        self._abandoned: Dict[int, Slot] = {}
        self._closed = False

    @property
    def running(self) -> int:
        """Calls that count toward the size now."""
        return self._counted

    def acquire(self, slot: Slot) -> bool:
        """Wait for a free slot. False when the caller gave up (``abandon``)
        or the worker is stopping while waiting: then the call must not run."""
        with self._cv:
            while self._counted >= self.size and not slot.gave_up and not self._closed:
                self._waiting += 1
                try:
                    self._cv.wait()
                finally:
                    self._waiting -= 1
            if slot.gave_up or self._closed:
                return False
            self._counted += 1
            slot.counted = slot.running = True
            return True

    def release(self, slot: Slot) -> None:
        """The call's tool returned."""
        with self._cv:
            slot.running = False
            if slot.counted:
                slot.counted = False
                self._counted -= 1
                if self._waiting:
                    self._cv.notify()
            else:
                self._abandoned.pop(id(slot), None)

    def abandon(self, slot: Slot) -> None:
        """The call's caller gave up. A waiting call is dropped; a running one
        stops counting toward the size until its tool returns."""
        with self._cv:
            slot.gave_up = True
            if slot.counted:
                slot.counted = False
                self._counted -= 1
                slot.abandoned_at = time.monotonic()
                self._abandoned[id(slot)] = slot
            if self._waiting:
                self._cv.notify_all()

    def abandoned(self) -> Tuple[int, float, List[str]]:
        """(count, age in seconds of the oldest, request ids) of abandoned
        calls whose tools are still running."""
        with self._cv:
            calls = list(self._abandoned.values())
        if not calls:
            return 0, 0.0, []
        now = time.monotonic()
        oldest = max(now - c.abandoned_at for c in calls)
        return len(calls), oldest, [c.request_id for c in calls]

    def close(self) -> None:
        """Calls still waiting for a slot give up (the worker is stopping)."""
        with self._cv:
            self._closed = True
            self._cv.notify_all()


__all__ = ["ServerThreads", "CallSlots", "Slot", "IDLE_EXIT_S"]
