"""Encoding between Python values and the wire messages.

Contract:

* Arguments: ``args_json`` is a JSON object of keyword arguments (empty bytes
  mean ``{}``); each ``binary_args`` entry is one more keyword argument of
  type ``bytes``. A name given in both is an error, never a silent override.
* Results: ``bytes``/``bytearray``/``memoryview`` travel as ``Payload.binary``;
  a numpy ndarray of a numeric dtype returned as the whole result travels
  as ``Payload.binary`` too, with ``dtype`` and ``shape`` (C order,
  little-endian; its ExecuteToolResponse is serialised by hand, see
  _arraywire.py and _wire.py). Everything else travels as JSON (``None`` is JSON null):
  plain JSON types on the fast path, and through a ``default=`` hook the
  types tools return without thinking of JSON: numpy scalars (their Python
  value) and arrays inside a structure or streamed (nested lists),
  datetime/date/time (ISO 8601), Decimal and UUID (strings), Enum (its
  value), set/frozenset (a sorted list when sortable, else a list),
  dataclasses and pydantic models (objects of their fields), and bytes
  inside a structure (a base64 string). NaN and Infinity are refused
  because the Go side cannot decode them. Anything else raises
  :class:`ResultEncodingError` naming the tool, the Python type and what
  to return instead.
* Errors: an exception becomes a ToolError with the exception's class name,
  its message and a traceback that starts at the tool's own code.
"""

from __future__ import annotations

import base64
import enum
import sys
import threading
import os
import re
import traceback as _tb
from typing import Any, Callable, Dict, Mapping, Optional

from ._arraywire import array_response
from .argcheck import InvalidArgs
from . import _wire as wire

__all__ = [
    "ArgumentsError",
    "ResultEncodingError",
    "decode_args",
    "encode_result",
    "item_chunk",
    "result_response",
    "tool_error",
    "error_from_exception",
    "invalid_args_error",
]

#: ToolError.kind of arguments that do not fit the tool (the host's
#: ErrInvalidArgs).
KIND_INVALID_ARGS = "invalid_args"

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))

_ALLOWED = (
    "return dict/list/str/int/float/bool/None, bytes, a numpy array, or a structure of these "
    "(datetime, Decimal, UUID, Enum, set, dataclass and pydantic values are converted too): "
    "convert the value to a dict of its fields or to a string"
)


class ArgumentsError(InvalidArgs):
    """The request's arguments could not be decoded into keyword arguments."""

    def __init__(self, message: str) -> None:
        super().__init__("", message)


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


_JSON_SPACE = " \t\n\r"


def _find_scanner() -> Optional[Callable[[str, int], Any]]:
    """The scanner json.loads itself uses (``JSONDecoder().scan_once``, the C
    scanner on CPython), if this ``json`` has one that behaves as expected;
    it is not documented API."""
    import json

    scan_once = getattr(json.JSONDecoder(), "scan_once", None)
    if not callable(scan_once):
        return None
    try:
        probe = r'{"a":[1.5,"\u00e9",null,true]} '
        if scan_once(probe, 0) != ({"a": [1.5, "é", None, True]}, len(probe) - 1):
            return None
    except Exception:
        return None
    return scan_once


_scan_once: Any = None  # set with _loads, on first use


def _fast_loads(data: Any) -> Any:
    """json.loads(data), cheaper for the usual arguments: UTF-8 text of one
    object. json.loads on bytes detects the encoding and matches whitespace
    with regexes before its scanner runs; that is most of its cost for
    small requests, so this calls the scanner directly. Anything unusual
    (another encoding, a syntax error, trailing data) goes to json.loads
    itself, so results and error messages are exactly its own."""
    if type(data) is bytes and data[:1] == b"{":
        try:
            text = data.decode("utf-8", "surrogatepass")  # as json.loads decodes UTF-8
            value, end = _scan_once(text, 0)
        except (ValueError, UnicodeDecodeError, StopIteration):
            return _json_loads(data)
        if end == len(text) or not text[end:].strip(_JSON_SPACE):
            return value
    return _json_loads(data)


def _json_loads(data: Any) -> Any:
    import json

    return json.loads(data)


def _make_loads() -> Callable[[Any], Any]:
    """_fast_loads where the scanner is there, else plain json.loads (the
    fallback is pinned by tests/test_codec_fallback.py)."""
    import json

    global _scan_once
    scan_once = _find_scanner()
    if scan_once is None:
        return json.loads
    _scan_once = scan_once
    return _fast_loads


# json is imported (and the fast paths set up) by the first call that needs
# it, not at import: importing json costs every worker's start, and a
# worker answers DescribeTools without it. After that first call these
# names are the real functions.


def _first_loads(data: Any) -> Any:
    global _loads
    _loads = _make_loads()
    return _loads(data)


def _first_encode(value: Any) -> str:
    global _encode
    _encode = _result_encoder()
    return _encode(value)


_loads: Callable[[Any], Any] = _first_loads
_encode: Callable[[Any], str] = _first_encode


def _no_default(obj: Any) -> Any:
    raise TypeError("not JSON-serialisable")


def _result_encoder() -> Callable[[Any], str]:
    """A JSON encoder for results, made once per thread.

    JSONEncoder.encode (and json.dumps) builds a new C encoder on every call,
    which costs more than encoding a small result. A C encoder can be called
    again and again, but its circular-reference record (``markers``) is
    state: one per thread, cleared after a failed call (the C code leaves
    entries behind on an error). Without the record a circular value would
    recurse to the interpreter's limit, which overflows small thread stacks
    on 3.13. Without the C accelerator, a shared JSONEncoder does the same
    work in Python. ``c_make_encoder`` is not documented API: without it, or
    if it does not behave as expected, results take the portable path
    (pinned by tests/test_codec_fallback.py).
    """
    import json
    import json.encoder

    py = json.JSONEncoder(allow_nan=False, ensure_ascii=False, separators=(",", ":")).encode
    make = getattr(json.encoder, "c_make_encoder", None)
    encode_str = getattr(json.encoder, "encode_basestring", None)
    if make is None or encode_str is None:
        return py
    make_c: Callable[..., Any] = make

    def new_encoder() -> Any:
        markers: Dict[int, Any] = {}
        return make_c(markers, _no_default, encode_str, None, ":", ",", False, False, False), markers

    try:
        c, _ = new_encoder()
        if "".join(c({"a": [1.5, "é", None, True]}, 0)) != '{"a":[1.5,"é",null,true]}':
            return py
    except Exception:  # another interpreter's signature: the portable path
        return py
    local = threading.local()

    def _c_encode(value: Any) -> str:
        try:
            enc, markers = local.enc
        except AttributeError:
            enc, markers = local.enc = new_encoder()
        try:
            return "".join(enc(value, 0))
        except BaseException:
            markers.clear()
            raise

    return _c_encode

# Results of these types encode without a default hook, so the shared
# encoder can run them directly; anything else goes through the checked path.
_PLAIN = (dict, list, str, int, float, bool, type(None), tuple)


def encode_result(tool_name: str, value: Any, *, verb: str = "returned") -> wire.Payload:
    """Encode a tool's result (or one streamed item) as a Payload.

    ``verb`` is "returned" or "yielded", for the error message.
    """
    payload = wire.Payload()
    _fill_payload(payload, tool_name, value, verb=verb)
    return payload


#: numpy dtypes that travel as a typed binary array (the Go side decodes
#: exactly these); other arrays travel as JSON lists.
_ARRAY_DTYPES = frozenset(
    ("float64", "float32", "int64", "int32", "int16", "int8", "uint64", "uint32", "uint16", "uint8", "bool")
)


def _fill_array(payload: wire.Payload, value: Any) -> bool:
    """A top-level numpy ndarray as binary with its dtype and shape; False
    when its dtype is not one the host decodes (it then goes as JSON)."""
    dt = value.dtype
    if dt.name not in _ARRAY_DTYPES:
        return False
    if dt.byteorder == ">":  # the wire is little-endian
        value = value.astype(dt.newbyteorder("<"))
    payload.binary = value.tobytes()  # C order, whatever the array's layout
    payload.dtype = dt.name
    payload.shape = tuple(value.shape)
    return True


def _is_ndarray(value: Any) -> bool:
    np = sys.modules.get("numpy")  # never imported here: a tool that returns one has
    return np is not None and isinstance(value, np.ndarray)


def _pydantic_dump(obj: Any) -> Any:
    pyd = sys.modules.get("pydantic")
    if pyd is None or not isinstance(obj, pyd.BaseModel):
        return _NOT_CONVERTED
    dump = getattr(obj, "model_dump", None)
    if dump is not None:  # pydantic 2: its own JSON mode converts nested values
        return dump(mode="json")
    return obj.dict()  # pydantic 1: the default hook converts what is inside


_NOT_CONVERTED = object()


def _to_json(obj: Any) -> Any:
    """The JSON form of a value the encoder cannot write itself (the
    ``default=`` hook: called only for non-JSON types), or _NOT_CONVERTED."""
    if isinstance(obj, enum.Enum):
        return obj.value
    # datetime, decimal, uuid and dataclasses are not imported here (they
    # cost every worker's start): a value of theirs exists only once its
    # module is loaded.
    dt = sys.modules.get("datetime")
    if dt is not None and isinstance(obj, (dt.datetime, dt.date, dt.time)):
        return obj.isoformat()
    decimal = sys.modules.get("decimal")
    if decimal is not None and isinstance(obj, decimal.Decimal):
        return str(obj)
    uuid = sys.modules.get("uuid")
    if uuid is not None and isinstance(obj, uuid.UUID):
        return str(obj)
    if isinstance(obj, (set, frozenset)):
        try:
            return sorted(obj)
        except TypeError:  # mixed or unorderable members: any order
            return list(obj)
    if isinstance(obj, (bytes, bytearray, memoryview)):
        return base64.b64encode(obj).decode("ascii")
    dc = sys.modules.get("dataclasses")
    if dc is not None and dc.is_dataclass(obj) and not isinstance(obj, type):
        # Its fields, one level: the encoder converts what they hold.
        return {f.name: getattr(obj, f.name) for f in dc.fields(obj)}
    if type(obj).__module__ == "numpy" and hasattr(obj, "tolist"):
        return obj.tolist()  # a numpy scalar's Python value, an array's nested lists
    return _pydantic_dump(obj)


def _fill_payload(
    payload: wire.Payload, tool_name: str, value: Any, *, verb: str = "returned", arrays: bool = True
) -> None:
    """encode_result into a new, empty Payload. ``arrays``: a top-level numpy array may go
    as a typed binary array (not for streamed items, whose chunks carry no
    header). Raises ResultEncodingError."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        payload.binary = bytes(value)
        return
    if type(value) in _PLAIN:
        try:
            payload.json = _encode(value).encode("utf-8")
            return
        except (TypeError, ValueError, RecursionError):
            pass  # the checked path below converts, or names the problem
    elif type(value) is Graceful:
        _fill_graceful(payload, value.value)
        return
    elif arrays and _is_ndarray(value) and _fill_array(payload, value):
        return
    offending: list = []

    def default(obj: Any) -> Any:
        try:
            out = _to_json(obj)
        except Exception:  # a conversion that failed: reported as not serialisable
            out = _NOT_CONVERTED
        if out is _NOT_CONVERTED:
            offending.append(obj)
            raise TypeError("not JSON-serialisable")
        return out

    import json

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
            msg = (
                f"tool {tool_name!r} {verb} a value of type {top!r} that is not JSON-serialisable: "
                f"it contains a value of type {inner!r}; {_ALLOWED}"
            )
        elif offending:
            msg = f"tool {tool_name!r} {verb} a value of type {top!r} that is not JSON-serialisable; {_ALLOWED}"
        else:
            # e.g. dict keys that are tuples
            msg = f"tool {tool_name!r} {verb} a value of type {top!r} that is not JSON-serialisable ({e}); {_ALLOWED}"
        raise ResultEncodingError(msg) from None
    payload.json = _json_bytes(data)


def _json_bytes(text: str) -> bytes:
    """JSON text as UTF-8. A lone surrogate (UTF-8 cannot hold it; a file
    name decoded with surrogateescape, say) can only stand inside a JSON
    string, where ``\\udcff`` is its JSON escape: backslashreplace writes
    exactly that, and json.loads reads the same string back."""
    return text.encode("utf-8", "backslashreplace")


class Graceful:
    """A result to encode the way Snakepit does (the Snakepit-style adapters
    of _compat.py): what JSON cannot carry is converted where a common
    method allows (``model_dump``, ``to_dict``, ``_asdict``, ``tolist``,
    ``isoformat``, after this codec's own conversions) and otherwise
    replaced by a marker object (:func:`unserializable_marker`) instead of
    failing the call. NaN and Infinity still fail: JSON has no form for them."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value


#: The keys of the marker that stands in for a value JSON cannot carry;
#: the names Snakepit's markers use, so code that checks for them works.
UNSERIALIZABLE_KEY = "__ffi_unserializable__"
TYPE_KEY = "__type__"
REPR_KEY = "__repr__"


def unserializable_marker(obj: Any) -> Dict[str, Any]:
    """The marker for ``obj``: its type, and its repr only when
    SNAKEPIT_UNSERIALIZABLE_DETAIL asks for one ("type", "repr_truncated",
    "repr_redacted_truncated"; default "none"), cut to
    SNAKEPIT_UNSERIALIZABLE_REPR_MAXLEN characters (default 500, at most 2000)."""
    tname = f"{type(obj).__module__}.{type(obj).__qualname__}"
    marker: Dict[str, Any] = {UNSERIALIZABLE_KEY: True, TYPE_KEY: tname}
    mode = os.environ.get("SNAKEPIT_UNSERIALIZABLE_DETAIL", "none").strip().lower()
    if mode == "type":
        marker[REPR_KEY] = f"<unserializable {tname}>"
    elif mode in ("repr_truncated", "repr_redacted_truncated"):
        try:
            text = repr(obj)
        except Exception:
            text = f"<repr of {tname} failed>"
        if mode == "repr_redacted_truncated":
            text = _redact(text)
        try:
            limit = max(0, min(int(os.environ.get("SNAKEPIT_UNSERIALIZABLE_REPR_MAXLEN", "500")), 2000))
        except ValueError:
            limit = 500
        marker[REPR_KEY] = text[:limit]
    return marker


_REDACTIONS = (  # compiled on first use (_redact): compiling costs every worker's start
    (r"(?i)(bearer\s+)\S+", r"\1<REDACTED>"),
    (r"\bsk-[A-Za-z0-9_-]{8,}", "sk-<REDACTED>"),
    (r"(?i)((?:api[_-]?key|token|secret|password)['\"]?\s*[:=]\s*['\"]?)[^'\"\s,}]+", r"\1<REDACTED>"),
)


def _redact(text: str) -> str:
    for pattern, repl in _REDACTIONS:
        text = re.sub(pattern, repl, text)  # re caches the compiled pattern
    return text


def graceful_json(obj: Any) -> Any:
    """The ``default=`` hook of the graceful encoding: never raises."""
    try:
        out = _to_json(obj)
    except Exception:
        out = _NOT_CONVERTED
    if out is not _NOT_CONVERTED:
        return out
    for method in ("model_dump", "to_dict", "_asdict", "tolist", "isoformat"):
        fn = getattr(obj, method, None)
        if callable(fn):
            try:
                return fn()
            except Exception:
                continue
    return unserializable_marker(obj)


def _fill_graceful(payload: wire.Payload, value: Any) -> None:
    if isinstance(value, (bytes, bytearray, memoryview)):
        payload.binary = bytes(value)
        return
    import json

    try:
        data = json.dumps(value, default=graceful_json, allow_nan=False, ensure_ascii=False, separators=(",", ":"))
    except (TypeError, ValueError, RecursionError) as e:
        # NaN/Infinity, a circular reference, keys JSON cannot have.
        raise ResultEncodingError(f"result is not JSON-serialisable even with markers: {e}") from None
    payload.json = _json_bytes(data)


def result_response(tool_name: str, value: Any) -> wire.ExecuteToolResponse:
    """The ExecuteToolResponse for a tool's return value (a SerializationError
    response when the value cannot be sent). A numpy array of a typed dtype
    comes back with the array's own memory as its data, not copied into a
    message first (_arraywire.py says why)."""
    if type(value) not in _PLAIN and _is_ndarray(value) and value.dtype.name in _ARRAY_DTYPES:
        return array_response(value, value.dtype.name)
    payload = wire.Payload()
    try:
        _fill_payload(payload, tool_name, value)
    except ResultEncodingError as e:
        return wire.ExecuteToolResponse(error=tool_error("SerializationError", str(e)))
    return wire.ExecuteToolResponse(result=payload)


def item_chunk(tool_name: str, seq: int, item: Any) -> wire.ToolChunk:
    """The ToolChunk for one streamed item. Raises ResultEncodingError."""
    payload = wire.Payload()
    _fill_payload(payload, tool_name, item, verb="yielded", arrays=False)
    return wire.ToolChunk(seq=seq, data=payload)


def tool_error(type_: str, message: str, traceback: str = "") -> wire.ToolError:
    return wire.ToolError(type=type_, message=message, traceback=traceback)


def error_from_exception(exc: BaseException) -> wire.ToolError:
    """A ToolError for an exception a tool raised (InvalidArgs keeps its
    kind: the tool judged its input bad)."""
    if isinstance(exc, InvalidArgs):
        return invalid_args_error(exc, format_tool_traceback(exc))
    return wire.ToolError(
        type=type(exc).__name__,
        message=str(exc),
        traceback=format_tool_traceback(exc),
    )


def invalid_args_error(exc: InvalidArgs, traceback: str = "") -> wire.ToolError:
    """The ToolError of arguments that do not fit: kind "invalid_args", with
    the argument's path, the expected type and what was given."""
    return wire.ToolError(
        type="InvalidArguments" if isinstance(exc, ArgumentsError) else type(exc).__name__,
        message=str(exc),
        traceback=traceback,
        kind=KIND_INVALID_ARGS,
        arg_path=exc.path,
        expected=exc.expected,
        got=exc.got,
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
