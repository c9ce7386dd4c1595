"""Running adapters written for Snakepit (the Elixir project) unchanged.

A *Snakepit-style* adapter is recognised by :func:`snakepit_style` (a
subclass of :class:`snakepit_bridge.base_adapter.BaseAdapter`, a class that
defines one of Snakepit's per-request hooks, or tools carrying Snakepit's
``@tool`` marker). It runs on Snakepit's execution model instead of ours:

* per call, a NEW instance: ``set_session_context(ctx)``, ``initialize()``,
  ``execute_tool(tool_name, arguments, ctx)`` (or, for a class without
  ``execute_tool``, the tool method itself), and ``cleanup()`` — also when
  the call failed, and for a stream when it ends, fails or is cancelled.
  Each hook, and execute_tool, may be sync or async; a coroutine is run to
  completion on an event loop private to the calling thread.
* ``ctx`` is a :class:`snakepit_bridge.session_context.SessionContext`
  (Snakepit's API) over the native per-call context.
* the caller chooses: Execute runs the tool as a unary call, ExecuteStream
  iterates what execute_tool returned (a generator, an iterator, an async
  iterator; items may be StreamChunk-like objects with ``.data`` and
  ``.is_final``; a single value becomes one chunk). A unary call whose
  execute_tool returned a generator fails with StreamingToolCalledUnary.
* results are encoded gracefully (codec.Graceful): no call fails because a
  value is not JSON.
* concurrency: a class that does not set ``__thread_safe__ = True`` runs one
  call at a time per worker process (Snakepit's process mode), whatever the
  worker's capacity; a thread-safe one (``ThreadSafeAdapter``) runs up to
  the capacity at once, each call on its own instance.

Tools the host is told about: every method carrying either ``@tool`` marker
(ours or Snakepit's). A class with its own ``execute_tool`` can dispatch
names it never declared (Snakepit's showcase does); it also gets the
catch-all entry :data:`~snakepit_bridge.adapter.ANY_TOOL`, so the host
forwards any name and execute_tool decides.

The per-call cost over a native tool is the instance construction plus the
hooks plus the graceful encoding (docs/MIGRATING.md has the measured figures).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import sys
import threading
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

from .adapter import ANY_TOOL, TOOL_ATTR, ToolInfo, ToolKind, ToolSpec, _derive
from .argcheck import InvalidArgs
from .codec import Graceful
from .context import SessionContext as NativeContext

__all__ = ["snakepit_style", "compat_tools", "StreamingToolCalledUnary", "SNAKEPIT_TOOL_ATTR", "CONTEXT_ARG"]

log = logging.getLogger("snakepit_bridge.compat")

#: The attribute Snakepit's ``@tool`` puts on a function (a ToolMetadata).
SNAKEPIT_TOOL_ATTR = "_tool_metadata"

#: The hooks of Snakepit's per-request lifecycle.
HOOKS = ("execute_tool", "initialize", "cleanup", "set_session_context")

#: The keyword under which the servicer hands the native context to the
#: compat runners (never an argument a caller can send: it is reserved).
CONTEXT_ARG = "_snakepit_native_ctx"


class StreamingToolCalledUnary(Exception):
    """execute_tool returned a generator to a unary (Execute) call."""


def _compat_base() -> Optional[type]:
    """Snakepit's BaseAdapter, if its module is loaded: a class can only
    subclass it once it is, and importing it for a native adapter would
    load dataclasses and copy at every worker's start (~3 ms)."""
    module = sys.modules.get(f"{__package__}.base_adapter")
    return getattr(module, "BaseAdapter", None)


def snakepit_style(cls: type) -> str:
    """Why ``cls`` is a Snakepit-style adapter, or "" when it is a native one."""
    base = _compat_base()
    if base is not None and issubclass(cls, base):
        return "it subclasses snakepit_bridge.base_adapter.BaseAdapter"
    for hook in HOOKS:
        if callable(getattr(cls, hook, None)):
            return f"it defines {hook}()"
    for klass in cls.__mro__:
        for value in vars(klass).values():
            target = value.__func__ if isinstance(value, (staticmethod, classmethod)) else value
            if getattr(target, SNAKEPIT_TOOL_ATTR, None) is not None and getattr(target, TOOL_ATTR, None) is None:
                return "its tools carry Snakepit's @tool marker"
    return ""


def _marked(cls: type) -> List[Tuple[str, Any]]:
    """(attribute name, function) of every method carrying either marker."""
    out: List[Tuple[str, Any]] = []
    seen: set = set()
    for klass in cls.__mro__:
        for attr, value in vars(klass).items():
            if attr in seen:
                continue
            seen.add(attr)
            target = value.__func__ if isinstance(value, (staticmethod, classmethod)) else value
            if getattr(target, TOOL_ATTR, None) is not None or getattr(target, SNAKEPIT_TOOL_ATTR, None) is not None:
                out.append((attr, target))
    return out


def _spec_of(attr: str, func: Any, bound: Any) -> ToolSpec:
    spec, _, _ = _derive(func, bound)
    meta = getattr(func, SNAKEPIT_TOOL_ATTR, None)
    if meta is not None and getattr(func, TOOL_ATTR, None) is None:
        description = getattr(meta, "description", "") or spec.description
        if not isinstance(description, str):
            description = spec.description
        streaming = bool(getattr(meta, "supports_streaming", False)) or spec.supports_streaming
        spec = ToolSpec(
            name=attr,
            description=description,
            parameters=spec.parameters,
            supports_streaming=streaming,
            accepts_any_kwargs=spec.accepts_any_kwargs,
            returns=spec.returns,
            doc=spec.doc,
        )
    return spec


def compat_tools(cls: type, probe: object) -> Dict[str, ToolInfo]:
    """The tools of Snakepit-style adapter ``cls``; ``probe`` is an instance
    made at load time (so a constructor that fails, fails the start)."""
    runner = _Runner(cls)
    tools: Dict[str, ToolInfo] = {}
    ctx_param = inspect.Parameter(CONTEXT_ARG, inspect.Parameter.KEYWORD_ONLY)
    open_sig = inspect.Signature([ctx_param, inspect.Parameter("arguments", inspect.Parameter.VAR_KEYWORD)])
    for attr, func in _marked(cls):
        bound = getattr(probe, attr)
        spec = _spec_of(attr, func, bound)
        if runner.dispatcher:
            sig = open_sig  # execute_tool decides what it accepts
        else:
            params = [p for p in inspect.signature(bound).parameters.values()]
            params.append(ctx_param)
            params.sort(key=lambda p: p.kind)
            sig = inspect.Signature(params)
        tools[spec.name] = ToolInfo(
            spec=spec,
            func=runner.unary,
            kind=ToolKind.SYNC,
            context_param=CONTEXT_ARG,
            signature=sig,
            stream_func=runner.stream,
        )
    if runner.dispatcher:
        tools[ANY_TOOL] = ToolInfo(
            spec=ToolSpec(
                name=ANY_TOOL,
                description=f"any tool name: {cls.__qualname__}.execute_tool dispatches it",
                parameters=(),
                supports_streaming=False,
                accepts_any_kwargs=True,
            ),
            func=runner.unary,
            kind=ToolKind.SYNC,
            context_param=CONTEXT_ARG,
            signature=open_sig,
            stream_func=runner.stream,
        )
    return tools


_loops = threading.local()


def _thread_loop() -> asyncio.AbstractEventLoop:
    loop: Optional[asyncio.AbstractEventLoop] = getattr(_loops, "loop", None)
    if loop is None or loop.is_closed():
        loop = asyncio.new_event_loop()
        _loops.loop = loop
    return loop


def _resolve(value: Any) -> Any:
    """Run a coroutine (or other awaitable) to completion on this thread."""
    if value is None or not inspect.isawaitable(value):
        return value

    async def wait() -> Any:
        return await value

    return _thread_loop().run_until_complete(wait())


class _Runner:
    """Snakepit's per-request lifecycle for one adapter class."""

    def __init__(self, cls: type) -> None:
        self.cls = cls
        execute = getattr(cls, "execute_tool", None)
        self.dispatcher = callable(execute)
        self.thread_safe = getattr(cls, "__thread_safe__", False) is True
        # Not thread-safe: one call at a time per process, streams included.
        self.lock: Optional[threading.Lock] = None if self.thread_safe else threading.Lock()

    # -- pieces ---------------------------------------------------------

    def _acquire(self, native: NativeContext) -> None:
        lock = self.lock
        if lock is None:
            return
        while not lock.acquire(timeout=0.05):
            if native.cancelled:
                from .context import ToolCancelled

                raise ToolCancelled("the call was cancelled while waiting for the adapter (one call at a time)")

    def _release(self) -> None:
        if self.lock is not None:
            self.lock.release()

    def _begin(self, native: NativeContext) -> Tuple[Any, Any]:
        from .session_context import SessionContext

        sctx = SessionContext._wrap(native)
        adapter = self.cls()
        setter = getattr(adapter, "set_session_context", None)
        if callable(setter):
            setter(sctx)
        else:
            try:
                adapter.session_context = sctx
            except AttributeError:
                pass
        init = getattr(adapter, "initialize", None)
        if callable(init):
            _resolve(init())
        return adapter, sctx

    def _execute(self, adapter: Any, sctx: Any, name: str, arguments: Dict[str, Any]) -> Any:
        if self.dispatcher:
            return _resolve(adapter.execute_tool(tool_name=name, arguments=arguments, context=sctx))
        method = getattr(adapter, name, None)
        if not callable(method):
            raise InvalidArgs("", f"adapter {self.cls.__qualname__} has no tool {name!r}")
        return _resolve(method(**arguments))

    @staticmethod
    def _cleanup(adapter: Any) -> None:
        cleanup = getattr(adapter, "cleanup", None)
        if not callable(cleanup):
            return
        try:
            _resolve(cleanup())
        except Exception:
            log.warning("adapter cleanup() failed", exc_info=True)

    # -- the two call forms ---------------------------------------------

    def unary(self, **arguments: Any) -> Any:
        native: NativeContext = arguments.pop(CONTEXT_ARG)
        self._acquire(native)
        try:
            adapter = None
            try:
                adapter, sctx = self._begin(native)
                value = self._execute(adapter, sctx, native.tool_name, arguments)
                if inspect.isgenerator(value) or inspect.isasyncgen(value):
                    _close_quietly(value)
                    raise StreamingToolCalledUnary(
                        f"tool {native.tool_name!r} returned a generator to a unary call; call it with ExecuteStream"
                    )
                return Graceful(value)
            finally:
                if adapter is not None:
                    self._cleanup(adapter)
        finally:
            self._release()

    def stream(self, **arguments: Any) -> "_Stream":
        native: NativeContext = arguments.pop(CONTEXT_ARG)
        self._acquire(native)
        adapter = None
        try:
            adapter, sctx = self._begin(native)
            value = self._execute(adapter, sctx, native.tool_name, arguments)
        except BaseException:
            if adapter is not None:
                self._cleanup(adapter)
            self._release()
            raise
        return _Stream(self, adapter, value)


def _close_quietly(it: Any) -> None:
    try:
        if inspect.isasyncgen(it):
            _resolve(it.aclose())
        else:
            close = getattr(it, "close", None)
            if callable(close):
                close()
    except Exception:
        log.debug("closing a stream failed", exc_info=True)


class _Stream:
    """Iterates what execute_tool returned; ``close()`` (always called by
    the servicer, also when the caller went away) closes the tool's
    iterator, runs ``cleanup()`` and frees the adapter for the next call."""

    def __init__(self, runner: _Runner, adapter: Any, value: Any) -> None:
        self._runner = runner
        self._adapter = adapter
        self._value = value
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._it: Any = None
        self._anext: Optional[Callable[[], Any]] = None
        if hasattr(value, "__aiter__"):
            ait = value.__aiter__()
            self._anext = ait.__anext__
            self._loop = asyncio.new_event_loop()
        elif isinstance(value, (str, bytes, bytearray, memoryview, dict)) or not hasattr(value, "__iter__"):
            self._it = iter((value,))  # one value: one chunk
        else:
            self._it = iter(value)
        self._done = False

    def __iter__(self) -> Iterator[Any]:
        return self

    def __next__(self) -> Any:
        # The end of the stream closes it here: a servicer need not call
        # close() on an iterator that ran out (the aio one does not).
        while True:
            if self._done:
                raise StopIteration
            try:
                if self._anext is not None:
                    assert self._loop is not None
                    try:
                        item = self._loop.run_until_complete(_step(self._anext))
                    except StopAsyncIteration:
                        raise StopIteration from None
                else:
                    item = next(self._it)
            except StopIteration:
                self.close()
                raise
            payload, is_final = _unpack(item)
            if payload is None and is_final:
                continue  # Snakepit's end marker; our final chunk says it
            return Graceful(payload)

    def close(self) -> None:
        if self._done:
            return
        self._done = True
        try:
            if self._anext is not None and self._loop is not None:
                aclose = getattr(self._value, "aclose", None)
                if callable(aclose):
                    try:
                        self._loop.run_until_complete(aclose())
                    except Exception:
                        log.debug("closing an async stream failed", exc_info=True)
                self._loop.close()
            else:
                _close_quietly(self._value)
            self._runner._cleanup(self._adapter)
        finally:
            self._runner._release()


async def _step(anext: Callable[[], Any]) -> Any:
    return await anext()


def _unpack(item: Any) -> Tuple[Any, bool]:
    """A stream item as Snakepit reads it: an object with ``.data`` and
    ``.is_final`` (a StreamChunk) is a chunk wrapper, anything else is the
    payload (a numpy array has ``.data`` too, but no ``.is_final``)."""
    if hasattr(item, "data") and hasattr(item, "is_final") and not isinstance(item, (dict, bytes, str)):
        return getattr(item, "data"), bool(getattr(item, "is_final", False))
    return item, False
