"""WorkerService on grpcio's sync server: the default flavour (see server.py).

Every RPC runs in a thread of the server's pool (_threads.ServerThreads); a
sync tool runs right on its RPC's thread within the worker's slots
(_threads.CallSlots), an async tool on the event loop while its RPC's thread
waits for it (_loop_bridge). What both flavours share — the tool list, call
preparation, Ping and DescribeTools replies — is in _servicer.ServicerBase.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import time
from typing import Any, Dict, Iterator, Optional

import grpc

from ._logging import log
from ._loop_bridge import (
    _END,
    _AsyncLoop,
    _AsyncStream,
    _Call,
    _Cancelled,
    _SyncStream,
    _async_call,
    _await_value,
    _run_async,
)
from ._servicer import ServicerBase
from ._threads import DEFAULT_THREADS, CallSlots, Slot
from .adapter import ANY_TOOL, ToolInfo, ToolKind
from .codec import (
    InvalidArgs,
    ResultEncodingError,
    error_from_exception,
    invalid_args_error,
    item_chunk,
    result_response,
    tool_error,
)
from .context import HostClient, SessionContext, _enter
from . import _wire as wire

__all__ = ["WorkerServicer"]

_perf_counter = time.perf_counter

# Result types that are never awaitable: the common results skip
# inspect.isawaitable's abstract-class check.
_NOT_AWAITABLE = frozenset((int, float, str, bytes, bool, dict, list, tuple, type(None)))


_CANCELLED_RESPONSE = wire.ExecuteToolResponse()


class WorkerServicer(ServicerBase):
    """WorkerService over one adapter instance (grpcio sync server)."""

    def __init__(
        self,
        adapter: object,
        *,
        adapter_name: str = "",
        worker_id: str = "",
        run_id: str = "",
        host: Optional[HostClient] = None,
        slots: Optional[CallSlots] = None,
        tools: Optional[Dict[str, ToolInfo]] = None,
    ) -> None:
        super().__init__(adapter, adapter_name=adapter_name, worker_id=worker_id, run_id=run_id, host=host, tools=tools)
        self.slots = slots or CallSlots(DEFAULT_THREADS)
        self._loop = _AsyncLoop()

    def close(self) -> None:
        """Stop the async tools' loop (after the server stopped)."""
        self.slots.close()
        self._loop.close()

    # -- simple RPCs --------------------------------------------------------

    def Ping(self, request: wire.PingRequest, context: grpc.ServicerContext) -> wire.PingResponse:
        return self._ping(request, self.slots.abandoned())

    def DescribeTools(self, request: wire.DescribeToolsRequest, context: grpc.ServicerContext) -> wire.DescribeToolsResponse:
        return self._describe()

    # -- ExecuteTool -------------------------------------------------------------
    #
    # The path of a sync tool is written out in one function: at eight calls
    # in flight, every microsecond a call holds the GIL is paid several times
    # over by the threads waiting for it (docs/BENCHMARKS.md).

    def ExecuteTool(self, request: wire.ExecuteToolRequest, context: grpc.ServicerContext) -> wire.ExecuteToolResponse:
        t0 = _perf_counter()
        # A context of its own per call, as a task would have: a tool's
        # contextvars never leak into the next call on this thread.
        resp = contextvars.Context().run(self._execute, request, context)
        resp.duration_ms = (_perf_counter() - t0) * 1000.0
        return resp

    def _execute(self, request: wire.ExecuteToolRequest, context: grpc.ServicerContext) -> wire.ExecuteToolResponse:
        name = request.tool_name
        info = self.tools.get(name) or self.tools.get(ANY_TOOL)
        if info is None:
            return wire.ExecuteToolResponse(error=self._unknown_tool(name))
        if info.spec.supports_streaming and info.stream_func is None:
            return wire.ExecuteToolResponse(
                error=tool_error(
                    "StreamingToolCalledUnary",
                    f"tool {name!r} is a streaming tool; call it with ExecuteStream "
                    "(the ExecuteStreamingTool RPC) instead of Execute",
                )
            )
        sctx = SessionContext._for_call(
            request.session_id, request.request_id, self.worker_id, self.run_id, request.metadata, name, self.host
        )
        kwargs, prep, refused = self._admit(info, request, sctx)
        if refused is not None:
            return refused

        slots = self.slots
        call = _Call(sctx, slots)
        if not context.add_callback(call.on_done):
            sctx._mark_cancelled()  # the RPC is already over
            return _CANCELLED_RESPONSE
        _enter(sctx)
        try:
            if info.kind == ToolKind.ASYNC:
                value = _run_async(self._loop, call, _async_call(sctx, info.func, kwargs))
            else:
                # Within the worker's slots, on this thread.
                slot = call.slot = Slot(request.request_id)
                if sctx._cancelled or not slots.acquire(slot):  # on_done ran before the slot was visible to it
                    return _CANCELLED_RESPONSE
                try:
                    value = info.func(**kwargs)
                finally:
                    slots.release(slot)
                if type(value) not in _NOT_AWAITABLE and inspect.isawaitable(value):
                    value = _run_async(self._loop, call, _await_value(sctx, value))
        except _Cancelled:
            return _CANCELLED_RESPONSE
        except asyncio.CancelledError:
            # The tool cancelled itself: the call ends as cancelled.
            call.finished = True
            context.abort(grpc.StatusCode.CANCELLED, f"tool {name!r} was cancelled")
        except BaseException as e:  # SystemExit from a tool is a tool error, not a worker exit
            call.finished = True
            err = error_from_exception(e)
            return wire.ExecuteToolResponse(error=err) if prep is None else prep.failed(err)
        call.finished = True
        return result_response(name, value) if prep is None else prep.reply(value)

    # -- ExecuteStreamingTool ----------------------------------------------------

    def _open_stream(self, call: _Call, info: ToolInfo, kwargs: Dict[str, Any], request_id: str) -> Any:
        if info.stream_func is not None:
            return _SyncStream(info.stream_func(**kwargs))
        if info.kind == ToolKind.ASYNC_GEN:
            return _AsyncStream(self._loop, call, info.func(**kwargs))
        if info.kind == ToolKind.SYNC_GEN:
            # Calling a generator function runs none of its body.
            return _SyncStream(info.func(**kwargs))
        if info.kind == ToolKind.ASYNC_ITER:
            it = _run_async(self._loop, call, _async_call(call.sctx, info.func, kwargs))
        else:
            # SYNC_ITER: _chunks holds a slot for the whole stream already.
            it = info.func(**kwargs)
        if hasattr(it, "__anext__"):
            return _AsyncStream(self._loop, call, it)
        if hasattr(it, "__aiter__"):
            return _AsyncStream(self._loop, call, it.__aiter__())
        return _SyncStream(iter(it))

    def ExecuteStreamingTool(self, request: wire.ExecuteToolRequest, context: grpc.ServicerContext) -> Iterator[wire.ToolChunk]:
        # A generator: grpc sends each chunk as it is yielded, with flow
        # control. When the caller goes away, on_done marks the context
        # cancelled (and abandons a step still running); grpc then stops
        # iterating and drops this generator, whose finally closes the tool's.
        ctx = contextvars.Context()
        return ctx.run(self._stream, request, context, ctx)

    def _stream(self, request: wire.ExecuteToolRequest, context: grpc.ServicerContext, ctx: contextvars.Context) -> Iterator[wire.ToolChunk]:
        name = request.tool_name
        info = self.tools.get(name) or self.tools.get(ANY_TOOL)
        if info is None:
            return iter((wire.ToolChunk(seq=1, is_final=True, error=self._unknown_tool(name)),))
        if not info.spec.supports_streaming and info.stream_func is None:
            return iter(
                (
                    wire.ToolChunk(
                        seq=1,
                        is_final=True,
                        error=tool_error(
                            "NotStreaming",
                            f"tool {name!r} is not a streaming tool; call it with Execute (the ExecuteTool RPC)",
                        ),
                    ),
                )
            )
        sctx = self._context(request)
        try:
            kwargs = self._prepare(info, request, sctx)
        except InvalidArgs as e:
            return iter((wire.ToolChunk(seq=1, is_final=True, error=invalid_args_error(e)),))
        call = _Call(sctx, self.slots)
        if not context.add_callback(call.on_done):
            sctx._mark_cancelled()
            return iter(())
        _enter(sctx)
        return self._chunks(ctx, call, info, kwargs, request.request_id)

    def _chunks(
        self, ctx: contextvars.Context, call: _Call, info: ToolInfo, kwargs: Dict[str, Any], request_id: str
    ) -> Iterator[wire.ToolChunk]:
        name = info.name
        sctx = call.sctx
        seq = 0
        stream: Any = None
        slot: Optional[Slot] = None
        completed = False
        try:
            error: Optional[wire.ToolError] = None
            if info.kind in (ToolKind.SYNC_GEN, ToolKind.SYNC_ITER) or info.stream_func is not None:
                # The tool and its steps run on this thread: it holds a slot
                # for the whole stream, as the host holds its pool slot, so
                # a step stuck after the caller left is reported abandoned.
                slot = Slot(request_id)
                call.slot = slot
                if sctx._cancelled or not self.slots.acquire(slot):
                    slot = None
                    return
            try:
                stream = ctx.run(self._open_stream, call, info, kwargs, request_id)
            except _Cancelled:
                return
            except BaseException as e:
                error = error_from_exception(e)
            while stream is not None and error is None:
                try:
                    item = ctx.run(stream.next)
                except _Cancelled:
                    return
                except BaseException as e:
                    error = error_from_exception(e)
                    break
                if item is _END:
                    break
                try:
                    chunk = item_chunk(name, seq + 1, item)
                except ResultEncodingError as e:
                    error = tool_error("SerializationError", str(e))
                    break
                seq += 1
                yield chunk
            call.finished = True
            completed = True
            yield wire.ToolChunk(seq=seq + 1, is_final=True, error=error)
        finally:
            if not completed:
                # Cancelled, deadline passed, or the client went away mid-write.
                call.finished = True
                sctx._mark_cancelled()
            if stream is not None:
                try:
                    ctx.run(stream.close)
                except BaseException:
                    log.debug("closing stream of tool %r failed", name, exc_info=True)
            if slot is not None:
                self.slots.release(slot)

