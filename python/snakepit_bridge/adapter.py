"""The adapter API: the ``@tool`` decorator, ``BaseAdapter`` and tool specs.

Contract:

* An adapter is a class whose tool methods carry ``@tool``. The worker
  creates exactly ONE instance per process, calls ``setup()`` once before it
  reports ready and ``teardown()`` once on a graceful stop. State kept on
  ``self`` therefore lives as long as the worker process and is shared by
  every call (and by concurrent calls: guard it with a lock when the
  worker's capacity is above 1 — each sync call runs on a thread of its
  own; async tools share the event loop of the worker's main thread).
* A tool may be a plain function, a coroutine function, a generator or an
  async generator. Generators are streaming tools; everything else is unary.
* Capacity: at most ``--max-workers`` (the host's ``Config.Capacity``) sync
  tool calls run at once in one worker process, and this holds EXACTLY,
  also after cancellation. A sync tool cannot be interrupted; one whose
  caller gave up (cancelled, deadline passed) but that keeps running is
  *abandoned*: it keeps its slot until its function actually returns (or
  the host recycles the process, which it does once such a call outlives
  ``HungGrace``). A later call waits for a free slot meanwhile; if its own
  caller gives up while it waits, it is dropped without running. So with
  capacity 1 a sync tool never runs while another sync call is in the same
  process, and an adapter written for one call at a time stays correct.
  Async tools are not counted here (the host's capacity bounds them).
* A tool receives its arguments as keyword arguments decoded from JSON (plus
  raw ``bytes`` arguments). A parameter annotated ``SessionContext`` (or an
  unannotated parameter named ``ctx``/``context``) receives the per-call
  context instead and is not part of the tool's public parameters.
* The spec a host sees (name, description, parameters with type, required
  flag and JSON default) is derived from the signature once, at class
  inspection time, by :func:`derive_spec`.
"""

from __future__ import annotations

import collections.abc
import inspect
import re
import sys
import typing
from typing import Any, Callable, Dict, FrozenSet, List, Optional, Tuple, TypeVar, Union, overload

from ._frozen import Frozen
from .argcheck import InvalidArgs, compile_checker, describe, type_str
from .batch import Batch, item_annotation
from .context import SessionContext, spec_to_dict

__all__ = [
    "tool",
    "BaseAdapter",
    "ToolParam",
    "ToolSpec",
    "ToolInfo",
    "derive_spec",
    "collect_tools",
    "TOOL_ATTR",
    "ANY_TOOL",
]

#: Attribute set on a function by ``@tool``; its value is a ``_ToolOptions``.
TOOL_ATTR = "__snakepit_tool__"

#: The name of the tool entry that answers every name no other tool has: a
#: Snakepit-style adapter whose own ``execute_tool`` dispatches names it
#: never declared (see _compat.py). The host treats a worker that lists it
#: as offering any tool.
ANY_TOOL = "*"

#: Parameter names that receive the per-call SessionContext when unannotated.
CONTEXT_PARAM_NAMES = ("ctx", "context")

F = TypeVar("F", bound=Callable[..., Any])


class _ToolOptions(Frozen):
    _fields = ("name", "description", "supports_streaming", "max_concurrency", "timeout", "check_args", "batch")
    name: Optional[str]
    description: str
    supports_streaming: bool
    max_concurrency: int
    timeout: float
    check_args: bool
    batch: Optional[Batch]

    def __init__(
        self, name: Optional[str], description: str, supports_streaming: bool, max_concurrency: int = 0,
        timeout: float = 0.0, check_args: bool = True, batch: Optional[Batch] = None,
    ) -> None:
        self._set(
            name=name, description=description, supports_streaming=supports_streaming,
            max_concurrency=max_concurrency, timeout=timeout, check_args=check_args, batch=batch,
        )


@overload
def tool(func: F) -> F: ...


@overload
def tool(
    func: None = None,
    *,
    description: str = "",
    supports_streaming: bool = False,
    name: Optional[str] = None,
    max_concurrency: Optional[int] = None,
    timeout: Optional[float] = None,
    check_args: bool = True,
    batch: Optional[Batch] = None,
) -> Callable[[F], F]: ...


def tool(
    func: Optional[F] = None,
    *,
    description: str = "",
    supports_streaming: bool = False,
    name: Optional[str] = None,
    max_concurrency: Optional[int] = None,
    timeout: Optional[float] = None,
    check_args: bool = True,
    batch: Optional[Batch] = None,
) -> Any:
    """Mark an adapter method as a tool.

    Usable bare (``@tool``) or with options (``@tool(description=...)``).

    Args:
        description: shown to the host; defaults to the docstring's first line.
        supports_streaming: force streaming for a function that returns an
            iterable without being a generator itself. Generator and async
            generator functions are streaming automatically.
        name: the tool's public name; defaults to the method name.
        max_concurrency: at most this many calls of the tool run at once
            across the whole pool (all workers); the host queues the rest.
        timeout: seconds; the deadline the host gives a call of this tool
            when the caller set none. A caller's own deadline wins.
        check_args: False turns off the type check of the arguments (see
            :mod:`snakepit_bridge.argcheck`); missing and unexpected
            arguments are still refused before the tool runs.
        batch: a :class:`~snakepit_bridge.batch.Batch`: the host sends the
            tool many calls at once, each parameter a list with one entry
            per call, and the tool returns one result per call (see
            :mod:`snakepit_bridge.batch`).

    Cancellation: a sync tool is told through ``ctx.cancelled`` /
    ``ctx.wait_cancelled`` and should return soon after; until it does it
    keeps its capacity slot (see the module docstring), so a tool that
    ignores cancellation delays the worker's next call until it returns or
    the process is replaced. Async tools get ``CancelledError``.

    Both limits are enforced by the host, so they hold across processes and
    during a rolling reload. A bad value raises TypeError or ValueError at
    import, which the host reports as a startup error.

    The function is returned unchanged apart from the marker attribute, so it
    stays directly callable in unit tests.
    """

    def mark(f: F) -> F:
        if not callable(f):
            raise TypeError(f"@tool must decorate a function, got {type(f).__name__}")
        setattr(f, TOOL_ATTR, _ToolOptions(name, description, supports_streaming,
                                           _check_limit(max_concurrency), _check_timeout(timeout),
                                           bool(check_args), _check_batch(f, batch, supports_streaming)))
        return f

    if func is not None:
        return mark(func)
    return mark


_MAX_CONCURRENCY = 2**31 - 1


def _check_limit(n: Optional[int]) -> int:
    if n is None:
        return 0
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"@tool(max_concurrency=...) must be an int, got {type(n).__name__}")
    if not 1 <= n <= _MAX_CONCURRENCY:
        raise ValueError(f"@tool(max_concurrency={n}) must be between 1 and {_MAX_CONCURRENCY}; omit it for no limit")
    return n


def _check_batch(f: Callable[..., Any], batch: Optional[Batch], streaming: bool) -> Optional[Batch]:
    if batch is None:
        return None
    if not isinstance(batch, Batch):
        raise TypeError(f"@tool(batch=...) must be a snakepit_bridge.Batch, got {type(batch).__name__}")
    if streaming or inspect.isgeneratorfunction(f) or inspect.isasyncgenfunction(f):
        raise TypeError(f"tool {getattr(f, '__name__', f)!r}: a batch tool returns one list, it cannot stream")
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in inspect.signature(f).parameters.values()):
        raise TypeError(f"tool {getattr(f, '__name__', f)!r}: a batch tool cannot take **kwargs (its parameters are the batch's columns)")
    return batch


def _check_timeout(t: Optional[float]) -> float:
    if t is None:
        return 0.0
    if isinstance(t, bool) or not isinstance(t, (int, float)):
        raise TypeError(f"@tool(timeout=...) must be a number of seconds, got {type(t).__name__}")
    if not (0 < t < 1e9):  # also rejects NaN
        raise ValueError(f"@tool(timeout={t}) must be a positive number of seconds; omit it for no default deadline")
    return float(t)


class ToolParam(Frozen):
    """One public parameter of a tool (a frozen record, see _frozen.py)."""

    _fields = ("name", "type", "required", "default_json", "description")
    name: str
    type: str  # the annotation as a reader writes it: "int", "list[int]", "Optional[str]"; "any" when none
    required: bool
    default_json: bytes  # JSON of the default; empty when required or not JSON-encodable
    description: str

    def __init__(self, name: str, type: str, required: bool, default_json: bytes = b"", description: str = "") -> None:
        self._set(name=name, type=type, required=required, default_json=default_json, description=description)


class ToolSpec(Frozen):
    """What the host is told about a tool (a frozen record, see _frozen.py)."""

    _fields = (
        "name", "description", "parameters", "supports_streaming", "accepts_any_kwargs", "max_concurrency",
        "timeout", "returns", "doc", "batch_max_size", "batch_max_wait_ms",
    )
    name: str
    description: str
    parameters: Tuple[ToolParam, ...]
    supports_streaming: bool
    accepts_any_kwargs: bool  # has **kwargs: unknown keyword arguments are allowed
    max_concurrency: int  # 0: no limit
    timeout: float  # seconds; 0: none
    returns: str  # the return annotation, readable; "" when none
    doc: str  # the whole docstring
    batch_max_size: int  # a batch tool's calls per request; 0: not a batch tool
    batch_max_wait_ms: float

    def __init__(
        self, name: str, description: str, parameters: Tuple[ToolParam, ...], supports_streaming: bool,
        accepts_any_kwargs: bool = False, max_concurrency: int = 0, timeout: float = 0.0, returns: str = "",
        doc: str = "", batch_max_size: int = 0, batch_max_wait_ms: float = 0.0,
    ) -> None:
        self._set(
            name=name, description=description, parameters=parameters, supports_streaming=supports_streaming,
            accepts_any_kwargs=accepts_any_kwargs, max_concurrency=max_concurrency, timeout=timeout,
            returns=returns, doc=doc, batch_max_size=batch_max_size, batch_max_wait_ms=batch_max_wait_ms,
        )

    def to_dict(self) -> Dict[str, Any]:
        """A JSON-friendly view (defaults decoded), for logs and tests."""
        return spec_to_dict(self)


class ToolKind:
    """How a tool is run; decided once from the function object."""

    SYNC = "sync"
    ASYNC = "async"
    SYNC_GEN = "sync_gen"
    ASYNC_GEN = "async_gen"
    SYNC_ITER = "sync_iter"  # plain function flagged supports_streaming: returns an iterable
    ASYNC_ITER = "async_iter"  # coroutine function flagged supports_streaming


class ToolInfo(Frozen):
    """A tool bound to one adapter instance, ready to be invoked (a frozen
    record, see _frozen.py; ``repr`` and ``==`` use its first five fields)."""

    _fields = ("spec", "func", "kind", "context_param", "signature")
    spec: ToolSpec
    func: Callable[..., Any]  # the bound method
    kind: str
    context_param: Optional[str]  # name of the parameter that receives the SessionContext
    signature: inspect.Signature  # of the bound method, context parameter included
    # The compiled argument check (argcheck.compile_checker); None when no
    # parameter is checked or the tool opted out with check_args=False.
    check: Optional[Callable[[Dict[str, Any]], None]]
    # Set for tools that answer both RPCs whatever their spec says (the
    # Snakepit-style adapters of _compat.py, where the caller chooses):
    # ExecuteTool runs ``func`` (a sync function) and ExecuteStreamingTool
    # calls this one, a sync function returning an iterator of items.
    stream_func: Optional[Callable[..., Any]]
    # A batch tool's options, and the per-call defaults of its optional
    # parameters (filled into a call's entry when it omits them).
    batch: Optional[Batch]
    batch_defaults: Dict[str, Any]
    # Derived from signature (in the constructor): what fits_kwargs checks
    # instead of a full Signature.bind on every call.
    param_names: FrozenSet[str]
    required_names: FrozenSet[str]
    accepts_any_kwargs: bool
    keyword_only_call: bool

    def __init__(
        self, spec: ToolSpec, func: Callable[..., Any], kind: str, context_param: Optional[str],
        signature: inspect.Signature, check: Optional[Callable[[Dict[str, Any]], None]] = None,
        stream_func: Optional[Callable[..., Any]] = None, batch: Optional[Batch] = None,
        batch_defaults: Optional[Dict[str, Any]] = None,
    ) -> None:
        self._set(
            spec=spec, func=func, kind=kind, context_param=context_param, signature=signature, check=check,
            stream_func=stream_func, batch=batch, batch_defaults={} if batch_defaults is None else batch_defaults,
        )
        names, required = set(), set()
        any_kwargs, simple = False, True
        for p in self.signature.parameters.values():
            if p.kind is inspect.Parameter.VAR_KEYWORD:
                any_kwargs = True
            elif p.kind is inspect.Parameter.VAR_POSITIONAL:
                pass  # never filled: arguments arrive as keywords
            elif p.kind is inspect.Parameter.POSITIONAL_ONLY:
                simple = False  # bind() must explain why a keyword cannot fill it
            else:
                names.add(p.name)
                if p.default is inspect.Parameter.empty:
                    required.add(p.name)
        self._set(
            param_names=frozenset(names), required_names=frozenset(required), accepts_any_kwargs=any_kwargs,
            keyword_only_call=simple,
        )

    def fits_kwargs(self, kwargs: Dict[str, Any]) -> None:
        """Raise InvalidArgs unless ``func(**kwargs)`` binds: a required
        argument missing, or one the tool does not take (unless it has
        ``**kwargs``).

        The common case is two set comparisons; only a call that does not
        fit (or a signature with positional-only parameters) pays for
        finding out why.
        """
        keys = kwargs.keys()
        if self.keyword_only_call:
            if keys >= self.required_names and (self.accepts_any_kwargs or keys <= self.param_names):
                return
            types = {p.name: p.type for p in self.spec.parameters}
            for name in sorted(self.required_names - keys):
                raise InvalidArgs(name, f"missing required argument ({types.get(name, 'any')}) of tool {self.name!r}",
                                  expected=types.get(name, ""), got="missing")
            for name in sorted(keys - self.param_names):
                takes = ", ".join(p.name for p in self.spec.parameters) or "no arguments"
                raise InvalidArgs(name, f"unexpected argument; tool {self.name!r} takes: {takes}",
                                  got=describe(kwargs[name]))
        try:
            self.signature.bind(**kwargs)
        except TypeError as e:
            raise InvalidArgs("", f"bad arguments for tool {self.name!r}: {e}") from None

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def streaming(self) -> bool:
        return self.spec.supports_streaming


class BaseAdapter:
    """Base class for adapters. Subclass it and decorate methods with ``@tool``.

    Hooks (both optional, both synchronous):

    * ``setup(self)``: called once in the worker process after the instance
      is created and before the worker reports ready. Load models, open
      connections here; an exception aborts the worker start (exit code 3).
    * ``teardown(self)``: called once on a graceful stop (SIGTERM/SIGINT),
      after in-flight calls have finished or been cancelled. Not called when
      the worker exits because its host died: then speed matters more.

    The worker also sets ``self.worker_id`` and ``self.run_id`` before
    ``setup()`` runs (empty strings when the adapter is used outside a
    worker).
    """

    worker_id: str = ""
    run_id: str = ""
    #: The worker's server flavour: "" (chosen from the tools: "aio" when
    #: all are async, else "sync"), "sync" or "aio". Set "aio" on an adapter
    #: that has sync tools but whose busy tools are async: on the sync
    #: server each async call hops to the event loop and back, which costs
    #: up to about 1.5x the CPU (docs/BENCHMARKS.md). SNAKEPIT_SERVER
    #: overrides it.
    snakepit_server: str = ""

    def setup(self) -> None:
        """Prepare per-process resources. Called once, before ready."""

    def teardown(self) -> None:
        """Release per-process resources. Called once, on graceful stop."""

    def snakepit_tools(self) -> Dict[str, ToolInfo]:
        """The tools of this instance, keyed by public name."""
        return collect_tools(self)


def collect_tools(adapter: object) -> Dict[str, ToolInfo]:
    """Find every ``@tool`` method on ``adapter`` (including inherited ones).

    Works for any object, not only ``BaseAdapter`` subclasses, so a plain class
    with decorated methods is a valid adapter too. Subclass overrides win
    because attribute lookup on the instance follows the MRO.
    """
    tools: Dict[str, ToolInfo] = {}
    seen: set = set()
    for klass in type(adapter).__mro__:
        for attr_name, raw in vars(klass).items():
            if attr_name in seen:
                continue
            seen.add(attr_name)
            target = raw.__func__ if isinstance(raw, (staticmethod, classmethod)) else raw
            if getattr(target, TOOL_ATTR, None) is None:
                continue
            bound = getattr(adapter, attr_name)
            info = _make_info(bound, target)
            if info.name in tools:
                raise ValueError(
                    f"adapter {type(adapter).__name__} defines two tools named {info.name!r}"
                )
            tools[info.name] = info
    return tools


def _make_info(bound: Callable[..., Any], raw: Callable[..., Any]) -> ToolInfo:
    opts: _ToolOptions = getattr(raw, TOOL_ATTR)
    spec, context_param, annotations, sig = _derive_sig(raw, bound)
    kind = _kind_of(raw, opts.supports_streaming)
    # Compiled once here, so a call pays only for running the checks.
    check = compile_checker(annotations) if opts.check_args else None
    defaults: Dict[str, Any] = {}
    if opts.batch is not None:
        defaults = {
            p.name: p.default
            for p in sig.parameters.values()
            if p.default is not inspect.Parameter.empty and p.name != context_param
        }
    return ToolInfo(
        spec=spec,
        func=bound,
        kind=kind,
        context_param=context_param,
        signature=sig,
        check=check,
        batch=opts.batch,
        batch_defaults=defaults,
    )


def _kind_of(func: Callable[..., Any], flagged_streaming: bool) -> str:
    if inspect.isasyncgenfunction(func):
        return ToolKind.ASYNC_GEN
    if inspect.isgeneratorfunction(func):
        return ToolKind.SYNC_GEN
    if inspect.iscoroutinefunction(func):
        return ToolKind.ASYNC_ITER if flagged_streaming else ToolKind.ASYNC
    return ToolKind.SYNC_ITER if flagged_streaming else ToolKind.SYNC


def derive_spec(
    func: Callable[..., Any], *, bound: Optional[Callable[..., Any]] = None
) -> Tuple[ToolSpec, Optional[str]]:
    """Build the ToolSpec of ``func`` from its signature and docstring.

    Returns the spec and the name of the parameter that receives the
    SessionContext (None when the tool takes none). ``bound`` is the bound
    method, whose signature already lacks ``self``; without it a leading
    parameter named ``self``/``cls`` is skipped.
    """
    spec, context_param, _ = _derive(func, bound)
    return spec, context_param


def _derive(
    func: Callable[..., Any], bound: Optional[Callable[..., Any]]
) -> Tuple[ToolSpec, Optional[str], List[Tuple[str, Any]]]:
    """derive_spec, plus each public parameter's resolved annotation (for
    the argument checker)."""
    spec, context_param, annotations, _ = _derive_sig(func, bound)
    return spec, context_param, annotations


def _derive_sig(
    func: Callable[..., Any], bound: Optional[Callable[..., Any]]
) -> Tuple[ToolSpec, Optional[str], List[Tuple[str, Any]], inspect.Signature]:
    """_derive, plus the signature it read (of ``bound`` when given): made
    once per tool at every worker's start."""
    opts: Optional[_ToolOptions] = getattr(func, TOOL_ATTR, None)
    name = (opts.name if opts and opts.name else None) or func.__name__
    doc = inspect.getdoc(func) or ""
    description = (opts.description if opts else "") or _first_line(doc)
    param_docs = _param_docs(doc)
    hints = _type_hints(func)

    sig = inspect.signature(bound if bound is not None else func)
    params: List[ToolParam] = []
    context_param: Optional[str] = None
    accepts_any = False
    annotations: List[Tuple[str, Any]] = []
    for i, p in enumerate(sig.parameters.values()):
        if bound is None and i == 0 and p.name in ("self", "cls"):
            continue
        if p.kind is inspect.Parameter.VAR_KEYWORD:
            accepts_any = True
            continue
        if p.kind is inspect.Parameter.VAR_POSITIONAL:
            # Arguments arrive as a JSON object of keywords; *args can never be filled.
            continue
        ann = hints.get(p.name, p.annotation)
        if _is_context_annotation(ann) or (
            p.name in CONTEXT_PARAM_NAMES and ann is inspect.Parameter.empty
        ):
            context_param = p.name
            continue
        required = p.default is inspect.Parameter.empty
        if opts is not None and opts.batch is not None:
            # The public type is one call's: list[T] -> T.
            ann = item_annotation(ann, f"parameter {p.name!r} of tool {name!r}")
        annotations.append((p.name, ann))
        params.append(
            ToolParam(
                name=p.name,
                type=type_str(ann),
                required=required,
                default_json=b"" if required else _default_json(p.default),
                description=param_docs.get(p.name, ""),
            )
        )

    streaming = bool(opts and opts.supports_streaming) or inspect.isgeneratorfunction(
        func
    ) or inspect.isasyncgenfunction(func)
    batch = opts.batch if opts else None
    ret = hints.get("return", sig.return_annotation)
    if batch is not None:
        ret = item_annotation(ret, f"the return of tool {name!r}")
    spec = ToolSpec(
        name=name,
        description=description,
        parameters=tuple(params),
        supports_streaming=streaming,
        accepts_any_kwargs=accepts_any,
        max_concurrency=opts.max_concurrency if opts else 0,
        timeout=opts.timeout if opts else 0.0,
        returns=_returns(ret),
        doc=doc,
        batch_max_size=batch.max_size if batch else 0,
        batch_max_wait_ms=float(batch.max_wait_ms) if batch else 0.0,
    )
    return spec, context_param, annotations, sig


def _returns(ann: Any) -> str:
    if ann is inspect.Signature.empty:
        return ""
    return type_str(ann)


def _first_line(doc: str) -> str:
    for line in doc.splitlines():
        if line.strip():
            return line.strip()
    return ""


def _param_docs(doc: str) -> Dict[str, str]:
    """Parameter descriptions from a Google-style ``Args:`` section."""
    out: Dict[str, str] = {}
    in_args = False
    indent: Optional[int] = None
    for line in doc.splitlines():
        stripped = line.strip()
        if stripped in ("Args:", "Arguments:", "Parameters:", "Params:"):
            in_args, indent = True, None
            continue
        if not in_args:
            continue
        if not stripped:
            continue
        cur = len(line) - len(line.lstrip())
        if cur == 0:  # a new section started
            in_args = False
            continue
        if indent is None:
            indent = cur
        if cur == indent and ":" in stripped:
            head, _, rest = stripped.partition(":")
            pname = head.split("(")[0].strip().lstrip("*")
            if pname.isidentifier():
                out[pname] = rest.strip()
    return out


def _type_hints(func: Callable[..., Any]) -> Dict[str, Any]:
    # Resolves string annotations (``from __future__ import annotations``).
    # It fails for forward references it cannot see, or for ``X | None`` on
    # Python < 3.10; then the raw annotations are used and mapped by name.
    try:
        return typing.get_type_hints(func)
    except Exception:
        return dict(getattr(func, "__annotations__", {}) or {})


#: Compiled on first use (re caches it): compiling costs every worker's start.
_CONTEXT_ANN_RE = r"(?:(?:typing\.)?Optional\[\s*)?(?:[\w.]+\.)?SessionContext\s*\]?(?:\s*\|\s*None)?"


def _is_context_annotation(ann: Any) -> bool:
    if ann is SessionContext:
        return True
    if isinstance(ann, type):
        try:
            return issubclass(ann, SessionContext)
        except TypeError:
            return False
    if isinstance(ann, str):
        return re.fullmatch(_CONTEXT_ANN_RE, ann.strip()) is not None
    # Optional[SessionContext]
    args = [a for a in typing.get_args(ann) if a is not type(None)]
    return len(args) == 1 and _is_context_annotation(args[0])


_SIMPLE_TYPES: Dict[Any, str] = {
    int: "int",
    float: "float",
    str: "str",
    bool: "bool",
    list: "list",
    tuple: "list",
    set: "list",
    frozenset: "list",
    dict: "dict",
    bytes: "bytes",
    bytearray: "bytes",
    memoryview: "bytes",
}

_STRING_TYPES = {
    "int": "int",
    "float": "float",
    "str": "str",
    "bool": "bool",
    "list": "list",
    "tuple": "list",
    "dict": "dict",
    "bytes": "bytes",
    "bytearray": "bytes",
    "List": "list",
    "Tuple": "list",
    "Sequence": "list",
    "Dict": "dict",
    "Mapping": "dict",
}

_UNION_TYPES: Tuple[Any, ...] = (Union,)
if sys.version_info >= (3, 10):
    import types as _types

    _UNION_TYPES = (Union, _types.UnionType)


def type_name(ann: Any) -> str:
    """Map a Python annotation to one of the protocol's type names.

    Unknown or ambiguous annotations (unions of different types, Any, custom
    classes) map to "any": the spec must never promise a type the tool does
    not guarantee.
    """
    if ann is inspect.Parameter.empty or ann is Any or ann is None:
        return "any"
    if isinstance(ann, str):
        s = ann.strip()
        parts = [x.strip() for x in s.split("|")]
        parts = [x for x in parts if x != "None"]
        if len(parts) == 1:
            s = parts[0]
            if s.startswith("Optional[") and s.endswith("]"):
                s = s[len("Optional[") : -1]
            base = s.split("[")[0].split(".")[-1]
            return _STRING_TYPES.get(base, "any")
        return "any"
    if ann in _SIMPLE_TYPES:
        return _SIMPLE_TYPES[ann]
    origin = typing.get_origin(ann)
    if origin in _UNION_TYPES:
        members = [a for a in typing.get_args(ann) if a is not type(None)]
        names = {type_name(a) for a in members}
        return names.pop() if len(names) == 1 else "any"
    if origin is not None:
        if origin in _SIMPLE_TYPES:
            return _SIMPLE_TYPES[origin]
        if isinstance(origin, type):
            if issubclass(origin, collections.abc.Mapping):
                return "dict"
            if issubclass(origin, (collections.abc.Sequence, collections.abc.Set)) and not issubclass(
                origin, (str, bytes)
            ):
                return "list"
        return "any"
    if isinstance(ann, type):
        # Subclasses (IntEnum, a str subclass, OrderedDict) travel as their
        # base. bool is checked first because it is a subclass of int.
        for simple in (bool, int, float, str, bytes, bytearray, dict, list, tuple, set, frozenset):
            if issubclass(ann, simple):
                return _SIMPLE_TYPES[simple]
        if issubclass(ann, collections.abc.Mapping):
            return "dict"
    return "any"


def _default_json(value: Any) -> bytes:
    """json.dumps of a parameter's default. The common defaults (None, a
    bool, an int, a finite float, a short plain ASCII string) are written
    here, byte for byte as json.dumps writes them (tests/test_spec.py), so
    that describing a worker's tools does not import json at its start."""
    t = type(value)
    if value is None:
        return b"null"
    if t is bool:
        return b"true" if value else b"false"
    if t is int and -(10**18) < value < 10**18:  # (a longer one may pass str()'s digit limit)
        return int.__repr__(value).encode()
    if t is float and value - value == 0.0:  # finite: NaN and infinities have no JSON form
        return float.__repr__(value).encode()
    if t is str and len(value) < 256 and value.isascii() and value.isprintable() and '"' not in value and "\\" not in value:
        return ('"' + value + '"').encode()
    import json

    try:
        return json.dumps(value, allow_nan=False, separators=(",", ":")).encode()
    except (TypeError, ValueError):
        # Defaults like b"" or a sentinel object have no JSON form; the host
        # just sees "optional" without a value.
        return b""
