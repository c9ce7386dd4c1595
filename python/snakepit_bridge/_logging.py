"""The worker's logging: one logger namespace, "snakepit_bridge", and the
stderr format the host's log shows.

Every logger of this package is a child of :data:`LOGGER_NAME`; the worker
machinery logs as "snakepit_bridge.worker" (:data:`log`).
"""

from __future__ import annotations

import logging
import os
import sys

from .context import install_trace_logging

LOGGER_NAME = "snakepit_bridge"

log = logging.getLogger(LOGGER_NAME + ".worker")


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


def setup_logging(worker_id: str) -> None:
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

