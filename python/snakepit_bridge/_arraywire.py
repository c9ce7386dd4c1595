"""The ExecuteToolResponse of a numpy array result, without copying the array.

Why: through the generated message, a 4 MiB array was copied three times
in the worker before gRPC took its own copy: ``tobytes()`` (a protobuf
bytes field accepts only ``bytes``), the assignment into the message and
``SerializeToString``: the smaller of the two reasons the typed array path
was at 0.46x of raw gRPC bytes (the larger, heap trims that page-faulted
every call, is _malloc.py's; docs/BENCHMARKS.md, "argument checks and
typed arrays"). The hand-coded messages of _wire.py take a memoryview of
the array's own memory as ``Payload.binary`` and join it into the wire
form once: one copy of the data before gRPC's. python/tests/test_arraywire.py
compares the bytes with the generated serializer's and parses them back.
"""

from __future__ import annotations

import sys
from typing import Any

from ._wire import ExecuteToolResponse, Payload

__all__ = ["array_response"]


def array_response(value: Any, dtype_name: str) -> ExecuteToolResponse:
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
    return ExecuteToolResponse(result=Payload(binary=data, dtype=dtype_name, shape=tuple(value.shape)))
