"""snakepit_bridge: the Python side of snakepit.

Write an adapter, and the Go host runs it in a pool of worker processes::

    from snakepit_bridge import BaseAdapter, SessionContext, tool

    class MyAdapter(BaseAdapter):
        def setup(self) -> None:          # once per worker process, before ready
            self.model = load_model()

        @tool(description="Add two numbers")
        def add(self, a: float, b: float) -> float:
            return a + b

        @tool
        async def fetch(self, url: str, ctx: SessionContext) -> dict:
            return await get(url, cancelled=ctx.cancel_event)

        @tool
        def count(self, n: int):          # a generator is a streaming tool
            for i in range(n):
                yield {"i": i}

The worker process itself is ``python -m snakepit_bridge.server`` (see
:mod:`snakepit_bridge.server` for its command line and the handshake).
Importing this package has no side effects: it does not import the server.

Adapters written for Snakepit (the Elixir project) run too: its module
names (``snakepit_bridge.base_adapter``, ``.session_context``,
``.base_adapter_threaded``, ``.telemetry``, ``.serialization``,
``.logging_config``, ``.heartbeat``, ``.zero_copy``) are here, and so are
the names Snakepit's README imports from this package
(``ThreadSafeAdapter``, ``thread_safe_method``, ``telemetry``, …; loaded on
first use). docs/MIGRATING.md describes how such an adapter is run.
"""

from __future__ import annotations

from .argcheck import InvalidArgs, type_str
from .batch import Batch
from .adapter import BaseAdapter, ToolInfo, ToolParam, ToolSpec, collect_tools, derive_spec, tool, type_name
from .context import (
    BridgeError,
    HostToolError,
    SessionContext,
    SnakepitError,
    ToolCancelled,
    current_context,
    install_trace_logging,
)

__version__ = "0.1.0"

# Snakepit's names, imported on first use (PEP 562) so that importing this
# package stays cheap.
_SNAKEPIT_NAMES = {
    "ThreadSafeAdapter": "base_adapter_threaded",
    "thread_safe_method": "base_adapter_threaded",
    "HeartbeatClient": "heartbeat",
    "HeartbeatConfig": "heartbeat",
    "configure_logging": "logging_config",
    "get_logger": "logging_config",
    "ZeroCopyRef": "zero_copy",
}


def __getattr__(name: str) -> object:
    module = _SNAKEPIT_NAMES.get(name)
    if module is None:
        raise AttributeError(f"module 'snakepit_bridge' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f"{__name__}.{module}"), name)


__all__ = [
    "__version__",
    "tool",
    "Batch",
    "BaseAdapter",
    "SessionContext",
    "current_context",
    "install_trace_logging",
    "ToolSpec",
    "ToolParam",
    "ToolInfo",
    "derive_spec",
    "collect_tools",
    "type_name",
    "type_str",
    "InvalidArgs",
    "SnakepitError",
    "HostToolError",
    "BridgeError",
    "ToolCancelled",
]
