"""Threads of the worker: grpc's thread pool and the sync tools' slots.

The worker serves gRPC with grpcio's sync server, so every RPC runs in a
thread of :class:`ServerThreads`, and a sync tool runs right there, on the
RPC's own thread (no second hop into a tool pool).

Why not ``concurrent.futures.ThreadPoolExecutor`` for the server: Python
cannot stop a thread. A sync tool that ignores its call's cancellation (a
deadline, a caller that gave up) keeps its thread; with a fixed-size pool, a
handful of such calls leave a worker that answers nothing, not even Ping.
:class:`ServerThreads` therefore starts a thread for a Ping (or any RPC
that runs no tool) whenever no idle one is free (spare threads exit after a
minute idle), and :class:`CallSlots` does the accounting the host relies
on: at most ``size`` sync tool calls run at once (the host sizes it from
the worker's capacity, ``--max-workers``).

Calls beyond the capacity. The host may send a worker tool calls beyond its
capacity while its callers queue (worker.Info.Prefetch), so that a thread
that finishes a call finds the next one already here instead of sleeping
until the host's round trip brings it. Those calls wait in
:class:`ServerThreads`' backlog, not on a thread of their own: at most
``limit`` (the capacity) tool RPCs hold threads at once — async tools and
streams included, which take no slot — and the thread of one that finishes
takes the oldest waiting call. Every other RPC (Ping, DescribeTools) gets a
thread at once, new if none is idle, so tools that fill every thread, stuck
or not, never leave Ping unanswered. The server tells the pool which RPC
comes next (:class:`ToolRouting`).

Capacity means what it says: a call whose caller gave up while its tool
still runs is *abandoned*, and it KEEPS its slot until its tool actually
returns (or the process is recycled), because the tool still uses the
process (CPU, memory, whatever state it holds) and an adapter written for
one call at a time must never see two. An abandoned call is reported
(``abandoned()``, in Ping, with its request id) so the host can recycle the
process that carries it. A later call waits for a slot; its caller may give
up while it waits, and then it is dropped without ever running.
"""

from __future__ import annotations

import collections
import concurrent.futures
import threading
import time
from typing import TYPE_CHECKING, Any, Callable, Deque, Dict, List, Optional, Tuple

if TYPE_CHECKING:
    from queue import Empty, SimpleQueue
else:
    try:  # the same classes (queue.py re-exports them), without importing queue.py at every start
        from _queue import Empty, SimpleQueue
    except ImportError:  # _queue is CPython's private module; other interpreters have queue.py's
        from queue import Empty, SimpleQueue

from ._logging import log

IDLE_EXIT_S = 60.0

# Sync tool calls run at once when neither --max-workers nor
# SNAKEPIT_WORKER_THREADS says otherwise (both server flavours).
DEFAULT_THREADS = 8

# Tool calls per slot the sync server tells the host it holds beyond its
# slots (the handshake's prefetch=). The backlog has no bound of its own;
# this one is the host's: with 4 callers per slot on one worker (N = 1,
# C = 32) the host keeps every call here and none waits in the pool, as a
# raw gRPC client would (docs/BENCHMARKS.md, "Prefetch depth").
PREFETCH_PER_SLOT = 4

# The width of the tool threads (see ServerThreads): NARROW tool calls at
# once, or all ``limit``. A probe alternates epochs of EPOCH_S between the
# two; the other width wins with GAIN times the calls per second of the
# epochs beside it, PROBE_ROUNDS times in a row. Probes follow each other
# PROBE_FIRST_S apart, the interval doubling up to PROBE_MAX_S each time
# the other width serves fewer calls (not when it serves more by less than
# GAIN), back to PROBE_FIRST_S after a change or after IDLE_RESET_S idle.
# At NARROW it doubles only up to PROBE_MAX_NARROW_S: the narrow width
# held wrongly (the work changed to calls that wait) costs up to
# limit/NARROW times the calls, the full width held wrongly about 1.4x.
NARROW = 2
EPOCH_S = 0.1
GAIN = 1.1
PROBE_ROUNDS = 2
PROBE_FIRST_S = 0.5
PROBE_MAX_S = 30.0
PROBE_MAX_NARROW_S = 2.0
IDLE_RESET_S = 10.0


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
    thread, except a tool call while ``width`` tool calls hold threads,
    which waits for the next of them to finish, in order. Idle threads
    beyond ``keep`` exit after ``IDLE_EXIT_S``.

    The width is ``limit`` (0: no limit), or with ``adapt`` whichever of
    NARROW and ``limit`` serves more calls per second while more than
    NARROW tool calls are here (NARROW only if it also costs no more CPU
    per call: see _probe). Why: grpcio's sync server hands every call
    between its serving thread and the call's thread, each handoff a trip
    through the GIL, and with eight threads taking turns those trips
    dominate a short call. On one worker, eight callers of a trivial tool
    got 1.4x the calls/s with two threads serving them (docs/BENCHMARKS.md,
    "Tool threads: the width"); a tool that waits (I/O, sleep, C code
    without the GIL) needs every thread. Neither can be told from the call,
    so a controller thread measures: it runs while more than NARROW tool
    calls are here, and every probe interval alternates epochs at the
    other width with epochs at the current one (_probe). At NARROW,
    an epoch in which none of the running calls ended while calls waited
    (calls stuck, or waiting for each other) restores the full width at
    once. An idle worker's controller sleeps without a timeout."""

    def __init__(self, keep: int = 4, name: str = "snakepit-rpc", limit: int = 0, adapt: bool = False) -> None:
        self._keep = max(1, int(keep))
        self._limit = max(0, int(limit))
        self._width = self._limit  # tool calls that may hold threads now
        self._name = name
        self._queue: "SimpleQueue[Any]" = SimpleQueue()  # items for idle threads
        self._lock = threading.Lock()
        self._threads = 0
        self._idle = 0  # threads free for a new item and not yet claimed by a submit
        self._tools = 0  # threads running a tool call (at most limit)
        self._backlog: Deque[Any] = collections.deque()  # tool calls waiting for one of them
        self._started = 0
        self._closed = False
        # Set by ToolRouting just before grpc hands over the RPC it routed
        # (on grpc's one serving thread), consumed by that submit. Unset, a
        # submit is not a tool call: the safe side, it gets a thread.
        self.tool_next = False
        # The width's controller (see the class docstring).
        # Tool calls that took a thread: the controller's measure of work.
        # Starts, not ends: right after a change of width the calls that end
        # are the other width's, while every start is this width's (and a
        # narrower width pays for the calls it lets finish first).
        self._began = 0
        self._ended = 0  # tool calls finished: the stuck rule's measure
        self._asleep = False  # the controller waits for more than NARROW tool calls (_wake)
        self._woken = 0  # times the controller woke: what tests can see
        self._wake = threading.Event()
        self._unstuck = False  # the stuck rule restored the full width (controller thread only)
        if adapt and self._limit > NARROW:
            threading.Thread(target=self._control, name=f"{name}-width", daemon=True).start()

    @property
    def threads(self) -> int:
        return self._threads

    @property
    def backlog(self) -> int:
        """Tool calls waiting for a thread (beyond ``width``)."""
        return len(self._backlog)

    @property
    def width(self) -> int:
        """Tool calls that may hold threads at once now (0: no limit)."""
        return self._width

    def submit(self, fn: Callable[..., Any], *args: Any) -> _Done:
        done = _Done()
        tool, self.tool_next = self.tool_next, False
        item = (done, fn, args, tool)
        with self._lock:
            if self._closed:
                raise RuntimeError("the server thread pool is shut down")
            if tool and self._limit:
                if self._asleep and self._tools + len(self._backlog) >= NARROW:
                    self._asleep = False  # this call makes more than NARROW
                    self._wake.set()
                if self._backlog or self._tools >= self._width:
                    # A backlog only while width tool calls run (or the
                    # controller is about to widen), so a finishing tool
                    # call's thread takes from it, in order.
                    self._backlog.append(item)
                    return done
                self._tools += 1
                self._began += 1
            if self._idle > 0:
                self._idle -= 1
                spawn = False
            else:
                self._threads += 1
                self._started += 1
                spawn = True
                n = self._started
        if not spawn:
            self._queue.put(item)
            return done
        # The new thread runs this call first: an item in the queue may be
        # any claim's, and a Ping must not wait behind someone else's.
        try:
            threading.Thread(target=self._run, args=(item,), name=f"{self._name}-{n}", daemon=True).start()
        except BaseException:
            with self._lock:
                self._threads -= 1
                if tool and self._limit:
                    self._tools -= 1
            raise
        return done

    def shutdown(self, wait: bool = False, cancel_futures: bool = True) -> None:
        """Stop taking work. Never waits for a running call (it may never
        return): the process exits regardless."""
        with self._lock:
            self._closed = True
            n = self._threads
            self._backlog.clear()
        for _ in range(n):
            self._queue.put(None)
        self._wake.set()

    def _run(self, item: Any) -> None:
        q = self._queue
        limit = self._limit
        while True:
            done, fn, args, tool = item
            try:
                fn(*args)
            except BaseException:
                log.exception("gRPC handler failed")
            done._finish()
            item = done = fn = args = None
            with self._lock:
                if tool and limit:
                    self._ended += 1
                    if self._backlog and self._tools <= self._width:
                        item = self._backlog.popleft()  # the slot passes on
                        self._began += 1
                    else:
                        self._tools -= 1  # also when the width shrank
                if item is None:
                    self._idle += 1
            while item is None:
                try:
                    item = q.get(timeout=IDLE_EXIT_S)
                except Empty:
                    with self._lock:
                        # Only an unclaimed idle credit may leave: a claimed one
                        # has an item on its way.
                        if self._idle > 0 and self._threads > self._keep:
                            self._idle -= 1
                            self._threads -= 1
                            return
                    continue
                if item is None:  # shutdown
                    with self._lock:
                        self._threads -= 1
                    return


    # -- the width's controller ---------------------------------------------

    def _set_width(self, width: int) -> None:
        """Make ``width`` the width; a wider one starts backlog calls now."""
        starts = []
        with self._lock:
            self._width = width
            while self._backlog and self._tools < width and not self._closed:
                item = self._backlog.popleft()
                self._tools += 1
                self._began += 1
                if self._idle > 0:
                    self._idle -= 1
                    self._queue.put(item)
                else:
                    self._threads += 1
                    self._started += 1
                    starts.append((item, self._started))
        for i, (item, n) in enumerate(starts):
            try:
                threading.Thread(target=self._run, args=(item,), name=f"{self._name}-{n}", daemon=True).start()
            except BaseException:
                with self._lock:
                    # Back in front, in order; the width stays (a later
                    # finishing call takes them).
                    for it, _ in reversed(starts[i:]):
                        self._backlog.appendleft(it)
                    self._threads -= len(starts) - i
                    self._tools -= len(starts) - i
                    self._began -= len(starts) - i
                log.exception("cannot start a thread for a tool call")
                return

    def _epoch(self, width: int) -> Optional[Tuple[float, float]]:
        """Serves one epoch at ``width``: the tool calls that took a thread
        per second, and the process's CPU seconds per such call; (0, inf),
        a loss, when none started while calls waited (long calls hold the
        threads). None when shut down, when NARROW or fewer calls are left
        at its end (the load fell away: the epoch says nothing about the
        width), or, at less than the full width, when no running call ended
        while calls waited: the full width is then back (``_unstuck``)."""
        with self._lock:  # before the change: the calls it starts are this width's
            began0, ended0 = self._began, self._ended
        t0, cpu0 = time.monotonic(), time.process_time()
        self._set_width(width)
        time.sleep(EPOCH_S)  # the measure's window, not a wait for a state
        with self._lock:
            began, ended = self._began - began0, self._ended - ended0
            waiting, here, closed = bool(self._backlog), self._tools + len(self._backlog), self._closed
        cpu = time.process_time() - cpu0
        if closed:
            return None
        if width < self._limit and ended == 0 and waiting:
            log.debug("tool threads: no call ended in %.0f ms at width %d while calls waited; width %d", EPOCH_S * 1e3, width, self._limit)
            self._set_width(self._limit)
            self._unstuck = True
            return None
        if began == 0:
            # Nothing started: a loss if calls waited (long calls hold the
            # threads), else the load fell away.
            return (0.0, float("inf")) if waiting else None
        if here <= NARROW:
            return None
        return began / (time.monotonic() - t0), cpu / began

    def _probe(self, here: int, other: int, base: Tuple[float, float]) -> Optional[bool]:
        """Whether ``other`` beats ``here`` (``base``: calls/s and CPU per
        call in the epoch just ended): in each of PROBE_ROUNDS epochs at
        ``other``, each followed by one at ``here``, it serves GAIN times
        the mean calls/s of the two epochs beside it, and, to narrow, at no
        more CPU per call than their mean. Alternating cancels a drift of
        the machine's speed; every round must win, so one lucky epoch on a
        noisy machine does not move the width. The CPU condition: two
        threads win by wasting less of the GIL on handoffs, which shows as
        less CPU per call; a worker that is merely given more calls (with
        several workers, the host sends more to the one that ends calls
        sooner) gains calls/s at another worker's expense, not CPU. False:
        a round served no more calls than that mean, or narrowing cost more
        CPU per call. None: no verdict (better by less than GAIN, shut
        down, stuck, or the load fell away)."""
        before = base
        for _ in range(PROBE_ROUNDS):
            probe = self._epoch(other)
            after = self._epoch(here) if probe is not None else None
            if probe is None or after is None:
                return None
            rate = (before[0] + after[0]) / 2
            cpu = (before[1] + after[1]) / 2
            if probe[0] <= rate or (other == NARROW and probe[1] > cpu):
                return False
            if probe[0] <= GAIN * rate:
                return None  # better, not by enough: ask again soon
            log.debug("tool threads: width %d served %.0f calls/s against %.0f at width %d", other, probe[0], rate, here)
            before = after
        return True

    def _await_calls(self) -> float:
        """Wait, without a timeout, while NARROW or fewer tool calls are
        here: the width makes no difference to them, and an idle worker's
        controller never wakes. The seconds it waited (0: it did not)."""
        with self._lock:
            if self._closed or self._tools + len(self._backlog) > NARROW:
                return 0.0
            self._wake.clear()
            self._asleep = True
        since = time.monotonic()
        self._wake.wait()
        self._woken += 1
        return max(time.monotonic() - since, 1e-9)

    def _control(self) -> None:
        interval = PROBE_FIRST_S
        next_probe = time.monotonic() + PROBE_FIRST_S
        try:
            while not self._closed:
                slept = self._await_calls()
                if slept >= IDLE_RESET_S or (slept > 0 and self._width == NARROW):
                    # A new spell may be a new kind of work: probe soon
                    # (at NARROW after any pause: the costlier mistake).
                    interval, next_probe = PROBE_FIRST_S, time.monotonic() + EPOCH_S
                    continue
                here = self._width
                self._unstuck = False
                base = self._epoch(here)
                if self._unstuck:
                    # Restored just now: the calls that stuck are still
                    # there, so no probe of NARROW at once.
                    interval, next_probe = PROBE_FIRST_S, time.monotonic() + PROBE_FIRST_S
                    continue
                if base is None or time.monotonic() < next_probe:
                    continue
                other = NARROW if here == self._limit else self._limit
                verdict = self._probe(here, other, base)
                if self._unstuck and here == NARROW:
                    # The stuck rule restored the full width: it stands.
                    interval, next_probe = PROBE_FIRST_S, time.monotonic() + PROBE_FIRST_S
                    continue
                if self._unstuck:
                    verdict = False  # calls stopped ending at the narrow width
                if verdict:
                    self._set_width(other)
                    interval = PROBE_FIRST_S
                else:
                    self._set_width(here)
                    if verdict is not None:
                        interval = 2 * interval
                interval = min(interval, PROBE_MAX_NARROW_S if self._width == NARROW else PROBE_MAX_S)
                next_probe = time.monotonic() + interval
        except BaseException:
            log.exception("tool threads: the width's controller failed; all %d run from now on", self._limit)
            self._set_width(self._limit)


class ToolRouting:
    """A generic handler in front of ``handler`` that tells ``threads``
    whether the RPC it routes runs a tool (ExecuteTool,
    ExecuteStreamingTool): grpc's sync server looks the handler up and hands
    the RPC to the thread pool right after, on its one serving thread."""

    __slots__ = ("_service", "_threads", "_tools")

    def __init__(self, handler: Any, threads: ServerThreads, tool_methods: "frozenset[str]") -> None:
        self._service = handler.service
        self._threads = threads
        self._tools = tool_methods

    def service(self, handler_call_details: Any) -> Any:
        handler = self._service(handler_call_details)
        self._threads.tool_next = handler is not None and handler_call_details.method in self._tools
        return handler


# --------------------------------------------------------------------------
# Capacity accounting for sync tool calls


def _abandoned_report(calls: List[Any]) -> Tuple[int, float, List[str]]:
    """What Ping reports of abandoned calls (each with ``abandoned_at`` and
    ``request_id``): their count, the age of the oldest, their request ids."""
    if not calls:
        return 0, 0.0, []
    now = time.monotonic()
    return len(calls), max(now - c.abandoned_at for c in calls), [c.request_id for c in calls]



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
    """At most ``size`` sync tool calls run at once, abandoned ones included;
    see the module docstring."""

    def __init__(self, size: int) -> None:
        self.size = max(1, int(size))
        # The lock itself on the paths that never wait: `with` on a
        # Condition is a Python-level call, on a Lock it is not.
        self._lock = threading.Lock()
        self._cv = threading.Condition(self._lock)
        self._counted = 0
        self._waiting = 0
        self._abandoned: Dict[int, Slot] = {}
        self._closed = False

    @property
    def running(self) -> int:
        """Calls that hold a slot now (abandoned ones included)."""
        return self._counted

    def acquire(self, slot: Slot) -> bool:
        """Wait for a free slot. False when the caller gave up (``abandon``)
        or the worker is stopping while waiting: then the call must not run."""
        with self._lock:
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
        """The call's tool returned: its slot is free (abandoned or not)."""
        with self._lock:
            slot.running = False
            if self._abandoned:
                self._abandoned.pop(id(slot), None)
            if slot.counted:
                slot.counted = False
                self._counted -= 1
                if self._waiting:
                    self._cv.notify()

    def abandon(self, slot: Slot) -> None:
        """The call's caller gave up. A waiting call is dropped; a running one
        keeps its slot until its tool returns, and is reported meanwhile."""
        with self._lock:
            slot.gave_up = True
            if slot.counted and not slot.abandoned_at:
                slot.abandoned_at = time.monotonic()
                self._abandoned[id(slot)] = slot
            if self._waiting:
                # Only the waiter that gave up leaves; the others re-check
                # and wait on (no slot was freed).
                self._cv.notify_all()

    def abandoned(self) -> Tuple[int, float, List[str]]:
        """(count, age in seconds of the oldest, request ids) of abandoned
        calls whose tools are still running."""
        with self._lock:
            return _abandoned_report(list(self._abandoned.values()))

    def close(self) -> None:
        """Calls still waiting for a slot give up (the worker is stopping)."""
        with self._lock:
            self._closed = True
            self._cv.notify_all()


# --------------------------------------------------------------------------
# The tool pool of the grpc.aio flavour (_aio.py)
#
# There, sync tools hop from the event loop into these threads; the same
# accounting as CallSlots, with the threads included: at most ``size`` calls
# run at once, an abandoned call keeps its slot and is reported until its
# thread returns.


class _ToolCall:
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
        self._lock = threading.RLock()  # Condition()'s own default, reentrant
        self._cv = threading.Condition(self._lock)
        self._queue: Deque[_ToolCall] = collections.deque()
        self._threads = 0
        self._idle = 0
        self._wakes = 0  # notifies sent to idle threads that have not woken yet
        self._counted = 0
        self._calls: Dict[int, _ToolCall] = {}  # id(future) -> call, while not finished
        self._abandoned: Dict[int, _ToolCall] = {}
        self._closed = False

    def submit(self, fn: Callable[..., Any], /, *args: Any, request_id: str = "") -> concurrent.futures.Future:
        """Run ``fn(*args)`` in a thread once a slot is free. ``request_id``
        is the call's, known from the start so that whichever path abandons
        the call later, the report names it."""
        call = _ToolCall(fn, args)
        call.request_id = request_id
        with self._lock:
            if self._closed:
                raise RuntimeError("the tool thread pool is shut down")
            self._queue.append(call)
            self._calls[id(call.future)] = call
            self._wake_locked()
        return call.future

    def abandon(self, future: concurrent.futures.Future, request_id: str = "") -> None:
        """The caller of ``future`` gave up. A call still queued is dropped;
        a running one keeps its slot until it returns, and is reported
        meanwhile (with ``request_id``)."""
        with self._lock:
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
            if id(future) not in self._abandoned:
                if request_id:
                    call.request_id = request_id
                call.abandoned_at = time.monotonic()
                self._abandoned[id(future)] = call

    def abandoned(self) -> Tuple[int, float, List[str]]:
        """(count, age in seconds of the oldest, request ids) of abandoned
        calls whose threads are still running."""
        with self._lock:
            return _abandoned_report(list(self._abandoned.values()))

    def shutdown(self, wait: bool = False, cancel_futures: bool = True) -> None:
        """Stop taking calls; queued ones are cancelled. Never waits for a
        running tool (it may never return): the process exits regardless."""
        with self._lock:
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

    def _take_locked(self) -> "_ToolCall | None":
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
            with self._lock:
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
            with self._lock:
                if call.counted:
                    self._counted -= 1
                call.running = call.counted = False
                self._calls.pop(id(call.future), None)
                self._abandoned.pop(id(call.future), None)
                self._wake_locked()


__all__ = ["ServerThreads", "ToolRouting", "CallSlots", "Slot", "ToolThreads", "IDLE_EXIT_S", "PREFETCH_PER_SLOT", "NARROW"]
