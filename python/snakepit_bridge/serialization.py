"""Snakepit's graceful serialization (``snakepit_bridge.serialization``).

A Snakepit-style adapter's results are encoded gracefully by the worker
(codec.Graceful): values JSON cannot carry are converted where they can be
and replaced by a marker ``{"__ffi_unserializable__": true, "__type__":
"module.Class"}`` otherwise (SNAKEPIT_UNSERIALIZABLE_DETAIL and
SNAKEPIT_UNSERIALIZABLE_REPR_MAXLEN add a repr, as in Snakepit). The same
encoding is available here for adapters that serialise values themselves.

Snakepit's ``TypeSerializer.encode_any``/``decode_any`` work on Snakepit's
protobuf ``Any`` wire format, which this library does not use: arguments
arrive decoded and results are encoded by the worker; they raise
NotImplementedError saying so.
"""

from __future__ import annotations

import json
from typing import Any, Dict

from .codec import REPR_KEY, TYPE_KEY, UNSERIALIZABLE_KEY, graceful_json, unserializable_marker

__all__ = [
    "BINARY_THRESHOLD",
    "UNSERIALIZABLE_KEY",
    "TYPE_KEY",
    "REPR_KEY",
    "GracefulJSONEncoder",
    "graceful_dumps",
    "is_unserializable_marker",
    "unserializable_marker",
    "TypeSerializer",
]

#: Snakepit's size above which it sent arrays as binary; informational here.
BINARY_THRESHOLD = 10_240


class GracefulJSONEncoder(json.JSONEncoder):
    """A JSONEncoder that converts or marks what JSON cannot carry."""

    def default(self, o: Any) -> Any:
        return graceful_json(o)


def graceful_dumps(value: Any) -> str:
    """``json.dumps`` with the graceful conversions."""
    return json.dumps(value, cls=GracefulJSONEncoder)


def is_unserializable_marker(value: Any) -> bool:
    return isinstance(value, dict) and value.get(UNSERIALIZABLE_KEY) is True


class TypeSerializer:
    """Snakepit's protobuf-Any serializer: not available (see module doc)."""

    @staticmethod
    def encode_any(value: Any, var_type: str = "") -> Any:
        raise NotImplementedError(
            "TypeSerializer.encode_any: snakepit has no protobuf Any wire format; return the value from the tool"
        )

    @staticmethod
    def decode_any(any_msg: Any, binary_data: Any = None) -> Any:
        raise NotImplementedError(
            "TypeSerializer.decode_any: snakepit has no protobuf Any wire format; arguments arrive decoded"
        )

    @staticmethod
    def validate_constraints(value: Any, var_type: str, constraints: Dict[str, Any]) -> None:
        """Snakepit validated session-variable constraints; there are no session variables here."""
        return None
