"""Snakepit's logging helpers (``snakepit_bridge.logging_config``).

The worker configures logging itself before the adapter is imported: one
stderr handler whose lines the Go host copies into its own logger
(``Config.Logger``), level from SNAKEPIT_LOG_LEVEL, each line of a call
tagged with its request id. So :func:`configure_logging` changes nothing
in a worker (outside one it sets up stderr logging), and :func:`get_logger`
returns Snakepit's logger names. Records also get ``correlation_id`` (the
call's request id, "-" outside a call) for formats that use it.
"""

from __future__ import annotations

import logging
import os
import sys

__all__ = ["configure_logging", "get_logger"]

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "warn": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}


class _CorrelationId(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if not getattr(record, "correlation_id", ""):
            record.correlation_id = getattr(record, "request_id", "") or "-"
        return True


_filter = _CorrelationId()


def _ensure_filter() -> None:
    for h in logging.getLogger().handlers:
        if _filter not in h.filters:
            h.addFilter(_filter)


def configure_logging(force: bool = False) -> None:
    """Set up stderr logging unless it already is (it is in a worker)."""
    root = logging.getLogger()
    if root.handlers and not force:
        _ensure_filter()
        return
    level = _LEVELS.get(os.environ.get("SNAKEPIT_LOG_LEVEL", "info").lower(), logging.INFO)
    logging.basicConfig(
        level=level,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s [corr=%(correlation_id)s] %(message)s",
        force=force,
    )
    _ensure_filter()


def get_logger(name: str) -> logging.Logger:
    """The logger Snakepit would give ``name`` ("snakepit.<name>")."""
    _ensure_filter()
    if name.startswith("snakepit."):
        return logging.getLogger(name)
    if name.startswith("snakepit_bridge."):
        return logging.getLogger("snakepit.bridge." + name[len("snakepit_bridge."):])
    return logging.getLogger("snakepit." + name)
