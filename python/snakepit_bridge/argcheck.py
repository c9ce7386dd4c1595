"""Checking a call's arguments against the tool's signature, before it runs.

Contract:

* Each annotated parameter is checked against its type hint; unannotated
  ones (and ``Any``) are not. Honoured: ``int`` (``bool`` is NOT an int
  here), ``float`` (an ``int`` is accepted), ``str``, ``bool``, ``bytes``
  (sent as a binary argument), ``None``/``Optional``, ``list[T]`` (also
  ``Sequence[T]``, ``set[T]``, ``frozenset[T]``, ``tuple[...]``: JSON
  arrays), ``dict[str, T]`` (``Mapping``), ``Literal``, ``Union``,
  ``TypedDict``, dataclasses, ``Enum`` and pydantic models (when pydantic
  is installed). Other annotations (a custom class, ``Callable``, a name
  that cannot be resolved) are not checked.
* Values the tool can only use converted are converted after the check: a
  dataclass, pydantic model or Enum parameter receives an instance, a
  ``tuple``/``set``/``frozenset`` one receives that collection, nested too.
  Everything else is passed as decoded, unchanged (a float parameter given
  1 receives the int 1).
* A mismatch raises :class:`InvalidArgs` with the argument's path
  (``xs[2]``, ``cfg.name``, ``opts["k"]``), the expected type and what was
  given. The host sees it as ``snakepit.ErrInvalidArgs``
  (``*snakepit.InvalidArgsError``), never as a tool failure. A tool may
  raise ``InvalidArgs`` itself for input it judges bad.
* The checks are compiled once per tool, when the adapter is loaded, into
  closures over exact-type sets: the per-call cost of a few scalar
  arguments is a dictionary lookup and a set test each.
"""

from __future__ import annotations

import collections.abc
import enum
import inspect
import sys
import typing
from typing import Any, Callable, Dict, FrozenSet, List, Optional, Tuple

from .context import SnakepitError

__all__ = ["InvalidArgs", "compile_checker", "type_str"]


class InvalidArgs(SnakepitError, ValueError):
    """The arguments of a call do not fit the tool.

    Raised by the worker before the tool runs, or by a tool that judges its
    own input bad: ``raise InvalidArgs("xs", "must be sorted")``. The host
    reports it as ``snakepit.ErrInvalidArgs``, not as a tool failure.

    Args:
        path: the argument, e.g. ``"xs"``, ``"xs[2]"``, ``"cfg.name"``
            (``""`` for the call as a whole).
        reason: what is wrong, phrased so the caller knows what to send.
        expected: the type (or values) the tool wants, e.g. ``"list[int]"``.
        got: what was given, e.g. ``"str 'x'"``; ``"missing"``.
    """

    def __init__(self, path: str, reason: str, *, expected: str = "", got: str = "") -> None:
        self.path = path
        self.reason = reason
        self.expected = expected
        self.got = got
        super().__init__(f"argument {path!r}: {reason}" if path else reason)


# A check takes a value and its path and returns the value the tool gets
# (the same object unless the type converts), or raises InvalidArgs.
Check = Callable[[Any, str], Any]

_NoneType: Any = type(None)
_UNION_TYPES: Tuple[Any, ...] = (typing.Union,)
if sys.version_info >= (3, 10):
    import types as _types

    _UNION_TYPES = (typing.Union, _types.UnionType)

_MISSING = object()


def describe(value: Any) -> str:
    """What was given, for an error message: its JSON-ish type and a short repr."""
    if value is None:
        return "None"
    t = type(value).__name__
    if isinstance(value, (list, dict)):
        return f"{t} of {len(value)}"
    r = repr(value)
    if len(r) > 40:
        r = r[:37] + "..."
    return f"{t} {r}"


def _field_path(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _key_path(path: str, key: Any) -> str:
    return f"{path}[{key!r}]"


# -- readable type names -----------------------------------------------------


def type_str(ann: Any) -> str:
    """The annotation as a reader would write it: ``int``, ``list[int]``,
    ``Optional[str]``, ``Literal['a', 'b']``, ``Config``; ``any`` when
    there is none."""
    if ann is inspect.Parameter.empty or ann is inspect.Signature.empty or ann is typing.Any:
        return "any"
    if ann is None or ann is _NoneType:
        return "None"
    if isinstance(ann, str):
        return ann.strip().replace("typing.", "")
    if isinstance(ann, typing.ForwardRef):
        return ann.__forward_arg__
    origin = typing.get_origin(ann)
    args = typing.get_args(ann)
    if origin is typing.Annotated:
        return type_str(args[0])
    if origin in _UNION_TYPES:
        members = [a for a in args if a is not _NoneType]
        if len(members) == 1 and len(args) == 2:
            return f"Optional[{type_str(members[0])}]"
        return " | ".join(type_str(a) for a in args)
    if origin is typing.Literal:
        return "Literal[" + ", ".join(repr(a) for a in args) + "]"
    if origin is not None:
        name = getattr(origin, "__name__", None) or str(origin).replace("typing.", "")
        if not args:
            return name
        inner = ", ".join("..." if a is Ellipsis else type_str(a) for a in args)
        return f"{name}[{inner}]"
    supertype = getattr(ann, "__supertype__", None)  # typing.NewType
    if supertype is not None:
        return getattr(ann, "__name__", type_str(supertype))
    if isinstance(ann, type):
        return ann.__name__
    return str(ann).replace("typing.", "")


# -- compiling one annotation ------------------------------------------------


class _Node:
    """A compiled annotation: its check, whether the check converts, and
    the exact types that pass unchanged (for the scalar fast path)."""

    __slots__ = ("check", "converts", "exact", "expected")

    def __init__(self, check: Optional[Check], converts: bool, exact: Optional[FrozenSet[type]], expected: str) -> None:
        self.check = check  # None: anything passes
        self.converts = converts
        self.exact = exact  # set when the check is exactly "type(v) in exact"
        self.expected = expected


def _bad(path: str, expected: str, value: Any, reason: str = "") -> InvalidArgs:
    return InvalidArgs(
        path,
        reason or f"expected {expected}, got {describe(value)}",
        expected=expected,
        got=describe(value),
    )


def _exact_node(types: FrozenSet[type], expected: str) -> _Node:
    def check(v: Any, path: str) -> Any:
        if type(v) in types:
            return v
        raise _bad(path, expected, v)

    return _Node(check, False, types, expected)


_ANY = _Node(None, False, None, "any")

_SCALARS: Dict[Any, FrozenSet[type]] = {
    int: frozenset((int,)),
    float: frozenset((int, float)),
    str: frozenset((str,)),
    bool: frozenset((bool,)),
    bytes: frozenset((bytes,)),
    bytearray: frozenset((bytes,)),
    _NoneType: frozenset((_NoneType,)),
}


def _compile(ann: Any, depth: int = 0) -> _Node:
    if depth > 20:  # a recursive alias: check no deeper
        return _ANY
    if ann is inspect.Parameter.empty or ann is typing.Any or ann is object or isinstance(ann, (str, typing.ForwardRef)):
        return _ANY
    if ann is None:
        ann = _NoneType
    expected = type_str(ann)
    exact = _SCALARS.get(ann)
    if exact is not None:
        return _exact_node(exact, expected)
    supertype = getattr(ann, "__supertype__", None)  # NewType: its base
    if supertype is not None:
        return _compile(supertype, depth + 1)
    origin = typing.get_origin(ann)
    args = typing.get_args(ann)
    if origin is typing.Annotated:
        return _compile(args[0], depth + 1)
    if origin in _UNION_TYPES:
        return _union([_compile(a, depth + 1) for a in args], expected)
    if origin is typing.Literal:
        return _literal(args, expected)
    if origin is not None:
        return _generic(origin, args, expected, depth)
    if isinstance(ann, type):
        return _class(ann, expected, depth)
    return _ANY


def _union(members: List[_Node], expected: str) -> _Node:
    if any(m.check is None for m in members):
        return _ANY
    if all(m.exact is not None for m in members):
        types: FrozenSet[type] = frozenset()
        for m in members:
            types |= m.exact  # type: ignore[operator]
        return _exact_node(types, expected)
    converts = any(m.converts for m in members)
    # Scalars first (cheap, and an int must not be taken by a wider member
    # that converts); the first member that accepts the value wins.
    ordered = [m for m in members if m.exact is not None] + [m for m in members if m.exact is None]
    checks = [m.check for m in ordered]

    def check(v: Any, path: str) -> Any:
        for c in checks:
            try:
                return c(v, path)  # type: ignore[misc]
            except InvalidArgs:
                continue
        raise _bad(path, expected, v)

    return _Node(check, converts, None, expected)


def _literal(values: Tuple[Any, ...], expected: str) -> _Node:
    allowed = [(type(a), a) for a in values]
    text = ", ".join(repr(a) for a in values)

    def check(v: Any, path: str) -> Any:
        t = type(v)
        for at, a in allowed:
            # The type too: True == 1, but True is not Literal[1].
            if t is at and v == a:
                return v
            if isinstance(a, enum.Enum) and v == a.value and t is type(a.value):
                return a
        raise _bad(path, expected, v, f"expected one of {text}, got {describe(v)}")

    return _Node(check, any(isinstance(a, enum.Enum) for a in values), None, expected)


def _sequence(elem: _Node, expected: str, make: Optional[Callable[[Any], Any]]) -> _Node:
    ec = elem.check
    exact = elem.exact
    converts = make is not None or elem.converts

    def check(v: Any, path: str) -> Any:
        if type(v) is not list:
            raise _bad(path, expected, v)
        if exact is not None:
            for i, x in enumerate(v):
                if type(x) not in exact:
                    raise _bad(f"{path}[{i}]", elem.expected, x)
            out: Any = v
        elif ec is None:
            out = v
        elif elem.converts:
            out = [ec(x, f"{path}[{i}]") for i, x in enumerate(v)]
        else:
            for i, x in enumerate(v):
                ec(x, f"{path}[{i}]")
            out = v
        return make(out) if make is not None else out

    return _Node(check, converts, None, expected)


def _fixed_tuple(elems: List[_Node], expected: str) -> _Node:
    n = len(elems)

    def check(v: Any, path: str) -> Any:
        if type(v) is not list:
            raise _bad(path, expected, v)
        if len(v) != n:
            raise _bad(path, expected, v, f"expected {expected} ({n} items), got {len(v)} items")
        return tuple(e.check(x, f"{path}[{i}]") if e.check else x for i, (e, x) in enumerate(zip(elems, v)))

    return _Node(check, True, None, expected)


def _mapping(key: _Node, val: _Node, expected: str) -> _Node:
    vc = val.check
    kc = key.check

    def check(v: Any, path: str) -> Any:
        if type(v) is not dict:
            raise _bad(path, expected, v)
        if kc is not None:
            for k in v:  # JSON keys are strings: only Literal/Enum keys can fail
                kc(k, _key_path(path, k))
        if vc is None:
            return v
        if val.converts:
            return {k: vc(x, _key_path(path, k)) for k, x in v.items()}
        for k, x in v.items():
            vc(x, _key_path(path, k))
        return v

    return _Node(check, val.converts, None, expected)


_LIST_ORIGINS = {list: None, collections.abc.Sequence: None, collections.abc.MutableSequence: None,
                 collections.abc.Iterable: None, collections.abc.Collection: None,
                 set: set, frozenset: frozenset, collections.abc.Set: frozenset,
                 collections.abc.MutableSet: set}
_DICT_ORIGINS = (dict, collections.abc.Mapping, collections.abc.MutableMapping)


def _generic(origin: Any, args: Tuple[Any, ...], expected: str, depth: int) -> _Node:
    if origin in _LIST_ORIGINS:
        elem = _compile(args[0], depth + 1) if args else _ANY
        return _sequence(elem, expected, _LIST_ORIGINS[origin])
    if origin is tuple:
        if not args or (len(args) == 2 and args[1] is Ellipsis):
            elem = _compile(args[0], depth + 1) if args else _ANY
            return _sequence(elem, expected, tuple)
        if args == ((),):  # tuple[()]
            return _fixed_tuple([], expected)
        return _fixed_tuple([_compile(a, depth + 1) for a in args], expected)
    if origin in _DICT_ORIGINS:
        key = _compile(args[0], depth + 1) if args else _ANY
        if key.exact is not None:
            key = _ANY  # str keys: JSON object keys always are
        val = _compile(args[1], depth + 1) if len(args) > 1 else _ANY
        return _mapping(key, val, expected)
    if isinstance(origin, type):
        return _class(origin, expected, depth)
    return _ANY


def _class(cls: type, expected: str, depth: int) -> _Node:
    if issubclass(cls, enum.Enum):
        return _enum(cls, expected)
    if hasattr(cls, "__dataclass_fields__"):  # dataclasses.is_dataclass, without importing dataclasses
        return _dataclass(cls, expected, depth)
    if _is_typeddict(cls):
        return _typeddict(cls, expected, depth)
    if _is_pydantic(cls):
        return _pydantic(cls, expected)
    for simple in (bool, int, float, str, bytes):  # subclasses (bool before int)
        if issubclass(cls, simple):
            return _compile(simple)
    if cls in (list, tuple, set, frozenset) or cls in _LIST_ORIGINS:
        return _generic(cls, (), expected, depth)
    if cls in _DICT_ORIGINS:
        return _generic(dict, (), expected, depth)
    return _ANY  # a class JSON cannot produce: the tool's own business


def _enum(cls: Any, expected: str) -> _Node:
    values = ", ".join(repr(m.value) for m in cls)

    def check(v: Any, path: str) -> Any:
        try:
            member = cls(v)
        except (ValueError, TypeError):
            raise _bad(path, expected, v, f"expected {expected}, one of {values}; got {describe(v)}") from None
        if type(v) is bool and type(member.value) is not bool:
            raise _bad(path, expected, v, f"expected {expected}, one of {values}; got {describe(v)}")
        return member

    return _Node(check, True, None, expected)


def _fields_check(
    cls: Any, expected: str, fields: Dict[str, _Node], required: FrozenSet[str], build: Callable[[Dict[str, Any]], Any]
) -> _Node:
    names = ", ".join(fields)

    def check(v: Any, path: str) -> Any:
        if type(v) is not dict:
            raise _bad(path, expected, v, f"expected {expected} (a JSON object), got {describe(v)}")
        for name in required:
            if name not in v:
                node = fields[name]
                raise InvalidArgs(
                    _field_path(path, name), f"missing required field of {expected}",
                    expected=node.expected, got="missing",
                )
        out = {}
        for k, x in v.items():
            field = fields.get(k)
            if field is None:
                raise InvalidArgs(
                    _field_path(path, str(k)), f"unexpected field; {expected} has: {names}",
                    got=describe(x),
                )
            out[k] = field.check(x, _field_path(path, k)) if field.check is not None else x
        return build(out)

    return _Node(check, True, None, expected)


def _hints(cls: Any) -> Dict[str, Any]:
    try:
        return typing.get_type_hints(cls)
    except Exception:
        return dict(getattr(cls, "__annotations__", {}) or {})


def _dataclass(cls: Any, expected: str, depth: int) -> _Node:
    import dataclasses  # loaded already: cls is one

    hints = _hints(cls)
    fields: Dict[str, _Node] = {}
    required = set()
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        fields[f.name] = _compile(hints.get(f.name, f.type), depth + 1)
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            required.add(f.name)

    def build(kw: Dict[str, Any]) -> Any:
        try:
            return cls(**kw)
        except (TypeError, ValueError) as e:  # __post_init__ validation
            raise InvalidArgs("", f"{expected}: {e}", expected=expected) from None

    node = _fields_check(cls, expected, fields, frozenset(required), build)
    inner: Check = node.check  # type: ignore[assignment]  # _fields_check always sets one

    def check(v: Any, path: str) -> Any:
        try:
            return inner(v, path)
        except InvalidArgs as e:
            if e.path == "" and path:  # from build: name the argument
                raise InvalidArgs(path, e.reason, expected=e.expected, got=describe(v)) from None
            raise

    return _Node(check, True, None, expected)


def _is_typeddict(cls: type) -> bool:
    is_td = getattr(typing, "is_typeddict", None)
    if is_td is not None:
        return bool(is_td(cls))
    return issubclass(cls, dict) and hasattr(cls, "__total__") and hasattr(cls, "__annotations__")


def _typeddict(cls: Any, expected: str, depth: int) -> _Node:
    hints = _hints(cls)
    fields = {name: _compile(ann, depth + 1) for name, ann in hints.items()}
    required = frozenset(getattr(cls, "__required_keys__", fields.keys() if getattr(cls, "__total__", True) else ()))
    return _fields_check(cls, expected, fields, required, lambda kw: kw)


def _is_pydantic(cls: type) -> bool:
    pyd = sys.modules.get("pydantic")
    if pyd is None:
        return False
    base = getattr(pyd, "BaseModel", None)
    return base is not None and isinstance(cls, type) and issubclass(cls, base)


def _pydantic(cls: Any, expected: str) -> _Node:
    validate = getattr(cls, "model_validate", None) or getattr(cls, "parse_obj")
    pyd = sys.modules["pydantic"]
    error_type: Any = getattr(pyd, "ValidationError", ValueError)

    def check(v: Any, path: str) -> Any:
        if type(v) is not dict:
            raise _bad(path, expected, v, f"expected {expected} (a JSON object), got {describe(v)}")
        try:
            return validate(v)
        except error_type as e:
            errs = e.errors() if hasattr(e, "errors") else []
            if errs:
                first = errs[0]
                sub = path
                for part in first.get("loc", ()):
                    sub = f"{sub}[{part}]" if isinstance(part, int) else _field_path(sub, str(part))
                raise InvalidArgs(sub, f"{first.get('msg', e)} ({expected})", expected=expected, got=describe(v)) from None
            raise InvalidArgs(path, f"{expected}: {e}", expected=expected, got=describe(v)) from None

    return _Node(check, True, None, expected)


# -- one tool ----------------------------------------------------------------


def compile_checker(
    params: List[Tuple[str, Any]],
) -> Optional[Callable[[Dict[str, Any]], None]]:
    """The argument check of one tool, from its public parameters and their
    resolved annotations; None when none of them is checked.

    The returned function checks the arguments present in ``kwargs`` (the
    presence of required ones is checked by ToolInfo.fits_kwargs) and puts
    converted values back into it.
    """
    scalars: List[Tuple[str, FrozenSet[type], Check]] = []
    others: List[Tuple[str, Check, bool]] = []
    for name, ann in params:
        node = _compile(ann)
        if node.check is None:
            continue
        if node.exact is not None:
            scalars.append((name, node.exact, node.check))
        else:
            others.append((name, node.check, node.converts))
    if not scalars and not others:
        return None
    scalars_t = tuple(scalars)
    others_t = tuple(others)
    missing = _MISSING

    def check(kwargs: Dict[str, Any]) -> None:
        get = kwargs.get
        for name, exact, slow in scalars_t:
            v = get(name, missing)
            if type(v) not in exact and v is not missing:
                slow(v, name)  # raises, with the message
        for name, c, converts in others_t:
            v = get(name, missing)
            if v is not missing:
                if converts:
                    kwargs[name] = c(v, name)
                else:
                    c(v, name)

    return check
