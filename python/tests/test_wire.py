"""The hand-coded WorkerService messages (_wire.py) against the generated
snakepit_pb2: the same fields, the same bytes, and each parses what the
other writes (randomised and edge cases, both directions). The generated
code is the reference here; the Go side decodes what both write."""

from __future__ import annotations

import math
import random
import struct
from typing import Any, Dict, List, Optional

import pytest

from google.protobuf.descriptor import FieldDescriptor as FD

from snakepit_bridge import _wire
from snakepit_bridge.pb import snakepit_pb2 as pb

#: Every message WorkerService exchanges, by name (the request and response
#: types of its methods and everything they hold).
def _worker_service_messages() -> List[str]:
    seen: List[str] = []

    def walk(desc: Any) -> None:
        if desc.name in seen or desc.GetOptions().map_entry:
            return
        seen.append(desc.name)
        for f in desc.fields:
            if f.message_type is not None:
                walk(f.message_type)

    for m in pb.DESCRIPTOR.services_by_name["WorkerService"].methods:
        walk(m.input_type)
        walk(m.output_type)
    return seen


MESSAGES = _worker_service_messages()

_KIND_OF = {
    FD.TYPE_STRING: _wire._STR, FD.TYPE_BYTES: _wire._BYTES, FD.TYPE_BOOL: _wire._BOOL, FD.TYPE_UINT32: _wire._U32,
    FD.TYPE_UINT64: _wire._U64, FD.TYPE_INT64: _wire._I64, FD.TYPE_ENUM: _wire._ENUM, FD.TYPE_DOUBLE: _wire._F64,
    FD.TYPE_MESSAGE: _wire._MSG,
}


def _expected_kind(f: Any) -> int:
    if f.message_type is not None and f.message_type.GetOptions().map_entry:
        value = f.message_type.fields_by_name["value"]
        return _wire._MAP_SS if value.type == FD.TYPE_STRING else _wire._MAP_SB
    kind = _KIND_OF[f.type]
    if f.label == FD.LABEL_REPEATED:
        return {_wire._MSG: _wire._RMSG, _wire._STR: _wire._RSTR, _wire._U64: _wire._RU64}[kind]
    return kind


def test_every_worker_service_message_is_hand_coded() -> None:
    assert "ExecuteToolRequest" in MESSAGES and "ParamSpec" in MESSAGES
    for name in MESSAGES:
        assert hasattr(_wire, name), f"_wire.py has no {name}: WorkerService uses it"


@pytest.mark.parametrize("name", MESSAGES)
def test_fields_match_the_proto(name: str) -> None:
    # The tripwire: a field added to (or changed in) the .proto fails here
    # until _wire.py knows it.
    desc = getattr(pb, name).DESCRIPTOR
    want = {f.number: (f.name, _expected_kind(f)) for f in desc.fields}
    cls = getattr(_wire, name)
    got = {num: (fname, kind) for num, fname, kind, _ in cls._FIELDS}
    assert got == want
    assert [num for num, *_ in cls._FIELDS] == sorted(want), "fields must be listed in number order"
    for num, fname, kind, sub in cls._FIELDS:
        if kind in (_wire._MSG, _wire._RMSG):
            assert sub.__name__ == desc.fields_by_number[num].message_type.name
    oneofs = {f.name for o in desc.oneofs for f in o.fields}
    assert set(cls._ONEOF) == oneofs


# -- comparable views of both kinds of message --------------------------------


def _f64(x: float) -> Any:
    return ("nan",) if math.isnan(x) else struct.pack("<d", x)


def pb_view(m: Any) -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    for f in m.DESCRIPTOR.fields:
        v = getattr(m, f.name)
        kind = _expected_kind(f)
        if kind in (_wire._MAP_SS, _wire._MAP_SB):
            out[f.name] = {k: bytes(x) if isinstance(x, bytes) else x for k, x in v.items()}
        elif kind == _wire._RMSG:
            out[f.name] = [pb_view(x) for x in v]
        elif kind in (_wire._RSTR, _wire._RU64):
            out[f.name] = list(v)
        elif kind == _wire._MSG:
            out[f.name] = pb_view(v) if m.HasField(f.name) else None
        elif kind == _wire._F64:
            out[f.name] = _f64(v)
        else:
            out[f.name] = v
    for o in m.DESCRIPTOR.oneofs:
        out["oneof:" + o.name] = m.WhichOneof(o.name)
    return out


def wire_view(m: _wire.Message) -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    for _, name, kind, _ in m._FIELDS:
        v = getattr(m, name)
        if kind in (_wire._MAP_SS, _wire._MAP_SB):
            out[name] = {k: bytes(x) if kind == _wire._MAP_SB else x for k, x in v.items()}
        elif kind == _wire._RMSG:
            out[name] = [wire_view(x) for x in v]
        elif kind in (_wire._RSTR, _wire._RU64):
            out[name] = list(v)
        elif kind == _wire._MSG:
            out[name] = wire_view(v) if m.HasField(name) else None
        elif kind == _wire._F64:
            out[name] = _f64(v)
        elif kind == _wire._BYTES:
            out[name] = bytes(v)
        else:
            out[name] = v
    if m._ONEOF:
        out["oneof:value"] = m.WhichOneof("value")  # type: ignore[attr-defined]
    return out


# -- random messages -----------------------------------------------------------

_TEXT = ["", "a", "tool_name", "é", "日本語", "emoji 🐍", "x" * 200, "\x00nul", "a-b.c/d"]
_DOUBLES = [0.0, -0.0, 1.5, -2.25, 1e-300, 1e300, float("inf"), float("-inf"), float("nan"), 3.14159]


def _rand_scalar(rng: random.Random, kind: int) -> Any:
    if kind in (_wire._STR, _wire._RSTR):
        return rng.choice(_TEXT) if rng.random() < 0.7 else "".join(chr(rng.randint(32, 0x2FFF)) for _ in range(rng.randint(0, 30)))
    if kind == _wire._BYTES:
        return bytes(rng.getrandbits(8) for _ in range(rng.choice([0, 1, 5, 127, 128, 300, 20000])))
    if kind == _wire._BOOL:
        return rng.random() < 0.5
    if kind == _wire._U32:
        return rng.choice([0, 1, 127, 128, 16383, 16384, 2**31, 2**32 - 1, rng.getrandbits(32)])
    if kind in (_wire._U64, _wire._RU64):
        return rng.choice([0, 1, 127, 128, 2**35, 2**63, 2**64 - 1, rng.getrandbits(64)])
    if kind == _wire._I64:
        return rng.choice([0, 1, -1, 2**63 - 1, -(2**63), rng.getrandbits(63) - 2**62, 12345])
    if kind == _wire._ENUM:
        return rng.choice([0, 1, 2])
    if kind == _wire._F64:
        return rng.choice(_DOUBLES) if rng.random() < 0.7 else rng.uniform(-1e6, 1e6)
    raise AssertionError(kind)


def random_pb(rng: random.Random, name: str, depth: int = 0) -> Any:
    msg = getattr(pb, name)()
    for f in msg.DESCRIPTOR.fields:
        if rng.random() < 0.35:
            continue
        kind = _expected_kind(f)
        if kind in (_wire._MAP_SS, _wire._MAP_SB):
            for _ in range(rng.choice([1, 1, 2, 3])):
                v = _rand_scalar(rng, _wire._STR if kind == _wire._MAP_SS else _wire._BYTES)
                getattr(msg, f.name)[_rand_scalar(rng, _wire._STR)] = v
        elif kind == _wire._RMSG:
            for _ in range(rng.randint(0, 3 if depth < 2 else 0)):
                getattr(msg, f.name).append(random_pb(rng, f.message_type.name, depth + 1))
        elif kind in (_wire._RSTR, _wire._RU64):
            getattr(msg, f.name).extend(_rand_scalar(rng, kind) for _ in range(rng.randint(0, 5)))
        elif kind == _wire._MSG:
            getattr(msg, f.name).CopyFrom(random_pb(rng, f.message_type.name, depth + 1))
        else:
            setattr(msg, f.name, _rand_scalar(rng, kind))
    return msg


def to_wire(m: Any) -> _wire.Message:
    """The same message built through _wire's constructors."""
    cls = getattr(_wire, m.DESCRIPTOR.name)
    kw: Dict[str, Any] = {}
    for f in m.DESCRIPTOR.fields:
        kind = _expected_kind(f)
        v = getattr(m, f.name)
        if kind == _wire._MSG:
            if m.HasField(f.name):
                kw[f.name] = to_wire(v)
        elif kind == _wire._RMSG:
            kw[f.name] = [to_wire(x) for x in v]
        elif kind in (_wire._MAP_SS, _wire._MAP_SB):
            kw[f.name] = dict(v)
        elif kind in (_wire._RSTR, _wire._RU64):
            kw[f.name] = list(v)
        elif f.containing_oneof is not None:
            if m.WhichOneof(f.containing_oneof.name) == f.name:
                kw[f.name] = v
        else:
            kw[f.name] = v
    return cls(**kw)  # type: ignore[no-any-return]


def _has_multi_entry_map(m: Any) -> bool:
    for f in m.DESCRIPTOR.fields:
        kind = _expected_kind(f)
        v = getattr(m, f.name)
        if kind in (_wire._MAP_SS, _wire._MAP_SB) and len(v) > 1:
            return True
        if kind == _wire._MSG and m.HasField(f.name) and _has_multi_entry_map(v):
            return True
        if kind == _wire._RMSG and any(_has_multi_entry_map(x) for x in v):
            return True
    return False


@pytest.mark.parametrize("name", MESSAGES)
def test_random_messages_both_ways(name: str) -> None:
    rng = random.Random(f"wire-{name}")
    cls = getattr(_wire, name)
    for _ in range(150):
        ref = random_pb(rng, name)
        ref_bytes = ref.SerializeToString()
        # Generated -> hand-coded: every field read.
        got = cls.FromString(ref_bytes)
        assert wire_view(got) == pb_view(ref)
        # Hand-coded -> generated: what _wire writes parses to the same message.
        mine = to_wire(ref)
        mine_bytes = mine.SerializeToString()
        assert pb_view(getattr(pb, name).FromString(mine_bytes)) == pb_view(ref)
        assert wire_view(cls.FromString(mine_bytes)) == wire_view(mine)
        if not _has_multi_entry_map(ref):  # protobuf's map order is its own
            assert mine_bytes == ref_bytes
        # Decoded and re-encoded: the same bytes again.
        assert got.SerializeToString() == mine_bytes or _has_multi_entry_map(ref)


# -- edge cases ------------------------------------------------------------------


def test_defaults_are_left_out_and_oneof_members_kept_even_empty() -> None:
    assert _wire.ExecuteToolResponse().SerializeToString() == b""
    assert _wire.ToolChunk(seq=0, is_final=False).SerializeToString() == b""
    for p in (pb.Payload(json=b""), pb.Payload(binary=b"")):
        w = _wire.Payload(**{p.WhichOneof("value"): b""})
        assert w.SerializeToString() == p.SerializeToString() != b""
        assert _wire.Payload.FromString(p.SerializeToString()).WhichOneof("value") == p.WhichOneof("value")
    r = _wire.ExecuteToolResponse(result=_wire.Payload())  # an empty sub-message is still there
    assert r.SerializeToString() == pb.ExecuteToolResponse(result=pb.Payload()).SerializeToString() == b"\x0a\x00"
    assert _wire.ExecuteToolResponse.FromString(b"\x0a\x00").HasField("result")
    for d in (-0.0, 0.0, 5e-324):
        assert _wire.ExecuteToolResponse(duration_ms=d).SerializeToString() == pb.ExecuteToolResponse(duration_ms=d).SerializeToString()
    assert _wire.PingResponse(pid=-1).SerializeToString() == pb.PingResponse(pid=-1).SerializeToString()


def test_unset_fields_read_as_proto3_defaults() -> None:
    r = _wire.ExecuteToolRequest.FromString(b"")
    assert (r.tool_name, r.args_json, dict(r.binary_args), dict(r.metadata), list(r.batch)) == ("", b"", {}, {}, [])
    assert not r.HasField("options") and r.options.affinity == 0 and r.options.pool == ""
    resp = _wire.ExecuteToolResponse()
    assert resp.result.WhichOneof("value") is None and resp.error.type == "" and resp.duration_ms == 0.0
    with pytest.raises(ValueError):
        resp.HasField("duration_ms")  # no presence, as in protobuf
    with pytest.raises(AttributeError, match="frozen"):
        resp.result.json = b"{}"  # the shared default: build a Payload and assign it
    assert _wire.Payload().WhichOneof("value") is None


def _key(number: int, wire: int) -> bytes:
    return _wire._varint(number << 3 | wire)


UNKNOWN = [
    _key(99, 0) + _wire._varint(2**64 - 1),
    _key(100, 1) + b"\x01" * 8,
    _key(101, 2) + b"\x03abc",
    _key(102, 5) + b"\x01\x02\x03\x04",
    _key(103, 3) + _key(1, 0) + b"\x05" + _key(2, 2) + b"\x01x" + _key(103, 4),
    _key(1, 0) + b"\x07",  # a known number with the wrong wire type: unknown to protobuf too
]


@pytest.mark.parametrize("extra", UNKNOWN, ids=["varint", "fixed64", "len", "fixed32", "group", "wrong-wire"])
def test_unknown_fields_are_skipped(extra: bytes) -> None:
    ref = pb.ExecuteToolRequest(tool_name="t", args_json=b"{}", metadata={"k": "v"}, batch=[pb.BatchItem(request_id="r")])
    data = ref.SerializeToString()
    for blob in (extra + data, data + extra, data[:3] + data[3:]):
        got = _wire.ExecuteToolRequest.FromString(blob)
        want = pb.ExecuteToolRequest.FromString(blob)
        assert wire_view(got) == pb_view(want)


def test_repeated_scalars_packed_or_not_and_last_value_wins() -> None:
    unpacked = b"".join(_key(4, 0) + _wire._varint(x) for x in (3, 300, 2**63))
    packed = _key(4, 2) + _wire._varint(len(b"\x05\x06")) + b"\x05\x06"
    for blob in (unpacked, packed + unpacked, unpacked + packed):
        assert list(_wire.Payload.FromString(blob).shape) == list(pb.Payload.FromString(blob).shape)
    twice = _key(3, 2) + b"\x01a" + _key(3, 2) + b"\x01b"
    assert _wire.Payload.FromString(twice).dtype == pb.Payload.FromString(twice).dtype == "b"
    oneof = _key(1, 2) + b"\x01j" + _key(2, 2) + b"\x01b"
    for blob in (oneof, oneof[3:] + oneof[:3]):
        assert wire_view(_wire.Payload.FromString(blob)) == pb_view(pb.Payload.FromString(blob))
    dup_key = pb.ExecuteToolRequest(metadata={"k": "1"}).SerializeToString() + pb.ExecuteToolRequest(metadata={"k": "2"}).SerializeToString()
    assert dict(_wire.ExecuteToolRequest.FromString(dup_key).metadata) == dict(pb.ExecuteToolRequest.FromString(dup_key).metadata) == {"k": "2"}


def test_a_message_field_given_twice_is_merged() -> None:
    a = pb.ExecuteToolRequest(options=pb.CallOptions(idempotent=True, pool="p")).SerializeToString()
    b = pb.ExecuteToolRequest(options=pb.CallOptions(affinity=2, queue_timeout_us=7), tool_name="t").SerializeToString()
    for blob in (a + b, b + a, a + a):
        assert wire_view(_wire.ExecuteToolRequest.FromString(blob)) == pb_view(pb.ExecuteToolRequest.FromString(blob))
    e1 = pb.ExecuteToolResponse(error=pb.ToolError(type="A", got="g")).SerializeToString()
    e2 = pb.ExecuteToolResponse(error=pb.ToolError(message="m")).SerializeToString()
    assert wire_view(_wire.ExecuteToolResponse.FromString(e1 + e2)) == pb_view(pb.ExecuteToolResponse.FromString(e1 + e2))
    # Nested: the merged sub-message's own message fields merge too; and a
    # oneof member set between two occurrences clears the first, so the
    # later one starts afresh (nothing of the cleared one comes back).
    r1 = pb.ExecuteToolResponse(result=pb.Payload(json=b"1", dtype="d", shape=[2])).SerializeToString()
    r2 = pb.ExecuteToolResponse(result=pb.Payload(shape=[3])).SerializeToString()
    r3 = pb.ExecuteToolResponse(result=pb.Payload(binary=b"x")).SerializeToString()
    o1 = pb.ExecuteToolRequest(options=pb.CallOptions(pool="p"), batch=[pb.BatchItem(request_id="a")]).SerializeToString()
    for blob in (r1 + r2, r1 + r3, r3 + r1 + r2, r1 + e1 + r2, e1 + r1 + e2, r1 + e1 + r2 + e2, o1 + a + o1):
        kind = _wire.ExecuteToolRequest if blob.startswith(o1) else _wire.ExecuteToolResponse
        ref = pb.ExecuteToolRequest if blob.startswith(o1) else pb.ExecuteToolResponse
        assert wire_view(kind.FromString(blob)) == pb_view(ref.FromString(blob)), blob


def test_map_entries_with_missing_key_or_value() -> None:
    entry = _key(3, 2) + b"\x00"  # binary_args entry with neither key nor value
    entry2 = _key(6, 2) + b"\x03" + _key(1, 2) + b"\x01k"  # metadata entry without a value
    blob = entry + entry2
    assert wire_view(_wire.ExecuteToolRequest.FromString(blob)) == pb_view(pb.ExecuteToolRequest.FromString(blob))


@pytest.mark.parametrize(
    "blob",
    [
        b"\x0a",  # a key without its length
        b"\x0a\x05abc",  # a length past the end
        b"\x12\x80",  # a truncated varint length
        b"\x19\x00\x00",  # a truncated double (field 3 of ExecuteToolResponse)
        b"\x08" + b"\xff" * 11,  # a varint of 11 bytes
        b"\x00\x00",  # field number 0 (protobuf's C++ parser stops there, with a warning)
        b"\x0f",  # wire type 7
        b"\x0a\x02\x0a\x05",  # a sub-message whose field overruns it
    ],
)
def test_malformed_input_raises_decode_error(blob: bytes) -> None:
    with pytest.raises(_wire.DecodeError):
        _wire.ExecuteToolResponse.FromString(blob)


def test_invalid_utf8_in_a_string_is_refused() -> None:
    blob = _key(1, 2) + b"\x02\xff\xfe"
    with pytest.raises(_wire.DecodeError):
        _wire.ExecuteToolRequest.FromString(blob)


def test_bytes_like_values_are_joined_without_a_copy_first() -> None:
    data = bytearray(b"abc" * 1000)
    r = _wire.ExecuteToolResponse(result=_wire.Payload(binary=memoryview(data), dtype="uint8", shape=(3000,)))
    want = pb.ExecuteToolResponse(result=pb.Payload(binary=bytes(data), dtype="uint8", shape=[3000]))
    assert r.SerializeToString() == want.SerializeToString()


def test_equality_and_repr() -> None:
    a = _wire.ToolError(type="X", message="m")
    assert a == _wire.ToolError(type="X", message="m") and a != _wire.ToolError(type="Y")
    assert "X" in repr(a)
    opt: Optional[_wire.CallOptions] = _wire.CallOptions(affinity=_wire.CallOptions.AFFINITY_STRICT_FAIL_FAST)
    assert opt is not None and opt.affinity == pb.CallOptions.AFFINITY_STRICT_FAIL_FAST


@pytest.mark.parametrize(
    "blob",
    [
        _key(9, 3) * 5000,  # groups nested past any stack: protobuf stops at 100 levels
        _key(9, 3) * 50 + _key(9, 4) * 50 + _key(9, 3) * 200 + _key(9, 4) * 200,
        _key(9, 3) + _key(0, 0) + b"\x00" + _key(9, 4),  # field number 0 inside an unknown group
    ],
    ids=["deep", "deep-after-shallow", "zero-in-group"],
)
def test_unknown_groups_too_deep_or_malformed_raise_decode_error(blob: bytes) -> None:
    with pytest.raises(Exception):
        pb.ExecuteToolRequest.FromString(blob)  # the reference refuses them too
    with pytest.raises(_wire.DecodeError):
        _wire.ExecuteToolRequest.FromString(blob)


def test_unknown_groups_as_deep_as_protobuf_allows_are_skipped() -> None:
    blob = _key(9, 3) * 60 + _key(9, 4) * 60 + _key(1, 2) + b"\x01t"
    assert _wire.ExecuteToolRequest.FromString(blob).tool_name == pb.ExecuteToolRequest.FromString(blob).tool_name == "t"


def test_a_field_number_past_protobufs_range_is_refused() -> None:
    # A tag of more than 32 bits (found by mutating valid requests): the
    # generated parser refuses it; _wire skipped it as an unknown field.
    blob = pb.ExecuteToolRequest(tool_name="t").SerializeToString() + _wire._varint(5 | 1 << 63) + b"\x00" * 4
    with pytest.raises(Exception):
        pb.ExecuteToolRequest.FromString(blob)
    with pytest.raises(_wire.DecodeError):
        _wire.ExecuteToolRequest.FromString(blob)
    in_map = _key(6, 2) + _wire._varint(16) + _wire._varint(5 | 1 << 63) + b"\x00" * 4 + _key(1, 2) + b"\x00"
    with pytest.raises(_wire.DecodeError):
        _wire.ExecuteToolRequest.FromString(in_map)
