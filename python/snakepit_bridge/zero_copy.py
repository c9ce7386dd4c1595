"""Snakepit's zero-copy handle (``snakepit_bridge.zero_copy``): a plain
description of a DLPack/Arrow buffer. Nothing here moves buffers without a
copy; large arrays travel as typed binary results instead (see the README's
adapter section)."""

from __future__ import annotations

from typing import Any, Dict

__all__ = ["ZeroCopyRef"]


class ZeroCopyRef:
    """A handle described by a payload dict (kind, device, dtype, shape, …)."""

    def __init__(self, payload: Dict[str, Any]) -> None:
        self.payload = dict(payload)
        for key in ("kind", "device", "dtype", "shape", "owner", "ref", "copy", "bytes"):
            setattr(self, key, self.payload.get(key))
        self.metadata = self.payload.get("metadata", {})

    @classmethod
    def from_payload(cls, payload: Dict[str, Any]) -> "ZeroCopyRef":
        return cls(payload)

    def to_payload(self) -> Dict[str, Any]:
        return dict(self.payload)

    def __repr__(self) -> str:
        return f"<ZeroCopyRef kind={self.payload.get('kind')} device={self.payload.get('device')} ref={self.payload.get('ref')}>"
