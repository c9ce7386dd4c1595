"""The tool thread pool: capacity, abandoned calls, and what Ping reports."""

from __future__ import annotations

import json
import threading

import grpc
import pytest

from conftest import wait_for
from snakepit_bridge._threads import ToolThreads
from snakepit_bridge.adapters.showcase import ShowcaseAdapter
from snakepit_bridge.pb import snakepit_pb2 as pb


def test_runs_exactly_size_calls_at_once():
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


def test_abandoned_call_frees_its_slot_and_is_reported_until_it_returns():
    pool = ToolThreads(1)
    stuck = threading.Event()
    started = threading.Event()

    def stubborn():
        started.set()
        stuck.wait(10)

    f = pool.submit(stubborn)
    assert started.wait(5)
    pool.abandon(f, "req-1")
    assert pool.submit(lambda: 42).result(5) == 42  # a fresh thread took it
    count, oldest, ids = pool.abandoned()
    assert count == 1 and ids == ["req-1"] and oldest >= 0
    stuck.set()
    wait_for(lambda: pool.abandoned()[0] == 0, what="the abandoned call finished")
    pool.shutdown()


def test_abandoning_a_queued_call_drops_it():
    pool = ToolThreads(1)
    gate = threading.Event()
    pool.submit(gate.wait, 5)
    queued = pool.submit(lambda: "never")
    pool.abandon(queued)
    assert queued.cancelled()
    assert pool.abandoned()[0] == 0
    gate.set()
    pool.shutdown()


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


def test_cancelled_sync_tools_that_keep_running_do_not_eat_the_pool(showcase):
    srv = showcase(2)
    for i in range(8):
        with pytest.raises(grpc.RpcError) as e:
            srv.execute("stubborn_sleep", json.dumps({"ms": 3000}).encode(), timeout=0.1, request_id=f"r{i}")
        assert e.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    # Capacity is intact: a normal sync call runs at once.
    resp = srv.execute("add", json.dumps({"a": 1, "b": 2}).encode(), timeout=2)
    assert json.loads(resp.result.json) == 3

    def ping():
        return srv.stub.Ping(pb.PingRequest(message="x"), metadata=srv.md, timeout=2)

    p = wait_for(lambda: (lambda r: r if r.abandoned_calls == 8 else None)(ping()), what="8 abandoned calls reported")
    assert sorted(p.abandoned_request_ids) == sorted(f"r{i}" for i in range(8))
    assert p.oldest_abandoned_seconds > 0
    wait_for(lambda: ping().abandoned_calls == 0, timeout=10, what="abandoned calls finished")


def test_a_burst_runs_at_once_when_threads_are_idle():
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
