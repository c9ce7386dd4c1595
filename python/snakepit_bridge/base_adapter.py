"""Snakepit's adapter API (``snakepit_bridge.base_adapter``), for adapters
written for Snakepit, the Elixir project this library rebuilds.

An adapter written against this module runs on Snakepit's execution model
(see :mod:`snakepit_bridge._compat` and docs/MIGRATING.md): a new instance
per call, ``set_session_context``, ``initialize()``, ``execute_tool`` (or the
tool method), ``cleanup()``. New adapters should use the native API instead
(``from snakepit_bridge import BaseAdapter, tool``: one instance per worker
process, ``setup()``/``teardown()`` once, tools called directly).
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any, Callable, Dict, List, Optional, TypeVar, Union, overload

from .adapter import ToolSpec

__all__ = ["ToolMetadata", "tool", "BaseAdapter"]

F = TypeVar("F", bound=Callable[..., Any])


@dataclasses.dataclass
class ToolMetadata:
    """What Snakepit's ``@tool`` records on a function (``func._tool_metadata``)."""

    description: str = ""
    supports_streaming: bool = False
    parameters: List[Dict[str, Any]] = dataclasses.field(default_factory=list)
    required_variables: List[str] = dataclasses.field(default_factory=list)


@overload
def tool(description: F) -> F: ...


@overload
def tool(
    description: str = "", supports_streaming: bool = False, required_variables: Optional[List[str]] = None
) -> Callable[[F], F]: ...


def tool(
    description: Union[str, Callable[..., Any]] = "",
    supports_streaming: bool = False,
    required_variables: Optional[List[str]] = None,
) -> Any:
    """Mark a method as a tool, the way Snakepit does: the function gets a
    ``_tool_metadata`` attribute and is otherwise unchanged. Usable as
    ``@tool(description=..., supports_streaming=...)`` and bare (``@tool``).
    ``required_variables`` is recorded but not enforced (there are no
    session variables here)."""

    def mark(func: F, desc: str) -> F:
        meta = ToolMetadata(
            description=desc or (inspect.getdoc(func) or "").strip().split("\n")[0],
            supports_streaming=bool(supports_streaming),
            required_variables=list(required_variables or []),
        )
        setattr(func, "_tool_metadata", meta)
        return func

    if callable(description):
        return mark(description, "")
    desc = description

    def decorator(func: F) -> F:
        return mark(func, desc)

    return decorator


class BaseAdapter:
    """Snakepit's adapter base class: tool discovery and the session context.

    The worker makes a new instance for every call, so state on ``self``
    lasts one call; keep what must persist (a loaded model) at module level.
    """

    def __init__(self) -> None:
        self._tools_cache: Optional[List[ToolSpec]] = None
        self._session_context: Any = None

    @property
    def session_id(self) -> Optional[str]:
        """The session id of the current call, or None without a context."""
        ctx = getattr(self, "session_context", None) or self._session_context
        return ctx.session_id if ctx is not None else None

    def set_session_context(self, session_context: Any) -> None:
        """Called by the worker before ``initialize()``; also sets
        ``self.session_context``."""
        self._session_context = session_context
        self.session_context = session_context

    def get_tools(self) -> List[ToolSpec]:
        """The specs of this adapter's ``@tool`` methods (ours: ToolSpec, not
        Snakepit's protobuf ToolRegistration; same names and descriptions)."""
        if self._tools_cache is None:
            from ._compat import _marked, _spec_of

            self._tools_cache = [
                _spec_of(attr, func, getattr(self, attr)) for attr, func in _marked(type(self))
            ]
        return list(self._tools_cache)

    def call_tool(self, tool_name: str, **kwargs: Any) -> Any:
        """Call the method named ``tool_name`` with ``kwargs``."""
        method = getattr(self, tool_name, None)
        if method is None:
            raise AttributeError(f"Tool '{tool_name}' not found in {type(self).__name__}")
        if not callable(method):
            raise TypeError(f"'{tool_name}' is not a callable tool")
        return method(**kwargs)

    def register_with_session(self, session_id: str, stub: Any = None) -> List[str]:
        """Snakepit registers tools per session with the Elixir side; here the
        host learns every worker's tools once, when it starts (DescribeTools),
        so this only returns the tool names."""
        return [t.name for t in self.get_tools()]

    async def register_with_session_async(self, session_id: str, stub: Any = None) -> List[str]:
        """Async form of :meth:`register_with_session`."""
        return self.register_with_session(session_id, stub)

