"""Argument decoding, result encoding and exception conversion."""

from __future__ import annotations

import json

import pytest

from snakepit_bridge import codec
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


def test_unsendable_is_a_clear_error():
    with pytest.raises(ResultEncodingError) as ei:
        encode_result("x", object())
    assert str(ei.value) == (
        "tool 'x' returned a value of type 'object' that is not JSON-serialisable; "
        "return dict/list/str/int/float/bool/None, bytes, a numpy array, or a structure of these "
        "(datetime, Decimal, UUID, Enum, set, dataclass and pydantic values are converted too): "
        "convert the value to a dict of its fields or to a string"
    )


def test_object_names_its_type():
    class Thing:
        pass

    with pytest.raises(ResultEncodingError, match="tool 'x' returned a value of type 'Thing'"):
        encode_result("x", Thing())


def test_nested_bad_value_names_both_types():
    with pytest.raises(ResultEncodingError) as ei:
        encode_result("x", {"a": [1, object()]})
    msg = str(ei.value)
    assert "type 'dict'" in msg and "contains a value of type 'object'" in msg


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), {"x": [float("-inf")]}])
def test_nan_and_infinity_are_refused(bad):
    with pytest.raises(ResultEncodingError, match="NaN or Infinity"):
        encode_result("x", bad)


def test_streamed_item_wording():
    with pytest.raises(ResultEncodingError, match="tool 's' yielded a value of type 'object'"):
        encode_result("s", object(), verb="yielded")


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


# The per-call fast paths (codec._loads, the shared C encoder) must give
# exactly what json.loads / json.dumps give: values, and errors with their
# messages, so a tool's author sees the same behaviour either way.

_ARGS = [
    b'{"a":1,"b":2}',
    b'{"a": [1, 2.5, "x\\u00e9", null, true, false, {"n": -0.0}]}  \n\t\r',
    b'{}',
    '{"é": "ü"}'.encode("utf-8"),
    '{"é": 1}'.encode("utf-16"),
    '{"é": 1}'.encode("utf-32-le"),
    b'\xef\xbb\xbf{"a": 1}',  # UTF-8 BOM
    b'{"a": "\xed\xa0\x80"}',  # an encoded lone surrogate: json.loads passes it
    b'{"a":NaN, "b": Infinity}',
    b'{"a":1} x',
    b'{"a":1}{}',
    b'{"a":1}\x0b',  # not JSON whitespace
    b'{"a":',
    b'{\xff}',
    b'{"a": 01}',
    b'  {"a": 1}',
    b'[1]',
]


def _outcome(fn, arg):
    try:
        return ("ok", repr(fn(arg)))
    except Exception as e:  # the type and message are the point
        return ("error", type(e).__name__, str(e))


@pytest.mark.parametrize("raw", _ARGS)
def test_fast_args_decoding_is_json_loads(raw):
    assert _outcome(codec._loads, raw) == _outcome(json.loads, raw)


_RESULTS = [3.0, 1, -0.0, 1.5e300, 10**30, "x", "é\n\"", None, True, [1, {"k": "é"}], (1, 2), {"a": {"b": [1.5]}}, {1: "int key"}, {True: 1, None: 2, 1.5: 3}]


@pytest.mark.parametrize("value", _RESULTS)
def test_shared_result_encoder_is_json_dumps(value):
    want = json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()
    assert codec.encode_result("t", value).json == want


def test_the_c_encoder_is_in_use_on_cpython():
    # The fast encoder falls back to the portable one silently; on CPython
    # with its accelerator the fallback would be a performance regression.
    if getattr(json.encoder, "c_make_encoder", None) is not None:
        assert codec._encode.__name__ == "_c_encode"


def test_circular_result_is_a_clear_error():
    a: list = []
    a.append(a)
    with pytest.raises(codec.ResultEncodingError, match="Circular reference"):
        codec.encode_result("t", a)


def test_fast_args_decoding_of_other_buffers_is_json_loads():
    for raw in (bytearray(b'{"a": 1}'), memoryview(b'{"a": 1}')):
        assert _outcome(codec._loads, raw) == _outcome(json.loads, raw)


def test_failed_encoding_leaves_no_stale_circular_record():
    # The C encoder's circular-reference record keeps the containers it was
    # inside when an error stopped it; encoding the same container again
    # must not be taken for a cycle.
    bad = {"inner": [1], "n": float("nan")}
    with pytest.raises(codec.ResultEncodingError, match="NaN"):
        codec.encode_result("t", bad)
    bad["n"] = 1
    # The fast encoder itself (encode_result would hide a false cycle behind
    # its checked path).
    assert codec._encode(bad) == '{"inner":[1],"n":1}'


def test_circular_result_on_a_small_thread_stack_is_a_clear_error():
    # Without a circular-reference record the encoder would recurse to the
    # interpreter's limit, which overflows a small thread stack on 3.13.
    import threading

    out = []

    def encode():
        a: list = []
        a.append(a)
        try:
            codec.encode_result("t", a)
        except codec.ResultEncodingError as e:
            out.append(str(e))

    old = threading.stack_size(256 * 1024)
    try:
        t = threading.Thread(target=encode)
        t.start()
        t.join(10)
    finally:
        threading.stack_size(old)
    assert out and "Circular reference" in out[0]


def test_shared_result_encoder_from_many_threads():
    import threading

    shared = {"k": [1, 2, {"x": "é"}]}
    want = json.dumps(shared, ensure_ascii=False, separators=(",", ":")).encode()
    bad = []

    def work():
        for _ in range(2000):
            if codec.encode_result("t", shared).json != want:
                bad.append(1)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not bad
