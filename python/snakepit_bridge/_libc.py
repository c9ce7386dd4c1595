"""The C library calls a worker makes at start — prctl (the subreaper,
_reaper.py) and mallopt (_malloc.py) — without the ctypes package.

Why: ``import ctypes`` costs every worker's start ~2.4 ms of CPU, of which
its C core ``_ctypes`` is ~1 ms; the package around it builds dozens of
types the two calls never use. :func:`symbol` takes the pieces
``ctypes.CDLL(None, use_errno=True)`` is made of — ``_ctypes.dlopen``, a
``CFuncPtr`` type with a C ``int`` result and errno capture — straight
from ``_ctypes`` (CPython's, unchanged since ctypes joined the standard
library), and falls back to ctypes itself where they are missing.

Contract: ``symbol(name)`` is the function ``name`` from the symbols
already loaded into the process (the interpreter links libc; dlopen(NULL),
so no library search and no ctypes.util), called with Python ints passed
as C ints and returning a C int; AttributeError when there is no such
symbol, OSError when the process's symbols cannot be opened.
:func:`errno` is the errno that the last such call on this thread left.
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Tuple

__all__ = ["symbol", "errno"]

_impl: Optional[Tuple[Callable[[str], Any], Callable[[], int]]] = None


def _core() -> Tuple[Callable[[str], Any], Callable[[], int]]:
    import _ctypes

    core: Any = _ctypes  # typeshed describes little of the C core

    class _Int(core._SimpleCData):  # ctypes.c_int's definition
        _type_ = "i"

    class _Func(core.CFuncPtr):  # CDLL(..., use_errno=True)._FuncPtr's
        _flags_ = core.FUNCFLAG_CDECL | core.FUNCFLAG_USE_ERRNO
        _restype_ = _Int

    class _Process:  # what CFuncPtr((name, library)) reads of a CDLL
        _handle = core.dlopen(None, core.RTLD_LOCAL)

    return (lambda name: _Func((name, _Process))), core.get_errno


def _package() -> Tuple[Callable[[str], Any], Callable[[], int]]:
    import ctypes

    lib = ctypes.CDLL(None, use_errno=True)
    return (lambda name: getattr(lib, name)), ctypes.get_errno


def _load() -> Tuple[Callable[[str], Any], Callable[[], int]]:
    global _impl
    if _impl is None:
        try:
            _impl = _core()
        except (ImportError, AttributeError, TypeError):  # not CPython's _ctypes
            _impl = _package()
    return _impl


def symbol(name: str) -> Callable[..., int]:
    fn: Callable[..., int] = _load()[0](name)
    return fn


def errno() -> int:
    return _load()[1]()
