"""Snakepit README's thread-safe adapter pattern (ThreadSafeAdapter,
thread_safe_method), plus one that does not declare thread safety."""

import threading
import time

from snakepit_bridge import ThreadSafeAdapter, thread_safe_method, tool
from snakepit_bridge.base_adapter import BaseAdapter
from snakepit_bridge.base_adapter import tool as sp_tool

_lock = threading.Lock()
_state = {"running": 0, "max": 0}


def _enter():
    with _lock:
        _state["running"] += 1
        _state["max"] = max(_state["max"], _state["running"])


def _leave():
    with _lock:
        _state["running"] -= 1


def _wait_for_peers(want: int, timeout_ms: int) -> None:
    deadline = time.monotonic() + timeout_ms / 1000.0
    while time.monotonic() < deadline:
        with _lock:
            if _state["running"] >= want:
                return
        time.sleep(0.005)


class ThreadedAdapter(ThreadSafeAdapter):
    __thread_safe__ = True

    @tool
    @thread_safe_method
    def overlap(self, want: int, timeout_ms: int = 3000) -> dict:
        """Waits until `want` calls run at once (or the timeout)."""
        _enter()
        try:
            _wait_for_peers(want, timeout_ms)
            cache = self.get_thread_local("cache", default={})
            cache["seen"] = True
            self.set_thread_local("cache", cache)
            with self.acquire_lock():
                pass
            return {"max": _state["max"], "thread": threading.current_thread().name}
        finally:
            _leave()

    @tool
    def peak(self) -> int:
        return _state["max"]


class SerialAdapter(BaseAdapter):
    """No __thread_safe__: one call at a time, whatever the capacity."""

    @sp_tool(description="Waits for peers that must never come")
    def overlap(self, want: int, timeout_ms: int = 300) -> dict:
        _enter()
        try:
            _wait_for_peers(want, timeout_ms)
            return {"max": _state["max"]}
        finally:
            _leave()
