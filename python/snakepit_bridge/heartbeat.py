"""Snakepit's worker heartbeat (``snakepit_bridge.heartbeat``), as no-ops.

In Snakepit the Python worker pings Elixir and exits when Elixir stops
answering. Here the Go host does both jobs itself: it pings every worker
(``Config.HealthInterval``; a worker that does not answer is replaced) and
every worker watches its host (stdin EOF, parent pid change) and exits when
the host is gone. So :class:`HeartbeatClient` never starts a loop; its
``start()`` returns False. A tool that wants to tell the host it is alive,
or to ask whether its session still exists, calls the native
``SessionContext.heartbeat()``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Awaitable, Callable, Mapping, Optional

__all__ = ["HeartbeatConfig", "HeartbeatClient"]


@dataclasses.dataclass(frozen=True)
class HeartbeatConfig:
    """Snakepit's heartbeat settings (accepted, not used: see the module doc)."""

    enabled: bool = True
    interval_ms: int = 2_000
    timeout_ms: int = 10_000
    max_missed_heartbeats: int = 3
    initial_delay_ms: int = 0
    jitter_ms: int = 0
    dependent: bool = True

    @classmethod
    def from_mapping(
        cls, options: Optional[Mapping[str, Any]], *, defaults: Optional["HeartbeatConfig"] = None
    ) -> "HeartbeatConfig":
        base = dataclasses.asdict(defaults or cls())
        for f in dataclasses.fields(cls):
            if options and f.name in options and options[f.name] is not None:
                raw = options[f.name]
                base[f.name] = bool(raw) if f.type in (bool, "bool") else int(raw)
        return cls(**base)


class HeartbeatClient:
    """Accepts Snakepit's arguments; the host supervises liveness instead."""

    def __init__(
        self,
        stub: Any = None,
        session_id: str = "",
        config: Optional[HeartbeatConfig] = None,
        *,
        loop: Any = None,
        on_threshold_exceeded: Optional[Callable[[int], Awaitable[None]]] = None,
    ) -> None:
        self._config = config or HeartbeatConfig()
        self._session_id = session_id

    @property
    def config(self) -> HeartbeatConfig:
        return self._config

    def start(self) -> bool:
        """Never starts a loop (the host pings the worker): returns False."""
        return False

    async def stop(self) -> None:
        return None

    def status(self) -> Mapping[str, Any]:
        return {"enabled": False, "running": False, "session_id": self._session_id,
                "reason": "liveness is supervised by the Go host"}

    async def ping_once(self) -> None:
        return None
