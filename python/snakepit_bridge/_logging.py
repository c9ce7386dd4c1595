"""The worker's logging: one logger namespace, "snakepit_bridge", and the
stderr format the host parses into its log records: one line
"LEVEL [worker=W pid=P ...] logger: message" per record, each further line
of the record (a traceback) prefixed with CONTINUATION.

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


# Marks the continuation lines of one record (a multi-line message, a
# traceback) on stderr, so the host keeps the record whole: the host reads
# "LEVEL [k=v ...] logger: message" as the start of a record and "| ..." as
# more of it (see grpcworker's stderr log).
CONTINUATION = "| "


class _StderrFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        if "\n" not in text:
            return text
        first, _, rest = text.partition("\n")
        return first + "".join("\n" + CONTINUATION + line for line in rest.split("\n"))


def setup_logging(worker_id: str) -> None:
    level_name = os.environ.get("SNAKEPIT_LOG_LEVEL", "INFO").upper()
    level = getattr(logging, level_name, logging.INFO)
    install_trace_logging()
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_trace_suffix)
    wid = worker_id.replace("%", "%%")
    handler.setFormatter(
        _StderrFormatter(f"%(levelname)s [worker={wid} pid=%(process)d%(snakepit_trace)s] %(name)s: %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)

