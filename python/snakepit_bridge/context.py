"""The per-call SessionContext and the client for calls back to the host.

Contract:

* The worker builds one ``SessionContext`` per tool call and hands it to the
  tool (through a parameter annotated ``SessionContext`` or named
  ``ctx``/``context``, or through :func:`current_context`).
* ``ctx.cancelled`` turns True when the caller cancelled the call or its
  deadline passed. Async tools are cancelled for real (``CancelledError``);
  sync tools cannot be interrupted from outside a thread, so they must poll
  ``ctx.cancelled`` (or sleep with ``ctx.wait_cancelled(t)``) to stop early.
* Calls back to the host (``call_host_tool``, ``list_host_tools``,
  ``heartbeat``) are synchronous and go over ONE shared gRPC channel to the
  bridge, created on first use, carrying the run's token on every call. From
  an async tool use ``await ctx.acall_host_tool(...)`` so the event loop is
  not blocked while the host works.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
import os
import threading
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Mapping, Optional, Tuple

import grpc

from ._otel import continue_trace

if TYPE_CHECKING:
    from .pb import snakepit_pb2 as pb
    from .pb import snakepit_pb2_grpc as pb_grpc

__all__ = [
    "SessionContext",
    "SnakepitError",
    "HostToolError",
    "BridgeError",
    "ToolCancelled",
    "HostClient",
    "current_context",
    "TOKEN_METADATA_KEY",
    "TRACEPARENT_KEY",
    "TRACESTATE_KEY",
    "install_trace_logging",
    "MAX_MESSAGE_BYTES",
]

#: The metadata entry that carries the run's token, in both directions.
TOKEN_METADATA_KEY = "x-snakepit-token"

def _max_message_bytes() -> int:
    """The host's Config.MaxMessageBytes, which it always passes in
    SNAKEPIT_MAX_MESSAGE_BYTES, so both ends of every channel agree. The
    fallback (a worker started by hand) is gRPC's 4 MiB raised to the
    host's default, 16 MiB."""
    raw = os.environ.get("SNAKEPIT_MAX_MESSAGE_BYTES", "")
    try:
        n = int(raw)
    except ValueError:
        return 16 << 20
    return n if n > 0 else 16 << 20


#: Message size limit for both the worker server and the host channel.
MAX_MESSAGE_BYTES = _max_message_bytes()

#: The metadata entries of the caller's W3C trace context.
TRACEPARENT_KEY = "traceparent"
TRACESTATE_KEY = "tracestate"

_HEX = frozenset("0123456789abcdef")


def _parse_traceparent(value: str) -> "tuple[str, str]":
    """(trace_id, span_id) of a valid version-00 traceparent, else ("", "")."""
    parts = value.split("-")
    if len(parts) != 4 or parts[0] != "00":
        return "", ""
    _, trace_id, span_id, flags = parts
    if len(trace_id) != 32 or len(span_id) != 16 or len(flags) != 2:
        return "", ""
    if not (set(trace_id) <= _HEX and set(span_id) <= _HEX and set(flags) <= _HEX):
        return "", ""
    if trace_id == "0" * 32 or span_id == "0" * 16:
        return "", ""
    return trace_id, span_id


def install_trace_logging() -> None:
    """Give every log record made during a tool call the call's trace ids.

    Records get ``trace_id``, ``span_id`` and ``request_id`` attributes ("" when
    there are none), so any handler or formatter can show them, e.g.
    ``%(trace_id)s``. The worker calls this at start; it is idempotent.
    """
    old = logging.getLogRecordFactory()
    if getattr(old, "_snakepit_trace", False):
        return

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = old(*args, **kwargs)
        ctx = _current.get(None)
        if ctx is None:
            record.trace_id = record.span_id = record.request_id = ""
        else:
            record.trace_id, record.span_id = _parse_traceparent(ctx.metadata.get(TRACEPARENT_KEY, ""))
            record.request_id = ctx.request_id
        return record

    factory._snakepit_trace = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(factory)


#: Timeout for small control calls to the host (heartbeat, listing tools).
CONTROL_CALL_TIMEOUT_S = 10.0


class SnakepitError(Exception):
    """Base class of the errors this package raises to tool code."""


class HostToolError(SnakepitError):
    """A host tool failed; carries the error the host reported."""

    def __init__(self, type: str, message: str, traceback: str = "", tool: str = "") -> None:
        super().__init__(f"{type}: {message}" if type else message)
        self.type = type
        self.message = message
        self.traceback = traceback
        self.tool = tool


class BridgeError(SnakepitError):
    """The host bridge could not be reached or refused the call."""

    def __init__(self, message: str, code: str = "") -> None:
        super().__init__(f"{message} ({code})" if code else message)
        self.code = code
        self.details = message


class ToolCancelled(SnakepitError):
    """Raised by a call back to the host when the current tool call was cancelled."""


class HostClient:
    """The worker's single connection to the host bridge.

    Thread-safe; the channel is created lazily so a worker whose tools never
    call back does not open a connection at all.
    """

    def __init__(self, address: str, token: str = "", worker_id: str = "") -> None:
        self.address = address
        self.worker_id = worker_id
        self._metadata = ((TOKEN_METADATA_KEY, token),) if token else ()
        self._lock = threading.Lock()
        self._channel: Optional[grpc.Channel] = None
        self._stub: Optional["pb_grpc.HostServiceStub"] = None

    @property
    def metadata(self) -> tuple:
        return self._metadata

    def stub(self) -> "pb_grpc.HostServiceStub":
        if not self.address:
            raise BridgeError("no bridge address configured for this worker (--bridge-address)")
        with self._lock:
            if self._stub is None:
                self._channel = grpc.insecure_channel(
                    self.address,
                    options=[
                        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
                    ],
                )
                # The generated HostService code (and protobuf's runtime) is
                # imported here, on the first call back to the host: a
                # worker whose tools never call back does not pay for it at
                # start (WorkerService is hand-coded in _wire.py).
                from .pb import snakepit_pb2_grpc

                self._stub = snakepit_pb2_grpc.HostServiceStub(self._channel)
            return self._stub

    def close(self) -> None:
        with self._lock:
            if self._channel is not None:
                self._channel.close()
            self._channel = None
            self._stub = None


_current: contextvars.ContextVar["SessionContext"] = contextvars.ContextVar(
    "snakepit_session_context"
)


def _enter(sctx: "SessionContext") -> "contextvars.Token[SessionContext]":
    """Makes sctx the running call's context in this thread or task, and its
    trace OpenTelemetry's current context when opentelemetry-api is
    installed (see _otel). Returns _current's token."""
    token = _current.set(sctx)
    continue_trace(sctx.metadata)
    return token


def current_context() -> "SessionContext":
    """The SessionContext of the tool call running in this task or thread.

    Raises LookupError outside a tool call.
    """
    return _current.get()


class SessionContext:
    """Everything a tool may want to know about the call it is serving.

    Attributes:
        session_id: the caller's session id ("" for a call without a session).
        request_id: the call's request id: the host fills one for every
            call ("" only when a client sent none). It is also on every log
            record made during the call (``record.request_id``, see
            :func:`install_trace_logging`; the worker's stderr lines show
            it) and names the call in the host's report of abandoned calls.
        worker_id: this worker's id (stable across restarts).
        run_id: the run id of the host application.
        metadata: the request's metadata map (str -> str).
        tool_name: the tool being called.
        traceparent, tracestate: the caller's W3C trace context ("" when the
            caller had no span); trace_id and span_id are parsed from
            traceparent. Pass ``ctx.metadata`` to an OpenTelemetry
            propagator's ``extract`` to continue the trace in Python.
        batch_calls: in a batch tool (:mod:`.batch`), the context of each
            call of the batch (its request id and metadata), in the order
            of the tool's lists; () otherwise.
    """

    batch_calls: Tuple["SessionContext", ...] = ()

    # One lock for every context's cancellation state: it is taken only to
    # cancel or to register for cancellation, never on a call's own path,
    # and a lock per context would be built on every call.
    _cancel_lock = threading.Lock()

    def __init__(
        self,
        *,
        session_id: str = "",
        request_id: str = "",
        worker_id: str = "",
        run_id: str = "",
        metadata: Optional[Mapping[str, str]] = None,
        tool_name: str = "",
        host: Optional[HostClient] = None,
    ) -> None:
        self.session_id = session_id
        self.request_id = request_id
        self.worker_id = worker_id
        self.run_id = run_id
        self.metadata: Dict[str, str] = dict(metadata or {})
        self.tool_name = tool_name
        self._host = host
        self._cancelled = False
        # Made on first use: most tools never wait on it, and a
        # threading.Event (a Condition and two locks) costs more to build
        # than the rest of the context together.
        self._cancel_event: Optional[threading.Event] = None
        self._cancel_callbacks: Optional[List[Callable[[], None]]] = None

    @classmethod
    def _for_call(
        cls,
        session_id: str,
        request_id: str,
        worker_id: str,
        run_id: str,
        metadata: Mapping[str, str],
        tool_name: str,
        host: Optional[HostClient],
    ) -> "SessionContext":
        """The worker's per-call constructor (positional, no copies when empty)."""
        self = cls.__new__(cls)
        self.session_id = session_id
        self.request_id = request_id
        self.worker_id = worker_id
        self.run_id = run_id
        self.metadata = dict(metadata) if metadata else {}
        self.tool_name = tool_name
        self._host = host
        self._cancelled = False
        self._cancel_event = None
        self._cancel_callbacks = None
        return self

    def __repr__(self) -> str:
        return (
            f"SessionContext(tool={self.tool_name!r}, session_id={self.session_id!r}, "
            f"request_id={self.request_id!r}, worker_id={self.worker_id!r}, "
            f"cancelled={self.cancelled})"
        )

    # -- tracing ----------------------------------------------------------

    @property
    def traceparent(self) -> str:
        return self.metadata.get(TRACEPARENT_KEY, "")

    @property
    def tracestate(self) -> str:
        return self.metadata.get(TRACESTATE_KEY, "")

    @property
    def trace_id(self) -> str:
        """The 32-hex-digit trace id of the caller's span, "" without one."""
        return _parse_traceparent(self.traceparent)[0]

    @property
    def span_id(self) -> str:
        """The 16-hex-digit id of the caller's span, "" without one."""
        return _parse_traceparent(self.traceparent)[1]

    # -- cancellation -----------------------------------------------------

    @property
    def cancelled(self) -> bool:
        """True once the caller cancelled this call or its deadline passed."""
        return self._cancelled

    @property
    def cancel_event(self) -> threading.Event:
        """The underlying event, for code that wants to wait on it directly."""
        ev = self._cancel_event
        if ev is None:
            with self._cancel_lock:
                ev = self._cancel_event
                if ev is None:
                    ev = threading.Event()
                    if self._cancelled:
                        ev.set()
                    self._cancel_event = ev
        return ev

    def wait_cancelled(self, timeout: Optional[float] = None) -> bool:
        """Sleep up to ``timeout`` seconds, waking early on cancellation.

        Returns True when the call was cancelled. Use this instead of
        ``time.sleep`` in sync tools so cancellation ends them promptly.
        """
        if self._cancelled:
            return True
        return self.cancel_event.wait(timeout)

    def _mark_cancelled(self) -> None:
        with self._cancel_lock:
            if self._cancelled:
                return
            self._cancelled = True
            ev = self._cancel_event
            callbacks, self._cancel_callbacks = self._cancel_callbacks, None
        if ev is not None:
            ev.set()
        for cb in callbacks or ():
            try:
                cb()
            except Exception:  # a failing callback must not hide the others
                pass

    def _on_cancel(self, cb: Callable[[], None]) -> Callable[[], None]:
        """Run ``cb`` once on cancellation (at once if already cancelled).

        Returns a function that unregisters it.
        """
        with self._cancel_lock:
            if not self._cancelled:
                if self._cancel_callbacks is None:
                    self._cancel_callbacks = []
                self._cancel_callbacks.append(cb)

                def remove() -> None:
                    with self._cancel_lock:
                        try:
                            if self._cancel_callbacks is not None:
                                self._cancel_callbacks.remove(cb)
                        except ValueError:
                            pass

                return remove
        cb()
        return lambda: None

    # -- calls back to the host -------------------------------------------

    def _client(self) -> HostClient:
        if self._host is None:
            raise BridgeError("this SessionContext is not connected to a host bridge")
        return self._host

    def call_host_tool(self, name: str, /, **kwargs: Any) -> Any:
        """Call a tool registered on the host and return its result.

        Keyword arguments are sent as a JSON object. Returns the decoded JSON
        value, or ``bytes`` when the host tool returned binary data.

        Raises:
            HostToolError: the host tool failed (``.type``, ``.message``).
            BridgeError: the bridge could not be reached or refused the call.
            ToolCancelled: this tool call was cancelled while waiting.
        """
        return self.invoke_host_tool(name, kwargs)

    def invoke_host_tool(
        self, name: str, args: Optional[Mapping[str, Any]] = None, *, timeout: Optional[float] = None
    ) -> Any:
        """Like :meth:`call_host_tool`, with the arguments as a mapping and a timeout."""
        import json  # here, not at import: it costs every worker's start

        client = self._client()
        try:
            args_json = json.dumps(dict(args or {}), allow_nan=False).encode()
        except (TypeError, ValueError) as e:
            raise TypeError(f"arguments for host tool {name!r} are not JSON-serialisable: {e}") from None
        req = _pb().ExecuteHostToolRequest(
            tool_name=name,
            args_json=args_json,
            session_id=self.session_id,
            worker_id=self.worker_id,
        )
        fut = client.stub().ExecuteHostTool.future(req, metadata=client.metadata, timeout=timeout)
        # The host call is abandoned as soon as this tool call is cancelled,
        # so a cancelled tool does not sit on a slow host tool.
        unregister = self._on_cancel(fut.cancel)
        try:
            resp = fut.result()
        except grpc.FutureCancelledError:
            raise ToolCancelled(f"call to host tool {name!r} abandoned: the tool call was cancelled") from None
        except grpc.RpcError as e:
            if self.cancelled:
                raise ToolCancelled(
                    f"call to host tool {name!r} abandoned: the tool call was cancelled"
                ) from None
            raise _bridge_error(e, f"host tool {name!r}") from None
        finally:
            unregister()
        if resp.HasField("error") and (resp.error.type or resp.error.message):
            raise HostToolError(resp.error.type, resp.error.message, resp.error.traceback, tool=name)
        return decode_payload(resp.result) if resp.HasField("result") else None

    async def acall_host_tool(self, name: str, /, **kwargs: Any) -> Any:
        """Async form of :meth:`call_host_tool`; the call runs in a thread."""
        loop = asyncio.get_running_loop()
        ctx = contextvars.copy_context()
        return await loop.run_in_executor(
            None, functools.partial(ctx.run, self.invoke_host_tool, name, kwargs)
        )

    def list_host_tools(self) -> List[Dict[str, Any]]:
        """The tools the host offers, as dicts (name, description, parameters, supports_streaming)."""
        client = self._client()
        try:
            resp = client.stub().ListHostTools(
                _pb().ListHostToolsRequest(), metadata=client.metadata, timeout=CONTROL_CALL_TIMEOUT_S
            )
        except grpc.RpcError as e:
            raise _bridge_error(e, "ListHostTools") from None
        return [spec_to_dict(t) for t in resp.tools]

    def heartbeat(self) -> bool:
        """Tell the host this worker is alive; returns whether the session is still valid."""
        client = self._client()
        try:
            resp = client.stub().Heartbeat(
                _pb().HeartbeatRequest(worker_id=self.worker_id, session_id=self.session_id),
                metadata=client.metadata,
                timeout=CONTROL_CALL_TIMEOUT_S,
            )
        except grpc.RpcError as e:
            raise _bridge_error(e, "Heartbeat") from None
        return bool(resp.session_valid)

    def session_valid(self) -> bool:
        """Whether the host still knows this call's session (a heartbeat)."""
        return self.heartbeat()


def _pb() -> Any:
    """The generated messages, for HostService calls (imported on first use)."""
    from .pb import snakepit_pb2

    return snakepit_pb2


def _bridge_error(e: grpc.RpcError, what: str) -> BridgeError:
    code = e.code().name if hasattr(e, "code") and e.code() is not None else ""
    details = e.details() if hasattr(e, "details") else str(e)
    return BridgeError(f"{what}: {details}", code)


def decode_payload(payload: "pb.Payload") -> Any:
    """A Payload as a Python value: JSON decoded, binary as bytes, unset as None."""
    import json

    which = payload.WhichOneof("value")
    if which == "binary":
        return bytes(payload.binary)
    if which == "json":
        return json.loads(payload.json) if payload.json else None
    return None


def spec_to_dict(spec: Any) -> Dict[str, Any]:
    """A JSON-friendly view of a tool spec: a pb.ToolSpec or an adapter ToolSpec
    (both have the same field names), defaults decoded."""
    import json

    params = []
    for p in spec.parameters:
        d: Dict[str, Any] = {"name": p.name, "type": p.type, "required": p.required}
        if p.default_json:
            d["default"] = json.loads(p.default_json)
        if p.description:
            d["description"] = p.description
        params.append(d)
    return {
        "name": spec.name,
        "description": spec.description,
        "parameters": params,
        "supports_streaming": spec.supports_streaming,
    }
