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
"""

from __future__ import annotations

from .argcheck import InvalidArgs, type_str
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

__all__ = [
    "__version__",
    "tool",
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
