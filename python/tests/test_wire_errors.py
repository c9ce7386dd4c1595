"""What a worker answers when the bytes on the wire cannot be what they
should: a malformed request gets a clean gRPC status (and the worker keeps
serving), and text Python holds but UTF-8 cannot carry (lone surrogates,
e.g. a file name decoded with surrogateescape in an exception's message)
still reaches the host, as a tool error or a result, instead of failing
the reply's serialisation (which the host sees as a broken call)."""

from __future__ import annotations

import json
from typing import Any, Iterator, List

import grpc
import pytest

from conftest import wait_for
from snakepit_bridge import BaseAdapter, Batch, tool
from snakepit_bridge import _wire
from snakepit_bridge.pb import snakepit_pb2 as pb

BAD = "file /tmp/\udcff\udcfe"  # what os.fsdecode makes of b"/tmp/\xff\xfe"


class Adapter(BaseAdapter):
    @tool
    def ok(self) -> str:
        return "fine"

    @tool
    def raises(self) -> int:
        raise FileNotFoundError(BAD)

    @tool
    def returns(self) -> Any:
        return {"name": BAD, "list": [BAD]}

    @tool
    def returns_str(self) -> str:
        return BAD

    @tool
    def streams(self) -> Iterator[Any]:
        yield BAD
        raise ValueError(BAD)

    @tool(batch=Batch(max_size=4, max_wait_ms=0))
    def batched(self, x: List[int]) -> List[Any]:
        return [BAD if v else ValueError(BAD) for v in x]


MALFORMED = [
    b"\x0b" * 5000,  # unknown groups nested past any stack
    b"\x0a\x05ab",  # a length past the end
    b"\x0a\x02\xff\xfe",  # a tool name that is not UTF-8
    b"\x08" + b"\xff" * 11,  # a varint of 11 bytes
    b"\x3a\x02\x0a\x05",  # CallOptions whose field overruns it
]


@pytest.mark.parametrize("blob", MALFORMED, ids=["deep", "overrun", "utf8", "varint", "submsg"])
def test_malformed_request_gets_a_status_and_the_worker_keeps_serving(make_server, blob: bytes) -> None:
    srv = make_server(Adapter())
    for method in ("ExecuteTool", "ExecuteStreamingTool"):
        if method == "ExecuteTool":
            call = srv.channel.unary_unary(f"/snakepit.v1.WorkerService/{method}")
            with pytest.raises(grpc.RpcError) as ei:
                call(blob, metadata=srv.md, timeout=10)
        else:
            stream = srv.channel.unary_stream(f"/snakepit.v1.WorkerService/{method}")
            with pytest.raises(grpc.RpcError) as ei:
                list(stream(blob, metadata=srv.md, timeout=10))
        assert ei.value.code() in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN), ei.value
    assert json.loads(srv.execute("ok").result.json) == "fine"
    wait_for(lambda: srv.busy() == 0, timeout=10, what="no call left counted")


def _escaped(text: str) -> str:
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def test_a_string_field_with_lone_surrogates_is_sent_escaped() -> None:
    msg = _wire.ToolError(type="E", message=BAD, traceback=BAD, kind="k", arg_path=BAD, expected="x", got=BAD)
    got = pb.ToolError.FromString(msg.SerializeToString())
    assert got.message == got.traceback == got.arg_path == got.got == _escaped(BAD)
    ping = _wire.PingResponse(abandoned_request_ids=[BAD, "r"])
    assert list(pb.PingResponse.FromString(ping.SerializeToString()).abandoned_request_ids) == [_escaped(BAD), "r"]
    req = _wire.ExecuteToolRequest(metadata={BAD: BAD})
    assert dict(pb.ExecuteToolRequest.FromString(req.SerializeToString()).metadata) == {_escaped(BAD): _escaped(BAD)}


def test_an_exception_message_with_lone_surrogates_is_a_tool_error(make_server) -> None:
    srv = make_server(Adapter())
    r = srv.execute("raises")
    assert r.error.type == "FileNotFoundError" and r.error.message == _escaped(BAD), r
    chunks = srv.stream("streams")
    assert [c.is_final for c in chunks] == [False, True]
    assert json.loads(chunks[0].data.json) == BAD
    assert chunks[1].error.type == "ValueError" and chunks[1].error.message == _escaped(BAD)


@pytest.mark.parametrize("tool_name", ["returns", "returns_str"])
def test_a_result_with_lone_surrogates_travels_as_json_escapes(make_server, tool_name: str) -> None:
    srv = make_server(Adapter())
    r = srv.execute(tool_name)
    assert not r.HasField("error"), r.error
    r.result.json.decode("utf-8")  # the host refuses JSON that is not UTF-8
    want = BAD if tool_name == "returns_str" else {"name": BAD, "list": [BAD]}
    assert json.loads(r.result.json) == want


def test_batch_items_with_lone_surrogates(make_server) -> None:
    srv = make_server(Adapter())
    items = [pb.BatchItem(args_json=b'{"x": 1}', request_id="a"), pb.BatchItem(args_json=b'{"x": 0}', request_id="b")]
    r = srv.execute("batched", batch=items)
    assert len(r.batch) == 2, r
    assert json.loads(r.batch[0].result.json) == BAD
    assert r.batch[1].error.type == "ValueError" and r.batch[1].error.message == _escaped(BAD)
