"""The worker process: ``python -m snakepit_bridge.server``.

Contract with the host (DESIGN.md §4):

    python -m snakepit_bridge.server --adapter module.Class --port 0 \\
        --bridge-address HOST:PORT --worker-id ID --snakepit-run-id RUNID \\
        [--host 127.0.0.1] [--max-workers N]

* Serves ``snakepit.v1.WorkerService`` on loopback only, in one of two
  flavours (``server_flavour``; both keep this whole contract):

  - "sync", the default: grpcio's sync server. Every RPC runs in a thread
    of the server's pool (one is started whenever none is idle, so Ping is
    answered even when every tool slot is taken); a sync tool runs right on
    its RPC's thread, an async tool on the event loop of the main thread
    while its RPC's thread waits for it.
  - "aio", for adapters whose tools are all async (``_aio.py``): grpc.aio,
    async tools run in their RPC's own task on the main thread's loop, sync
    tools hop into a thread pool.
* Startup order: watch for host death, import the adapter, create its ONE
  instance, run ``setup()``, start the server, then print exactly one line
  on stdout and flush it::

      SNAKEPIT_READY 1 tcp 127.0.0.1:<port>

  Nothing else is ever written to the original stdout: file descriptor 1 is
  pointed at stderr before any user code runs, so stray prints (also from
  child processes and C extensions) land in the host's log instead of
  corrupting the handshake pipe.
* Auth: when ``SNAKEPIT_TOKEN`` is set, every RPC must carry it in the
  ``x-snakepit-token`` metadata entry, or fails with UNAUTHENTICATED. The
  token is removed from ``os.environ`` after it is read, so processes the
  tools spawn do not inherit it.
* SIGTERM/SIGINT: stop accepting calls, give in-flight calls
  ``SNAKEPIT_STOP_GRACE_S`` seconds (default 1.5), cancel the rest, call the
  adapter's ``teardown()``, kill descendants, exit 0. Threads a tool left
  busy (a sync tool ignoring cancellation, ``asyncio.to_thread`` work in
  either flavour) are never waited for: teardown runs and the process exits
  regardless.
* Host death: stdin reaching EOF, or the parent pid changing, kills the
  descendants and exits 0 at once from a watcher thread, without waiting
  for the server (a tool may be blocking it).
* Exit codes: 0 clean stop or host gone; 1 other startup/runtime failure
  (e.g. the port cannot be bound); 2 bad command line; 3 the adapter cannot
  be imported, instantiated or set up.

Environment read:
  SNAKEPIT_TOKEN            the run's token (see Auth)
  SNAKEPIT_RUN_ID           fallback for --snakepit-run-id; set from the flag
                            when missing, so every descendant carries it
  SNAKEPIT_WORKER_ID        fallback for --worker-id
  SNAKEPIT_WORKER_THREADS   sync tool calls run at once (default 8; --max-workers,
                            which the host sets to the worker's capacity, wins);
                            a call whose caller gave up keeps its slot until
                            its tool returns and is reported in Ping (see
                            _threads.py). Async tools are not limited here
                            (the host's capacity is)
  SNAKEPIT_SERVER           "sync" or "aio": the server flavour (default: the
                            adapter class's ``snakepit_server`` attribute if
                            set, else "aio" when every tool is async, else "sync")
  SNAKEPIT_STOP_GRACE_S     grace for in-flight calls on SIGTERM (default 1.5);
                            the host sets it from its StopGrace, strictly
                            less so teardown fits before its SIGKILL
                            (grpcworker.PythonStopGrace)
  SNAKEPIT_LOG_LEVEL        stderr log level (default INFO); a line logged
                            during a call shows its request_id= (and
                            trace_id=/span_id= when traced)
  SNAKEPIT_TEST_IGNORE_HOST_DEATH=1
                            TEST-ONLY: disables both host-death watchers so a
                            test can create a leftover worker on purpose.
                            Never set it in production.

A stdin that is /dev/null (a worker started by hand in the background) is
not watched, with a warning; the parent-pid watcher still runs.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextvars
import hmac
import importlib
import inspect
import logging
import os
import signal
import stat
import sys
import threading
import time
import traceback
from typing import Any, Callable, Dict, Iterator, NoReturn, Optional, Sequence

import grpc

from . import _procs, _reaper
from ._aio import AioWorkerServicer, _ignore_further_stop_signals, serve_aio
from ._threads import CallSlots, ServerThreads, Slot, ToolThreads
from .adapter import ToolInfo, ToolKind, collect_tools
from .codec import (
    ArgumentsError,
    ResultEncodingError,
    item_chunk,
    result_response,
    error_from_exception,
    tool_error,
)
from ._servicer import ServicerBase
from .context import MAX_MESSAGE_BYTES, TOKEN_METADATA_KEY, HostClient, SessionContext, _current, install_trace_logging
from .pb import snakepit_pb2 as pb

__all__ = ["WorkerServicer", "create_server", "server_flavour", "load_adapter_class", "main"]

HANDSHAKE_PREFIX = "SNAKEPIT_READY 1 tcp"

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_ADAPTER = 3

DEFAULT_THREADS = 8
DEFAULT_STOP_GRACE_S = 1.5
PPID_POLL_INTERVAL_S = 0.25

log = logging.getLogger("snakepit.worker")


# --------------------------------------------------------------------------
# Running tools
#
# grpcio's sync server runs every RPC in a thread of ServerThreads. A sync
# tool runs right there, on its RPC's thread; async tools (and the steps of
# async generators) run on one event loop — the main thread's in a worker
# process, else a thread of its own started on first use — while the RPC's
# thread waits for them. Each call registers a grpc termination callback
# (_Call.on_done) that, when the caller gave up before the tool finished,
# marks the context cancelled, cancels the async tool's task and marks a
# sync tool's slot abandoned.


_perf_counter = time.perf_counter

# Result types that are never awaitable: the common results skip
# inspect.isawaitable's abstract-class check.
_NOT_AWAITABLE = frozenset((int, float, str, bytes, bool, dict, list, tuple, type(None)))


class _Cancelled(Exception):
    """The call's caller gave up; nothing is sent."""


class _End:
    """Marks the end of a stream."""


_END = _End()


class _Call:
    """One RPC's link between grpc's termination callback and its tool."""

    __slots__ = ("sctx", "slots", "slot", "future", "finished")

    def __init__(self, sctx: SessionContext, slots: CallSlots) -> None:
        self.sctx = sctx
        self.slots = slots
        self.slot: Optional[Slot] = None
        self.future: Optional[_LoopCall] = None
        self.finished = False

    def on_done(self) -> None:
        # Runs on grpc's polling thread when the RPC ends, however it ends;
        # only an RPC that ended before its tool did was given up.
        if self.finished:
            return
        self.sctx._mark_cancelled()
        slot = self.slot
        if slot is not None:
            self.slots.abandon(slot)
        f = self.future
        if f is not None:
            f.cancel()


class _LoopCall:
    """A coroutine run as a task on the loop while the RPC's thread waits on
    a bare lock (cheaper than run_coroutine_threadsafe's two futures)."""

    __slots__ = ("_loop", "_coro", "_lock", "_task", "_cancel", "result", "error", "cancelled")

    def __init__(self, loop: asyncio.AbstractEventLoop, coro: Any) -> None:
        self._loop = loop
        self._coro = coro
        self._lock = threading.Lock()
        self._lock.acquire()
        self._task: Optional[asyncio.Task] = None
        self._cancel = False
        self.result: Any = None
        self.error: Optional[BaseException] = None
        self.cancelled = False

    def run(self) -> None:
        self._loop.call_soon_threadsafe(self._start)
        self._lock.acquire()

    def _start(self) -> None:  # on the loop
        try:
            task = self._loop.create_task(self._coro)
        except BaseException as e:
            self.error = e
            self._lock.release()
            return
        self._task = task
        task.add_done_callback(self._done)
        if self._cancel:
            task.cancel()

    def _done(self, task: asyncio.Task) -> None:  # on the loop
        if task.cancelled():
            self.cancelled = True
        else:
            self.error = task.exception()
            if self.error is None:
                self.result = task.result()
        self._lock.release()

    def cancel(self) -> None:  # any thread
        self._cancel = True
        task = self._task
        if task is not None:
            self._loop.call_soon_threadsafe(task.cancel)


class _AsyncLoop:
    """The event loop that runs async tools: the worker's main-thread loop
    (``attach``), or else one in a thread started on first use."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._thread: Optional[threading.Thread] = None

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        """Use ``loop`` (run by its owner, the worker's main thread)."""
        with self._lock:
            self._loop = loop

    def get(self) -> asyncio.AbstractEventLoop:
        loop = self._loop
        if loop is not None:
            return loop
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                t = threading.Thread(target=self._run, args=(loop,), name="snakepit-asyncio", daemon=True)
                t.start()
                self._thread = t
                self._loop = loop
            return self._loop

    @staticmethod
    def _run(loop: asyncio.AbstractEventLoop) -> None:
        asyncio.set_event_loop(loop)
        loop.run_forever()

    def close(self, timeout: float = 1.0) -> None:
        """Cancel what still runs on the loop and stop it (bounded wait)."""
        with self._lock:
            loop, thread = self._loop, self._thread
        if loop is None or thread is None or loop.is_closed():
            return

        async def cancel_all() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in tasks:
                t.cancel()
            if tasks:
                await asyncio.wait(tasks, timeout=timeout)

        try:
            asyncio.run_coroutine_threadsafe(cancel_all(), loop).result(timeout + 0.5)
        except BaseException:
            log.debug("cancelling async tools at stop failed", exc_info=True)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout)


async def _async_call(sctx: SessionContext, fn: Callable[..., Any], kwargs: Dict[str, Any]) -> Any:
    _current.set(sctx)  # the task runs in a context of its own
    return await fn(**kwargs)


async def _await_value(sctx: SessionContext, aw: Any) -> Any:
    _current.set(sctx)
    return await aw


class _SyncStream:
    """A sync iterator, advanced on the RPC's thread."""

    def __init__(self, it: Any) -> None:
        self._it = it

    def next(self) -> Any:
        try:
            return next(self._it)
        except StopIteration:
            return _END

    def close(self) -> None:
        close = getattr(self._it, "close", None)
        if close is not None:
            close()


class _AsyncStream:
    """An async iterator whose steps run on the event loop, one at a time."""

    def __init__(self, servicer: "WorkerServicer", call: _Call, it: Any) -> None:
        self._servicer = servicer
        self._call = call
        self._it = it
        self._task: Optional[asyncio.Task] = None
        self._ended = False

    async def _step(self) -> Any:
        self._task = asyncio.current_task()
        _current.set(self._call.sctx)
        try:
            return await self._it.__anext__()
        except StopAsyncIteration:
            return _END
        finally:
            self._task = None

    def next(self) -> Any:
        item = self._servicer._run_async(self._call, self._step())
        if item is _END:
            self._ended = True
        return item

    async def _aclose(self) -> None:
        # A step cancelled by on_done may still be unwinding: closing an
        # async generator that runs raises "already running".
        task = self._task
        if task is not None and not task.done():
            task.cancel()
            await asyncio.wait({task})
        aclose = getattr(self._it, "aclose", None)
        if aclose is not None:
            _current.set(self._call.sctx)
            await aclose()

    def close(self) -> None:
        if self._ended:
            return
        cf = asyncio.run_coroutine_threadsafe(self._aclose(), self._servicer._loop.get())

        def report(f: concurrent.futures.Future) -> None:
            if not f.cancelled() and f.exception() is not None:
                log.debug("closing an async stream failed", exc_info=f.exception())

        cf.add_done_callback(report)


_CANCELLED_RESPONSE = pb.ExecuteToolResponse()


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

    def Ping(self, request: pb.PingRequest, context: grpc.ServicerContext) -> pb.PingResponse:
        return self._ping(request, self.slots.abandoned())

    def DescribeTools(self, request: pb.DescribeToolsRequest, context: grpc.ServicerContext) -> pb.DescribeToolsResponse:
        return self._describe()

    def _run_async(self, call: _Call, coro: Any) -> Any:
        """Run a coroutine on the loop and wait for it on this thread."""
        lc = _LoopCall(self._loop.get(), coro)
        call.future = lc
        if call.sctx._cancelled:  # on_done ran before the call was visible to it
            lc.cancel()
        lc.run()
        call.future = None
        if lc.cancelled:
            if call.sctx._cancelled:
                raise _Cancelled()
            raise asyncio.CancelledError()
        if lc.error is not None:
            raise lc.error
        return lc.result

    # -- ExecuteTool -------------------------------------------------------------
    #
    # The path of a sync tool is written out in one function: at eight calls
    # in flight, every microsecond a call holds the GIL is paid several times
    # over by the threads waiting for it (docs/BENCHMARKS.md).

    def ExecuteTool(self, request: pb.ExecuteToolRequest, context: grpc.ServicerContext) -> pb.ExecuteToolResponse:
        t0 = _perf_counter()
        # A context of its own per call, as a task would have: a tool's
        # contextvars never leak into the next call on this thread.
        resp = contextvars.Context().run(self._execute, request, context)
        resp.duration_ms = (_perf_counter() - t0) * 1000.0
        return resp

    def _execute(self, request: pb.ExecuteToolRequest, context: grpc.ServicerContext) -> pb.ExecuteToolResponse:
        name = request.tool_name
        info = self.tools.get(name)
        if info is None:
            return pb.ExecuteToolResponse(error=self._unknown_tool(name))
        if info.spec.supports_streaming:
            return pb.ExecuteToolResponse(
                error=tool_error(
                    "StreamingToolCalledUnary",
                    f"tool {name!r} is a streaming tool; call it with ExecuteStream "
                    "(the ExecuteStreamingTool RPC) instead of Execute",
                )
            )
        sctx = SessionContext._for_call(
            request.session_id, request.request_id, self.worker_id, self.run_id, request.metadata, name, self.host
        )
        try:
            kwargs = self._prepare(info, request, sctx)
        except ArgumentsError as e:
            return pb.ExecuteToolResponse(error=tool_error("InvalidArguments", str(e)))
        except TypeError as e:
            return pb.ExecuteToolResponse(error=tool_error("TypeError", str(e)))

        slots = self.slots
        call = _Call(sctx, slots)
        if not context.add_callback(call.on_done):
            sctx._mark_cancelled()  # the RPC is already over
            return _CANCELLED_RESPONSE
        _current.set(sctx)
        try:
            if info.kind == ToolKind.ASYNC:
                value = self._run_async(call, _async_call(sctx, info.func, kwargs))
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
                    value = self._run_async(call, _await_value(sctx, value))
        except _Cancelled:
            return _CANCELLED_RESPONSE
        except asyncio.CancelledError:
            # The tool cancelled itself: the call ends as cancelled.
            call.finished = True
            context.abort(grpc.StatusCode.CANCELLED, f"tool {name!r} was cancelled")
        except BaseException as e:  # SystemExit from a tool is a tool error, not a worker exit
            call.finished = True
            return pb.ExecuteToolResponse(error=error_from_exception(e))
        call.finished = True
        return result_response(name, value)

    # -- ExecuteStreamingTool ----------------------------------------------------

    def _open_stream(self, call: _Call, info: ToolInfo, kwargs: Dict[str, Any], request_id: str) -> Any:
        if info.kind == ToolKind.ASYNC_GEN:
            return _AsyncStream(self, call, info.func(**kwargs))
        if info.kind == ToolKind.SYNC_GEN:
            # Calling a generator function runs none of its body.
            return _SyncStream(info.func(**kwargs))
        if info.kind == ToolKind.ASYNC_ITER:
            it = self._run_async(call, _async_call(call.sctx, info.func, kwargs))
        else:
            # SYNC_ITER: _chunks holds a slot for the whole stream already.
            it = info.func(**kwargs)
        if hasattr(it, "__anext__"):
            return _AsyncStream(self, call, it)
        if hasattr(it, "__aiter__"):
            return _AsyncStream(self, call, it.__aiter__())
        return _SyncStream(iter(it))

    def ExecuteStreamingTool(self, request: pb.ExecuteToolRequest, context: grpc.ServicerContext) -> Iterator[pb.ToolChunk]:
        # A generator: grpc sends each chunk as it is yielded, with flow
        # control. When the caller goes away, on_done marks the context
        # cancelled (and abandons a step still running); grpc then stops
        # iterating and drops this generator, whose finally closes the tool's.
        ctx = contextvars.Context()
        return ctx.run(self._stream, request, context, ctx)

    def _stream(self, request: pb.ExecuteToolRequest, context: grpc.ServicerContext, ctx: contextvars.Context) -> Iterator[pb.ToolChunk]:
        name = request.tool_name
        info = self.tools.get(name)
        if info is None:
            return iter((pb.ToolChunk(seq=1, is_final=True, error=self._unknown_tool(name)),))
        if not info.spec.supports_streaming:
            return iter(
                (
                    pb.ToolChunk(
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
        except ArgumentsError as e:
            return iter((pb.ToolChunk(seq=1, is_final=True, error=tool_error("InvalidArguments", str(e))),))
        except TypeError as e:
            return iter((pb.ToolChunk(seq=1, is_final=True, error=tool_error("TypeError", str(e))),))
        call = _Call(sctx, self.slots)
        if not context.add_callback(call.on_done):
            sctx._mark_cancelled()
            return iter(())
        _current.set(sctx)
        return self._chunks(ctx, call, info, kwargs, request.request_id)

    def _chunks(
        self, ctx: contextvars.Context, call: _Call, info: ToolInfo, kwargs: Dict[str, Any], request_id: str
    ) -> Iterator[pb.ToolChunk]:
        name = info.name
        sctx = call.sctx
        seq = 0
        stream: Any = None
        slot: Optional[Slot] = None
        completed = False
        try:
            error: Optional[pb.ToolError] = None
            if info.kind in (ToolKind.SYNC_GEN, ToolKind.SYNC_ITER):
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
            yield pb.ToolChunk(seq=seq + 1, is_final=True, error=error)
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


# --------------------------------------------------------------------------
# Serving and auth

_SERVICE = "snakepit.v1.WorkerService"


class _Handlers(grpc.GenericRpcHandler):
    """WorkerService's method handlers; with a token, rejects every RPC whose
    ``x-snakepit-token`` metadata is not the token (before parsing it)."""

    def __init__(self, servicer: WorkerServicer, token: str) -> None:
        self._token = token.encode("utf-8")
        self._token_str = token
        uu, us = grpc.unary_unary_rpc_method_handler, grpc.unary_stream_rpc_method_handler
        self._methods = {
            f"/{_SERVICE}/Ping": uu(
                servicer.Ping, request_deserializer=pb.PingRequest.FromString,
                response_serializer=pb.PingResponse.SerializeToString,
            ),
            f"/{_SERVICE}/DescribeTools": uu(
                servicer.DescribeTools, request_deserializer=pb.DescribeToolsRequest.FromString,
                response_serializer=pb.DescribeToolsResponse.SerializeToString,
            ),
            f"/{_SERVICE}/ExecuteTool": uu(
                servicer.ExecuteTool, request_deserializer=pb.ExecuteToolRequest.FromString,
                response_serializer=pb.ExecuteToolResponse.SerializeToString,
            ),
            f"/{_SERVICE}/ExecuteStreamingTool": us(
                servicer.ExecuteStreamingTool, request_deserializer=pb.ExecuteToolRequest.FromString,
                response_serializer=pb.ToolChunk.SerializeToString,
            ),
        }

    def _authorized(self, metadata: Any) -> bool:
        for key, value in metadata or ():
            if key == TOKEN_METADATA_KEY:
                if isinstance(value, str):
                    try:  # str against str: no encoding on every call
                        return hmac.compare_digest(value, self._token_str)
                    except TypeError:  # not ASCII: compare the bytes
                        value = value.encode("utf-8")
                return hmac.compare_digest(bytes(value), self._token)
        return False

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> Any:
        handler = self._methods.get(handler_call_details.method)
        if handler is None or not self._token or self._authorized(handler_call_details.invocation_metadata):
            return handler
        log.warning("rejected %s: missing or wrong %s", handler_call_details.method, TOKEN_METADATA_KEY)

        def deny(request: Any, context: grpc.ServicerContext) -> Any:
            context.abort(grpc.StatusCode.UNAUTHENTICATED, f"missing or invalid {TOKEN_METADATA_KEY} metadata")

        # No deserializer: a rejected request is never parsed.
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(deny)
        return grpc.unary_unary_rpc_method_handler(deny)


def create_server(
    servicer: WorkerServicer,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    token: str = "",
    threads: Optional[ServerThreads] = None,
) -> "tuple[grpc.Server, int]":
    """A grpcio sync server for ``servicer`` bound to ``host:port`` (not started).

    Returns (server, bound port).
    """
    server = grpc.server(
        threads or ServerThreads(keep=servicer.slots.size + 2),
        handlers=[_Handlers(servicer, token)],
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            # Without this, a fixed port could be silently shared with another process.
            ("grpc.so_reuseport", 0),
        ],
    )
    addr = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    bound = server.add_insecure_port(addr)
    if not bound:  # older grpcio returned 0 instead of raising
        raise RuntimeError(f"could not bind {addr}")
    return server, bound


# --------------------------------------------------------------------------
# Process plumbing


class AdapterLoadError(Exception):
    pass


def load_adapter_class(spec: str) -> type:
    """Import ``module.Class`` (or ``module:Class``) and return the class."""
    if ":" in spec:
        module_name, _, attr_path = spec.partition(":")
    else:
        module_name, _, attr_path = spec.rpartition(".")
    if not module_name or not attr_path:
        raise AdapterLoadError(f"expected 'module.Class', got {spec!r}")
    module = importlib.import_module(module_name)
    obj: Any = module
    for part in attr_path.split("."):
        obj = getattr(obj, part)
    if not isinstance(obj, type):
        raise AdapterLoadError(f"{spec!r} is a {type(obj).__name__}, not a class")
    return obj


class _Process:
    """Process-wide state of the worker: the handshake fd and the exit paths."""

    def __init__(self, worker_id: str) -> None:
        self.worker_id = worker_id
        self.handshake_fd: Optional[int] = None
        self._exiting = threading.Lock()

    def redirect_stdout(self) -> None:
        # Keep a private copy of the handshake pipe (os.dup makes it
        # non-inheritable), then point fd 1 at stderr for everything else,
        # children included. The copy is never closed: the host may treat
        # EOF on stdout as the process ending.
        sys.stdout.flush()
        self.handshake_fd = os.dup(1)
        os.dup2(2, 1)
        sys.stdout = sys.stderr

    def handshake(self, host: str, port: int) -> None:
        shown = f"[{host}]" if ":" in host else host
        line = f"{HANDSHAKE_PREFIX} {shown}:{port}\n".encode()
        fd = self.handshake_fd if self.handshake_fd is not None else 1
        while line:
            n = os.write(fd, line)
            line = line[n:]

    def claim_exit(self) -> None:
        """Become the one exit path, or wait for the other one to end the
        process. die_now (a watcher thread) and the main thread's orderly
        exit must never overlap: the main thread returning would end the
        process while die_now is between its SIGSTOP and SIGKILL rounds,
        leaving descendants stopped forever."""
        self._exiting.acquire()

    def die_now(self, reason: str, code: int = EXIT_OK) -> None:
        """Exit immediately from any thread, killing descendants first."""
        if not self._exiting.acquire(blocking=False):
            return  # another path is already exiting
        try:
            os.write(2, f"snakepit[{self.worker_id}]: {reason}; exiting now\n".encode())
        except OSError:
            pass
        try:
            _procs.kill_descendants()
        finally:
            os._exit(code)

    def watch_stdin(self) -> None:
        try:
            st = os.fstat(0)
        except OSError:
            log.warning("no stdin: host death is detected by parent pid only")
            return
        try:
            null = os.stat(os.devnull)
            if stat.S_ISCHR(st.st_mode) and st.st_rdev == null.st_rdev:
                log.warning("stdin is %s: host death is detected by parent pid only", os.devnull)
                return
        except OSError:
            pass
        while True:
            try:
                data = os.read(0, 65536)
            except InterruptedError:
                continue
            except OSError as e:
                self.die_now(f"stdin failed ({e}): host gone")
                return
            if not data:
                self.die_now("stdin reached EOF: host gone")
                return

    def watch_parent(self, start_ppid: int) -> None:
        while True:
            time.sleep(PPID_POLL_INTERVAL_S)
            ppid = os.getppid()
            if ppid != start_ppid:
                self.die_now(f"parent pid changed from {start_ppid} to {ppid}: host gone")
                return

    def start_host_watchers(self) -> None:
        start_ppid = os.getppid()
        threading.Thread(target=self.watch_stdin, name="snakepit-stdin-watch", daemon=True).start()
        threading.Thread(
            target=self.watch_parent, args=(start_ppid,), name="snakepit-ppid-watch", daemon=True
        ).start()


def _parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m snakepit_bridge.server",
        description="A snakepit Python worker: serves one adapter's tools over gRPC.",
    )
    p.add_argument("--adapter", required=True, help="the adapter class, as module.Class")
    p.add_argument("--port", type=int, default=0, help="port to listen on (0: pick a free one)")
    p.add_argument("--host", default="127.0.0.1", help="loopback address to bind (default 127.0.0.1)")
    p.add_argument("--bridge-address", default="", help="HOST:PORT of the host's bridge server")
    p.add_argument("--worker-id", default="", help="this worker's id")
    p.add_argument("--snakepit-run-id", default="", help="the host application's run id")
    p.add_argument(
        "--max-workers",
        type=int,
        default=0,
        help="threads for sync tools (default: $SNAKEPIT_WORKER_THREADS or 8)",
    )
    args = p.parse_args(argv)
    if args.host == "localhost":
        # The handshake must carry an address, not a name the host would
        # have to resolve (and might resolve to a different interface).
        args.host = "127.0.0.1"
    if args.host != "::1" and not args.host.startswith("127."):
        p.error(f"--host must be a loopback address, got {args.host!r}")
    if not 0 <= args.port <= 65535:
        p.error(f"--port out of range: {args.port}")
    return args


def _env_float(name: str, default: float) -> float:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        v = float(raw)
    except ValueError:
        log.warning("ignoring %s=%r: not a number", name, raw)
        return default
    return max(v, 0.0)


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        return max(int(raw), 1)
    except ValueError:
        log.warning("ignoring %s=%r: not an integer", name, raw)
        return default


def _trace_suffix(record: logging.LogRecord) -> bool:
    """Adds " request_id=..." for records made during a call that has one, and
    " trace_id=... span_id=..." inside a traced call, so the host's log ties
    each line to its call; tolerant of records from a factory that did not
    set the ids."""
    request_id = getattr(record, "request_id", "")
    trace_id = getattr(record, "trace_id", "")
    suffix = f" request_id={request_id}" if request_id else ""
    if trace_id:
        suffix += f" trace_id={trace_id} span_id={getattr(record, 'span_id', '')}"
    record.snakepit_trace = suffix
    return True


def _setup_logging(worker_id: str) -> None:
    level_name = os.environ.get("SNAKEPIT_LOG_LEVEL", "INFO").upper()
    level = getattr(logging, level_name, logging.INFO)
    install_trace_logging()
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_trace_suffix)
    wid = worker_id.replace("%", "%%")
    handler.setFormatter(
        logging.Formatter(f"%(levelname)s [worker={wid} pid=%(process)d%(snakepit_trace)s] %(name)s: %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


def _fail(message: str, code: int) -> int:
    try:
        sys.stderr.write(message.rstrip("\n") + "\n")
        sys.stderr.flush()
    except OSError:
        pass
    return code


_ASYNC_KINDS = (ToolKind.ASYNC, ToolKind.ASYNC_GEN, ToolKind.ASYNC_ITER)


_FLAVOURS = ("sync", "aio")


def server_flavour(tools: Dict[str, ToolInfo], declared: str = "") -> str:
    """"sync" (grpcio's sync server: sync tools run on their RPC's thread)
    or "aio" (grpc.aio: async tools run in their RPC's task, sync tools hop
    into a thread pool).

    First match wins: ``SNAKEPIT_SERVER`` (the operator's say), then
    ``declared`` (the adapter's ``snakepit_server`` attribute: its
    author knows whether its busy tools are sync or async), then the tools
    themselves: all async gets "aio", anything else "sync". A bad
    ``declared`` raises ValueError (it is code, and fails the start); a bad
    environment value is ignored with a warning.
    """
    # Checked first, so a typo fails wherever it runs, not only where the
    # environment leaves the choice to it.
    if not isinstance(declared, str) or declared.strip().lower() not in ("",) + _FLAVOURS:
        raise ValueError(f"snakepit_server = {declared!r}: use 'sync' or 'aio' (or leave it unset)")
    declared = declared.strip().lower()
    raw = os.environ.get("SNAKEPIT_SERVER", "").strip().lower()
    if raw in _FLAVOURS:
        return raw
    if raw:
        log.warning("ignoring SNAKEPIT_SERVER=%r: use 'sync' or 'aio'", raw)
    if declared:
        return declared
    if tools and all(t.kind in _ASYNC_KINDS for t in tools.values()):
        return "aio"
    return "sync"


def main(argv: Optional[Sequence[str]] = None) -> NoReturn:
    """Run a worker until it is stopped; never returns.

    Every exit goes through ``os._exit`` once the command line is parsed:
    a thread left behind by a tool or by the adapter's import (non-daemon,
    or stuck in a sync tool that ignores cancellation) must not keep a
    stopped worker alive.
    """
    code = _run(argv)
    logging.shutdown()
    try:
        sys.stderr.flush()
    except OSError:
        pass
    os._exit(code)


def _run(argv: Optional[Sequence[str]]) -> int:
    args = _parse_args(argv)
    worker_id = args.worker_id or os.environ.get("SNAKEPIT_WORKER_ID", "") or f"pid{os.getpid()}"
    proc = _Process(worker_id)
    proc.redirect_stdout()
    _setup_logging(worker_id)

    token = os.environ.pop("SNAKEPIT_TOKEN", "")
    run_id = args.snakepit_run_id or os.environ.get("SNAKEPIT_RUN_ID", "")
    if run_id and os.environ.get("SNAKEPIT_RUN_ID") != run_id:
        if os.environ.get("SNAKEPIT_RUN_ID"):
            log.warning("SNAKEPIT_RUN_ID in the environment differs from --snakepit-run-id; using the flag")
        # Descendants must carry the run id so the host can find them.
        os.environ["SNAKEPIT_RUN_ID"] = run_id

    # Until the server runs, a stop request exits at once: nothing is
    # in flight yet, and setup() may take long.
    def early_stop(signum: int, frame: Any) -> None:
        proc.die_now(f"received {signal.Signals(signum).name} during startup")

    signal.signal(signal.SIGTERM, early_stop)
    signal.signal(signal.SIGINT, early_stop)
    # When the host dies, this worker's process group becomes orphaned; if
    # kill_descendants() has frozen a group member (SIGSTOP) and another
    # member exits, the kernel sends SIGHUP + SIGCONT to the whole group —
    # this worker included — which would end it between its freeze and kill
    # rounds and leave the rest stopped forever. A Python-level handler (not
    # SIG_IGN, which children would inherit across exec) keeps it alive.
    signal.signal(signal.SIGHUP, _on_sighup)
    _reaper.start()  # orphaned descendants stay ours (see _reaper)

    if os.environ.get("SNAKEPIT_TEST_IGNORE_HOST_DEATH") == "1":
        log.warning("SNAKEPIT_TEST_IGNORE_HOST_DEATH=1: host-death detection is OFF (test-only setting)")
    else:
        proc.start_host_watchers()

    # SystemExit too: an adapter module calling sys.exit() is a load failure.
    try:
        adapter_cls = load_adapter_class(args.adapter)
        adapter = adapter_cls()
        tools = collect_tools(adapter)  # before setup(): a bad tool set fails fast
        flavour = server_flavour(tools, getattr(adapter, "snakepit_server", "") or "")
    except (Exception, SystemExit) as e:
        msg = f"snakepit: cannot load adapter {args.adapter!r}: {type(e).__name__}: {e}"
        if isinstance(e, ModuleNotFoundError):
            msg += f"\n  hint: is the module on PYTHONPATH? sys.path = {sys.path}"
        _procs.kill_descendants()
        return _fail(msg, EXIT_ADAPTER)
    try:
        setattr(adapter, "worker_id", worker_id)
        setattr(adapter, "run_id", run_id)
    except AttributeError:  # __slots__ or properties: the context carries them anyway
        pass
    try:
        setup = getattr(adapter, "setup", None)
        if callable(setup):
            setup()
    except (Exception, SystemExit) as e:
        tb = "".join(traceback.format_exception(type(e), e, e.__traceback__, limit=-3))
        _procs.kill_descendants()
        return _fail(
            f"snakepit: adapter {args.adapter!r} failed in setup(): {type(e).__name__}: {e}\n{tb}", EXIT_ADAPTER
        )
    if not tools:
        log.warning("adapter %s defines no @tool methods", args.adapter)

    threads = args.max_workers if args.max_workers > 0 else _env_int("SNAKEPIT_WORKER_THREADS", DEFAULT_THREADS)
    host_client = HostClient(args.bridge_address, token, worker_id)
    grace = _env_float("SNAKEPIT_STOP_GRACE_S", DEFAULT_STOP_GRACE_S)
    executor: Optional[ToolThreads] = None
    common: Dict[str, Any] = dict(
        adapter_name=args.adapter, worker_id=worker_id, run_id=run_id, host=host_client, tools=tools
    )

    code = EXIT_OK
    try:
        if flavour == "aio":
            executor = ToolThreads(threads)
            aio_servicer = AioWorkerServicer(adapter, executor=executor, **common)
            # Not asyncio.run: it ends by waiting for the default
            # executor's threads (asyncio.to_thread, run_in_executor), which
            # a tool may keep busy for any time; teardown() would never run
            # and the host would have to SIGKILL. _run_loop does not wait.
            _run_loop(serve_aio(proc, aio_servicer, args, token, grace, _StartupFailed))
        else:
            servicer = WorkerServicer(adapter, slots=CallSlots(threads), **common)
            _serve(proc, servicer, args, token, grace)
    except _StartupFailed as e:
        code = _fail(f"snakepit: worker {worker_id} failed to start: {e}", EXIT_FAILURE)
    except BaseException:
        log.exception("worker crashed")
        code = EXIT_FAILURE
    else:
        try:
            teardown = getattr(adapter, "teardown", None)
            if callable(teardown):
                teardown()
        except Exception:
            log.exception("adapter teardown failed")
    # Nothing may wait from here on: a sync tool that ignores cancellation
    # would hold its pool thread forever.
    if executor is not None:
        executor.shutdown(wait=False, cancel_futures=True)
    host_client.close()
    proc.claim_exit()
    killed = _procs.kill_descendants()
    if killed:
        log.info("killed %d leftover descendant(s): %s", len(killed), killed)
    log.info("worker stopped (exit %d)", code)
    return code


def _on_sighup(signum: int, frame: Any) -> None:
    log.debug("ignoring SIGHUP (orphaned process group)")


class _StartupFailed(Exception):
    pass


def _serve(proc: _Process, servicer: WorkerServicer, args: argparse.Namespace, token: str, grace: float) -> None:
    # The main thread runs the event loop of async tools (as asyncio.run
    # would: an async tool may do what only the main thread can, like
    # setting a signal's disposition) and waits there for the stop signal;
    # gRPC itself is served from the server's own threads.
    _run_loop(_serve_async(proc, servicer, args, token, grace), servicer._loop.attach)


def _run_loop(main: Any, attach: Optional[Callable[[asyncio.AbstractEventLoop], None]] = None) -> None:
    """asyncio.run(main) on this thread, minus its wait for the default
    executor: the process exits right after (os._exit), so threads a tool
    left busy are simply dropped, never waited for."""
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    if attach is not None:
        attach(loop)
    try:
        loop.run_until_complete(main)
    finally:
        try:
            _cancel_all_tasks(loop)
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            # Not shutdown_default_executor(): it would wait for threads a
            # tool may never release. close() shuts the executor down
            # without waiting.
            asyncio.set_event_loop(None)
            loop.close()


def _cancel_all_tasks(loop: asyncio.AbstractEventLoop) -> None:
    tasks = asyncio.all_tasks(loop)
    if not tasks:
        return
    for t in tasks:
        t.cancel()
    loop.run_until_complete(asyncio.wait(tasks, timeout=1.0))


async def _serve_async(
    proc: _Process, servicer: WorkerServicer, args: argparse.Namespace, token: str, grace: float
) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    received: Dict[str, str] = {}

    def request_stop(sig: signal.Signals) -> None:
        received.setdefault("signal", sig.name)
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, request_stop, sig)

    try:
        server, port = create_server(servicer, host=args.host, port=args.port, token=token)
        server.start()
    except Exception as e:
        raise _StartupFailed(f"cannot serve on {args.host}:{args.port}: {e}") from e
    servicer._announce_ready(proc, args.host, port, "grpcio sync server")

    await stop.wait()
    _ignore_further_stop_signals(loop)
    log.info("received %s: stopping (grace %.1fs)", received.get("signal", "stop"), grace)
    # New calls are refused at once; calls still running after the grace
    # are cancelled (contexts marked, async tools' tasks cancelled). The
    # loop keeps running meanwhile, so async tools can finish.
    stopped = server.stop(grace)
    deadline = time.monotonic() + grace + 2.0
    while not stopped.is_set() and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    servicer.close()


if __name__ == "__main__":
    main()
