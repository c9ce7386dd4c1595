"""A frozen record: what ``@dataclasses.dataclass(frozen=True)`` gives the
few value classes on every worker's start path (Batch, ToolParam, ToolSpec,
ToolInfo and @tool's options), written once by hand.

Why: the dataclass decorator generates and compiles the source of five
methods per class when the module is imported, about a millisecond a
class, plus importing dataclasses itself: together ~5 % of the
``import grpc`` floor a worker's start is measured against (issue 21, "a
lean start"). These classes keep the dataclass behaviour their users see:
keyword or positional construction (each class writes its own typed
``__init__``), ``repr`` and ``==``/``hash`` over ``_fields``, and
assignment refused with :class:`FrozenInstanceError` (an AttributeError,
like dataclasses'). They are not dataclasses to ``dataclasses.fields``.
"""

from __future__ import annotations

from typing import Any, ClassVar, Tuple

__all__ = ["Frozen", "FrozenInstanceError"]


class FrozenInstanceError(AttributeError):
    """An assignment to a field of a frozen record."""


class Frozen:
    #: The fields that ``repr``, ``==`` and ``hash`` use, in order.
    _fields: ClassVar[Tuple[str, ...]] = ()

    def _set(self, **values: Any) -> None:
        """The constructor's assignment (the only one allowed)."""
        self.__dict__.update(values)

    def __setattr__(self, name: str, value: Any) -> None:
        raise FrozenInstanceError(f"cannot assign to field {name!r} of a frozen {type(self).__name__}")

    def __delattr__(self, name: str) -> None:
        raise FrozenInstanceError(f"cannot delete field {name!r} of a frozen {type(self).__name__}")

    def _key(self) -> Tuple[Any, ...]:
        return tuple(getattr(self, n) for n in self._fields)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Frozen) or other.__class__ is not self.__class__:
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        inner = ", ".join(f"{n}={getattr(self, n)!r}" for n in self._fields)
        return f"{type(self).__qualname__}({inner})"
