"""The ExecuteToolResponse of a numpy array result, serialised by hand.

Why: through the generated message, a 4 MiB array was copied three times
in the worker before gRPC took its own copy: ``tobytes()`` (a protobuf
bytes field accepts only ``bytes``), the assignment into the message and
``SerializeToString``: the smaller of the two reasons the typed array path
was at 0.46x of raw gRPC bytes (the larger, heap trims that page-faulted
every call, is _malloc.py's; docs/BENCHMARKS.md, "argument checks and
typed arrays"). Here the
response's wire form is a few header bytes, the array's own memory and a
few trailer bytes joined once (``bytes.join`` reads the array through the
buffer protocol): one copy of the data before gRPC's.

The bytes are exactly what the generated class produces for
``ExecuteToolResponse(result=Payload(binary=..., dtype=..., shape=...),
duration_ms=...)`` (fields in number order, ``shape`` packed, proto3
defaults left out); python/tests/test_arraywire.py compares them with
``SerializeToString`` and parses them back. Every other response is a
generated message and keeps protobuf's own serializer:
:func:`registered_handler` only swaps ExecuteTool's serializer for one
that calls the response's ``SerializeToString``, which both kinds have.
"""

from __future__ import annotations

import operator
import struct
import sys
from typing import Any, Callable, Dict, List, Tuple, Union

import grpc

from .pb import snakepit_pb2 as pb
from .pb import snakepit_pb2_grpc as pb_grpc

__all__ = ["ArrayResponse", "ExecuteResponse", "array_response", "registered_handler"]

_EXECUTE_TOOL = "/snakepit.v1.WorkerService/ExecuteTool"

# Field keys (number << 3 | wire type): ExecuteToolResponse.result = 1 and
# duration_ms = 3 (fixed64); Payload.binary = 2, dtype = 3, shape = 4 (packed).
_RESULT = b"\x0a"
_DURATION = b"\x19"
_BINARY = b"\x12"
_DTYPE = b"\x1a"
_SHAPE = b"\x22"

_pack_double = struct.Struct("<d").pack
_ZERO_DOUBLE = _pack_double(0.0)


def _varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


class ArrayResponse:
    """An ExecuteToolResponse whose result is a typed array: what the
    servicer returns in place of the generated message (``duration_ms`` is
    set on it the same way)."""

    __slots__ = ("data", "dtype", "shape", "duration_ms")

    def __init__(self, data: Any, dtype: str, shape: Tuple[int, ...]) -> None:
        self.data = data  # a C-order little-endian buffer of the elements (the array's own memory)
        self.dtype = dtype
        self.shape = shape
        self.duration_ms = 0.0

    def SerializeToString(self) -> bytes:  # noqa: N802 (the protobuf message's name)
        data_len = len(self.data)
        dtype = self.dtype.encode("ascii")
        trailer = _DTYPE + _varint(len(dtype)) + dtype
        if self.shape:
            dims = b"".join(_varint(d) for d in self.shape)
            trailer += _SHAPE + _varint(len(dims)) + dims
        head = _BINARY + _varint(data_len)
        payload_len = len(head) + data_len + len(trailer)
        duration = _pack_double(self.duration_ms)
        if duration != _ZERO_DOUBLE:  # proto3 leaves out a 0.0 (not -0.0)
            trailer += _DURATION + duration
        return b"".join((_RESULT, _varint(payload_len), head, self.data, trailer))

    def to_message(self) -> "pb.ExecuteToolResponse":
        """The same response as a generated message (a copy of the data)."""
        resp = pb.ExecuteToolResponse(duration_ms=self.duration_ms)
        resp.result.binary = bytes(self.data)
        resp.result.dtype = self.dtype
        resp.result.shape.extend(self.shape)
        return resp


def array_response(value: Any, dtype_name: str) -> ArrayResponse:
    """The response for a numpy array ``value`` whose dtype travels typed.

    The data goes in C order (a Fortran-ordered or strided array is made
    contiguous: one copy) and little-endian (a big-endian array is
    converted: one copy); a contiguous little-endian array is not copied
    here at all.
    """
    dt = value.dtype
    if dt.byteorder == ">" or (dt.byteorder == "=" and sys.byteorder == "big"):
        value = value.astype(dt.newbyteorder("<"), order="C")
    elif not value.flags.c_contiguous:
        value = value.copy(order="C")  # (not ascontiguousarray: it makes a 0-d array 1-d)
    data: Any = memoryview(value).cast("B") if value.size else b""
    return ArrayResponse(data, dtype_name, tuple(value.shape))


#: What ExecuteTool returns: a generated message, or an array result.
ExecuteResponse = Union["pb.ExecuteToolResponse", ArrayResponse]

_serialize: Callable[[Any], bytes] = operator.methodcaller("SerializeToString")


class _Details:
    """The HandlerCallDetails of one method, to look its handler up."""

    __slots__ = ("method", "invocation_metadata")

    def __init__(self, method: str) -> None:
        self.method = method
        self.invocation_metadata = ()


class _Registration:
    """Collects the generic handler the generated
    ``add_WorkerServiceServicer_to_server`` registers, so it can be wrapped
    before the server sees it."""

    def __init__(self) -> None:
        self.handlers: List[Any] = []

    def add_generic_rpc_handlers(self, handlers: Any) -> None:
        self.handlers.extend(handlers)

    def add_registered_method_handlers(self, service: str, method_handlers: Dict[str, Any]) -> None:
        # Code from grpcio-tools >= 1.62 registers the same methods here as
        # well (a fast path that would skip the interceptor); the generic
        # handler alone serves them all.
        pass


def registered_handler(servicer: Any) -> Any:
    """WorkerService's method handlers for ``servicer`` (sync or aio), as one
    generic handler, ExecuteTool's serializer taking an ArrayResponse too.

    The handlers are looked up once and registered again through grpc's own
    generic handler, so a call is routed as before: no wrapper per call.
    """
    reg = _Registration()
    pb_grpc.add_WorkerServiceServicer_to_server(servicer, reg)
    if len(reg.handlers) != 1:
        raise RuntimeError(f"the generated WorkerService registration made {len(reg.handlers)} handlers, expected 1")
    service = pb.DESCRIPTOR.services_by_name["WorkerService"]
    handlers: Dict[str, Any] = {}
    for m in service.methods:
        h = reg.handlers[0].service(_Details(f"/{service.full_name}/{m.name}"))
        if h is None:
            raise RuntimeError(f"the generated WorkerService registration has no handler for {m.name}")
        if f"/{service.full_name}/{m.name}" == _EXECUTE_TOOL:
            h = grpc.unary_unary_rpc_method_handler(
                h.unary_unary, request_deserializer=h.request_deserializer, response_serializer=_serialize
            )
        handlers[m.name] = h
    return grpc.method_handlers_generic_handler(service.full_name, handlers)
