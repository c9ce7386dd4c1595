"""Snakepit's ``snakepit_bridge.otel_tracing`` names; they live in
:mod:`snakepit_bridge.telemetry` (``span`` here is its ``otel_span``, a no-op)."""

from __future__ import annotations

from .telemetry import (
    CORRELATION_HEADER,
    correlation_filter,
    get_correlation_id,
    get_tracer,
    new_correlation_id,
    outgoing_metadata,
    reset_correlation_id,
    set_correlation_id,
    setup_tracing,
)
from .telemetry import otel_span as span

__all__ = [
    "CORRELATION_HEADER",
    "correlation_filter",
    "get_correlation_id",
    "get_tracer",
    "new_correlation_id",
    "outgoing_metadata",
    "reset_correlation_id",
    "set_correlation_id",
    "setup_tracing",
    "span",
]
