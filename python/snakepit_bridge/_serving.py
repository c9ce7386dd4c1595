"""Serving: which server flavour a worker runs, and the grpcio sync server's
setup and run until a stop signal (the grpc.aio flavour's are in _aio.py).

Auth is the same interceptor check for both flavours (_auth.py).
"""

from __future__ import annotations

import asyncio
import functools
import os
import time
from typing import TYPE_CHECKING, Any, Callable, Dict, Optional, Tuple

import grpc

from ._servicer import SERVICE as _SERVICE, registered_handler as _registered_handler
from ._auth import SyncTokenInterceptor
from ._logging import log
from ._process import _Process, _StartupFailed, _StopSignals
from ._sync import WorkerServicer
from ._threads import PREFETCH_PER_SLOT, ServerThreads, ToolRouting
from .adapter import ToolInfo, ToolKind
from .context import MAX_MESSAGE_BYTES

if TYPE_CHECKING:
    import argparse

__all__ = ["server_flavour", "create_server", "server_threads"]


_ASYNC_KINDS = (ToolKind.ASYNC, ToolKind.ASYNC_GEN, ToolKind.ASYNC_ITER)


_FLAVOURS = ("sync", "aio")

# The RPCs that run a tool and may wait for a thread (ServerThreads' limit).
_TOOL_METHODS = frozenset(f"/{_SERVICE}/{m}" for m in ("ExecuteTool", "ExecuteStreamingTool"))


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


def server_threads(slots: int) -> ServerThreads:
    """The sync server's thread pool for a worker of ``slots`` sync tool
    slots: at most as many threads for tool RPCs as slots, so a tool call
    the host sent beyond them waits for the next to finish; fewer while
    fewer serve more calls per second, unless SNAKEPIT_ADAPTIVE_THREADS=0
    (_threads.py, ServerThreads)."""
    adapt = os.environ.get("SNAKEPIT_ADAPTIVE_THREADS", "").strip() != "0"
    return ServerThreads(keep=slots + 2, limit=slots, adapt=adapt)


def create_server(
    servicer: WorkerServicer,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    token: str = "",
    threads: Optional[ServerThreads] = None,
) -> Tuple[grpc.Server, int]:
    """A grpcio sync server for ``servicer`` bound to ``host:port`` (not started).

    With a token, every RPC must carry it (SyncTokenInterceptor). Returns
    (server, bound port).
    """
    handler: Any = _registered_handler(servicer)
    if token:
        handler = _Intercepted(SyncTokenInterceptor(token), handler)
    if threads is None:
        threads = server_threads(servicer.slots.size)
    server = grpc.server(
        threads,
        handlers=[ToolRouting(handler, threads, _TOOL_METHODS)],
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


class _Intercepted:
    """A generic handler that runs ``interceptor`` in front of ``handler``.

    What ``grpc.server(interceptors=[interceptor])`` does, minus the cost
    of grpc's general pipeline (a closure and four Python frames per call,
    about 0.3 µs on the server's polling thread; here a ``functools.partial``,
    which adds no frame). The interceptor is an ordinary
    ``grpc.ServerInterceptor`` and works either way.
    """

    __slots__ = ("service",)

    def __init__(self, interceptor: grpc.ServerInterceptor, handler: Any) -> None:
        self.service = functools.partial(interceptor.intercept_service, handler.service)


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
    stop = _StopSignals(asyncio.get_running_loop())
    try:
        server, port = create_server(servicer, host=args.host, port=args.port, token=token)
        server.start()
    except Exception as e:
        raise _StartupFailed(f"cannot serve on {args.host}:{args.port}: {e}") from e
    # Its tool calls beyond the slots wait for a thread, in order
    # (ServerThreads' limit): a host that reads the handshake's prefetch
    # field (it says so in the environment) may keep that many queued here.
    if os.environ.get("SNAKEPIT_HANDSHAKE_PREFETCH") == "1":
        proc.prefetch = PREFETCH_PER_SLOT * servicer.slots.size
    servicer._announce_ready(proc, args.host, port, "grpcio sync server")

    await stop.wait()
    log.info("received %s: stopping (grace %.1fs)", stop.received, grace)
    # New calls are refused at once; calls still running after the grace
    # are cancelled (contexts marked, async tools' tasks cancelled). The
    # loop keeps running meanwhile, so async tools can finish.
    stopped = server.stop(grace)
    deadline = time.monotonic() + grace + 2.0
    while not stopped.is_set() and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    servicer.close()
