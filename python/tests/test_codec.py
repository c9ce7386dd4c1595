"""Argument decoding, result encoding and exception conversion."""

from __future__ import annotations

import json

import pytest

from snakepit_bridge.codec import (
    ArgumentsError,
    ResultEncodingError,
    decode_args,
    encode_result,
    error_from_exception,
)
from snakepit_bridge.context import decode_payload


@pytest.mark.parametrize(
    "value",
    [
        {"a": 1, "b": [1, 2, {"c": None, "d": "é✓"}]},
        [1, "two", 3.5, True, None],
        "text",
        0,
        -1.25,
        False,
        None,
        {"deep": {"deeper": [[[]], {}]}},
    ],
)
def test_json_results_round_trip(value):
    p = encode_result("t", value)
    assert p.WhichOneof("value") == "json"
    assert json.loads(p.json) == value
    assert decode_payload(p) == value


def test_none_is_json_null():
    assert encode_result("t", None).json == b"null"


def test_non_ascii_is_utf8_not_escaped():
    assert encode_result("t", "é").json == "\"é\"".encode()


def test_tuple_becomes_list():
    assert json.loads(encode_result("t", (1, 2)).json) == [1, 2]


@pytest.mark.parametrize("value", [b"\x00\x01\xff", bytearray(b"ab"), memoryview(b"mv"), b""])
def test_binary_results(value):
    p = encode_result("t", value)
    assert p.WhichOneof("value") == "binary"
    assert p.binary == bytes(value)
    assert decode_payload(p) == bytes(value)


def test_set_is_a_clear_error():
    with pytest.raises(ResultEncodingError) as ei:
        encode_result("x", {1, 2})
    assert str(ei.value) == (
        "tool 'x' returned a value of type 'set' that is not JSON-serialisable; "
        "return dict/list/str/int/float/bool/None or bytes"
    )


def test_object_names_its_type():
    class Thing:
        pass

    with pytest.raises(ResultEncodingError, match="tool 'x' returned a value of type 'Thing'"):
        encode_result("x", Thing())


def test_nested_bad_value_names_both_types():
    with pytest.raises(ResultEncodingError) as ei:
        encode_result("x", {"a": [1, {2}]})
    msg = str(ei.value)
    assert "type 'dict'" in msg and "contains a value of type 'set'" in msg


def test_nested_bytes_hint():
    with pytest.raises(ResultEncodingError, match="bytes are only allowed as the whole result"):
        encode_result("x", {"blob": b"\x00"})


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), {"x": [float("-inf")]}])
def test_nan_and_infinity_are_refused(bad):
    with pytest.raises(ResultEncodingError, match="NaN or Infinity"):
        encode_result("x", bad)


def test_streamed_item_wording():
    with pytest.raises(ResultEncodingError, match="tool 's' yielded a value of type 'set'"):
        encode_result("s", {1}, verb="yielded")


def test_decode_args():
    assert decode_args(b"") == {}
    assert decode_args(b"  null ") == {}
    assert decode_args(b'{"a": 1, "b": [true]}') == {"a": 1, "b": [True]}
    assert decode_args(b'{"a": 1}', {"blob": b"\x00"}) == {"a": 1, "blob": b"\x00"}
    assert decode_args(b"", {"blob": b""}) == {"blob": b""}


@pytest.mark.parametrize(
    "raw,binary,match",
    [
        (b"[1, 2]", None, "must be a JSON object"),
        (b'"s"', None, "must be a JSON object"),
        (b"{nope", None, "not valid JSON"),
        (b'{"blob": 1}', {"blob": b"x"}, "given both"),
    ],
)
def test_decode_args_errors(raw, binary, match):
    with pytest.raises(ArgumentsError, match=match):
        decode_args(raw, binary)


def _raiser():
    def inner():
        raise KeyError("deep")

    inner()


def test_error_from_exception():
    try:
        _raiser()
    except KeyError as e:
        err = error_from_exception(e)
    assert err.type == "KeyError"
    assert err.message == "'deep'"
    assert err.traceback.startswith("Traceback (most recent call last):")
    assert "in _raiser" in err.traceback and "in inner" in err.traceback
    assert err.traceback.rstrip().endswith("KeyError: 'deep'")
