"""The worker process: ``python -m snakepit_bridge.server``.

Contract with the host (DESIGN.md §4):

    python -m snakepit_bridge.server --adapter module.Class --port 0 \\
        --bridge-address HOST:PORT --worker-id ID --snakepit-run-id RUNID \\
        [--host 127.0.0.1] [--max-workers N]

* Serves ``snakepit.v1.WorkerService`` with ``grpc.aio`` on loopback only.
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
  adapter's ``teardown()``, kill descendants, exit 0.
* Host death: stdin reaching EOF, or the parent pid changing, kills the
  descendants and exits 0 at once from a watcher thread, without waiting
  for the event loop (a tool may be blocking it).
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
                            a call whose caller gave up no longer counts (see
                            _threads.py) and is reported in Ping
  SNAKEPIT_STOP_GRACE_S     grace for in-flight calls on SIGTERM (default 1.5)
  SNAKEPIT_LOG_LEVEL        stderr log level (default INFO)
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
import functools
import hmac
import importlib
import inspect
import logging
import os
import platform
import signal
import stat
import sys
import threading
import time
import traceback
from typing import Any, Callable, Dict, NoReturn, Optional, Sequence

import grpc

from . import _procs, _reaper
from ._threads import ToolThreads
from .adapter import ToolInfo, ToolKind, collect_tools
from .codec import (
    ArgumentsError,
    ResultEncodingError,
    decode_args,
    encode_result,
    error_from_exception,
    tool_error,
)
from .context import MAX_MESSAGE_BYTES, TOKEN_METADATA_KEY, HostClient, SessionContext, _current, install_trace_logging
from .pb import snakepit_pb2 as pb
from .pb import snakepit_pb2_grpc as pb_grpc

__all__ = ["WorkerServicer", "TokenInterceptor", "create_server", "load_adapter_class", "main"]

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
        self, it: Any, executor: concurrent.futures.Executor, ctx: contextvars.Context, request_id: str = ""
    ) -> None:
        self._it = it
        self._executor = executor
        self._ctx = ctx
        self._request_id = request_id
        self._pending: Optional[concurrent.futures.Future] = None
        self._closed = False

    async def next(self) -> Any:
        cf = self._executor.submit(self._ctx.run, _next_or_end, self._it)
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
        close = getattr(self._it, "close", None)
        if close is None:
            return

        def do_close() -> None:
            try:
                self._ctx.run(close)
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


class WorkerServicer(pb_grpc.WorkerServiceServicer):
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
        self.adapter = adapter
        self.adapter_name = adapter_name or f"{type(adapter).__module__}.{type(adapter).__qualname__}"
        self.worker_id = worker_id
        self.run_id = run_id
        self.host = host
        self.executor = executor or ToolThreads(DEFAULT_THREADS)
        self.tools = tools if tools is not None else collect_tools(adapter)
        self.started = time.monotonic()

    # -- simple RPCs --------------------------------------------------------

    async def Ping(self, request: pb.PingRequest, context: grpc.aio.ServicerContext) -> pb.PingResponse:
        count, oldest, ids = 0, 0.0, []
        report = getattr(self.executor, "abandoned", None)
        if report is not None:
            count, oldest, ids = report()
        return pb.PingResponse(
            message=request.message,
            pid=os.getpid(),
            worker_id=self.worker_id,
            uptime_seconds=time.monotonic() - self.started,
            abandoned_calls=count,
            oldest_abandoned_seconds=oldest,
            abandoned_request_ids=ids,
        )

    async def DescribeTools(
        self, request: pb.DescribeToolsRequest, context: grpc.aio.ServicerContext
    ) -> pb.DescribeToolsResponse:
        return pb.DescribeToolsResponse(
            tools=[self._spec_pb(self.tools[n]) for n in sorted(self.tools)],
            adapter=self.adapter_name,
            python_version=platform.python_version(),
            pid=os.getpid(),
        )

    @staticmethod
    def _spec_pb(info: ToolInfo) -> pb.ToolSpec:
        s = info.spec
        return pb.ToolSpec(
            name=s.name,
            description=s.description,
            supports_streaming=s.supports_streaming,
            max_concurrency=s.max_concurrency,
            timeout_seconds=s.timeout,
            parameters=[
                pb.ParamSpec(
                    name=p.name,
                    type=p.type,
                    required=p.required,
                    default_json=p.default_json,
                    description=p.description,
                )
                for p in s.parameters
            ],
        )

    # -- shared call preparation ---------------------------------------------

    def _unknown_tool(self, name: str) -> pb.ToolError:
        # The message is exactly the comma-separated list of available
        # tools, so the host can split it without parsing prose.
        return tool_error("UnknownTool", ", ".join(sorted(self.tools)))

    def _context(self, request: pb.ExecuteToolRequest) -> SessionContext:
        return SessionContext(
            session_id=request.session_id,
            request_id=request.request_id,
            worker_id=self.worker_id,
            run_id=self.run_id,
            metadata=dict(request.metadata),
            tool_name=request.tool_name,
            host=self.host,
        )

    def _prepare(self, info: ToolInfo, request: pb.ExecuteToolRequest, sctx: SessionContext) -> Dict[str, Any]:
        """Decoded, checked keyword arguments, context included.

        Raises ArgumentsError (undecodable) or TypeError (they do not fit the
        signature). Binding up front keeps a wrong call from ever running the
        tool, and keeps TypeErrors the tool raises itself distinguishable.
        """
        kwargs = decode_args(request.args_json, request.binary_args)
        if info.context_param is not None:
            if info.context_param in kwargs:
                raise ArgumentsError(
                    f"argument {info.context_param!r} of tool {info.name!r} is reserved for the session context"
                )
            kwargs[info.context_param] = sctx
        try:
            info.signature.bind(**kwargs)
        except TypeError as e:
            raise TypeError(f"bad arguments for tool {info.name!r}: {e}") from None
        return kwargs

    async def _in_thread(self, fn: Callable[..., Any], kwargs: Dict[str, Any], request_id: str = "") -> Any:
        ctx = contextvars.copy_context()
        cf = self.executor.submit(ctx.run, functools.partial(fn, **kwargs))
        return await _await_thread(self.executor, cf, request_id)

    # -- ExecuteTool -------------------------------------------------------------

    async def ExecuteTool(
        self, request: pb.ExecuteToolRequest, context: grpc.aio.ServicerContext
    ) -> pb.ExecuteToolResponse:
        t0 = time.perf_counter()
        resp = await self._execute(request)
        resp.duration_ms = (time.perf_counter() - t0) * 1000.0
        return resp

    async def _execute(self, request: pb.ExecuteToolRequest) -> pb.ExecuteToolResponse:
        name = request.tool_name
        info = self.tools.get(name)
        if info is None:
            return pb.ExecuteToolResponse(error=self._unknown_tool(name))
        if info.streaming:
            return pb.ExecuteToolResponse(
                error=tool_error(
                    "StreamingToolCalledUnary",
                    f"tool {name!r} is a streaming tool; call it with ExecuteStream "
                    "(the ExecuteStreamingTool RPC) instead of Execute",
                )
            )
        sctx = self._context(request)
        try:
            kwargs = self._prepare(info, request, sctx)
        except ArgumentsError as e:
            return pb.ExecuteToolResponse(error=tool_error("InvalidArguments", str(e)))
        except TypeError as e:
            return pb.ExecuteToolResponse(error=tool_error("TypeError", str(e)))

        token = _current.set(sctx)
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
            return pb.ExecuteToolResponse(error=error_from_exception(e))
        finally:
            _current.reset(token)
        try:
            return pb.ExecuteToolResponse(result=encode_result(name, value))
        except ResultEncodingError as e:
            return pb.ExecuteToolResponse(error=tool_error("SerializationError", str(e)))

    # -- ExecuteStreamingTool ----------------------------------------------------

    async def _open_stream(self, info: ToolInfo, kwargs: Dict[str, Any], request_id: str = "") -> Any:
        ctx = contextvars.copy_context()
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
        self, request: pb.ExecuteToolRequest, context: grpc.aio.ServicerContext
    ) -> None:
        # Written with context.write rather than as an async generator so that
        # a cancellation always lands inside this coroutine (in a write or in
        # the tool's step), where the finally below can close the tool's
        # generator deterministically.
        name = request.tool_name
        seq = 0

        async def final(error: Optional[pb.ToolError] = None) -> None:
            await context.write(pb.ToolChunk(seq=seq + 1, is_final=True, error=error))

        info = self.tools.get(name)
        if info is None:
            await final(self._unknown_tool(name))
            return
        if not info.streaming:
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
        except ArgumentsError as e:
            await final(tool_error("InvalidArguments", str(e)))
            return
        except TypeError as e:
            await final(tool_error("TypeError", str(e)))
            return

        token = _current.set(sctx)
        stream: Any = None
        completed = False
        try:
            error: Optional[pb.ToolError] = None
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
                    payload = encode_result(name, item, verb="yielded")
                except ResultEncodingError as e:
                    error = tool_error("SerializationError", str(e))
                    break
                seq += 1
                await context.write(pb.ToolChunk(seq=seq, data=payload))
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


# --------------------------------------------------------------------------
# Auth


class TokenInterceptor(grpc.aio.ServerInterceptor):
    """Rejects every RPC whose ``x-snakepit-token`` metadata is not the token."""

    def __init__(self, token: str) -> None:
        self._token = token.encode("utf-8")

    def _authorized(self, metadata: Any) -> bool:
        for key, value in metadata or ():
            if key == TOKEN_METADATA_KEY:
                given = value.encode("utf-8") if isinstance(value, str) else bytes(value)
                return hmac.compare_digest(given, self._token)
        return False

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Any],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Any:
        handler = await continuation(handler_call_details)
        if handler is None or self._authorized(handler_call_details.invocation_metadata):
            return handler
        log.warning("rejected %s: missing or wrong %s", handler_call_details.method, TOKEN_METADATA_KEY)

        async def deny(request: Any, context: grpc.aio.ServicerContext) -> Any:
            await context.abort(
                grpc.StatusCode.UNAUTHENTICATED, f"missing or invalid {TOKEN_METADATA_KEY} metadata"
            )

        # No deserializer: a rejected request is never parsed.
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(deny)
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(deny)
        if handler.stream_unary is not None:
            return grpc.stream_unary_rpc_method_handler(deny)
        return grpc.stream_stream_rpc_method_handler(deny)


def create_server(
    servicer: WorkerServicer, *, host: str = "127.0.0.1", port: int = 0, token: str = ""
) -> "tuple[grpc.aio.Server, int]":
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
    pb_grpc.add_WorkerServiceServicer_to_server(servicer, server)
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
    """Adds " trace_id=... span_id=..." for records made inside a traced call;
    tolerant of records from a factory that did not set the ids."""
    trace_id = getattr(record, "trace_id", "")
    record.snakepit_trace = f" trace_id={trace_id} span_id={getattr(record, 'span_id', '')}" if trace_id else ""
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

    # Until the event loop runs, a stop request exits at once: nothing is
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
    executor = ToolThreads(threads)
    host_client = HostClient(args.bridge_address, token, worker_id)
    servicer = WorkerServicer(
        adapter,
        adapter_name=args.adapter,
        worker_id=worker_id,
        run_id=run_id,
        host=host_client,
        executor=executor,
        tools=tools,
    )
    grace = _env_float("SNAKEPIT_STOP_GRACE_S", DEFAULT_STOP_GRACE_S)

    code = EXIT_OK
    try:
        asyncio.run(_serve(proc, servicer, args, token, grace))
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


async def _serve(
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
        await server.start()
    except Exception as e:
        raise _StartupFailed(f"cannot serve on {args.host}:{args.port}: {e}") from e
    try:
        proc.handshake(args.host, port)
    except OSError as e:
        proc.die_now(f"cannot write the handshake line ({e}): host gone")
    log.info(
        "ready: adapter %s, %d tool(s), listening on %s:%d",
        servicer.adapter_name,
        len(servicer.tools),
        args.host,
        port,
    )

    await stop.wait()
    _ignore_further_stop_signals(loop)
    log.info("received %s: stopping (grace %.1fs)", received.get("signal", "stop"), grace)
    await server.stop(grace)


def _ignore_further_stop_signals(loop: asyncio.AbstractEventLoop) -> None:
    """Make later SIGTERM/SIGINT harmless once a stop is under way.

    A killed host delivers its parent-death SIGTERM once per exiting thread,
    so several arrive within milliseconds. asyncio restores the default
    action (terminate) when its loop closes; a second SIGTERM after that
    would kill the worker before it has killed its descendants. The host's
    SIGKILL after its grace period remains the backstop.
    """
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, signal.SIG_IGN)
        # Drop asyncio's record without calling remove_signal_handler, which
        # would first put the default action back (a window for the kill).
        handlers = getattr(loop, "_signal_handlers", None)
        if isinstance(handlers, dict):
            handlers.pop(sig, None)
        else:
            loop.remove_signal_handler(sig)
            signal.signal(sig, signal.SIG_IGN)


if __name__ == "__main__":
    main()
