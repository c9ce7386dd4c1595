"""Issue 16 (7): every call's request id reaches the tool (ctx.request_id),
the log records made during the call, and the abandoned-call report."""

from __future__ import annotations

import json
import logging
import threading

import grpc
import pytest

from conftest import wait_for
from snakepit_bridge import SessionContext, install_trace_logging, tool
from snakepit_bridge.pb import snakepit_pb2 as pb

LOGGER = "tests.request_id"


class _Adapter:
    def __init__(self) -> None:
        self.release = threading.Event()
        self.started = threading.Event()

    @tool
    def sync_tool(self, ctx: SessionContext) -> str:
        logging.getLogger(LOGGER).info("sync")
        return ctx.request_id

    @tool
    async def async_tool(self, ctx: SessionContext) -> str:
        logging.getLogger(LOGGER).info("async")
        return ctx.request_id

    @tool
    def sync_gen(self, ctx: SessionContext):
        logging.getLogger(LOGGER).info("sync_gen")
        yield ctx.request_id

    @tool
    async def async_gen(self, ctx: SessionContext):
        logging.getLogger(LOGGER).info("async_gen")
        yield ctx.request_id

    @tool
    def stuck_gen(self):
        """A stream step that ignores cancellation until the test releases it."""
        self.started.set()
        self.release.wait(30)
        yield 1


@pytest.fixture
def records():
    install_trace_logging()  # what the worker does at start
    kept = []

    class Keep(logging.Handler):
        def emit(self, record):
            kept.append(record)

    h = Keep()
    logger = logging.getLogger(LOGGER)
    logger.addHandler(h)
    old = logger.level
    logger.setLevel(logging.INFO)
    yield kept
    logger.removeHandler(h)
    logger.setLevel(old)


def test_request_id_reaches_ctx_and_log_records_for_every_tool_kind(make_server, records):
    srv = make_server(_Adapter())
    for name in ("sync_tool", "async_tool"):
        resp = srv.execute(name, request_id=f"rid-{name}")
        assert json.loads(resp.result.json) == f"rid-{name}"
    for name in ("sync_gen", "async_gen"):
        chunks = srv.stream(name, request_id=f"rid-{name}")
        assert json.loads(chunks[0].data.json) == f"rid-{name}"
    assert sorted((r.getMessage(), r.request_id) for r in records) == sorted(
        (n.replace("_tool", ""), f"rid-{n}") for n in ("sync_tool", "async_tool", "sync_gen", "async_gen")
    )
    # Outside a call a record carries an empty id, never a stale one.
    logging.getLogger(LOGGER).info("outside")
    assert records[-1].request_id == ""


def test_abandoned_stream_step_is_reported_by_its_request_id(make_server):
    adapter = _Adapter()
    srv = make_server(adapter, threads=1)
    call = srv.stub.ExecuteStreamingTool(pb.ExecuteToolRequest(tool_name="stuck_gen", request_id="rid-stuck"), metadata=srv.md)

    def drain():
        try:
            for _ in call:
                pass
        except grpc.RpcError:
            pass

    t = threading.Thread(target=drain, daemon=True)
    t.start()
    try:
        assert adapter.started.wait(5)
        call.cancel()

        def ping():
            return srv.stub.Ping(pb.PingRequest(), metadata=srv.md, timeout=2)

        p = wait_for(lambda: (lambda r: r if r.abandoned_calls == 1 else None)(ping()), what="the stuck step reported")
        assert list(p.abandoned_request_ids) == ["rid-stuck"]
    finally:
        adapter.release.set()
        t.join(5)
    wait_for(lambda: srv.stub.Ping(pb.PingRequest(), metadata=srv.md, timeout=2).abandoned_calls == 0, what="the step finished")


def test_tool_threads_report_the_id_given_at_submit_whoever_abandons():
    # The id is the call's from the start: a path that abandons without
    # knowing it (a bare abandon(future)) must not report an empty id.
    from snakepit_bridge._threads import ToolThreads

    pool = ToolThreads(1)
    release = threading.Event()
    started = threading.Event()
    f = pool.submit(lambda: (started.set(), release.wait(10)), request_id="rid-submit")
    try:
        assert started.wait(5)
        pool.abandon(f)
        assert pool.abandoned()[2] == ["rid-submit"]
    finally:
        release.set()
    wait_for(lambda: pool.abandoned()[0] == 0, what="the call finished")
    pool.shutdown()
