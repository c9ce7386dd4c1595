"""The grpc.aio flavour of the worker's server, for adapters whose tools are all async.

The worker serves with grpcio's sync server by default (see server.py); an
adapter whose tools are all coroutine functions or async generators is
served with ``grpc.aio`` instead, where async tools run directly in the
RPC's task with no thread hop (sync tools, if any, hop into ToolThreads).
An adapter class may declare ``snakepit_server = "aio"`` (or "sync"), and
``SNAKEPIT_SERVER=aio|sync`` overrides both. Both flavours keep the
same contract: handshake, auth, Ping fields, cancellation, streaming,
sessions and stop behaviour.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import functools
import inspect
import time
from typing import Any, Callable, Dict, Optional, Tuple, Type

import grpc

from ._servicer import registered_handler
from ._auth import TokenInterceptor
from ._logging import log
from ._process import _StartupFailed, _StopSignals
from ._threads import DEFAULT_THREADS, ToolThreads
from .adapter import ANY_TOOL, ToolInfo, ToolKind
from .codec import (
    InvalidArgs,
    ResultEncodingError,
    item_chunk,
    result_response,
    error_from_exception,
    invalid_args_error,
    tool_error,
)
from ._servicer import ServicerBase
from .context import MAX_MESSAGE_BYTES, HostClient, _current, _enter
from . import _wire as wire

__all__ = ["AioWorkerServicer", "TokenInterceptor", "create_aio_server", "serve_aio"]



# --------------------------------------------------------------------------
# Running tools


class _End:
    """Marks the end of a sync iterator advanced in a thread."""


_END = _End()


def _next_or_end(it: Any) -> Any:
    # StopIteration must not cross a Future: it would turn into a RuntimeError.
    try:
        return next(it)
    except StopIteration:
        return _END


class _AsyncStream:
    def __init__(self, it: Any) -> None:
        self._it = it

    async def next(self) -> Any:
        return await self._it.__anext__()

    async def close(self) -> None:
        aclose = getattr(self._it, "aclose", None)
        if aclose is not None:
            await aclose()


class _SyncStream:
    """A sync iterator whose every step runs in the thread pool.

    Steps run strictly one after another in the call's contextvars context,
    and ``close()`` waits (without blocking the loop) for a step still
    running in a thread, because closing a generator that is executing
    raises ``ValueError: generator already executing``.
    """

    def __init__(
        self, it: Any, executor: Any, ctx: contextvars.Context, request_id: str = ""
    ) -> None:
        self._it = it
        self._executor = executor
        self._ctx = ctx
        self._request_id = request_id
        self._pending: Optional[concurrent.futures.Future] = None
        self._closed = False

    async def next(self) -> Any:
        cf = _submit(self._executor, self._request_id, self._ctx.run, _next_or_end, self._it)
        self._pending = cf
        item = await _await_thread(self._executor, cf, self._request_id)
        if item is _END:
            self._closed = True
            raise StopAsyncIteration
        return item

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        close: Optional[Callable[[], Any]] = getattr(self._it, "close", None)
        if close is None:
            return
        close_it: Callable[[], Any] = close

        def do_close() -> None:
            try:
                self._ctx.run(close_it)
            except Exception:
                log.exception("closing the stream generator failed")

        def submit(_: Any = None) -> None:
            try:
                self._executor.submit(do_close)
            except RuntimeError:  # pool already shut down
                do_close()

        pending = self._pending
        if pending is not None and not pending.done():
            pending.add_done_callback(submit)
        else:
            submit()


def _submit(executor: Any, request_id: str, fn: Callable[..., Any], *args: Any) -> concurrent.futures.Future:
    """Submit to the tool pool with the call's request id (so an abandoned
    call is reported by it); any other executor gets a plain submit."""
    if isinstance(executor, ToolThreads):
        return executor.submit(fn, *args, request_id=request_id)
    return executor.submit(fn, *args)


async def _await_thread(executor: Any, cf: concurrent.futures.Future, request_id: str) -> Any:
    """Await a call running in the tool pool; if our caller gives up while
    the thread still runs, tell the pool the call is abandoned."""
    try:
        return await asyncio.wrap_future(cf)
    except asyncio.CancelledError:
        abandon = getattr(executor, "abandon", None)
        if abandon is not None:
            abandon(cf, request_id)
        raise


class AioWorkerServicer(ServicerBase):
    """WorkerService over one adapter instance."""

    def __init__(
        self,
        adapter: object,
        *,
        adapter_name: str = "",
        worker_id: str = "",
        run_id: str = "",
        host: Optional[HostClient] = None,
        executor: Optional[Any] = None,
        tools: Optional[Dict[str, ToolInfo]] = None,
    ) -> None:
        super().__init__(adapter, adapter_name=adapter_name, worker_id=worker_id, run_id=run_id, host=host, tools=tools)
        self.executor = executor or ToolThreads(DEFAULT_THREADS)
        self._inflight = 0  # tool calls (both RPCs), counted on the loop
        self._idle: Optional[asyncio.Event] = None  # made on the loop, at stop

    def _begin(self) -> None:
        self._inflight += 1

    def _end(self) -> None:
        self._inflight -= 1
        if self._inflight == 0 and self._idle is not None:
            self._idle.set()

    async def wait_idle(self) -> None:
        """Return once no tool call is in flight."""
        if self._idle is None:
            self._idle = asyncio.Event()
        if self._inflight == 0:
            return
        await self._idle.wait()

    # -- simple RPCs --------------------------------------------------------

    async def Ping(self, request: wire.PingRequest, context: grpc.aio.ServicerContext) -> wire.PingResponse:
        report = getattr(self.executor, "abandoned", None)
        return self._ping(request, report() if report is not None else (0, 0.0, []))

    async def DescribeTools(
        self, request: wire.DescribeToolsRequest, context: grpc.aio.ServicerContext
    ) -> wire.DescribeToolsResponse:
        return self._describe()

    async def _in_thread(self, fn: Callable[..., Any], kwargs: Dict[str, Any], request_id: str = "") -> Any:
        ctx = contextvars.copy_context()
        cf = _submit(self.executor, request_id, ctx.run, functools.partial(fn, **kwargs))
        return await _await_thread(self.executor, cf, request_id)

    # -- ExecuteTool -------------------------------------------------------------

    async def ExecuteTool(
        self, request: wire.ExecuteToolRequest, context: grpc.aio.ServicerContext
    ) -> wire.ExecuteToolResponse:
        t0 = time.perf_counter()
        self._begin()
        try:
            resp = await self._execute(request)
        finally:
            self._end()
        resp.duration_ms = (time.perf_counter() - t0) * 1000.0
        return resp

    async def _execute(self, request: wire.ExecuteToolRequest) -> wire.ExecuteToolResponse:
        name = request.tool_name
        info = self.tools.get(name) or self.tools.get(ANY_TOOL)
        if info is None:
            return wire.ExecuteToolResponse(error=self._unknown_tool(name))
        if info.streaming and info.stream_func is None:
            return wire.ExecuteToolResponse(
                error=tool_error(
                    "StreamingToolCalledUnary",
                    f"tool {name!r} is a streaming tool; call it with ExecuteStream "
                    "(the ExecuteStreamingTool RPC) instead of Execute",
                )
            )
        sctx = self._context(request)
        kwargs, prep, refused = self._admit(info, request, sctx)
        if refused is not None:
            return refused

        token = _enter(sctx)
        try:
            if info.kind == ToolKind.ASYNC:
                value = await info.func(**kwargs)
            else:
                value = await self._in_thread(info.func, kwargs, request.request_id)
                if inspect.isawaitable(value):
                    value = await value
        except asyncio.CancelledError:
            sctx._mark_cancelled()
            raise
        except BaseException as e:  # SystemExit from a tool is a tool error, not a worker exit
            err = error_from_exception(e)
            return wire.ExecuteToolResponse(error=err) if prep is None else prep.failed(err)
        finally:
            _current.reset(token)
        return result_response(name, value) if prep is None else prep.reply(value)

    # -- ExecuteStreamingTool ----------------------------------------------------

    async def _open_stream(self, info: ToolInfo, kwargs: Dict[str, Any], request_id: str = "") -> Any:
        ctx = contextvars.copy_context()
        if info.stream_func is not None:
            it = await self._in_thread(info.stream_func, kwargs, request_id)
            return _SyncStream(it, self.executor, ctx, request_id)
        if info.kind == ToolKind.ASYNC_GEN:
            return _AsyncStream(info.func(**kwargs))
        if info.kind == ToolKind.SYNC_GEN:
            # Calling a generator function runs none of its body: safe on the loop.
            return _SyncStream(ctx.run(functools.partial(info.func, **kwargs)), self.executor, ctx, request_id)
        if info.kind == ToolKind.ASYNC_ITER:
            it = await info.func(**kwargs)
        else:
            it = await self._in_thread(info.func, kwargs, request_id)
        if hasattr(it, "__anext__"):
            return _AsyncStream(it)
        if hasattr(it, "__aiter__"):
            return _AsyncStream(it.__aiter__())
        return _SyncStream(iter(it), self.executor, ctx, request_id)

    async def ExecuteStreamingTool(
        self, request: wire.ExecuteToolRequest, context: grpc.aio.ServicerContext
    ) -> None:
        # Written with context.write rather than as an async generator so that
        # a cancellation always lands inside this coroutine (in a write or in
        # the tool's step), where the finally below can close the tool's
        # generator deterministically.
        self._begin()
        try:
            await self._stream(request, context)
        finally:
            self._end()

    async def _stream(self, request: wire.ExecuteToolRequest, context: grpc.aio.ServicerContext) -> None:
        name = request.tool_name
        seq = 0

        async def final(error: Optional[wire.ToolError] = None) -> None:
            await context.write(wire.ToolChunk(seq=seq + 1, is_final=True, error=error))

        info = self.tools.get(name) or self.tools.get(ANY_TOOL)
        if info is None:
            await final(self._unknown_tool(name))
            return
        if not info.streaming and info.stream_func is None:
            await final(
                tool_error(
                    "NotStreaming",
                    f"tool {name!r} is not a streaming tool; call it with Execute (the ExecuteTool RPC)",
                )
            )
            return
        sctx = self._context(request)
        try:
            kwargs = self._prepare(info, request, sctx)
        except InvalidArgs as e:
            await final(invalid_args_error(e))
            return

        token = _enter(sctx)
        stream: Any = None
        completed = False
        try:
            error: Optional[wire.ToolError] = None
            try:
                stream = await self._open_stream(info, kwargs, request.request_id)
            except asyncio.CancelledError:
                raise
            except BaseException as e:
                error = error_from_exception(e)
            while stream is not None and error is None:
                try:
                    item = await stream.next()
                except StopAsyncIteration:
                    break
                except asyncio.CancelledError:
                    raise
                except BaseException as e:
                    error = error_from_exception(e)
                    break
                try:
                    chunk = item_chunk(name, seq + 1, item)
                except ResultEncodingError as e:
                    error = tool_error("SerializationError", str(e))
                    break
                seq += 1
                await context.write(chunk)
            await final(error)
            completed = True
        finally:
            if not completed:
                # Cancelled, deadline passed, or the client went away mid-write.
                sctx._mark_cancelled()
            if stream is not None:
                try:
                    await stream.close()
                except BaseException:
                    log.debug("closing stream of tool %r failed", name, exc_info=True)
            _current.reset(token)


def create_aio_server(
    servicer: AioWorkerServicer, *, host: str = "127.0.0.1", port: int = 0, token: str = ""
) -> Tuple[grpc.aio.Server, int]:
    """A grpc.aio server for ``servicer`` bound to ``host:port`` (not started).

    Must be called with an event loop running. Returns (server, bound port).
    """
    server = grpc.aio.server(
        interceptors=[TokenInterceptor(token)] if token else None,
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            # Without this, a fixed port could be silently shared with another process.
            ("grpc.so_reuseport", 0),
        ],
    )
    server.add_generic_rpc_handlers((registered_handler(servicer),))
    addr = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    bound = server.add_insecure_port(addr)
    if not bound:  # older grpcio returned 0 instead of raising
        raise RuntimeError(f"could not bind {addr}")
    return server, bound


async def serve_aio(
    proc: Any,
    servicer: AioWorkerServicer,
    args: Any,
    token: str,
    grace: float,
    startup_failed: Type[Exception] = _StartupFailed,
) -> None:
    """Serve until SIGTERM/SIGINT, then stop within ``grace`` (server.py's contract)."""
    stop = _StopSignals(asyncio.get_running_loop())
    try:
        server, port = create_aio_server(servicer, host=args.host, port=args.port, token=token)
        await server.start()
    except Exception as e:
        raise startup_failed(f"cannot serve on {args.host}:{args.port}: {e}") from e
    servicer._announce_ready(proc, args.host, port, "grpc.aio server")

    await stop.wait()
    log.info("received %s: stopping (grace %.1fs)", stop.received, grace)
    # grpc.aio's stop waits out the whole grace while a client keeps its
    # connection open, even with no call in flight; an idle worker must not
    # sit on it, so the stop is cut short once the last call is over (a
    # second stop(0) ends the pending one).
    stopping = asyncio.ensure_future(server.stop(grace))
    idle = asyncio.ensure_future(servicer.wait_idle())
    await asyncio.wait({stopping, idle}, return_when=asyncio.FIRST_COMPLETED)
    if not stopping.done():
        await server.stop(0)
    await stopping
    idle.cancel()
