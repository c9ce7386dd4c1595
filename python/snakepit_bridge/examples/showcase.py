"""ShowcaseAdapter: a tool for every behaviour the host has to cope with.

The Go lifecycle and integration suites depend on these tools' names and
results; change them only together with those tests.

Counters (``counters()``) live on the single adapter instance, so they also
prove there is one instance per worker process: ``calls`` grows across
calls instead of restarting at 1.
"""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
import threading
import time
from typing import Any, AsyncIterator, Dict, Iterator, Optional

from snakepit_bridge import BaseAdapter, SessionContext, tool


class ShowcaseAdapter(BaseAdapter):
    """Tools that exercise results, errors, cancellation, streaming and sessions."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.calls = 0
        self.cancelled_streams = 0
        self.cancelled_hangs = 0
        self._sessions: Dict[str, int] = {}
        self._children: list = []
        self._rv = threading.Condition()
        self._rv_inside = 0
        self._rv_max = 0
        self._rv_open = False

    def _tick(self) -> None:
        with self._lock:
            self.calls += 1

    def teardown(self) -> None:
        # Written to stderr so tests (and people) can see teardown ran.
        print(f"showcase teardown: calls={self.calls}", file=sys.stderr, flush=True)

    # -- results ------------------------------------------------------------

    @tool(description="Answer 'pong'")
    def ping(self) -> str:
        self._tick()
        return "pong"

    @tool(description="Return the keyword arguments it was called with")
    def echo(self, **kwargs: Any) -> Dict[str, Any]:
        self._tick()
        return kwargs

    @tool(description="Add two numbers (ints stay ints)")
    def add(self, a: float, b: float) -> float:
        self._tick()
        return a + b

    @tool(description="Return the bytes it was given (pass them as a binary argument)")
    def bytes_echo(self, data: bytes) -> bytes:
        self._tick()
        return data

    @tool(description="Return None (JSON null)")
    def none(self) -> None:
        self._tick()
        return None

    @tool(description="Return an object that has no JSON form: exercises the SerializationError")
    def bad_result(self) -> Any:
        self._tick()
        return {"lock": threading.Lock()}

    # -- failures -----------------------------------------------------------

    @tool(description="Raise ValueError(message)")
    def fail(self, message: str = "boom") -> None:
        self._tick()
        raise ValueError(message)

    @tool(description="Kill this worker process at once with the given exit code")
    def crash(self, code: int = 1) -> None:
        self._tick()
        sys.stderr.flush()
        os._exit(code)

    # -- time and cancellation ------------------------------------------------

    @tool(description="Sleep ms milliseconds in a thread; ends early when cancelled")
    def sleep(self, ms: int, ctx: SessionContext) -> int:
        self._tick()
        ctx.wait_cancelled(max(ms, 0) / 1000.0)
        return ms

    @tool(description="Sleep ms milliseconds in a thread, ignoring cancellation (like a blocking C call)")
    def stubborn_sleep(self, ms: int) -> int:
        self._tick()
        time.sleep(max(ms, 0) / 1000.0)
        return ms

    @tool(description="Wait until n calls are inside at once (or timeout_ms); return the most seen together")
    def rendezvous(self, n: int, timeout_ms: int = 5000) -> int:
        self._tick()
        with self._rv:
            self._rv_inside += 1
            self._rv_max = max(self._rv_max, self._rv_inside)
            if self._rv_inside >= n:
                # Released for good: the first to leave must not hold back
                # the others, who re-check after waking.
                self._rv_open = True
                self._rv.notify_all()
            self._rv.wait_for(lambda: self._rv_open, timeout=max(timeout_ms, 0) / 1000.0)
            seen = self._rv_max
            self._rv_inside -= 1
            if self._rv_inside == 0:
                self._rv_max, self._rv_open = 0, False
        return seen

    @tool(description="Print one line of nbytes characters (to stderr, where stdout goes) and return nbytes")
    def print_big(self, nbytes: int) -> int:
        self._tick()
        print("x" * max(nbytes, 0), flush=True)
        return nbytes

    @tool(max_concurrency=1, description="Hold the pool's only slot for this tool for ms milliseconds; return when it ran (wall clock) and where")
    async def exclusive(self, ms: int = 50) -> Dict[str, Any]:
        self._tick()
        start = time.time()
        await asyncio.sleep(max(ms, 0) / 1000)
        return {"start": start, "end": time.time(), "pid": os.getpid()}

    @tool(timeout=0.5, description="Sleep ms milliseconds (async); a call without a deadline of its own ends after 0.5 s")
    async def bounded_sleep(self, ms: int) -> int:
        self._tick()
        await asyncio.sleep(max(ms, 0) / 1000)
        return ms

    @tool(description="The caller's trace context as this tool sees it; also logs one line carrying the trace id")
    def trace_context(self, ctx: SessionContext) -> Dict[str, str]:
        self._tick()
        logging.getLogger(__name__).warning("trace_context called")
        return {"traceparent": ctx.traceparent, "tracestate": ctx.tracestate, "trace_id": ctx.trace_id, "span_id": ctx.span_id}

    @tool(description="Wait forever (async) until cancelled")
    async def hang(self) -> None:
        self._tick()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            with self._lock:
                self.cancelled_hangs += 1
            raise

    @tool(description="Stream {'i': i} for i in 1..n, delay_ms apart")
    async def stream_count(self, n: int, delay_ms: int = 0) -> AsyncIterator[Dict[str, int]]:
        self._tick()
        completed = False
        try:
            for i in range(1, n + 1):
                if delay_ms > 0 and i > 1:
                    await asyncio.sleep(delay_ms / 1000.0)
                yield {"i": i}
            completed = True
        finally:
            # GeneratorExit (closed by the worker) and CancelledError both
            # land here; only a stream that did not run to the end counts.
            if not completed:
                with self._lock:
                    self.cancelled_streams += 1

    @tool(description="Stream {'i': i} for i in 1..after, then raise RuntimeError")
    def stream_fail(self, after: int = 2) -> Iterator[Dict[str, int]]:
        self._tick()
        for i in range(1, after + 1):
            yield {"i": i}
        raise RuntimeError(f"stream failed after {after} items")

    @tool(description="Counters of this adapter instance")
    def counters(self) -> Dict[str, int]:
        self._tick()
        with self._lock:
            return {
                "cancelled_streams": self.cancelled_streams,
                "cancelled_hangs": self.cancelled_hangs,
                "calls": self.calls,
            }

    # -- process facts --------------------------------------------------------

    @tool(description="pid, worker id, python version, run id and adapter of this worker, and the call's request id")
    def worker_info(self, ctx: SessionContext) -> Dict[str, Any]:
        self._tick()
        return {
            "pid": os.getpid(),
            "worker_id": ctx.worker_id,
            "request_id": ctx.request_id,
            "python_version": sys.version.split()[0],  # platform.python_version(); platform costs every start
            "run_id": ctx.run_id,
            "adapter": f"{type(self).__module__}.{type(self).__qualname__}",
        }

    @tool(description="Start a grandchild process that sleeps `seconds` (in a new session and process group with new_session); returns its pid")
    def spawn_child(self, seconds: float = 60, new_session: bool = False) -> Dict[str, int]:
        self._tick()
        child = subprocess.Popen(
            [sys.executable, "-c", f"import time; time.sleep({float(seconds)!r})"],
            stdin=subprocess.DEVNULL,
            start_new_session=bool(new_session),
        )
        with self._lock:
            # Keeping the Popen avoids a "still running" ResourceWarning at GC.
            self._children.append(child)
        return {"pid": child.pid}

    # -- sessions and the host ----------------------------------------------------

    @tool(description="Count calls per session id in this worker")
    def session_counter(self, ctx: SessionContext) -> Dict[str, Any]:
        self._tick()
        with self._lock:
            n = self._sessions.get(ctx.session_id, 0) + 1
            self._sessions[ctx.session_id] = n
        return {"session_id": ctx.session_id, "count": n, "pid": os.getpid()}

    @tool(description="Call a host tool through the bridge and return its result")
    def call_host(self, name: str, ctx: SessionContext, args: Optional[dict] = None) -> Any:
        self._tick()
        return ctx.call_host_tool(name, **(args or {}))

    @tool(description="Ask the host whether this call's session is still valid")
    def session_valid(self, ctx: SessionContext) -> bool:
        self._tick()
        return ctx.heartbeat()
