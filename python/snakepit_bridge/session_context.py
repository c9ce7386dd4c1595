"""Snakepit's per-call session context (``snakepit_bridge.session_context``).

What an adapter written for Snakepit gets as ``self.session_context`` and as
the ``context`` argument of ``execute_tool``. It wraps the native
:class:`snakepit_bridge.SessionContext` of the call:

* ``session_id``, ``request_metadata`` as in Snakepit; ``correlation_id``
  and ``request_id`` are the call's request id (the host's id for the call,
  also on every log line the call makes).
* ``elixir_tools`` / ``call_elixir_tool`` reach the tools registered on the
  Go host (``App.RegisterHostTool``): Snakepit's Elixir tools, by another
  name. Failures raise RuntimeError as in Snakepit (the native HostToolError
  or BridgeError is its ``__cause__``).
* ``stub`` is None: there is no Elixir BridgeService to call directly.
* ``cleanup()`` does nothing: sessions are the host's (they expire by
  their TTL, ``Config.SessionTTL``), as Snakepit treats it as a hint.

Any other attribute (``cancelled``, ``worker_id``, ``call_host_tool``, …)
is the native context's.
"""

from __future__ import annotations

from typing import Any, Dict, Mapping, Optional

from .context import SessionContext as _Native

__all__ = ["SessionContext", "ElixirTool"]


class ElixirTool(dict):
    """One entry of ``SessionContext.elixir_tools``: the tool's spec as a
    dict (name, description, parameters); calling it calls the tool."""

    def __init__(self, spec: Mapping[str, Any], ctx: "SessionContext") -> None:
        super().__init__(spec)
        self._ctx = ctx

    def __call__(self, **kwargs: Any) -> Any:
        return self._ctx.call_elixir_tool(self["name"], **kwargs)


class SessionContext:
    """Snakepit's SessionContext, over the native context of one call."""

    def __init__(self, stub: Any = None, session_id: str = "", request_metadata: Optional[Dict[str, Any]] = None) -> None:
        self.stub = stub
        self.session_id = session_id
        self.request_metadata: Dict[str, Any] = dict(request_metadata or {})
        self._native: Optional[_Native] = None
        self._elixir_tools: Optional[Dict[str, ElixirTool]] = None

    @classmethod
    def _wrap(cls, native: _Native) -> "SessionContext":
        self = cls(None, native.session_id, native.metadata)
        self._native = native
        return self

    @property
    def native(self) -> _Native:
        """The native context of the call (a detached one outside a worker)."""
        if self._native is None:
            self._native = _Native(session_id=self.session_id, metadata=self.request_metadata)
        return self._native

    @property
    def request_id(self) -> str:
        return self.native.request_id

    @property
    def correlation_id(self) -> str:
        """Snakepit's correlation id: here, the call's request id."""
        return self.native.request_id

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name in ("_native", "_elixir_tools"):
            raise AttributeError(name)
        return getattr(self.native, name)

    @property
    def elixir_tools(self) -> Dict[str, ElixirTool]:
        """The host's tools, by name (loaded once per context)."""
        if self._elixir_tools is None:
            try:
                specs = self.native.list_host_tools()
            except Exception:
                specs = []
            self._elixir_tools = {
                s["name"]: ElixirTool(
                    {"name": s["name"], "description": s.get("description", ""), "parameters": s.get("parameters", {})},
                    self,
                )
                for s in specs
            }
        return self._elixir_tools

    def call_elixir_tool(self, tool_name: str, _params: Optional[Mapping[str, Any]] = None, **kwargs: Any) -> Any:
        """Call a host tool. Arguments as keywords (Snakepit's signature) or
        as one mapping (as Snakepit's README writes it).

        Raises ValueError when the host has no such tool, RuntimeError when
        the call fails."""
        if tool_name not in self.elixir_tools:
            raise ValueError(f"Elixir tool '{tool_name}' not found. Available tools: {sorted(self.elixir_tools)}")
        args: Dict[str, Any] = dict(_params or {})
        args.update(kwargs)
        try:
            return self.native.invoke_host_tool(tool_name, args)
        except Exception as e:
            raise RuntimeError(f"Failed to call Elixir tool: {e}") from e

    def cleanup(self) -> None:
        """A no-op: the host owns sessions and expires them by TTL."""

    def __enter__(self) -> "SessionContext":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.cleanup()

    def __repr__(self) -> str:
        return f"SessionContext(session_id='{self.session_id}')"
