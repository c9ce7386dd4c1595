"""The WorkerService messages, encoded and decoded by hand.

Why: importing protobuf's runtime and the generated snakepit_pb2 cost
about a fifth of ``import grpc`` on every worker's start (issue 21, "a lean
start"), for a handful of flat messages. This module is the worker's whole
side of WorkerService: the requests it decodes (ExecuteToolRequest with its
BatchItems, maps and CallOptions, PingRequest, DescribeToolsRequest) and
the replies it encodes (ExecuteToolResponse, ToolChunk, PingResponse,
DescribeToolsResponse and what they hold). HostService (the worker calling
the host) still uses the generated code, imported on first use.

Contract, checked against the generated classes by
python/tests/test_wire.py (randomised and edge cases, both directions, and
a tripwire on the .proto's field numbers):

* Encoding writes what the generated serializer writes: fields in number
  order, proto3 defaults left out (a double only when its bits are not
  +0.0), ``shape`` packed, a oneof member (Payload.json/binary) and a
  message field whenever set, even empty. Map entries go in dict order
  (protobuf's own order is unspecified). Where the generated class would
  refuse a string (lone surrogates, which UTF-8 cannot hold), those
  characters go as backslash escapes (``\\udcff``): see ``_utf8``.
* Decoding reads every field, skips unknown ones by wire type, takes
  packed and unpacked repeated scalars, keeps the last of a repeated
  scalar or map key, merges a message field that occurs twice, and
  raises DecodeError on truncated or malformed input.
* The classes look like the generated ones where the bridge and its tests
  read them: same attribute names, proto3 defaults when unset, ``HasField``
  for message and oneof fields, ``Payload.WhichOneof("value")``,
  ``SerializeToString`` and ``FromString``. Unlike the generated classes,
  a message field that is unset reads as a shared, frozen default
  instance: build the sub-message and assign it (or pass it to the
  constructor) instead of writing into ``msg.result``. A constructor keeps
  the sub-messages it is given (no copies); maps and repeated message
  fields are copied into a dict or list of the message's own, as the
  generated classes do, so a caller's container is never shared.
* ``bytes`` fields may hold any bytes-like object (a memoryview of an
  array's memory): encoding joins it without copying it first.
"""

from __future__ import annotations

import struct
from types import MappingProxyType
from typing import Any, ClassVar, Dict, List, Mapping, Optional, Sequence, Tuple, Type, TypeVar

__all__ = [
    "DecodeError",
    "Message",
    "Payload",
    "ToolError",
    "ParamSpec",
    "ToolSpec",
    "PingRequest",
    "PingResponse",
    "DescribeToolsRequest",
    "DescribeToolsResponse",
    "CallOptions",
    "BatchItem",
    "ExecuteToolRequest",
    "BatchItemResult",
    "ExecuteToolResponse",
    "ToolChunk",
]


class DecodeError(ValueError):
    """The bytes are not a valid encoding of the message."""


# Field kinds (the proto type, and how it is repeated).
_STR, _BYTES, _BOOL, _U32, _U64, _I64, _ENUM, _F64, _MSG, _RMSG, _RSTR, _RU64, _MAP_SS, _MAP_SB = range(14)
_WIRE = {_STR: 2, _BYTES: 2, _BOOL: 0, _U32: 0, _U64: 0, _I64: 0, _ENUM: 0, _F64: 1, _MSG: 2, _RMSG: 2, _RSTR: 2, _RU64: 2, _MAP_SS: 2, _MAP_SB: 2}

_pack_double = struct.Struct("<d").pack
_unpack_double = struct.Struct("<d").unpack_from
_ZERO_DOUBLE = _pack_double(0.0)
_EMPTY_MAP: Mapping[str, Any] = MappingProxyType({})
_VARINT_KINDS = frozenset((_BOOL, _U32, _U64, _I64, _ENUM, _RU64))
_NUMERIC = frozenset((_BOOL, _U32, _U64, _I64, _ENUM, _F64))


def _varint(n: int) -> bytes:
    if n < 0x80:
        return _SMALL[n] if n >= 0 else _varint(n + (1 << 64))
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


_SMALL = [bytes((i,)) for i in range(0x80)]


def _read_varint(buf: bytes, pos: int) -> Tuple[int, int]:
    b = buf[pos]
    if b < 0x80:
        return b, pos + 1
    result = b & 0x7F
    shift = 7
    pos += 1
    while True:
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result & 0xFFFFFFFFFFFFFFFF, pos
        shift += 7
        if shift >= 70:
            raise DecodeError("varint longer than 10 bytes")


#: How deep unknown groups may nest: protobuf's own recursion limit.
_MAX_DEPTH = 100
#: The largest field number protobuf allows.
_MAX_FIELD = (1 << 29) - 1


def _skip(buf: bytes, pos: int, end: int, wire: int, number: int, depth: int = 0) -> int:
    """The position after an unknown field's value."""
    if number > _MAX_FIELD:  # a tag of more than 32 bits: protobuf refuses it too
        raise DecodeError(f"field number {number} out of range")
    if wire == 0:
        _, pos = _read_varint(buf, pos)
    elif wire == 1:
        pos += 8
    elif wire == 2:
        n, pos = _read_varint(buf, pos)
        pos += n
    elif wire == 5:
        pos += 4
    elif wire == 3:  # a group (proto2): skip to its end tag
        if depth >= _MAX_DEPTH:
            # Bounded as protobuf bounds it: a RecursionError would escape
            # FromString's contract (and costs a deep stack first).
            raise DecodeError(f"unknown groups nested deeper than {_MAX_DEPTH}")
        while True:
            if pos >= end:
                raise DecodeError("unterminated group")
            tag, pos = _read_varint(buf, pos)
            if tag & 7 == 4:
                if tag >> 3 != number:
                    raise DecodeError("mismatched end of group")
                break
            if tag >> 3 == 0:
                raise DecodeError("field number 0 in a group")
            pos = _skip(buf, pos, end, tag & 7, tag >> 3, depth + 1)
    else:
        raise DecodeError(f"invalid wire type {wire}")
    if pos > end:
        raise DecodeError("truncated message")
    return pos


def _utf8(text: str) -> bytes:
    """A string field's bytes. Lone surrogates (a file name decoded with
    surrogateescape in an exception's message, say) go as backslash escapes:
    UTF-8 cannot hold them, the host refuses a string that is not UTF-8,
    and raising here would fail the whole reply in gRPC's serializer, where
    the servicer cannot turn it into a tool error."""
    return text.encode("utf-8", "backslashreplace")


def _refuse_write(self: Any, name: str, value: Any) -> None:
    raise AttributeError(
        f"{type(self).__mro__[1].__name__} default instance is shared and frozen: "
        f"build the sub-message and assign it to its parent's field instead"
    )


M = TypeVar("M", bound="Message")


class Message:
    """The base of the hand-coded messages (see the module's contract)."""

    #: (number, name, kind, message class or None), in number order.
    _FIELDS: ClassVar[Tuple[Tuple[int, str, int, Any], ...]] = ()
    _BY_NUMBER: ClassVar[Dict[int, Tuple[str, int, Any]]] = {}
    _KEYS: ClassVar[Tuple[Tuple[bytes, str, int, Any], ...]] = ()
    _ONEOF: ClassVar[Tuple[str, ...]] = ()
    _PRESENCE: ClassVar[frozenset] = frozenset()

    def __init_subclass__(cls, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        if cls.__name__.startswith("_Frozen"):
            return
        cls._BY_NUMBER = {num: (name, kind, sub) for num, name, kind, sub in cls._FIELDS}
        cls._KEYS = tuple((_varint(num << 3 | _WIRE[kind]), name, kind, sub) for num, name, kind, sub in cls._FIELDS)
        cls._PRESENCE = frozenset(name for _, name, kind, _ in cls._FIELDS if kind == _MSG) | frozenset(cls._ONEOF)

    # -- the generated classes' API ----------------------------------------

    def HasField(self, name: str) -> bool:  # noqa: N802 (protobuf's name)
        if name not in self._PRESENCE:
            raise ValueError(f"{type(self).__name__}.{name} has no presence (not a message or oneof field)")
        return name in self.__dict__

    def SerializeToString(self) -> bytes:  # noqa: N802
        out: List[Any] = []
        self._encode(out)
        return b"".join(out)

    @classmethod
    def FromString(cls: Type[M], data: bytes) -> M:  # noqa: N802
        buf = bytes(data)
        try:
            return cls._decode(buf, 0, len(buf))
        except (IndexError, struct.error):
            raise DecodeError(f"truncated {cls.__name__}") from None
        except UnicodeDecodeError as e:
            raise DecodeError(f"a string field of {cls.__name__} is not UTF-8: {e}") from None

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Message) or other._FIELDS is not self._FIELDS:
            return NotImplemented
        for _, name, kind, _ in self._FIELDS:
            a, b = getattr(self, name), getattr(other, name)
            if kind in (_RMSG, _RSTR, _RU64):
                a, b = list(a), list(b)
            elif kind in (_MAP_SS, _MAP_SB):
                a, b = dict(a), dict(b)
            elif kind == _BYTES:
                a, b = bytes(a), bytes(b)
            if a != b or (name in self._PRESENCE and self.HasField(name) != other.HasField(name)):
                return False
        return True

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        parts = ", ".join(f"{k}={v!r}" for k, v in self.__dict__.items())
        return f"{type(self).__name__}({parts})"

    # -- encoding ------------------------------------------------------------

    def _encode(self, out: List[Any]) -> int:
        """Append the wire form's parts to ``out``; returns their length."""
        d = self.__dict__
        total = 0
        for key, name, kind, sub in self._KEYS:
            v = d.get(name)
            if v is None:
                continue
            if kind == _STR:
                if not v and name not in self._ONEOF:
                    continue
                try:
                    b = v.encode("utf-8")
                except UnicodeEncodeError:
                    b = _utf8(v)
                head = key + _varint(len(b))
                out.append(head)
                out.append(b)
                total += len(head) + len(b)
            elif kind == _BYTES:
                n = len(v) if type(v) is bytes else memoryview(v).nbytes
                if not n and name not in self._ONEOF:
                    continue
                head = key + _varint(n)
                out.append(head)
                out.append(v)
                total += len(head) + n
            elif kind == _MSG:
                i = len(out)
                out.append(b"")
                n = v._encode(out)
                head = key + _varint(n)
                out[i] = head
                total += len(head) + n
            elif kind == _F64:
                b = _pack_double(v)
                if b == _ZERO_DOUBLE:
                    continue
                out.append(key)
                out.append(b)
                total += len(key) + 8
            elif kind in (_U32, _U64, _I64, _ENUM, _BOOL):
                if not v:
                    continue
                b = key + _varint(int(v))
                out.append(b)
                total += len(b)
            elif kind == _RMSG:
                for m in v:
                    i = len(out)
                    out.append(b"")
                    n = m._encode(out)
                    head = key + _varint(n)
                    out[i] = head
                    total += len(head) + n
            elif kind == _RSTR:
                for s in v:
                    b = _utf8(s)
                    head = key + _varint(len(b))
                    out.append(head)
                    out.append(b)
                    total += len(head) + len(b)
            elif kind == _RU64:
                if not v:
                    continue
                b = b"".join([_varint(x) for x in v])
                head = key + _varint(len(b))
                out.append(head)
                out.append(b)
                total += len(head) + len(b)
            else:  # a map: each entry a message of key = 1 and value = 2
                for mk, mv in v.items():
                    kb = _utf8(mk)
                    vb = _utf8(mv) if kind == _MAP_SS else bytes(mv)
                    entry = b"\x0a" + _varint(len(kb)) + kb + b"\x12" + _varint(len(vb)) + vb
                    b = key + _varint(len(entry)) + entry
                    out.append(b)
                    total += len(b)
        return total

    # -- decoding ------------------------------------------------------------

    @classmethod
    def _decode(cls: Type[M], buf: bytes, pos: int, end: int, into: Optional[M] = None) -> M:
        """Parse buf[pos:end] into a new message, or merge it into ``into``
        (one this decode made: a message field that occurs again)."""
        obj = object.__new__(cls) if into is None else into
        d = obj.__dict__
        fields = cls._BY_NUMBER
        while pos < end:
            tag = buf[pos]
            if tag < 0x80:
                pos += 1
            else:
                tag, pos = _read_varint(buf, pos)
            number = tag >> 3
            wire = tag & 7
            f = fields.get(number)
            if f is not None:
                name, kind, sub = f
                if wire == 2 and kind not in _NUMERIC:
                    n, pos = _read_varint(buf, pos)
                    stop = pos + n
                    if stop > end:
                        raise DecodeError(f"truncated {cls.__name__}.{name}")
                    if kind == _STR:
                        d[name] = str(buf[pos:stop], "utf-8")
                    elif kind == _BYTES:
                        d[name] = buf[pos:stop]
                    elif kind == _MAP_SS or kind == _MAP_SB:
                        m = d.get(name)
                        if m is None:
                            m = d[name] = {}
                        k, v = _map_entry(buf, pos, stop, kind)
                        m[k] = v
                    elif kind == _RMSG:
                        lst = d.get(name)
                        if lst is None:
                            lst = d[name] = []
                        lst.append(sub._decode(buf, pos, stop))
                    elif kind == _MSG:
                        # A second occurrence merges into the first, parsed
                        # on top of it: what protobuf defines merging as.
                        # (A oneof member set in between popped the first.)
                        cur = d.get(name)
                        if cur is None:
                            d[name] = sub._decode(buf, pos, stop)
                        else:
                            sub._decode(buf, pos, stop, cur)
                    elif kind == _RSTR:
                        lst = d.get(name)
                        if lst is None:
                            lst = d[name] = []
                        lst.append(str(buf[pos:stop], "utf-8"))
                    else:  # _RU64, packed
                        lst = d.get(name)
                        if lst is None:
                            lst = d[name] = []
                        p = pos
                        while p < stop:
                            x, p = _read_varint(buf, p)
                            lst.append(x)
                        if p != stop:
                            raise DecodeError(f"packed {cls.__name__}.{name} overruns its length")
                    pos = stop
                    if name in cls._ONEOF:
                        for other in cls._ONEOF:
                            if other != name:
                                d.pop(other, None)
                    continue
                if wire == 0 and kind in _VARINT_KINDS:
                    x, pos = _read_varint(buf, pos)
                    if kind == _BOOL:
                        d[name] = x != 0
                    elif kind == _U64:
                        d[name] = x
                    elif kind == _U32:
                        d[name] = x & 0xFFFFFFFF
                    elif kind == _I64:
                        d[name] = x - (1 << 64) if x >= 1 << 63 else x
                    elif kind == _ENUM:
                        x &= 0xFFFFFFFF
                        d[name] = x - (1 << 32) if x >= 1 << 31 else x
                    else:  # _RU64, unpacked
                        lst = d.get(name)
                        if lst is None:
                            lst = d[name] = []
                        lst.append(x)
                    continue
                if wire == 1 and kind == _F64:
                    if pos + 8 > end:
                        raise DecodeError(f"truncated {cls.__name__}.{name}")
                    d[name] = _unpack_double(buf, pos)[0]
                    pos += 8
                    continue
                # A known number with another wire type: protobuf keeps it
                # as an unknown field; skipped here.
            if number == 0:
                raise DecodeError(f"field number 0 in {cls.__name__}")
            pos = _skip(buf, pos, end, wire, number)
        if pos != end:
            raise DecodeError(f"truncated {cls.__name__}")
        return obj


def _map_entry(buf: bytes, pos: int, end: int, kind: int) -> Tuple[str, Any]:
    key = ""
    value: Any = "" if kind == _MAP_SS else b""
    while pos < end:
        tag, pos = _read_varint(buf, pos)
        number, wire = tag >> 3, tag & 7
        if wire == 2 and number in (1, 2):
            n, pos = _read_varint(buf, pos)
            stop = pos + n
            if stop > end:
                raise DecodeError("truncated map entry")
            if number == 1:
                key = str(buf[pos:stop], "utf-8")
            else:
                value = str(buf[pos:stop], "utf-8") if kind == _MAP_SS else buf[pos:stop]
            pos = stop
        else:
            if number == 0:
                raise DecodeError("field number 0 in a map entry")
            pos = _skip(buf, pos, end, wire, number)
    if pos != end:
        raise DecodeError("truncated map entry")
    return key, value


def _frozen_default(cls: Type[M]) -> M:
    """The shared instance an unset field of message type ``cls`` reads as
    (made only for the classes that are some field's type)."""
    frozen = type(f"_Frozen{cls.__name__}", (cls,), {"__setattr__": _refuse_write})
    return object.__new__(frozen)


# -- the messages --------------------------------------------------------------
#
# Each class: the fields (number, name, kind, sub-message class) as in
# proto/snakepit/v1/snakepit.proto, the defaults as class attributes, and a
# constructor that stores only what is given (so HasField sees presence).


class Payload(Message):
    _FIELDS = ((1, "json", _BYTES, None), (2, "binary", _BYTES, None), (3, "dtype", _STR, None), (4, "shape", _RU64, None))
    _ONEOF = ("json", "binary")
    json: Any = b""
    binary: Any = b""
    dtype: str = ""
    shape: Sequence[int] = ()

    def __init__(self, *, json: Any = None, binary: Any = None, dtype: str = "", shape: Sequence[int] = ()) -> None:
        if json is not None:
            self.json = json
        elif binary is not None:
            self.binary = binary
        if dtype:
            self.dtype = dtype
        if shape:
            self.shape = shape

    def WhichOneof(self, group: str) -> Optional[str]:  # noqa: N802 (protobuf's name)
        if group != "value":
            raise ValueError(f"Payload has no oneof {group!r}")
        d = self.__dict__
        return "json" if "json" in d else "binary" if "binary" in d else None


_PAYLOAD0 = _frozen_default(Payload)


class ToolError(Message):
    _FIELDS = (
        (1, "type", _STR, None), (2, "message", _STR, None), (3, "traceback", _STR, None), (4, "kind", _STR, None),
        (5, "arg_path", _STR, None), (6, "expected", _STR, None), (7, "got", _STR, None),
    )
    type: str = ""
    message: str = ""
    traceback: str = ""
    kind: str = ""
    arg_path: str = ""
    expected: str = ""
    got: str = ""

    def __init__(
        self, *, type: str = "", message: str = "", traceback: str = "", kind: str = "",
        arg_path: str = "", expected: str = "", got: str = "",
    ) -> None:
        d = self.__dict__
        d["type"] = type
        d["message"] = message
        if traceback:
            d["traceback"] = traceback
        if kind or arg_path or expected or got:
            d["kind"] = kind
            d["arg_path"] = arg_path
            d["expected"] = expected
            d["got"] = got


_TOOL_ERROR0 = _frozen_default(ToolError)


class ParamSpec(Message):
    _FIELDS = (
        (1, "name", _STR, None), (2, "type", _STR, None), (3, "required", _BOOL, None),
        (4, "default_json", _BYTES, None), (5, "description", _STR, None),
    )
    name: str = ""
    type: str = ""
    required: bool = False
    default_json: bytes = b""
    description: str = ""

    def __init__(self, *, name: str = "", type: str = "", required: bool = False, default_json: bytes = b"", description: str = "") -> None:
        self.__dict__.update(name=name, type=type, required=required, default_json=default_json, description=description)


class ToolSpec(Message):
    _FIELDS = (
        (1, "name", _STR, None), (2, "description", _STR, None), (3, "parameters", _RMSG, ParamSpec),
        (4, "supports_streaming", _BOOL, None), (5, "max_concurrency", _U32, None), (6, "timeout_seconds", _F64, None),
        (7, "returns", _STR, None), (8, "doc", _STR, None), (9, "batch_max_size", _U32, None), (10, "batch_max_wait_ms", _F64, None),
    )
    name: str = ""
    description: str = ""
    parameters: Sequence[ParamSpec] = ()
    supports_streaming: bool = False
    max_concurrency: int = 0
    timeout_seconds: float = 0.0
    returns: str = ""
    doc: str = ""
    batch_max_size: int = 0
    batch_max_wait_ms: float = 0.0

    def __init__(
        self, *, name: str = "", description: str = "", parameters: Sequence[ParamSpec] = (),
        supports_streaming: bool = False, max_concurrency: int = 0, timeout_seconds: float = 0.0,
        returns: str = "", doc: str = "", batch_max_size: int = 0, batch_max_wait_ms: float = 0.0,
    ) -> None:
        self.__dict__.update(
            name=name, description=description, parameters=list(parameters), supports_streaming=supports_streaming,
            max_concurrency=max_concurrency, timeout_seconds=timeout_seconds, returns=returns, doc=doc,
            batch_max_size=batch_max_size, batch_max_wait_ms=batch_max_wait_ms,
        )


class PingRequest(Message):
    _FIELDS = ((1, "message", _STR, None),)
    message: str = ""

    def __init__(self, *, message: str = "") -> None:
        if message:
            self.message = message


class PingResponse(Message):
    _FIELDS = (
        (1, "message", _STR, None), (2, "pid", _I64, None), (3, "worker_id", _STR, None), (4, "uptime_seconds", _F64, None),
        (5, "abandoned_calls", _U32, None), (6, "oldest_abandoned_seconds", _F64, None), (7, "abandoned_request_ids", _RSTR, None),
    )
    message: str = ""
    pid: int = 0
    worker_id: str = ""
    uptime_seconds: float = 0.0
    abandoned_calls: int = 0
    oldest_abandoned_seconds: float = 0.0
    abandoned_request_ids: Sequence[str] = ()

    def __init__(
        self, *, message: str = "", pid: int = 0, worker_id: str = "", uptime_seconds: float = 0.0,
        abandoned_calls: int = 0, oldest_abandoned_seconds: float = 0.0, abandoned_request_ids: Sequence[str] = (),
    ) -> None:
        self.__dict__.update(
            message=message, pid=pid, worker_id=worker_id, uptime_seconds=uptime_seconds, abandoned_calls=abandoned_calls,
            oldest_abandoned_seconds=oldest_abandoned_seconds, abandoned_request_ids=list(abandoned_request_ids),
        )


class DescribeToolsRequest(Message):
    _FIELDS = ()

    def __init__(self) -> None:
        pass


class DescribeToolsResponse(Message):
    _FIELDS = ((1, "tools", _RMSG, ToolSpec), (2, "adapter", _STR, None), (3, "python_version", _STR, None), (4, "pid", _I64, None))
    tools: Sequence[ToolSpec] = ()
    adapter: str = ""
    python_version: str = ""
    pid: int = 0

    def __init__(self, *, tools: Sequence[ToolSpec] = (), adapter: str = "", python_version: str = "", pid: int = 0) -> None:
        self.__dict__.update(tools=list(tools), adapter=adapter, python_version=python_version, pid=pid)


class CallOptions(Message):
    AFFINITY_HINT = 0
    AFFINITY_STRICT_QUEUE = 1
    AFFINITY_STRICT_FAIL_FAST = 2
    _FIELDS = ((1, "idempotent", _BOOL, None), (2, "affinity", _ENUM, None), (3, "queue_timeout_us", _U64, None), (4, "pool", _STR, None))
    idempotent: bool = False
    affinity: int = 0
    queue_timeout_us: int = 0
    pool: str = ""

    def __init__(self, *, idempotent: bool = False, affinity: int = 0, queue_timeout_us: int = 0, pool: str = "") -> None:
        self.__dict__.update(idempotent=idempotent, affinity=affinity, queue_timeout_us=queue_timeout_us, pool=pool)


_CALL_OPTIONS0 = _frozen_default(CallOptions)


class BatchItem(Message):
    _FIELDS = ((1, "args_json", _BYTES, None), (2, "binary_args", _MAP_SB, None), (3, "request_id", _STR, None), (4, "metadata", _MAP_SS, None))
    args_json: bytes = b""
    binary_args: Mapping[str, bytes] = _EMPTY_MAP
    request_id: str = ""
    metadata: Mapping[str, str] = _EMPTY_MAP

    def __init__(
        self, *, args_json: bytes = b"", binary_args: Optional[Mapping[str, bytes]] = None, request_id: str = "",
        metadata: Optional[Mapping[str, str]] = None,
    ) -> None:
        d = self.__dict__
        d["args_json"] = args_json
        d["request_id"] = request_id
        if binary_args:
            d["binary_args"] = dict(binary_args)
        if metadata:
            d["metadata"] = dict(metadata)


class ExecuteToolRequest(Message):
    _FIELDS = (
        (1, "tool_name", _STR, None), (2, "args_json", _BYTES, None), (3, "binary_args", _MAP_SB, None),
        (4, "session_id", _STR, None), (5, "request_id", _STR, None), (6, "metadata", _MAP_SS, None),
        (7, "options", _MSG, CallOptions), (8, "batch", _RMSG, BatchItem),
    )
    tool_name: str = ""
    args_json: bytes = b""
    binary_args: Mapping[str, bytes] = _EMPTY_MAP
    session_id: str = ""
    request_id: str = ""
    metadata: Mapping[str, str] = _EMPTY_MAP
    options: CallOptions = _CALL_OPTIONS0
    batch: Sequence[BatchItem] = ()

    def __init__(
        self, *, tool_name: str = "", args_json: bytes = b"", binary_args: Optional[Mapping[str, bytes]] = None,
        session_id: str = "", request_id: str = "", metadata: Optional[Mapping[str, str]] = None,
        options: Optional[CallOptions] = None, batch: Sequence[BatchItem] = (),
    ) -> None:
        d = self.__dict__
        d.update(tool_name=tool_name, args_json=args_json, session_id=session_id, request_id=request_id)
        if binary_args:
            d["binary_args"] = dict(binary_args)
        if metadata:
            d["metadata"] = dict(metadata)
        if options is not None:
            d["options"] = options
        if batch:
            d["batch"] = list(batch)


class BatchItemResult(Message):
    _FIELDS = ((1, "result", _MSG, Payload), (2, "error", _MSG, ToolError))
    result: Payload = _PAYLOAD0
    error: ToolError = _TOOL_ERROR0

    def __init__(self, *, result: Optional[Payload] = None, error: Optional[ToolError] = None) -> None:
        if result is not None:
            self.result = result
        if error is not None:
            self.error = error


class ExecuteToolResponse(Message):
    _FIELDS = ((1, "result", _MSG, Payload), (2, "error", _MSG, ToolError), (3, "duration_ms", _F64, None), (4, "batch", _RMSG, BatchItemResult))
    result: Payload = _PAYLOAD0
    error: ToolError = _TOOL_ERROR0
    duration_ms: float = 0.0
    batch: Sequence[BatchItemResult] = ()

    def __init__(
        self, *, result: Optional[Payload] = None, error: Optional[ToolError] = None, duration_ms: float = 0.0,
        batch: Sequence[BatchItemResult] = (),
    ) -> None:
        d = self.__dict__
        if result is not None:
            d["result"] = result
        if error is not None:
            d["error"] = error
        d["duration_ms"] = duration_ms
        if batch:
            d["batch"] = list(batch)


class ToolChunk(Message):
    _FIELDS = ((1, "seq", _U64, None), (2, "data", _MSG, Payload), (3, "is_final", _BOOL, None), (4, "error", _MSG, ToolError))
    seq: int = 0
    data: Payload = _PAYLOAD0
    is_final: bool = False
    error: ToolError = _TOOL_ERROR0

    def __init__(self, *, seq: int = 0, data: Optional[Payload] = None, is_final: bool = False, error: Optional[ToolError] = None) -> None:
        d = self.__dict__
        d["seq"] = seq
        if data is not None:
            d["data"] = data
        if is_final:
            d["is_final"] = True
        if error is not None:
            d["error"] = error
