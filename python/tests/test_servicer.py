"""WorkerService behaviour over a real gRPC connection to an in-process server."""

from __future__ import annotations

import concurrent.futures
import logging
import json
import threading

import grpc
import pytest

from conftest import InProcServer, wait_for
from sample_adapter import SampleAdapter
from snakepit_bridge import tool
from snakepit_bridge.context import TOKEN_METADATA_KEY, HostClient
from snakepit_bridge.pb import snakepit_pb2 as pb
from snakepit_bridge.pb import snakepit_pb2_grpc as pb_grpc


@pytest.fixture
def adapter():
    return SampleAdapter()


@pytest.fixture
def srv(make_server, adapter):
    return make_server(adapter, token="secret-token")


def result(resp):
    assert not resp.HasField("error"), resp.error
    which = resp.result.WhichOneof("value")
    return json.loads(resp.result.json) if which == "json" else bytes(resp.result.binary)


def test_ping_and_describe(srv):
    r = srv.stub.Ping(pb.PingRequest(message="hello"), metadata=srv.md, timeout=5)
    assert r.message == "hello" and r.worker_id == "w-test" and r.pid > 0 and r.uptime_seconds >= 0
    d = srv.stub.DescribeTools(pb.DescribeToolsRequest(), metadata=srv.md, timeout=5)
    names = [t.name for t in d.tools]
    assert names == sorted(names) and "add" in names and "gen" in names
    add = next(t for t in d.tools if t.name == "add")
    assert add.description == "Add two ints."
    assert [(p.name, p.type, p.required, p.default_json) for p in add.parameters] == [
        ("a", "int", True, b""),
        ("b", "int", False, b"2"),
    ]
    assert next(t for t in d.tools if t.name == "gen").supports_streaming
    assert d.adapter == "tests.Sample" and d.python_version and d.pid == r.pid


def test_sync_async_and_kwargs_tools(srv):
    assert result(srv.execute("add", b'{"a": 40}')) == 42
    assert result(srv.execute("async_add", b'{"a": 1.5, "b": 2}')) == 3.5
    assert result(srv.execute("anything", b'{"z": 1, "y": [2]}')) == {"got": ["y", "z"]}
    resp = srv.execute("add", b'{"a": 1, "b": 1}')
    assert resp.duration_ms > 0


@pytest.mark.parametrize(
    "kind,expected",
    [
        ("dict", {"a": 1, "b": [1, 2, {"c": None}]}),
        ("list", [1, "two", 3.5, True, None]),
        ("none", None),
        ("str", "héllo ✓"),
        ("tuple", [1, 2]),
        ("bytes", b"\x00\x01\xff"),
        ("bytearray", b"ab"),
        ("memoryview", b"mv"),
    ],
)
def test_result_kinds(srv, kind, expected):
    assert result(srv.execute("data", json.dumps({"kind": kind}).encode())) == expected


def test_none_travels_as_json_null(srv):
    resp = srv.execute("data", b'{"kind": "none"}')
    assert resp.result.WhichOneof("value") == "json" and resp.result.json == b"null"


@pytest.mark.parametrize("kind,type_name", [("set", "Opaque"), ("nested_set", "dict"), ("object", "object")])
def test_serialisation_error(srv, kind, type_name):
    resp = srv.execute("data", json.dumps({"kind": kind}).encode())
    assert resp.error.type == "SerializationError"
    assert f"tool 'data' returned a value of type '{type_name}'" in resp.error.message


def test_binary_args(srv):
    req = dict(binary_args={"blob": b"\x00" * 1000})
    assert result(srv.execute("blob_len", b'{"extra": 1}', **req)) == 1001


def test_unknown_tool_lists_available_tools(srv):
    resp = srv.execute("no_such_tool")
    assert resp.error.type == "UnknownTool"
    listed = resp.error.message.split(", ")
    assert listed == sorted(srv.servicer.tools) and "add" in listed and "gen" in listed


def test_exception_becomes_tool_error(srv):
    resp = srv.execute("fail", b'{"message": "kaputt"}')
    assert resp.error.type == "ValueError"
    assert resp.error.message == "kaputt"
    tb = resp.error.traceback
    assert tb.startswith("Traceback (most recent call last):")
    assert "in fail" in tb and "raise ValueError(message)" in tb
    assert tb.rstrip().endswith("ValueError: kaputt")
    # The worker's own frames are trimmed: the tool's frame comes first.
    assert "server.py" not in tb and "concurrent/futures" not in tb


def test_bad_signature_is_invalid_args(srv):
    missing = srv.execute("add", b"{}")
    e = missing.error
    assert (e.kind, e.type, e.arg_path, e.expected, e.got) == ("invalid_args", "InvalidArgs", "a", "int", "missing")
    assert "missing required argument" in e.message
    extra = srv.execute("add", b'{"a": 1, "c": 3}')
    assert extra.error.kind == "invalid_args" and extra.error.arg_path == "c" and "takes: a, b" in extra.error.message
    mistyped = srv.execute("add", b'{"a": "1"}')
    e = mistyped.error
    assert (e.kind, e.arg_path, e.expected, e.got) == ("invalid_args", "a", "int", "str '1'")
    assert srv.execute("add", b'{"a": true}').error.got == "bool True"  # bool is not an int here
    assert result(srv.execute("async_add", b'{"a": 1, "b": 2.5}')) == 3.5  # int is a float
    # **kwargs: no unexpected-argument check.
    assert result(srv.execute("anything", b'{"zz": 1}')) == {"got": ["zz"]}
    # Streaming tools too.
    chunks = list(srv.stream("gen", b'{"n": "x"}'))
    assert chunks[-1].is_final and chunks[-1].error.kind == "invalid_args" and chunks[-1].error.arg_path == "n"
    # A TypeError raised inside the tool keeps its traceback.
    inner = srv.execute("inner_type_error")
    assert inner.error.type == "TypeError" and "len(5)" in inner.error.traceback


def test_invalid_arguments(srv):
    assert srv.execute("add", b"[1]").error.type == "InvalidArguments"
    assert srv.execute("add", b"[1]").error.kind == "invalid_args"
    assert srv.execute("add", b"{bad").error.type == "InvalidArguments"
    reserved = srv.execute("whoami", b'{"ctx": 1}')
    assert reserved.error.type == "InvalidArguments" and "reserved" in reserved.error.message


def test_system_exit_is_a_tool_error(srv):
    resp = srv.execute("sys_exit")
    assert resp.error.type == "SystemExit" and resp.error.message == "7"
    assert result(srv.execute("add", b'{"a": 1}')) == 3  # the worker is still serving


def test_session_context(srv):
    got = result(
        srv.execute("whoami", session_id="s-1", request_id="r-9", metadata={"k": "v"})
    )
    assert got == {
        "session_id": "s-1",
        "request_id": "r-9",
        "worker_id": "w-test",
        "run_id": "run-test",
        "metadata": {"k": "v"},
        "tool": "whoami",
        "current_is_ctx": True,
    }
    assert result(srv.execute("async_whoami")) == {"session_id": "", "current_is_ctx": True}


def test_streaming_tool_called_unary(srv):
    resp = srv.execute("gen", b'{"n": 1}')
    assert resp.error.type == "StreamingToolCalledUnary" and "ExecuteStream" in resp.error.message


def test_unary_tool_called_streaming(srv):
    chunks = srv.stream("add", b'{"a": 1}')
    assert len(chunks) == 1 and chunks[0].is_final and chunks[0].error.type == "NotStreaming"


def test_unknown_tool_streaming(srv):
    chunks = srv.stream("nope")
    assert len(chunks) == 1 and chunks[0].is_final and chunks[0].error.type == "UnknownTool"


@pytest.mark.parametrize("tool", ["gen", "agen"])
def test_stream_order_and_final_marker(srv, tool):
    chunks = srv.stream(tool, b'{"n": 5}')
    data, final = chunks[:-1], chunks[-1]
    assert [c.seq for c in data] == [1, 2, 3, 4, 5]
    assert [json.loads(c.data.json) for c in data] == [{"i": i} for i in range(1, 6)]
    assert all(not c.is_final for c in data)
    assert final.is_final and not final.HasField("data") and not final.HasField("error")
    assert final.seq == 6


def test_empty_stream(srv):
    chunks = srv.stream("gen", b'{"n": 0}')
    assert len(chunks) == 1 and chunks[0].is_final and not chunks[0].HasField("error")


@pytest.mark.parametrize("tool,etype,emsg", [("gen_fail", "RuntimeError", "failed after 3"), ("agen_fail", "KeyError", "'missing'")])
def test_stream_exception_in_generator(srv, tool, etype, emsg):
    chunks = srv.stream(tool, b'{"n": 3}')
    assert [json.loads(c.data.json) for c in chunks[:-1]] == [1, 2, 3]
    final = chunks[-1]
    assert final.is_final and final.error.type == etype and final.error.message == emsg
    assert f"in {tool}" in final.error.traceback


def test_stream_bad_item(srv):
    chunks = srv.stream("gen_bad_item")
    assert [json.loads(c.data.json) for c in chunks[:-1]] == [1]
    assert chunks[-1].error.type == "SerializationError"
    assert "yielded a value of type 'Opaque'" in chunks[-1].error.message


def test_stream_binary_and_flagged_iterable(srv):
    chunks = srv.stream("gen_bytes")
    assert chunks[0].data.binary == b"ab" and json.loads(chunks[1].data.json) == {"j": 1}
    chunks = srv.stream("flagged", b'{"n": 3}')
    assert [json.loads(c.data.json) for c in chunks[:-1]] == [0, 1, 2] and chunks[-1].is_final


# -- cancellation ----------------------------------------------------------------


def test_cancel_sync_tool_sets_context_cancelled(srv, adapter):
    fut = srv.stub.ExecuteTool.future(pb.ExecuteToolRequest(tool_name="wait_for_cancel"), metadata=srv.md)
    wait_for(adapter.sync_started.is_set, what="tool started")
    fut.cancel()
    wait_for(adapter.sync_saw_cancel.is_set, what="ctx.cancelled seen by the sync tool")


def test_deadline_cancels_async_tool(srv, adapter):
    with pytest.raises(grpc.RpcError) as ei:
        srv.stub.ExecuteTool(pb.ExecuteToolRequest(tool_name="async_wait"), metadata=srv.md, timeout=0.3)
    assert ei.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    wait_for(adapter.async_cancelled.is_set, what="CancelledError inside the async tool")


@pytest.mark.parametrize("tool,closed", [("gen_endless", "gen_closed"), ("agen_endless", "agen_closed")])
def test_cancel_stream_closes_generator(srv, adapter, tool, closed):
    it = srv.stub.ExecuteStreamingTool(pb.ExecuteToolRequest(tool_name=tool), metadata=srv.md)
    assert next(it).seq == 1 and next(it).seq == 2
    assert not getattr(adapter, closed).is_set()
    it.cancel()
    wait_for(getattr(adapter, closed).is_set, what=f"{tool} closed")
    # The worker keeps serving after the cancelled stream.
    assert result(srv.execute("add", b'{"a": 1}')) == 3


def test_client_cancel_cancels_async_tool(srv, adapter):
    fut = srv.stub.ExecuteTool.future(pb.ExecuteToolRequest(tool_name="async_wait"), metadata=srv.md)
    wait_for(adapter.async_started.is_set, what="async tool started")
    fut.cancel()
    wait_for(adapter.async_cancelled.is_set, what="CancelledError inside the async tool")
    assert result(srv.execute("async_add", b'{"a": 1, "b": 2}')) == 3  # the loop keeps serving


def ping(srv):
    return srv.stub.Ping(pb.PingRequest(message="x"), metadata=srv.md, timeout=2)


def test_cancelled_sync_call_is_abandoned_until_its_tool_returns(make_server):
    adapter = SampleAdapter()
    srv = make_server(adapter, threads=1)
    fut = srv.stub.ExecuteTool.future(
        pb.ExecuteToolRequest(tool_name="stubborn", request_id="r-stuck"), metadata=srv.md
    )
    wait_for(adapter.stubborn_started.is_set, what="stubborn tool started")
    # Ping is answered while the only slot is taken.
    assert ping(srv).abandoned_calls == 0
    fut.cancel()
    p = wait_for(lambda: (lambda r: r if r.abandoned_calls == 1 else None)(ping(srv)), what="abandoned call reported")
    assert list(p.abandoned_request_ids) == ["r-stuck"]
    # The abandoned call keeps the only slot: the next sync call waits for
    # it (Ping is still answered), then runs once the stuck tool returns.
    later = srv.stub.ExecuteTool.future(
        pb.ExecuteToolRequest(tool_name="add", args_json=b'{"a": 1}', request_id="r-next"), metadata=srv.md, timeout=10
    )
    wait_for(lambda: srv.waiting() + srv.queued() == 1, what="the next call waiting for the slot")
    assert srv.busy() == 1 and not later.done()
    adapter.stubborn_release.set()
    assert result(later.result(5)) == 3
    wait_for(lambda: ping(srv).abandoned_calls == 0 and srv.busy() == 0, what="abandoned call finished")


def test_call_waiting_for_a_slot_is_dropped_when_its_caller_gives_up(make_server):
    adapter = SampleAdapter()
    srv = make_server(adapter, threads=1)
    first = srv.stub.ExecuteTool.future(pb.ExecuteToolRequest(tool_name="stubborn"), metadata=srv.md)
    wait_for(adapter.stubborn_started.is_set, what="stubborn tool started")
    with pytest.raises(grpc.RpcError) as ei:
        srv.execute("stubborn", timeout=0.3)
    assert ei.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    # The server learns of the deadline a moment after the client.
    wait_for(lambda: srv.waiting() == 0, what="the waiting call dropped")
    adapter.stubborn_release.set()
    assert result(first.result(5)) == "released"
    assert adapter.blocked_runs == 1, "the dropped call ran anyway"
    assert ping(srv).abandoned_calls == 0 and srv.busy() == 0


def test_contextvars_do_not_leak_between_calls(make_server):
    srv = make_server(SampleAdapter(), threads=1)  # one slot: likely the same thread each time
    for i in range(5):
        assert result(srv.execute("probe_contextvar", json.dumps({"value": f"v{i}"}).encode())) == "unset"


def test_sync_tool_returning_an_awaitable(srv):
    assert result(srv.execute("returns_awaitable", b'{"x": 7}')) == {"x": 7, "current_is_ctx": True}


@pytest.mark.parametrize("tool,session", [("gen_ctx", "s-gen"), ("agen_ctx", "s-agen")])
def test_stream_steps_see_their_session_context(srv, tool, session):
    chunks = srv.stream(tool, session_id=session)
    assert [json.loads(c.data.json) for c in chunks[:-1]] == [True, True] and chunks[-1].is_final
    assert srv.busy() == 0


def test_many_concurrent_calls_of_every_kind(make_server):
    srv = make_server(SampleAdapter(), threads=4)

    def one(i):
        if i % 3 == 0:
            return result(srv.execute("add", json.dumps({"a": i}).encode()))
        if i % 3 == 1:
            return result(srv.execute("async_add", json.dumps({"a": i, "b": 2}).encode()))
        return sum(json.loads(c.data.json)["i"] for c in srv.stream("gen", b'{"n": 3}')[:-1]) + i - 4

    with concurrent.futures.ThreadPoolExecutor(8) as ex:
        assert list(ex.map(one, range(60))) == [i + 2 for i in range(60)]
    assert srv.busy() == 0 and ping(srv).abandoned_calls == 0


# -- auth ---------------------------------------------------------------------------------


@pytest.mark.parametrize("md", [(), ((TOKEN_METADATA_KEY, "wrong"),), (("other", "secret-token"),)])
def test_auth_rejects_missing_or_wrong_token(srv, md):
    with pytest.raises(grpc.RpcError) as ei:
        srv.stub.Ping(pb.PingRequest(), metadata=md, timeout=5)
    assert ei.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.RpcError) as ei:
        srv.stub.ExecuteTool(pb.ExecuteToolRequest(tool_name="add", args_json=b'{"a":1}'), metadata=md, timeout=5)
    assert ei.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.RpcError) as ei:
        list(srv.stub.ExecuteStreamingTool(pb.ExecuteToolRequest(tool_name="gen"), metadata=md, timeout=5))
    assert ei.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "secret-token" not in (ei.value.details() or "")


def test_no_token_configured_accepts_calls(make_server):
    s = make_server(SampleAdapter())
    assert s.stub.Ping(pb.PingRequest(message="x"), timeout=5).message == "x"


# -- calls back to the host ----------------------------------------------------------------


class FakeHost(pb_grpc.HostServiceServicer):
    def __init__(self, token):
        self.token = token
        self.requests = []

    def _check(self, context):
        if dict(context.invocation_metadata()).get(TOKEN_METADATA_KEY) != self.token:
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "bad token")

    def ExecuteHostTool(self, request, context):
        self._check(context)
        self.requests.append(request)
        args = json.loads(request.args_json or b"{}")
        if request.tool_name == "double":
            return pb.ExecuteHostToolResponse(result=pb.Payload(json=json.dumps(args["x"] * 2).encode()))
        if request.tool_name == "blob":
            return pb.ExecuteHostToolResponse(result=pb.Payload(binary=b"\x01\x02"))
        return pb.ExecuteHostToolResponse(error=pb.ToolError(type="UnknownTool", message="double, blob"))

    def Heartbeat(self, request, context):
        self._check(context)
        return pb.HeartbeatResponse(session_valid=request.session_id == "live", server_time_unix_ms=1)

    def ListHostTools(self, request, context):
        self._check(context)
        return pb.ListHostToolsResponse(tools=[pb.ToolSpec(name="double"), pb.ToolSpec(name="blob")])


@pytest.fixture
def fake_host():
    host = FakeHost("host-token")
    server = grpc.server(concurrent.futures.ThreadPoolExecutor(max_workers=2))
    pb_grpc.add_HostServiceServicer_to_server(host, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield host, f"127.0.0.1:{port}"
    finally:
        server.stop(0).wait(5)


def test_call_host_tool(make_server, fake_host):
    host, addr = fake_host
    client = HostClient(addr, "host-token", "w-test")
    try:
        srv = make_server(SampleAdapter(), host=client)
        got = srv.execute("call_host", json.dumps({"name": "double", "args": {"x": 21}}).encode(), session_id="live")
        assert result(got) == 42
        req = host.requests[-1]
        assert (req.tool_name, req.session_id, req.worker_id) == ("double", "live", "w-test")
        assert result(srv.execute("call_host", b'{"name": "blob"}')) == b"\x01\x02"
        err = srv.execute("call_host", b'{"name": "missing"}')
        assert err.error.type == "HostToolError" and "UnknownTool" in err.error.message
        assert result(srv.execute("host_facts", session_id="live")) == {"valid": True, "tools": ["double", "blob"]}
        assert result(srv.execute("host_facts", session_id="gone"))["valid"] is False
    finally:
        client.close()


def test_async_tool_calls_host_without_blocking_the_loop(make_server, fake_host):
    _, addr = fake_host
    client = HostClient(addr, "host-token", "w-test")
    try:
        srv = make_server(SampleAdapter(), host=client)
        got = srv.execute("async_call_host", json.dumps({"name": "double", "args": {"x": 4}}).encode())
        assert result(got) == 8
    finally:
        client.close()


def test_call_host_with_wrong_token_is_bridge_error(make_server, fake_host):
    _, addr = fake_host
    client = HostClient(addr, "wrong", "w-test")
    try:
        srv = make_server(SampleAdapter(), host=client)
        err = srv.execute("call_host", b'{"name": "double", "args": {"x": 1}}')
        assert err.error.type == "BridgeError" and "UNAUTHENTICATED" in err.error.message
    finally:
        client.close()


def test_host_tool_error_attributes(fake_host):
    from snakepit_bridge import HostToolError, SessionContext

    _, addr = fake_host
    client = HostClient(addr, "host-token", "w1")
    try:
        ctx = SessionContext(session_id="live", worker_id="w1", host=client)
        with pytest.raises(HostToolError) as ei:
            ctx.call_host_tool("missing", name="shadowed-kwarg-is-fine")
        assert ei.value.type == "UnknownTool" and ei.value.message == "double, blob" and ei.value.tool == "missing"
        assert ctx.session_valid() is True
    finally:
        client.close()


def test_server_flavour(monkeypatch):
    from async_adapter import AsyncAdapter
    from snakepit_bridge.adapter import collect_tools
    from snakepit_bridge.server import server_flavour

    monkeypatch.delenv("SNAKEPIT_SERVER", raising=False)
    assert server_flavour(collect_tools(SampleAdapter())) == "sync"  # mixed: sync tools run best there
    assert server_flavour(collect_tools(AsyncAdapter())) == "aio"
    assert server_flavour({}) == "sync"
    assert server_flavour(collect_tools(SampleAdapter()), "aio") == "aio"  # the adapter's declaration
    assert server_flavour(collect_tools(AsyncAdapter()), "sync") == "sync"
    assert server_flavour({}, " AIO ") == "aio"  # the same spelling rule as the environment's
    with pytest.raises(ValueError, match="use 'sync' or 'aio'"):
        server_flavour({}, "threads")
    monkeypatch.setenv("SNAKEPIT_SERVER", "sync")  # the operator's say wins over the declaration
    assert server_flavour(collect_tools(SampleAdapter()), "aio") == "sync"
    with pytest.raises(ValueError):  # a typo fails even where the environment decides
        server_flavour({}, "threads")
    monkeypatch.setenv("SNAKEPIT_SERVER", " AIO ")
    assert server_flavour(collect_tools(SampleAdapter())) == "aio"
    monkeypatch.setenv("SNAKEPIT_SERVER", "bogus")  # ignored, with a warning
    assert server_flavour(collect_tools(AsyncAdapter())) == "aio"


def test_declared_limits_travel_in_the_tool_spec(srv):
    d = srv.stub.DescribeTools(pb.DescribeToolsRequest(), metadata=srv.md, timeout=5)
    limited = next(t for t in d.tools if t.name == "limited")
    assert limited.max_concurrency == 2 and limited.timeout_seconds == 1.5
    add = next(t for t in d.tools if t.name == "add")
    assert add.max_concurrency == 0 and add.timeout_seconds == 0


TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def test_trace_context_reaches_the_tool_and_its_log_records(srv):
    from snakepit_bridge import install_trace_logging

    install_trace_logging()
    install_trace_logging()  # idempotent
    records = []

    class Keep(logging.Handler):
        def emit(self, record):
            records.append(record)

    h = Keep()
    logger = logging.getLogger("sample.trace")
    logger.addHandler(h)
    try:
        req = pb.ExecuteToolRequest(
            tool_name="trace_info", request_id="r-7", metadata={"traceparent": TRACEPARENT, "tracestate": "vendor=1"}
        )
        got = result(srv.stub.ExecuteTool(req, metadata=srv.md, timeout=5))
        plain = result(srv.stub.ExecuteTool(pb.ExecuteToolRequest(tool_name="trace_info"), metadata=srv.md, timeout=5))
    finally:
        logger.removeHandler(h)
    assert got == {
        "traceparent": TRACEPARENT,
        "tracestate": "vendor=1",
        "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
        "span_id": "00f067aa0ba902b7",
    }
    assert plain == {"traceparent": "", "tracestate": "", "trace_id": "", "span_id": ""}
    assert [(r.trace_id, r.span_id, r.request_id) for r in records] == [
        ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7", "r-7"),
        ("", "", ""),
    ]


class _IterAdapter:
    """A sync tool flagged supports_streaming that returns an iterator: its
    steps run on the RPC's thread like a generator's."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.release = threading.Event()

    def _steps(self):
        self.started.set()
        self.release.wait(30)
        yield 1

    @tool(supports_streaming=True)
    def it(self):
        return self._steps()


def test_sync_iterator_stream_counts_and_is_abandoned_like_a_generator():
    adapter = _IterAdapter()
    srv = InProcServer(adapter, threads=1, flavour="sync")
    try:
        call = srv.stub.ExecuteStreamingTool(pb.ExecuteToolRequest(tool_name="it", request_id="r-it"), metadata=srv.md)
        threading.Thread(target=_drain, args=(call,), daemon=True).start()
        wait_for(adapter.started.is_set, what="the stream's first step running")
        assert srv.busy() == 1, "a step of a sync iterator must hold a slot"
        call.cancel()
        p = wait_for(lambda: (lambda r: r if r.abandoned_calls == 1 else None)(ping(srv)), what="the stuck step reported abandoned")
        assert list(p.abandoned_request_ids) == ["r-it"]
        adapter.release.set()
        wait_for(lambda: ping(srv).abandoned_calls == 0 and srv.busy() == 0, what="the step finished")
    finally:
        adapter.release.set()
        srv.close()


def _drain(call):
    try:
        for _ in call:
            pass
    except grpc.RpcError:
        pass


class _CountingAdapter:
    def __init__(self) -> None:
        self.runs = 0

    @tool
    def count(self) -> int:
        self.runs += 1
        return self.runs


def test_sync_tool_does_not_run_for_a_caller_already_gone():
    adapter = _CountingAdapter()
    srv = InProcServer(adapter, threads=1, flavour="sync")
    try:
        execute = srv.servicer._execute

        class GoneAfterAddCallback:
            """The RPC ends between add_callback and the slot."""

            def __init__(self, context):
                self._context = context

            def add_callback(self, cb):
                registered = self._context.add_callback(cb)
                cb()
                return registered

            def __getattr__(self, name):
                return getattr(self._context, name)

        srv.servicer._execute = lambda request, context: execute(request, GoneAfterAddCallback(context))
        try:
            srv.execute("count", timeout=2)
        except grpc.RpcError:
            pass
        assert adapter.runs == 0, "the tool ran for a caller that had gone"
        assert srv.busy() == 0 and ping(srv).abandoned_calls == 0
    finally:
        srv.close()
