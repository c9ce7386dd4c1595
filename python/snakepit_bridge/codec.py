"""Encoding between Python values and the wire messages.

Contract:

* Arguments: ``args_json`` is a JSON object of keyword arguments (empty bytes
  mean ``{}``); each ``binary_args`` entry is one more keyword argument of
  type ``bytes``. A name given in both is an error, never a silent override.
* Results: ``bytes``/``bytearray``/``memoryview`` travel as ``Payload.binary``;
  everything else must be JSON (``None`` is JSON null). NaN and Infinity are
  refused because the Go side cannot decode them. A value that is not JSON
  raises :class:`ResultEncodingError` naming the tool and the Python type.
* Errors: an exception becomes a ToolError with the exception's class name,
  its message and a traceback that starts at the tool's own code.
"""

from __future__ import annotations

import json
import os
import traceback as _tb
from typing import Any, Dict, Mapping, Optional

from .pb import snakepit_pb2 as pb

__all__ = [
    "ArgumentsError",
    "ResultEncodingError",
    "decode_args",
    "encode_result",
    "tool_error",
    "error_from_exception",
]

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))

_ALLOWED = "return dict/list/str/int/float/bool/None or bytes"


class ArgumentsError(ValueError):
    """The request's arguments could not be decoded into keyword arguments."""


class ResultEncodingError(TypeError):
    """A tool returned (or yielded) a value that cannot be sent."""


def decode_args(args_json: bytes, binary_args: Optional[Mapping[str, bytes]] = None) -> Dict[str, Any]:
    """Turn a request's arguments into the keyword arguments of the call."""
    kwargs: Any
    if not args_json:
        kwargs = {}
    else:
        try:
            # json.loads takes the bytes as they are (UTF-8/16/32, surrounding
            # whitespace allowed): no copy, no strip on the common path.
            kwargs = _loads(args_json)
        except (ValueError, UnicodeDecodeError) as e:
            if not bytes(args_json).strip():
                kwargs = {}
            else:
                raise ArgumentsError(f"args_json is not valid JSON: {e}") from None
        if kwargs is None:
            kwargs = {}
        elif type(kwargs) is not dict:
            raise ArgumentsError(
                f"args_json must be a JSON object of keyword arguments, got {type(kwargs).__name__}"
            )
    if binary_args:
        for name, data in binary_args.items():
            if name in kwargs:
                raise ArgumentsError(f"argument {name!r} is given both in args_json and in binary_args")
            kwargs[name] = bytes(data)
    return kwargs


_loads = json.loads

# One encoder for every result: json.dumps with non-default options builds a
# new JSONEncoder (and its C encoder) per call.
_ENCODER = json.JSONEncoder(allow_nan=False, ensure_ascii=False, separators=(",", ":"))
_encode = _ENCODER.encode
# Results of these types encode without a default hook, so the shared
# encoder can run them directly; anything else goes through the checked path.
_PLAIN = (dict, list, str, int, float, bool, type(None), tuple)


def encode_result(tool_name: str, value: Any, *, verb: str = "returned") -> "pb.Payload":
    """Encode a tool's result (or one streamed item) as a Payload.

    ``verb`` is "returned" or "yielded", for the error message.
    """
    if isinstance(value, (bytes, bytearray, memoryview)):
        return pb.Payload(binary=bytes(value))
    if type(value) in _PLAIN:
        try:
            return pb.Payload(json=_encode(value).encode("utf-8"))
        except (TypeError, ValueError, RecursionError):
            pass  # the checked path below names the problem
    offending: list = []

    def default(obj: Any) -> Any:
        offending.append(obj)
        raise TypeError("not JSON-serialisable")

    try:
        data = json.dumps(value, default=default, allow_nan=False, ensure_ascii=False, separators=(",", ":"))
    except ValueError as e:
        if "Out of range float" in str(e) or "not JSON compliant" in str(e):
            raise ResultEncodingError(
                f"tool {tool_name!r} {verb} a value of type {type(value).__name__!r} that contains "
                f"NaN or Infinity, which JSON cannot carry; {_ALLOWED}"
            ) from None
        # e.g. "Circular reference detected"
        raise ResultEncodingError(
            f"tool {tool_name!r} {verb} a value of type {type(value).__name__!r} "
            f"that is not JSON-serialisable ({e}); {_ALLOWED}"
        ) from None
    except (TypeError, RecursionError) as e:
        top = type(value).__name__
        if offending and offending[0] is not value:
            inner = type(offending[0]).__name__
            hint = " (bytes are only allowed as the whole result)" if isinstance(
                offending[0], (bytes, bytearray, memoryview)
            ) else ""
            msg = (
                f"tool {tool_name!r} {verb} a value of type {top!r} that is not JSON-serialisable: "
                f"it contains a value of type {inner!r}{hint}; {_ALLOWED}"
            )
        elif offending:
            msg = f"tool {tool_name!r} {verb} a value of type {top!r} that is not JSON-serialisable; {_ALLOWED}"
        else:
            # e.g. dict keys that are tuples
            msg = f"tool {tool_name!r} {verb} a value of type {top!r} that is not JSON-serialisable ({e}); {_ALLOWED}"
        raise ResultEncodingError(msg) from None
    return pb.Payload(json=data.encode("utf-8"))


def tool_error(type_: str, message: str, traceback: str = "") -> "pb.ToolError":
    return pb.ToolError(type=type_, message=message, traceback=traceback)


def error_from_exception(exc: BaseException) -> "pb.ToolError":
    """A ToolError for an exception a tool raised."""
    return pb.ToolError(
        type=type(exc).__name__,
        message=str(exc),
        traceback=format_tool_traceback(exc),
    )


def format_tool_traceback(exc: BaseException) -> str:
    """The exception's traceback with this package's own leading frames removed.

    The frames of the worker machinery before the tool's code say nothing to
    the tool's author; the frames of the tool and below are kept intact.
    """
    tb = exc.__traceback__
    trimmed = tb
    while trimmed is not None and _is_own_frame(trimmed.tb_frame.f_code.co_filename):
        trimmed = trimmed.tb_next
    if trimmed is None:
        trimmed = tb
    return "".join(_tb.format_exception(type(exc), exc, trimmed))


_STDLIB_DIR = os.path.dirname(os.path.abspath(os.__file__))


def _is_own_frame(filename: str) -> bool:
    """Frames of the worker machinery: this package's modules and the stdlib
    (asyncio, concurrent.futures, contextvars) that carry a call to a tool."""
    path = os.path.abspath(filename)
    if os.path.dirname(path) == _PACKAGE_DIR:
        return True
    return path.startswith(_STDLIB_DIR + os.sep) and "site-packages" not in path and "dist-packages" not in path
