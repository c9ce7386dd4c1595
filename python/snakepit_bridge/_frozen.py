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
assignment refused with :class:`FrozenInstanceError`, and
``replace(**changes)`` for ``dataclasses.replace``. The error raised is
also a ``dataclasses.FrozenInstanceError`` (so ``except`` clauses written
for the dataclasses still catch it): dataclasses is imported only when one
is raised, never at start. They are not dataclasses to
``dataclasses.fields``/``asdict``/``replace``.
"""

from __future__ import annotations

from typing import Any, ClassVar, Optional, Tuple, Type, TypeVar

__all__ = ["Frozen", "FrozenInstanceError"]


class FrozenInstanceError(AttributeError):
    """An assignment to a field of a frozen record. What is raised is also a
    ``dataclasses.FrozenInstanceError`` (see _raised)."""


_raised_cls: Optional[Type[FrozenInstanceError]] = None


def _raised(message: str) -> FrozenInstanceError:
    """The error to raise: a subclass of both FrozenInstanceError and
    dataclasses'. Made on first use, so that importing dataclasses costs
    only a program that assigns to a frozen record, not every start."""
    global _raised_cls
    if _raised_cls is None:
        import dataclasses

        _raised_cls = type(
            "FrozenInstanceError", (FrozenInstanceError, dataclasses.FrozenInstanceError), {"__module__": __name__}
        )
    return _raised_cls(message)


F = TypeVar("F", bound="Frozen")


class Frozen:
    #: The fields that ``repr``, ``==`` and ``hash`` use, in order.
    _fields: ClassVar[Tuple[str, ...]] = ()

    def _set(self, **values: Any) -> None:
        """The constructor's assignment (the only one allowed)."""
        self.__dict__.update(values)

    def __setattr__(self, name: str, value: Any) -> None:
        raise _raised(f"cannot assign to field {name!r} of a frozen {type(self).__name__}")

    def __delattr__(self, name: str) -> None:
        raise _raised(f"cannot delete field {name!r} of a frozen {type(self).__name__}")

    def replace(self: F, **changes: Any) -> F:
        """A copy with ``changes`` (``dataclasses.replace`` for these
        records): every constructor argument is taken from this one unless
        given, and the constructor validates the result."""
        init = type(self).__init__.__code__
        args = {n: getattr(self, n) for n in init.co_varnames[1 : init.co_argcount + init.co_kwonlyargcount]}
        args.update(changes)
        return type(self)(**args)

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
