"""Snakepit's thread-safe adapter helpers (``snakepit_bridge.base_adapter_threaded``).

A class with ``__thread_safe__ = True`` (every ThreadSafeAdapter) runs up to
the worker's capacity (``Config.Capacity``, the worker's ``--max-workers``)
calls at once in one process, each on a new instance of its own; any other
Snakepit-style adapter runs one call at a time per process. As in Snakepit,
``acquire_lock`` and the thread-local storage belong to the instance, that
is to one call: state shared between calls lives at module level, guarded
by a module-level lock.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import logging
import threading
import time
from typing import Any, Callable, Dict, Iterator, Optional, TypeVar

from .base_adapter import BaseAdapter, ToolMetadata, tool

__all__ = [
    "ThreadLocalStorage",
    "RequestTracker",
    "thread_safe_method",
    "ThreadSafeAdapter",
    "require_thread_safe",
    "validate_thread_safety",
    "tool",
    "ToolMetadata",
]

log = logging.getLogger("snakepit_bridge.compat.threaded")

F = TypeVar("F", bound=Callable[..., Any])


class ThreadLocalStorage:
    """Values kept per thread."""

    def __init__(self) -> None:
        self._local = threading.local()

    def get(self, key: str, default: Any = None) -> Any:
        return getattr(self._local, key, default)

    def set(self, key: str, value: Any) -> None:
        setattr(self._local, key, value)

    def delete(self, key: str) -> None:
        self._local.__dict__.pop(key, None)

    def clear(self) -> None:
        self._local.__dict__.clear()


class RequestTracker:
    """Counts requests per thread (for get_stats)."""

    def __init__(self) -> None:
        self.requests_by_thread: Dict[int, int] = collections.defaultdict(int)
        self.active_requests: Dict[int, int] = collections.defaultdict(int)
        self.total_requests = 0
        self.lock = threading.Lock()

    def start_request(self, thread_id: Optional[int] = None) -> int:
        tid = threading.get_ident() if thread_id is None else thread_id
        with self.lock:
            self.total_requests += 1
            self.requests_by_thread[tid] += 1
            self.active_requests[tid] += 1
            return self.total_requests

    def end_request(self, thread_id: Optional[int] = None) -> None:
        tid = threading.get_ident() if thread_id is None else thread_id
        with self.lock:
            if self.active_requests[tid] > 0:
                self.active_requests[tid] -= 1

    def get_stats(self) -> Dict[str, int]:
        with self.lock:
            return {
                "total_requests": self.total_requests,
                "active_threads": sum(1 for n in self.active_requests.values() if n > 0),
                "total_active_requests": sum(self.active_requests.values()),
                "threads_seen": len(self.requests_by_thread),
            }


def thread_safe_method(func: F) -> F:
    """Mark a method as safe to run concurrently and track its calls on a
    ThreadSafeAdapter (a tool marker on ``func`` is kept)."""

    @functools.wraps(func)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        tracker: Optional[RequestTracker] = getattr(self, "_tracker", None)
        if not isinstance(self, ThreadSafeAdapter) or tracker is None:
            return func(self, *args, **kwargs)
        tracker.start_request()
        t0 = time.perf_counter()
        try:
            return func(self, *args, **kwargs)
        except Exception:
            log.debug("%s failed after %.3fs", func.__name__, time.perf_counter() - t0)
            raise
        finally:
            tracker.end_request()

    setattr(wrapper, "__thread_safe__", True)
    return wrapper  # type: ignore[return-value]


class ThreadSafeAdapter(BaseAdapter):
    """Base for adapters that may serve calls concurrently."""

    __thread_safe__ = True

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.RLock()
        self._thread_local = ThreadLocalStorage()
        self._tracker = RequestTracker()

    @contextlib.contextmanager
    def acquire_lock(self) -> Iterator[None]:
        with self._lock:
            yield

    def get_thread_local(self, key: str, default: Any = None) -> Any:
        return self._thread_local.get(key, default)

    def set_thread_local(self, key: str, value: Any) -> None:
        self._thread_local.set(key, value)

    def clear_thread_local(self, key: Optional[str] = None) -> None:
        if key is None:
            self._thread_local.clear()
        else:
            self._thread_local.delete(key)

    def get_stats(self) -> Dict[str, Any]:
        return {
            "adapter_class": type(self).__name__,
            "thread_safe": bool(getattr(self, "__thread_safe__", False)),
            "tracker": self._tracker.get_stats(),
        }

    @contextlib.contextmanager
    def track_request(self, request_id: Optional[str] = None) -> Iterator[int]:
        rid = self._tracker.start_request()
        try:
            yield rid
        finally:
            self._tracker.end_request()


def require_thread_safe(func: F) -> F:
    """Refuse (ValueError) to call ``func(adapter, ...)`` with an adapter
    that does not declare ``__thread_safe__ = True``."""

    @functools.wraps(func)
    def wrapper(adapter: Any, *args: Any, **kwargs: Any) -> Any:
        if getattr(adapter, "__thread_safe__", False) is not True:
            raise ValueError(
                f"Adapter {type(adapter).__name__} is not thread-safe; set __thread_safe__ = True "
                "if it supports concurrent calls"
            )
        return func(adapter, *args, **kwargs)

    return wrapper  # type: ignore[return-value]


def validate_thread_safety(adapter_class: type) -> bool:
    """Whether ``adapter_class`` declares ``__thread_safe__ = True`` (a
    warning is logged when it does not)."""
    ok = getattr(adapter_class, "__thread_safe__", False) is True
    if not ok:
        log.warning("%s does not declare __thread_safe__ = True: its calls run one at a time", adapter_class.__name__)
    return ok
