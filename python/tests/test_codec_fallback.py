"""codec's portable paths: what runs when ``json`` lacks the undocumented
pieces the fast paths use (``JSONDecoder().scan_once``, ``c_make_encoder``),
or has them with another behaviour. Each fallback is forced here and held to
the same parity with json.loads / json.dumps as the fast path in
test_codec.py."""

from __future__ import annotations

import json
import json.encoder

import pytest

from snakepit_bridge import codec

from test_codec import _ARGS, _RESULTS, _outcome


def test_fast_paths_are_in_use_on_cpython():
    # Silently falling back would be a performance regression. (json and
    # the fast paths are set up by the first call, not at import.)
    codec.decode_args(b'{"a": 1}')
    codec.encode_result("t", {"a": 1})
    assert codec._loads.__name__ == "_fast_loads"
    if getattr(json.encoder, "c_make_encoder", None) is not None:
        assert codec._encode.__name__ == "_c_encode"


class _NoScanner(json.JSONDecoder):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        del self.scan_once


class _WrongScanner(json.JSONDecoder):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.scan_once = lambda s, idx: ({}, 0)


@pytest.fixture(params=["missing", "misbehaving"])
def portable_loads(request, monkeypatch):
    monkeypatch.setattr(json, "JSONDecoder", _NoScanner if request.param == "missing" else _WrongScanner)
    loads = codec._make_loads()
    monkeypatch.undo()  # json.loads itself must not see the stand-in
    assert loads is json.loads
    monkeypatch.setattr(codec, "_loads", loads)
    return loads


@pytest.mark.parametrize("raw", _ARGS)
def test_portable_args_decoding_is_json_loads(portable_loads, raw):
    assert _outcome(codec._loads, raw) == _outcome(json.loads, raw)


def test_portable_decode_args(portable_loads):
    assert codec.decode_args(b'{"a": 1, "b": [2]}', {"c": b"\x00"}) == {"a": 1, "b": [2], "c": b"\x00"}
    assert codec.decode_args(b"  ") == {}
    with pytest.raises(codec.ArgumentsError, match="not valid JSON"):
        codec.decode_args(b"{bad")
    with pytest.raises(codec.ArgumentsError, match="JSON object"):
        codec.decode_args(b"[1]")


def _broken_encoder(*args, **kwargs):
    raise TypeError("c_make_encoder() takes other arguments here")


@pytest.fixture(params=["missing", "other-signature"])
def portable_encode(request, monkeypatch):
    monkeypatch.setattr(json.encoder, "c_make_encoder", None if request.param == "missing" else _broken_encoder)
    encode = codec._result_encoder()
    monkeypatch.undo()
    assert encode.__name__ != "_c_encode"
    monkeypatch.setattr(codec, "_encode", encode)
    return encode


@pytest.mark.parametrize("value", _RESULTS)
def test_portable_result_encoder_is_json_dumps(portable_encode, value):
    want = json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()
    assert codec.encode_result("t", value).json == want


def test_portable_result_encoder_errors(portable_encode):
    a: list = []
    a.append(a)
    with pytest.raises(codec.ResultEncodingError, match="Circular reference"):
        codec.encode_result("t", a)
    with pytest.raises(codec.ResultEncodingError, match="NaN"):
        codec.encode_result("t", {"n": float("nan")})
    with pytest.raises(codec.ResultEncodingError, match="'object'"):
        codec.encode_result("t", object())
    assert codec.encode_result("t", {3, 1}).json == b"[1,3]"
    assert codec.encode_result("t", {"é": [1.5, None]}).json == '{"é":[1.5,null]}'.encode()
