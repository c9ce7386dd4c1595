"""The hand-serialised ExecuteToolResponse of a numpy array (_arraywire.py):
byte for byte what the generated class writes, parsed back by it, and served
by both server flavours (with and without a token) next to ordinary
responses."""

from __future__ import annotations

import json
import struct

import pytest

from conftest import InProcServer

np = pytest.importorskip("numpy")

from snakepit_bridge import BaseAdapter, tool  # noqa: E402
from snakepit_bridge import _wire  # noqa: E402
from snakepit_bridge._arraywire import array_response  # noqa: E402
from snakepit_bridge.codec import _ARRAY_DTYPES, result_response  # noqa: E402
from snakepit_bridge.pb import snakepit_pb2 as pb  # noqa: E402

SHAPES = [(), (0,), (1,), (5,), (2, 3), (3, 0, 2), (200, 130), (1, 1, 1, 1)]


def reference(arr, duration: float = 0.0) -> bytes:
    """What the generated class serialises for the same response."""
    c = np.ascontiguousarray(arr).astype(arr.dtype.newbyteorder("<"), copy=False)
    resp = pb.ExecuteToolResponse(duration_ms=duration)
    resp.result.binary = c.tobytes()
    resp.result.dtype = arr.dtype.name
    resp.result.shape.extend(arr.shape)
    return resp.SerializeToString()


def sample(dtype: str, shape: tuple):
    n = int(np.prod(shape)) if shape else 1
    return (np.arange(n) % 7).astype(dtype).reshape(shape)


@pytest.mark.parametrize("dtype", sorted(_ARRAY_DTYPES))
@pytest.mark.parametrize("shape", SHAPES)
def test_bytes_equal_generated_serializer(dtype: str, shape: tuple) -> None:
    arr = sample(dtype, shape)
    for duration in (0.0, 12.5, 1e-9):
        r = array_response(arr, arr.dtype.name)
        r.duration_ms = duration
        wire = r.SerializeToString()
        assert wire == reference(arr, duration)
        back = pb.ExecuteToolResponse.FromString(wire)
        assert back.result.WhichOneof("value") == "binary"
        assert back.result.dtype == dtype and tuple(back.result.shape) == shape
        assert back.duration_ms == duration
        assert np.frombuffer(back.result.binary, dtype=arr.dtype).reshape(shape).tolist() == arr.tolist()


def test_large_dimensions_and_lengths_use_multibyte_varints() -> None:
    arr = np.zeros((3, 70000), dtype=np.float32)  # 840,000 bytes: a 3-byte length
    assert array_response(arr, "float32").SerializeToString() == reference(arr)
    back = pb.ExecuteToolResponse.FromString(array_response(arr, "float32").SerializeToString())
    assert list(back.result.shape) == [3, 70000] and len(back.result.binary) == arr.nbytes


def test_negative_zero_duration_is_written_as_protobuf_does() -> None:
    arr = np.arange(3, dtype=np.int64)
    r = array_response(arr, "int64")
    r.duration_ms = -0.0
    assert r.SerializeToString() == reference(arr, -0.0)


def test_contiguous_array_is_not_copied_before_the_join() -> None:
    arr = np.arange(1000, dtype=np.float32)
    r = array_response(arr, "float32")
    assert np.shares_memory(np.frombuffer(r.result.binary, dtype=np.uint8), arr)


@pytest.mark.parametrize(
    "make",
    [
        lambda: np.asfortranarray(np.arange(12, dtype=np.float64).reshape(3, 4)),
        lambda: np.arange(20, dtype=np.int32)[::3],
        lambda: np.arange(12, dtype=np.uint16).reshape(3, 4).T,
        lambda: np.arange(24, dtype=np.int8).reshape(2, 3, 4)[:, 1:, ::2],
    ],
    ids=["fortran", "strided", "transposed", "sliced-3d"],
)
def test_non_contiguous_arrays_go_in_c_order(make) -> None:
    arr = make()
    wire = array_response(arr, arr.dtype.name).SerializeToString()
    assert wire == reference(arr)
    back = pb.ExecuteToolResponse.FromString(wire).result
    assert np.frombuffer(back.binary, dtype=arr.dtype).reshape(tuple(back.shape)).tolist() == arr.tolist()


@pytest.mark.parametrize("dtype", [">f4", ">f8", ">i8", ">u2", ">i4"])
def test_big_endian_arrays_are_sent_little_endian(dtype: str) -> None:
    arr = np.arange(6, dtype=dtype).reshape(2, 3)
    back = pb.ExecuteToolResponse.FromString(array_response(arr, arr.dtype.name).SerializeToString()).result
    assert back.dtype == np.dtype(dtype).name  # "float32", not ">f4"
    little = np.dtype(dtype).newbyteorder("<")
    assert np.frombuffer(back.binary, dtype=little).reshape(2, 3).tolist() == arr.tolist()


def test_parses_back_to_the_same_response() -> None:
    arr = sample("int16", (2, 3))
    r = array_response(arr, "int16")
    r.duration_ms = 3.0
    assert _wire.ExecuteToolResponse.FromString(r.SerializeToString()) == r


def test_result_response_kinds() -> None:
    typed = result_response("t", np.arange(4, dtype=np.float32))
    assert typed.result.dtype == "float32" and isinstance(typed.result.binary, memoryview)  # the array's own memory
    assert result_response("t", np.float32(1.5)).result.WhichOneof("value") == "json"  # a scalar: JSON
    # Not a typed array: JSON, raw bytes, or (complex: no typed dtype, not
    # JSON) a SerializationError — read back through protobuf's own parser.
    cases = [({"a": 1}, "json"), (b"raw", "binary"), ([1, 2], "json"), (None, "json"),
             (np.array(["a", "b"]), "json"), (np.arange(3) + 1j, "SerializationError")]
    for value, kind in cases:
        back = pb.ExecuteToolResponse.FromString(result_response("t", value).SerializeToString())
        got = back.error.type if back.HasField("error") else back.result.WhichOneof("value")
        assert got == kind, (value, back)
        assert back.result.dtype == ""
    # NaN in a typed array is data, not JSON: it travels.
    nan = pb.ExecuteToolResponse.FromString(
        result_response("t", np.array([np.nan], dtype=np.float64)).SerializeToString()
    )
    assert np.isnan(np.frombuffer(nan.result.binary, dtype="<f8")[0])


class ArrayAdapter(BaseAdapter):
    @tool
    def arr(self, dtype: str, rows: int, cols: int):
        return (np.arange(rows * cols) % 5).astype(dtype).reshape(rows, cols)

    @tool
    def fortran(self):
        return np.asfortranarray(np.arange(6, dtype=">i4").reshape(2, 3))

    @tool
    def plain(self):
        return {"x": [1, 2]}

    @tool
    def raw(self, n: int) -> bytes:
        return b"\x07" * n

    @tool
    def boom(self):
        raise ValueError("no array today")


@pytest.mark.parametrize("flavour", ["sync", "aio"])
@pytest.mark.parametrize("token", ["", "tok"])
def test_served_through_grpc(flavour: str, token: str) -> None:
    srv = InProcServer(ArrayAdapter(), flavour=flavour, token=token)
    try:
        for dtype, rows, cols in (("float32", 512, 1024), ("float64", 3, 5), ("bool", 2, 2), ("uint8", 0, 4)):
            r = srv.execute("arr", json.dumps({"dtype": dtype, "rows": rows, "cols": cols}).encode())
            assert not r.HasField("error")
            assert r.result.dtype == dtype and list(r.result.shape) == [rows, cols]
            got = np.frombuffer(r.result.binary, dtype=np.dtype(dtype).newbyteorder("<")).reshape(rows, cols)
            assert got.tolist() == ((np.arange(rows * cols) % 5).astype(dtype).reshape(rows, cols)).tolist()
            assert r.duration_ms > 0
        r = srv.execute("fortran")
        assert r.result.dtype == "int32" and struct.unpack("<6i", r.result.binary) == (0, 1, 2, 3, 4, 5)
        r = srv.execute("plain")
        assert json.loads(r.result.json) == {"x": [1, 2]} and r.result.dtype == ""
        r = srv.execute("raw", b'{"n": 5}')
        assert r.result.binary == b"\x07" * 5 and r.result.dtype == ""
        r = srv.execute("boom")
        assert r.error.type == "ValueError" and not r.HasField("result")
    finally:
        srv.close()


def test_messages_have_the_fields_the_hand_serializer_knows() -> None:
    # A field added to either message needs _arraywire.py (and this test) updated.
    # "batch" is never set on a hand-serialised response: a batch tool's
    # results go through protobuf's own serializer (BatchItemResult).
    assert {f.name: f.number for f in pb.ExecuteToolResponse.DESCRIPTOR.fields} == {
        "result": 1, "error": 2, "duration_ms": 3, "batch": 4,
    }
    assert {f.name: f.number for f in pb.Payload.DESCRIPTOR.fields} == {"json": 1, "binary": 2, "dtype": 3, "shape": 4}
