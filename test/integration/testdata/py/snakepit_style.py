"""Adapters written the way Snakepit (the Elixir project) documents them,
using only its Python API, to check that snakepit runs them unchanged.
Used by test/integration/compat_test.go and python/tests/test_compat.py."""

import asyncio
import threading
import time
from typing import Any, Dict

from snakepit_bridge import telemetry
from snakepit_bridge.base_adapter import BaseAdapter, tool
from snakepit_bridge.logging_config import get_logger

logger = get_logger(__name__)

# Per-process record of the lifecycle, keyed by session id.
EVENTS: Dict[str, list] = {}
INSTANCES = [0]


class StreamChunk:
    """The chunk wrapper Snakepit's showcase defines for itself."""

    def __init__(self, data, is_final=False):
        self.data = data
        self.is_final = is_final


class Opaque:
    """Not JSON, no conversion method: becomes a marker."""


class Point:
    def __init__(self, x, y):
        self.x, self.y = x, y

    def to_dict(self):
        return {"x": self.x, "y": self.y}


def _stream_count(ctx, n: int = 3):
    for i in range(n):
        yield StreamChunk({"i": i, "session": ctx.session_id}, is_final=(i == n - 1))


class LifecycleAdapter(BaseAdapter):
    """Dispatches through execute_tool, like Snakepit's ShowcaseAdapter."""

    def __init__(self):
        super().__init__()
        INSTANCES[0] += 1
        self.instance_no = INSTANCES[0]
        self.initialized = False
        self.handlers = {"stream_count": _stream_count, "undeclared_echo": lambda ctx, **kw: {"echo": kw}}

    def _log(self, what):
        EVENTS.setdefault(self.session_id or "", []).append(what)

    def set_session_context(self, session_context):
        super().set_session_context(session_context)
        self._log("set_session_context")

    def initialize(self):
        self.initialized = True
        self._log("initialize")

    def cleanup(self):
        self._log("cleanup")

    def execute_tool(self, tool_name: str, arguments: Dict[str, Any], context) -> Any:
        self._log(f"execute_tool:{tool_name}")
        if tool_name in self.handlers:
            return self.handlers[tool_name](context, **arguments)
        return self.call_tool(tool_name, **arguments)

    @tool(description="Add two numbers")
    def add(self, a: float, b: float) -> float:
        return a + b

    @tool(description="What this call's instance saw")
    def whoami(self) -> Dict[str, Any]:
        return {
            "instance": self.instance_no,
            "initialized": self.initialized,
            "session_id": self.session_id,
            "correlation_id": self.session_context.correlation_id,
            "events": list(EVENTS.get(self.session_id or "", [])),
        }

    @tool(description="Lifecycle events recorded for the session so far")
    def events(self) -> list:
        return list(EVENTS.get(self.session_id or "", []))

    @tool(description="Count down", supports_streaming=True)
    def countdown(self, n: int = 3):
        for i in range(n, 0, -1):
            yield {"n": i}

    @tool(description="Fails")
    def boom(self) -> None:
        raise ValueError("boom from a Snakepit-style tool")

    @tool(description="Returns values JSON cannot carry")
    def weird(self) -> Dict[str, Any]:
        return {"opaque": Opaque(), "point": Point(1, 2), "ok": True, "when": time.gmtime(0).tm_year}

    @tool(description="Length of binary data")
    def binary_len(self, data: bytes) -> Dict[str, Any]:
        return {"len": len(data), "type": type(data).__name__, "first": data[0] if data else None}

    @tool(description="Calls a host tool through call_elixir_tool")
    def call_host(self, text: str) -> Dict[str, Any]:
        ctx = self.session_context
        listed = "upper" in ctx.elixir_tools
        via_kwargs = ctx.call_elixir_tool("upper", text=text)
        via_dict = ctx.call_elixir_tool("upper", {"text": text + "!"})
        via_proxy = ctx.elixir_tools["upper"](text="proxy")
        return {"listed": listed, "kwargs": via_kwargs, "dict": via_dict, "proxy": via_proxy}

    @tool(description="Calls a host tool that does not exist")
    def call_missing(self) -> str:
        try:
            self.session_context.call_elixir_tool("no_such_tool", x=1)
        except ValueError as e:
            return "ValueError: " + str(e)[:40]
        return "no error"

    @tool(description="Emits telemetry")
    def emit_telemetry(self, label: str) -> str:
        telemetry.emit("compat.test.event", {"value": 7}, {"label": label})
        with telemetry.span("compat.test.span", {"label": label}):
            pass
        return telemetry.get_correlation_id() or ""


class ReadmeAdapter(BaseAdapter):
    """Snakepit README's "Creating an Adapter" example, with a fake model."""

    _model_cache: Dict[str, Any] = {}

    def __init__(self):
        super().__init__()
        self.model = None

    def initialize(self):
        if "model" not in ReadmeAdapter._model_cache:
            ReadmeAdapter._model_cache["model"] = str.upper
        self.model = ReadmeAdapter._model_cache["model"]

    def cleanup(self):
        pass

    @tool(description="Run inference on input data")
    def predict(self, input_data: dict) -> dict:
        return {"prediction": self.model(input_data["text"]), "confidence": 0.95}

    @tool(description="Process with progress updates", supports_streaming=True)
    def batch_process(self, items: list):
        for i, item in enumerate(items):
            yield {"progress": (i + 1) / len(items) * 100, "result": self.model(item)}


class AsyncTemplateAdapter:
    """Snakepit's template shape: no base class, async hooks, async execute_tool."""

    cleaned = [0]

    def __init__(self):
        self.session_context = None
        self.initialized = False

    def set_session_context(self, session_context):
        self.session_context = session_context

    async def initialize(self):
        await asyncio.sleep(0)
        self.initialized = True

    async def cleanup(self):
        AsyncTemplateAdapter.cleaned[0] += 1

    async def execute_tool(self, tool_name, arguments, context):
        if tool_name == "hello":
            return {"hello": arguments.get("name", "world"), "initialized": self.initialized,
                    "cleaned_before": AsyncTemplateAdapter.cleaned[0]}
        if tool_name == "ticks":
            async def gen():
                for i in range(arguments.get("n", 2)):
                    await asyncio.sleep(0)
                    yield {"tick": i}
            return gen()
        raise NotImplementedError(f"Unknown tool: {tool_name}")
