"""Batch tools (@tool(batch=Batch(...))): spec, per-call checks and results,
over a real gRPC connection to both server flavours."""

from __future__ import annotations

import json
from typing import Any, List, Optional

import pytest

from snakepit_bridge import Batch, BaseAdapter, InvalidArgs, SessionContext, tool
from snakepit_bridge.adapter import collect_tools
from snakepit_bridge.pb import snakepit_pb2 as pb


class BatchAdapter(BaseAdapter):
    def __init__(self) -> None:
        self.sizes: List[int] = []
        self.seen_ids: List[List[str]] = []

    @tool(batch=Batch(max_size=8, max_wait_ms=1.5))
    def scale(self, x: list[float], factor: list[int] = 2) -> list[float]:  # type: ignore[assignment]
        """Multiply each x by its factor."""
        self.sizes.append(len(x))
        return [v * f for v, f in zip(x, factor)]

    @tool(batch=Batch(max_size=4, max_wait_ms=0))
    def picky(self, n: list[int], ctx: SessionContext) -> list[Any]:
        self.seen_ids.append([c.request_id for c in ctx.batch_calls])
        out: List[Any] = []
        for v in n:
            if v < 0:
                out.append(InvalidArgs("n", "must not be negative", got=str(v)))
            elif v == 13:
                out.append(ValueError("unlucky"))
            else:
                out.append(v + 1)
        return out

    @tool(batch=Batch(max_size=4, max_wait_ms=0))
    async def aplus(self, n: list[int]) -> list[int]:
        return [v + 1 for v in n]

    @tool(batch=Batch(max_size=4, max_wait_ms=0))
    def broken(self, n: list[int]) -> list[int]:
        if len(n) > 1:
            raise RuntimeError("the whole batch failed")
        return n[:0]  # the wrong length

    @tool
    def plain(self, n: int) -> int:
        return n


def batch_request(tool: str, *items: Any) -> pb.ExecuteToolRequest:
    return pb.ExecuteToolRequest(
        tool_name=tool,
        batch=[
            pb.BatchItem(args_json=json.dumps(args).encode(), request_id=f"r{i}", metadata={"traceparent": f"tp{i}"})
            for i, args in enumerate(items)
        ],
    )


def item_value(r: pb.BatchItemResult) -> Any:
    assert not r.HasField("error"), r.error
    return json.loads(r.result.json)


@pytest.fixture
def srv(make_server):
    return make_server(BatchAdapter())


def test_spec_is_per_call_and_carries_the_batch_options(srv):
    d = srv.stub.DescribeTools(pb.DescribeToolsRequest(), metadata=srv.md, timeout=5)
    scale = next(t for t in d.tools if t.name == "scale")
    assert (scale.batch_max_size, scale.batch_max_wait_ms) == (8, 1.5)
    assert [(p.name, p.type, p.required, p.default_json) for p in scale.parameters] == [
        ("x", "float", True, b""),
        ("factor", "int", False, b"2"),
    ]
    assert scale.returns == "float"
    plain = next(t for t in d.tools if t.name == "plain")
    assert plain.batch_max_size == 0


def test_batch_splits_results_in_order(make_server):
    a = BatchAdapter()
    srv = make_server(a)
    resp = srv.stub.ExecuteTool(batch_request("scale", {"x": 1.5}, {"x": 2, "factor": 3}, {"x": -1}), metadata=srv.md, timeout=10)
    assert not resp.HasField("error")
    assert [item_value(r) for r in resp.batch] == [3.0, 6.0, -2.0]
    assert a.sizes == [3]  # one invocation for the three calls


def test_per_call_errors_fail_only_their_call(srv):
    resp = srv.stub.ExecuteTool(
        batch_request("picky", {"n": 1}, {"n": "x"}, {"n": -5}, {"n": 13}, {"m": 1}, {"n": 2}),
        metadata=srv.md, timeout=10,
    )
    r = resp.batch
    assert len(r) == 6
    assert item_value(r[0]) == 2 and item_value(r[5]) == 3
    # Refused before the tool ran: a wrong type and an unknown argument.
    assert r[1].error.kind == "invalid_args" and r[1].error.arg_path == "n"
    assert r[4].error.kind == "invalid_args"
    # Returned as exceptions by the tool.
    assert r[2].error.kind == "invalid_args" and "negative" in r[2].error.message
    assert r[3].error.type == "ValueError" and r[3].error.message == "unlucky"


def test_context_has_each_calls_own_context(make_server):
    a = BatchAdapter()
    srv = make_server(a)
    srv.stub.ExecuteTool(batch_request("picky", {"n": 1}, {"n": "bad"}, {"n": 2}), metadata=srv.md, timeout=10)
    assert a.seen_ids == [["r0", "r2"]]  # the refused call is not in the batch


def test_async_batch_tool(srv):
    resp = srv.stub.ExecuteTool(batch_request("aplus", {"n": 1}, {"n": 2}), metadata=srv.md, timeout=10)
    assert [item_value(r) for r in resp.batch] == [2, 3]


def test_a_raise_fails_every_call_and_a_wrong_length_is_reported(srv):
    resp = srv.stub.ExecuteTool(batch_request("broken", {"n": 1}, {"n": 2}), metadata=srv.md, timeout=10)
    assert [r.error.type for r in resp.batch] == ["RuntimeError", "RuntimeError"]
    resp = srv.stub.ExecuteTool(batch_request("broken", {"n": 1}), metadata=srv.md, timeout=10)
    assert resp.batch[0].error.type == "BatchResultError" and "one result per call" in resp.batch[0].error.message


def test_single_call_of_a_batch_tool_is_a_batch_of_one(srv):
    resp = srv.execute("scale", b'{"x": 4}')
    assert not resp.HasField("error") and json.loads(resp.result.json) == 8
    resp = srv.execute("picky", b'{"n": 13}')
    assert resp.error.type == "ValueError"
    resp = srv.execute("picky", b'{"n": "x"}')
    assert resp.error.kind == "invalid_args"


def test_batch_request_to_a_plain_tool_is_refused(srv):
    resp = srv.stub.ExecuteTool(batch_request("plain", {"n": 1}), metadata=srv.md, timeout=10)
    assert resp.error.type == "NotBatchTool" and "@tool(batch=Batch(...))" in resp.error.message
    assert len(resp.batch) == 0


def test_numpy_rows_are_one_result_per_call(make_server):
    np = pytest.importorskip("numpy")

    class M(BaseAdapter):
        @tool(batch=Batch(max_size=4))
        def matvec(self, v: list[list[float]]) -> list[list[float]]:
            return np.stack(v) @ np.eye(2)  # type: ignore[no-any-return]

    srv = make_server(M())
    resp = srv.stub.ExecuteTool(batch_request("matvec", {"v": [1, 2]}, {"v": [3, 4]}), metadata=srv.md, timeout=10)
    got = [np.frombuffer(r.result.binary, dtype=r.result.dtype).tolist() for r in resp.batch]
    assert got == [[1.0, 2.0], [3.0, 4.0]]


def test_declaration_errors():
    with pytest.raises(ValueError, match="max_size"):
        Batch(max_size=1)
    with pytest.raises(TypeError, match="max_wait_ms"):
        Batch(max_wait_ms="2")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="Batch"):
        tool(batch=32)(lambda self, x: x)  # type: ignore[arg-type]

    class BadAnn:
        @tool(batch=Batch())
        def f(self, x: int) -> list[int]:
            return [x]

    with pytest.raises(TypeError, match=r"list\[T\]"):
        collect_tools(BadAnn())

    with pytest.raises(TypeError, match="stream"):
        @tool(batch=Batch())
        def g(x: list[int]) -> Any:
            yield x

    with pytest.raises(TypeError, match="kwargs"):
        @tool(batch=Batch())
        def h(x: list[int], **kw: Any) -> list[int]:
            return x


def test_optional_item_type():
    class O(BaseAdapter):
        @tool(batch=Batch())
        def f(self, x: list[Optional[int]]) -> list[int]:
            return [v or 0 for v in x]

    spec = collect_tools(O())["f"].spec
    assert spec.parameters[0].type == "Optional[int]"


def test_example_adapter(make_server):
    from snakepit_bridge.examples.batching import MATRIX_SIZE, BatchingAdapter

    a = BatchingAdapter()
    a.setup()
    srv = make_server(a)
    resp = srv.stub.ExecuteTool(batch_request("double", {"x": 1}, {"x": 2.5}), metadata=srv.md, timeout=10)
    assert [item_value(r) for r in resp.batch] == [2, 5.0]
    resp = srv.stub.ExecuteTool(batch_request("sqrt", {"x": 4}, {"x": -1}), metadata=srv.md, timeout=10)
    assert item_value(resp.batch[0]) == 2.0 and resp.batch[1].error.kind == "invalid_args"
    np = pytest.importorskip("numpy")
    v = [1.0] * MATRIX_SIZE
    resp = srv.stub.ExecuteTool(batch_request("matvec", {"v": v}, {"v": [1.0]}), metadata=srv.md, timeout=10)
    got = np.frombuffer(resp.batch[0].result.binary, dtype=resp.batch[0].result.dtype)
    assert np.allclose(got, a._m @ np.asarray(v))
    assert resp.batch[1].error.kind == "invalid_args"
    one = srv.execute("matvec_one", json.dumps({"v": v}).encode())
    assert np.allclose(np.frombuffer(one.result.binary, dtype=one.result.dtype), got)
