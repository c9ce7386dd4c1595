"""Running a batch request (see :mod:`.batch` for what a batch tool is):
checking each call, building the columns, and splitting the function's
answer back into one result per call. Shared by both server flavours."""

from __future__ import annotations

import collections.abc
import typing
from typing import Any, Callable, Dict, List, Optional, Sequence

from .argcheck import InvalidArgs
from .codec import (
    ResultEncodingError,
    decode_args,
    encode_result,
    error_from_exception,
    invalid_args_error,
    tool_error,
)
from . import _wire as wire

if typing.TYPE_CHECKING:
    from .adapter import ToolInfo
    from .context import HostClient, SessionContext


def not_batch_error(name: str) -> wire.ToolError:
    return tool_error(
        "NotBatchTool",
        f"tool {name!r} is not a batch tool and cannot take a batch request; "
        "declare it with @tool(batch=Batch(...)) or send its calls one at a time",
    )


class Prepared:
    """A batch request checked call by call: the keyword arguments of the
    one invocation (``kwargs``, columns) and, per call, its error or its
    place in the columns."""

    __slots__ = ("name", "single", "errors", "kwargs", "count")

    def __init__(self, name: str, single: bool, n: int) -> None:
        self.name = name
        self.single = single  # an ordinary request: reply as to one call
        self.errors: List[Optional[wire.ToolError]] = [None] * n
        self.kwargs: Dict[str, Any] = {}
        self.count = 0  # calls in the columns

    def all_refused(self) -> Optional[wire.ExecuteToolResponse]:
        """The reply when no call fits (the tool is not run), else None."""
        if self.count:
            return None
        return self._reply([])

    def reply(self, value: Any) -> wire.ExecuteToolResponse:
        """The reply for the function's return value."""
        values: Optional[List[Any]] = None
        if isinstance(value, list):
            values = value
        elif isinstance(value, collections.abc.Iterable) and isinstance(value, collections.abc.Sized) and not isinstance(value, (str, bytes, bytearray, dict)):
            values = list(value)  # a tuple, a numpy array (one row per call), ...
        if values is None or len(values) != self.count:
            got = f"{len(values)} results" if values is not None else f"a {type(value).__name__}"
            return self.failed(tool_error(
                "BatchResultError",
                f"batch tool {self.name!r} got {self.count} calls and returned {got}; return a list with one result per call, in order",
            ))
        return self._reply(values)

    def failed(self, err: wire.ToolError) -> wire.ExecuteToolResponse:
        """The reply when the function raised: every call in it fails."""
        return self._reply([_Failed(err)] * self.count)

    def _reply(self, values: List[Any]) -> wire.ExecuteToolResponse:
        items: List[wire.BatchItemResult] = []
        it = iter(values)
        for e in self.errors:
            items.append(wire.BatchItemResult(error=e) if e is not None else _item_result(self.name, next(it)))
        if self.single:
            r = items[0]
            if r.HasField("error"):
                return wire.ExecuteToolResponse(error=r.error)
            return wire.ExecuteToolResponse(result=r.result)
        return wire.ExecuteToolResponse(batch=items)


class _Failed:
    __slots__ = ("err",)

    def __init__(self, err: wire.ToolError) -> None:
        self.err = err


def _item_result(name: str, value: Any) -> wire.BatchItemResult:
    if isinstance(value, _Failed):
        return wire.BatchItemResult(error=value.err)
    if isinstance(value, BaseException):
        return wire.BatchItemResult(error=error_from_exception(value))
    try:
        return wire.BatchItemResult(result=encode_result(name, value))
    except ResultEncodingError as e:
        return wire.BatchItemResult(error=tool_error("SerializationError", str(e)))


def prepare(
    info: "ToolInfo",
    request: wire.ExecuteToolRequest,
    sctx: "SessionContext",
    context_for: Callable[[str, Any], "SessionContext"],
) -> Prepared:
    """Check each call of the request against the tool and build the
    columns. ``context_for(request_id, metadata)`` makes a call's own
    context. An ordinary request is a batch of one."""
    single = not request.batch
    items: Sequence[Any] = (request,) if single else request.batch
    prep = Prepared(info.name, single, len(items))
    defaults = info.batch_defaults
    ctx_param = info.context_param or ""
    want_ctx = bool(ctx_param)  # per-call contexts only when the tool can see them
    rows: List[Dict[str, Any]] = []
    calls: List["SessionContext"] = []
    for i, item in enumerate(items):
        try:
            kw = decode_args(item.args_json, item.binary_args)
            if want_ctx:
                if ctx_param in kw:
                    raise InvalidArgs(ctx_param, f"argument {ctx_param!r} of tool {info.name!r} is reserved for the session context")
                kw[ctx_param] = sctx  # what fits_kwargs expects; the column is set below
            info.fits_kwargs(kw)
            if info.check is not None:
                info.check(kw)
        except InvalidArgs as e:
            prep.errors[i] = invalid_args_error(e)
            continue
        for k, v in defaults.items():
            if k not in kw:
                kw[k] = v
        rows.append(kw)
        if want_ctx:
            calls.append(sctx if single else context_for(item.request_id, item.metadata))
    prep.count = len(rows)
    cols: Dict[str, Any] = {name: [row[name] for row in rows] for name in info.param_names if name != info.context_param}
    if info.context_param is not None:
        sctx.batch_calls = tuple(calls)
        cols[info.context_param] = sctx
    prep.kwargs = cols
    return prep


def context_maker(
    worker_id: str, run_id: str, tool: str, host: Optional["HostClient"]
) -> Callable[[str, Any], "SessionContext"]:
    from .context import SessionContext

    def make(request_id: str, metadata: Any) -> "SessionContext":
        return SessionContext._for_call("", request_id, worker_id, run_id, metadata, tool, host)

    return make
