"""Continues the host's trace in Python when ``opentelemetry-api`` is
importable: each call's OpenTelemetry context is the one its ``traceparent``
and ``tracestate`` metadata describe, so a span the tool starts is a child
of the host's client span (snakepit.Execute). Without the package this does
nothing (the trace ids are still on ``SessionContext`` and in log records).
"""

from __future__ import annotations

import importlib
from typing import Any, Callable, Mapping, Optional

_attach: Optional[Callable[[Mapping[str, str]], Any]] = None

try:
    # Imported by name: mypy must pass with and without the package.
    _otel_context: Any = importlib.import_module("opentelemetry.context")
    _propagator: Any = importlib.import_module(
        "opentelemetry.trace.propagation.tracecontext"
    ).TraceContextTextMapPropagator()

    def _attach_otel(metadata: Mapping[str, str]) -> Any:
        # An empty Context when the call is untraced: nothing of the
        # previous call on this thread may leak into this one.
        return _otel_context.attach(_propagator.extract(carrier=dict(metadata), context=_otel_context.Context()))

    _attach = _attach_otel
except Exception:  # not installed, or an incompatible version: no tracing
    _attach = None


def available() -> bool:
    """Whether calls continue the host's trace (opentelemetry-api importable)."""
    return _attach is not None


def continue_trace(metadata: Mapping[str, str]) -> None:
    """Makes the call's trace context OpenTelemetry's current context in
    this thread or task (a no-op without opentelemetry-api). The next call
    on the same thread replaces it; a task's context ends with the task."""
    if _attach is not None:
        try:
            _attach(metadata)
        except Exception:  # tracing must never fail a call
            pass
