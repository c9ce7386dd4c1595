"""Snakepit's Python telemetry API (``from snakepit_bridge import telemetry``).

Snakepit streams events to Elixir, which re-emits them as ``:telemetry``
events. Here the default backend writes each event as ONE log record of the
logger ``snakepit_bridge.telemetry`` at INFO level whose message is
``telemetry `` followed by a JSON object::

    {"event": "model.inference", "measurements": {...}, "metadata": {...},
     "correlation_id": "<request id>"}

The worker's logging goes to the Go host's ``Config.Logger`` (one slog
record per Python record, attributes stream=stderr and logger), so the host
observes an event as an INFO record with logger=snakepit_bridge.telemetry
whose message is ``telemetry {...}`` (and the call's request_id attribute). A SNAKEPIT_LOG_LEVEL above
INFO silences them. :func:`set_backend` replaces the backend (any object
with ``emit(event, measurements, metadata, correlation_id)``); None turns
events off.

The correlation id defaults to the current call's request id. The
OpenTelemetry helpers ``otel_span`` and ``setup_tracing`` are no-ops: the
host propagates W3C trace context itself (see the native
``SessionContext.traceparent``), and with ``opentelemetry-api`` installed
each call runs with the host's span as OpenTelemetry's current context, so
spans from ``get_tracer()`` are its children.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import time
import uuid
from typing import Any, Dict, Iterable, Iterator, List, Optional, Tuple

__all__ = [
    "emit",
    "span",
    "set_backend",
    "get_backend",
    "is_enabled",
    "LogBackend",
    "setup_tracing",
    "get_tracer",
    "correlation_filter",
    "new_correlation_id",
    "set_correlation_id",
    "reset_correlation_id",
    "get_correlation_id",
    "outgoing_metadata",
    "CORRELATION_HEADER",
    "otel_span",
]

CORRELATION_HEADER = "x-snakepit-correlation-id"

logger = logging.getLogger("snakepit_bridge.telemetry")


class LogBackend:
    """The default backend: one INFO log record per event (see module doc)."""

    def emit(
        self,
        event: str,
        measurements: Optional[Dict[str, Any]],
        metadata: Optional[Dict[str, Any]] = None,
        correlation_id: Optional[str] = None,
    ) -> None:
        if not logger.isEnabledFor(logging.INFO):
            return
        record = {
            "event": event,
            "measurements": dict(measurements or {}),
            "metadata": dict(metadata or {}),
            "correlation_id": correlation_id or get_correlation_id() or "",
        }
        logger.info("telemetry %s", json.dumps(record, default=str, separators=(",", ":")))


_backend: Optional[Any] = LogBackend()


def set_backend(backend: Optional[Any]) -> None:
    global _backend
    _backend = backend


def get_backend() -> Optional[Any]:
    return _backend


def is_enabled() -> bool:
    return _backend is not None


def emit(
    event: str,
    measurements: Optional[Dict[str, Any]] = None,
    metadata: Optional[Dict[str, Any]] = None,
    correlation_id: Optional[str] = None,
) -> None:
    """Emit one event; never raises (telemetry must not fail a call)."""
    backend = _backend
    if backend is None:
        return
    try:
        backend.emit(event, measurements or {}, metadata, correlation_id)
    except Exception:
        logger.debug("telemetry backend failed", exc_info=True)


@contextlib.contextmanager
def span(operation: str, metadata: Optional[Dict[str, Any]] = None, correlation_id: Optional[str] = None) -> Iterator[None]:
    """Emit ``<operation>.start``, then ``.stop`` with ``duration`` (ns), or
    ``.exception`` with the duration and the error on failure."""
    start = time.time_ns()
    t0 = time.perf_counter_ns()
    emit(f"{operation}.start", {"system_time": start}, metadata, correlation_id)
    try:
        yield
    except BaseException as e:
        meta = dict(metadata or {})
        meta.update({"error_type": type(e).__name__, "error_message": str(e)})
        emit(f"{operation}.exception", {"duration": time.perf_counter_ns() - t0}, meta, correlation_id)
        raise
    emit(f"{operation}.stop", {"duration": time.perf_counter_ns() - t0}, metadata, correlation_id)


# -- correlation ids: the call's request id unless set explicitly -----------

_correlation: contextvars.ContextVar[Optional[str]] = contextvars.ContextVar("snakepit_correlation_id", default=None)


def new_correlation_id() -> str:
    return uuid.uuid4().hex


def set_correlation_id(value: str) -> "contextvars.Token[Optional[str]]":
    return _correlation.set(value)


def reset_correlation_id(token: "contextvars.Token[Optional[str]]") -> None:
    _correlation.reset(token)


def get_correlation_id(default: Optional[str] = None) -> Optional[str]:
    value = _correlation.get()
    if value:
        return value
    from .context import _current

    ctx = _current.get(None)
    if ctx is not None and ctx.request_id:
        return str(ctx.request_id)
    return default


def outgoing_metadata(initial: Optional[Iterable[Tuple[str, str]]] = None) -> List[Tuple[str, str]]:
    out = list(initial or [])
    cid = get_correlation_id()
    if cid and not any(k == CORRELATION_HEADER for k, _ in out):
        out.append((CORRELATION_HEADER, cid))
    return out


class _CorrelationFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if not getattr(record, "correlation_id", ""):
            record.correlation_id = get_correlation_id() or "-"
        return True


def correlation_filter() -> logging.Filter:
    """A logging filter that sets ``record.correlation_id``."""
    return _CorrelationFilter()


# -- OpenTelemetry: the host does the tracing ---------------------------------


def setup_tracing() -> None:
    """A no-op: the host sends the caller's trace context with every call."""


def get_tracer() -> Any:
    """OpenTelemetry's tracer for "snakepit" when it is installed, else None."""
    try:
        from opentelemetry import trace  # type: ignore[import]
    except Exception:
        return None
    return trace.get_tracer("snakepit")


@contextlib.contextmanager
def otel_span(name: str, *args: Any, **kwargs: Any) -> Iterator[None]:
    """A no-op span (see the module doc)."""
    yield
