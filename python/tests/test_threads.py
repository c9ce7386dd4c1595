"""The server threads and sync tool slots: capacity, abandoned calls, and what Ping reports."""

from __future__ import annotations

import concurrent.futures
import json
import threading
import time

import grpc
import pytest

from conftest import wait_for
from snakepit_bridge import _threads
from snakepit_bridge._threads import NARROW, CallSlots, ServerThreads, Slot, ToolThreads
from snakepit_bridge.examples.showcase import ShowcaseAdapter
from snakepit_bridge.pb import snakepit_pb2 as pb


def test_slots_run_exactly_size_calls_at_once():
    slots = CallSlots(3)
    inside = 0
    most = 0
    lock = threading.Lock()
    release = threading.Event()

    def work():
        nonlocal inside, most
        slot = Slot("")
        assert slots.acquire(slot)
        try:
            with lock:
                inside += 1
                most = max(most, inside)
            release.wait(5)
            with lock:
                inside -= 1
        finally:
            slots.release(slot)

    ts = [threading.Thread(target=work) for _ in range(7)]
    for t in ts:
        t.start()
    wait_for(lambda: inside == 3, what="3 calls inside")
    release.set()
    for t in ts:
        t.join(5)
    assert most == 3 and slots.running == 0


def test_abandoned_call_keeps_its_slot_and_is_reported_until_it_returns():
    # Capacity means what it says: the abandoned call's tool still runs in
    # this process, so a later call must wait for it to return.
    slots = CallSlots(1)
    stuck = Slot("req-1")
    assert slots.acquire(stuck)
    slots.abandon(stuck)
    assert slots.running == 1
    count, oldest, ids = slots.abandoned()
    assert count == 1 and ids == ["req-1"] and oldest >= 0
    fresh = Slot("req-2")
    got = []
    t = threading.Thread(target=lambda: got.append(slots.acquire(fresh)))
    t.start()
    wait_for(lambda: slots._waiting == 1, what="the second call waiting for the slot")
    assert got == []
    slots.release(stuck)  # its tool returned at last: the slot passes on
    t.join(5)
    assert got == [True] and slots.abandoned() == (0, 0.0, []) and slots.running == 1
    slots.release(fresh)
    assert slots.running == 0


def test_abandoning_a_waiting_call_drops_it():
    slots = CallSlots(1)
    first = Slot("a")
    assert slots.acquire(first)
    waiting = Slot("b")
    got = []
    t = threading.Thread(target=lambda: got.append(slots.acquire(waiting)))
    t.start()
    wait_for(lambda: slots._waiting == 1, what="the second call waiting")
    slots.abandon(waiting)
    t.join(5)
    assert got == [False] and slots.abandoned()[0] == 0
    slots.release(first)
    assert slots.running == 0


def test_server_threads_never_make_a_call_wait_for_a_thread():
    pool = ServerThreads(keep=1)
    release = threading.Event()
    inside = []
    done = []
    for i in range(6):
        f = pool.submit(lambda i=i: (inside.append(i), release.wait(5)))
        f.add_done_callback(lambda f: done.append(f))
    wait_for(lambda: len(inside) == 6, what="all 6 calls running at once")
    release.set()
    wait_for(lambda: len(done) == 6, what="done callbacks")
    late = []
    done[0].add_done_callback(late.append)  # added after completion: runs at once
    assert late == [done[0]]
    pool.shutdown()


def test_a_burst_runs_at_once_when_threads_are_idle():
    # Two submits while one thread is idle: the second must get a thread of
    # its own, not wait behind the first.
    pool = ServerThreads(keep=4)
    ran = threading.Event()
    pool.submit(ran.set)
    wait_for(lambda: pool._idle == 1, what="one idle thread")
    b_ran = threading.Event()
    result = []
    pool.submit(lambda: result.append(b_ran.wait(5)))
    pool.submit(b_ran.set)
    wait_for(lambda: result, what="the first call of the burst")
    assert result == [True], "the second call of the burst did not run while the first waited for it"
    assert pool.threads == 2
    pool.shutdown()


def submit_tool(pool: ServerThreads, fn, *args) -> None:
    """Submit as the server does a tool RPC (ToolRouting marks it first)."""
    pool.tool_next = True
    pool.submit(fn, *args)


def test_tool_calls_beyond_the_limit_wait_for_a_thread_in_order():
    pool = ServerThreads(keep=2, limit=2)
    gate = threading.Event()
    ran = []
    for i in range(2):
        submit_tool(pool, lambda i=i: (ran.append(i), gate.wait(5)))
    wait_for(lambda: len(ran) == 2, what="the first two tool calls running")
    for i in range(2, 5):
        submit_tool(pool, ran.append, i)
    assert pool.backlog == 3 and pool.threads == 2, "a tool call beyond the limit got a thread of its own"
    gate.set()
    wait_for(lambda: len(ran) == 5, what="the queued tool calls")
    assert ran[2:] == [2, 3, 4] and pool.threads == 2 and pool.backlog == 0
    pool.shutdown()


def test_a_non_tool_rpc_gets_a_thread_while_tools_hold_them_all():
    # The liveness rule: stuck tools on every thread never leave Ping unanswered.
    pool = ServerThreads(keep=2, limit=2)
    gate = threading.Event()
    inside = []
    for i in range(3):
        submit_tool(pool, lambda i=i: (inside.append(i), gate.wait(10)))
    wait_for(lambda: len(inside) == 2, what="two tool calls holding both threads")
    pinged = threading.Event()
    pool.submit(pinged.set)  # tool_next unset: a Ping, DescribeTools
    assert pinged.wait(5), "a non-tool RPC waited behind tool calls"
    # The Ping's thread, idle again, must not take the queued tool call:
    # that would run three tool calls at once with limit 2.
    wait_for(lambda: pool._idle == 1, what="the Ping's thread idle")
    assert pool.threads == 3 and pool.backlog == 1 and len(inside) == 2
    gate.set()
    wait_for(lambda: len(inside) == 3, what="the queued tool call")
    pool.shutdown()


def test_tool_calls_never_exceed_the_limit_even_with_idle_threads():
    # Async tools and streams take no CallSlots slot: the limit is what
    # holds them to the capacity when the host sends more (prefetch).
    pool = ServerThreads(keep=4, limit=2)
    gate = threading.Event()
    lock = threading.Lock()
    now = [0]
    peak = [0]

    def tool() -> None:
        with lock:
            now[0] += 1
            peak[0] = max(peak[0], now[0])
        gate.wait(5)
        with lock:
            now[0] -= 1

    for _ in range(2):
        submit_tool(pool, tool)
    wait_for(lambda: now[0] == 2, what="two tool calls running")
    pool.submit(lambda: None)  # a Ping: a third thread, idle after
    wait_for(lambda: pool._idle == 1, what="the Ping's thread idle")
    for _ in range(2):
        submit_tool(pool, tool)
    assert pool.backlog == 2 and now[0] == 2, "a tool call beyond the limit took the idle thread"
    gate.set()
    wait_for(lambda: pool.backlog == 0 and now[0] == 0, what="all tool calls done")
    assert peak[0] == 2
    pool.shutdown()


class ClosedLoop:
    """``callers`` callers of ``work`` on ``pool``, each submitting its next
    call as its last one ends (as the host keeps a worker's calls in
    flight); ``work`` gets how many of its calls run now."""

    submitting = threading.Lock()

    def __init__(self, pool: ServerThreads, callers: int, work) -> None:
        self.pool, self.work = pool, work
        self.lock = threading.Lock()
        self.running = self.ended = 0
        self.stop = False
        for _ in range(callers):
            self._next()

    def _call(self) -> None:
        with self.lock:
            self.running += 1
            now = self.running
        try:
            self.work(now)
        finally:
            with self.lock:
                self.running -= 1
                self.ended += 1

    def _next(self) -> None:
        if self.stop:
            return
        # Serialised, as grpc's one serving thread does: a submit consumes
        # the tool mark another thread set.
        with ClosedLoop.submitting:
            self.pool.tool_next = True
            done = self.pool.submit(self._call)
        done.add_done_callback(lambda _: self._next())

    def calls_in(self, seconds: float) -> "tuple[int, float]":
        """Calls ended in the next ``seconds``, and the share of that time
        the pool's width was its full limit (sampled every 10 ms; a probe
        narrows it for 100 ms now and then)."""
        with self.lock:
            before = self.ended
        full = samples = 0
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            samples += 1
            full += self.pool.width == self.pool._limit
            time.sleep(0.01)  # the sampling period of the measure
        with self.lock:
            return self.ended - before, full / max(samples, 1)

    def close(self) -> None:
        self.stop = True
        self.pool.shutdown()


def test_tool_threads_narrow_when_fewer_threads_serve_more_calls():
    # A call that takes longer the more run beside it, more than in
    # proportion (as grpc's handoffs through the GIL do): two threads serve
    # more calls per second than eight.
    pool = ServerThreads(keep=10, limit=8, adapt=True)
    loop = ClosedLoop(pool, 16, lambda n: time.sleep(0.0003 * n * n))
    try:
        # Held, not just visited: a probe narrows for an epoch whatever it
        # decides.
        wait_for(lambda: loop.calls_in(1.0)[1] < 0.5, timeout=20, what="the narrow width to hold")
    finally:
        loop.close()


@pytest.mark.parametrize("seconds", [0.004, 0.1])
def test_tool_threads_keep_the_full_width_for_calls_that_wait(seconds):
    # Calls that wait (I/O, sleep, C code without the GIL) need every
    # thread: two would serve a quarter of the calls. 0.1 s is one epoch:
    # counting the calls that end would credit the narrow width with the
    # ends of calls the full width started.
    pool = ServerThreads(keep=10, limit=8, adapt=True)
    loop = ClosedLoop(pool, 16, lambda n: time.sleep(seconds))
    try:
        wait_for(lambda: pool._ended > 40, timeout=10, what="calls ending")
        window = 3.0
        served, full = loop.calls_in(window)
        assert full > 0.7, f"the full width held only {full:.0%} of the time"
        narrow_most = NARROW / seconds * window  # what width 2 could serve at best
        assert served > 2 * narrow_most, f"{served} calls in {window} s; width 2 serves at most {narrow_most:.0f}"
    finally:
        loop.close()


def test_stuck_calls_at_the_narrow_width_restore_the_full_width(monkeypatch):
    monkeypatch.setattr(_threads, "PROBE_FIRST_S", 60.0)  # no probe: only the stuck rule may widen
    pool = ServerThreads(keep=10, limit=8, adapt=True)
    pool._set_width(NARROW)
    release = threading.Event()
    ran = []
    try:
        for _ in range(NARROW):
            submit_tool(pool, release.wait, 10)
        for i in range(3):
            submit_tool(pool, ran.append, i)
        # No call ends while the others wait: within an epoch or two the
        # controller gives them threads.
        wait_for(lambda: len(ran) == 3, timeout=3, what="the waiting calls to run beside the stuck ones")
        assert pool.width == 8 and sorted(ran) == [0, 1, 2]
    finally:
        release.set()
        pool.shutdown()


def test_the_width_controller_sleeps_while_the_width_makes_no_difference():
    pool = ServerThreads(keep=10, limit=8, adapt=True)
    release = threading.Event()
    try:
        for _ in range(NARROW + 1):
            submit_tool(pool, release.wait, 10)
        release.set()
        wait_for(lambda: pool._asleep and pool._tools == 0 and pool.backlog == 0, timeout=3, what="the controller to sleep")
        woken = pool._woken
        # NARROW calls at once run at either width: it sleeps on.
        release.clear()
        for _ in range(NARROW):
            submit_tool(pool, release.wait, 10)
        time.sleep(0.3)  # three epochs in which it must not wake
        assert pool._woken == woken and pool._asleep
        # One more call than NARROW wakes it.
        submit_tool(pool, release.wait, 10)
        wait_for(lambda: pool._woken > woken, timeout=3, what="the controller to wake")
    finally:
        release.set()
        pool.shutdown()


def test_ping_answers_while_stuck_tools_fill_every_thread_and_more_wait(make_server):
    # Through grpc: the sync server routes ExecuteTool to the queue and
    # Ping to a thread of its own; once the stuck tools return, the queued
    # calls run.
    srv = make_server(ShowcaseAdapter(), threads=2)
    results: list = []

    def call(ms: int) -> None:
        resp = srv.execute("stubborn_sleep", json.dumps({"ms": ms}).encode(), timeout=30)
        results.append(json.loads(resp.result.json))

    stuck = [threading.Thread(target=call, args=(2000,)) for _ in range(2)]
    for t in stuck:
        t.start()
    wait_for(lambda: srv.busy() == 2, what="two stubborn calls holding both slots")
    queued = [threading.Thread(target=call, args=(0,)) for _ in range(4)]
    for t in queued:
        t.start()
    if srv.flavour == "sync":
        wait_for(lambda: srv.queued() == 4, what="4 tool calls queued for a thread")
        assert srv.threads.threads <= 4, "queued tool calls were given threads"
    for _ in range(3):
        # Well within the stuck calls' 2 s: a Ping queued behind them fails.
        p = srv.stub.Ping(pb.PingRequest(message="alive"), metadata=srv.md, timeout=0.5)
        assert p.message == "alive"
    for t in stuck + queued:
        t.join(30)
    assert sorted(results) == [0, 0, 0, 0, 2000, 2000]


@pytest.fixture
def showcase(make_server):
    return lambda threads: make_server(ShowcaseAdapter(), threads=threads)


def test_capacity_runs_that_many_sync_tools_at_once(showcase):
    srv = showcase(5)
    results = []

    def call():
        resp = srv.execute("rendezvous", json.dumps({"n": 5, "timeout_ms": 5000}).encode())
        results.append(json.loads(resp.result.json))

    ts = [threading.Thread(target=call) for _ in range(5)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(10)
    assert results == [5] * 5


def test_cancelled_sync_tools_that_keep_running_keep_their_slots(showcase):
    srv = showcase(2)
    calls = json.loads(srv.execute("counters").result.json)["calls"]
    for i in range(2):
        with pytest.raises(grpc.RpcError) as e:
            srv.execute("stubborn_sleep", json.dumps({"ms": 3000}).encode(), timeout=0.2, request_id=f"r{i}")
        assert e.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED

    def ping():
        return srv.stub.Ping(pb.PingRequest(message="x"), metadata=srv.md, timeout=2)

    p = wait_for(lambda: (lambda r: r if r.abandoned_calls == 2 else None)(ping()), what="2 abandoned calls reported")
    assert sorted(p.abandoned_request_ids) == ["r0", "r1"]
    assert p.oldest_abandoned_seconds > 0
    # Both slots are still taken: a third call waits, and when its caller
    # gives up meanwhile it is dropped without running (and not reported).
    with pytest.raises(grpc.RpcError) as e:
        srv.execute("add", json.dumps({"a": 1, "b": 2}).encode(), timeout=0.3, request_id="r-wait")
    assert e.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    wait_for(lambda: srv.waiting() == 0, what="the waiting call dropped")
    assert ping().abandoned_calls == 2
    # Once the stuck tools return, their slots are free again.
    wait_for(lambda: ping().abandoned_calls == 0, timeout=10, what="abandoned calls finished")
    resp = srv.execute("add", json.dumps({"a": 1, "b": 2}).encode(), timeout=2)
    assert json.loads(resp.result.json) == 3
    # Two stubborn calls, one add and this counters ran: the dropped add never did.
    assert json.loads(srv.execute("counters").result.json)["calls"] == calls + 4


# -- ToolThreads: the sync tools' pool of the grpc.aio flavour ---------------------


def test_tool_threads_run_exactly_size_calls_at_once():
    pool = ToolThreads(3)
    inside = 0
    most = 0
    lock = threading.Lock()
    release = threading.Event()

    def work():
        nonlocal inside, most
        with lock:
            inside += 1
            most = max(most, inside)
        release.wait(5)
        with lock:
            inside -= 1

    futs = [pool.submit(work) for _ in range(7)]
    wait_for(lambda: inside == 3, what="3 calls inside")
    release.set()
    for f in futs:
        f.result(5)
    assert most == 3
    pool.shutdown()


def test_tool_threads_abandoned_call_keeps_its_slot_and_is_reported_until_it_returns():
    pool = ToolThreads(1)
    stuck = threading.Event()
    started = threading.Event()

    def stubborn():
        started.set()
        stuck.wait(10)

    f = pool.submit(stubborn)
    assert started.wait(5)
    pool.abandon(f, "req-1")
    later = pool.submit(lambda: 42)
    count, oldest, ids = pool.abandoned()
    assert count == 1 and ids == ["req-1"] and oldest >= 0
    # A negative can only be shown over a window: 0.3 s is ample for a
    # thread to pick the call up had the slot been freed.
    with pytest.raises(concurrent.futures.TimeoutError):
        later.result(0.3)
    assert not later.running(), "a call ran while the abandoned one held the only slot"
    stuck.set()
    assert later.result(5) == 42
    wait_for(lambda: pool.abandoned()[0] == 0, what="the abandoned call finished")
    pool.shutdown()


def test_tool_threads_abandoning_a_queued_call_drops_it():
    pool = ToolThreads(1)
    gate = threading.Event()
    pool.submit(gate.wait, 5)
    queued = pool.submit(lambda: "never")
    pool.abandon(queued)
    assert queued.cancelled()
    assert pool.abandoned()[0] == 0
    gate.set()
    pool.shutdown()


def test_tool_threads_burst_runs_at_once_when_threads_are_idle():
    # Regression: two submits while one thread was idle used to notify it
    # twice; the second wake-up was lost and the burst ran one at a time.
    pool = ToolThreads(4)
    pool.submit(lambda: None).result(5)  # leaves one idle thread
    wait_for(lambda: pool._idle == 1, what="one idle thread")
    b_ran = threading.Event()
    a = pool.submit(lambda: b_ran.wait(5))
    b = pool.submit(b_ran.set)
    assert a.result(10) is True, "the second call of the burst did not run while the first waited for it"
    b.result(5)
    pool.shutdown()


def test_runs_without_cpythons_private_queue_module() -> None:
    # _queue is CPython's; elsewhere queue.py's classes are used.
    import os
    import subprocess
    import sys

    from conftest import PYTHON_DIR

    code = """
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == "_queue":
            raise ImportError("no _queue here")
sys.meta_path.insert(0, Block())
import queue
from snakepit_bridge import _threads
assert _threads.SimpleQueue is queue.SimpleQueue and _threads.Empty is queue.Empty
q = _threads.SimpleQueue(); q.put(1); assert q.get() == 1
print("ok")
"""
    env = dict(os.environ, PYTHONPATH=PYTHON_DIR)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert out.stdout.strip() == "ok", out.stderr
