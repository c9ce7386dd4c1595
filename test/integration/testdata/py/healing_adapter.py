"""Adapter of the Go healing tests (test/integration/healing_test.go): the
showcase tools with a setup() that can be made slow (so a test can kill a
worker while it is still starting) or broken for one worker until a marker
file appears (so a test can fix the environment of a running App).

Environment (set by the tests through Config.Env):
  HEALING_SETUP_S        setup() sleeps that long before the handshake
  HEALING_BROKEN_WORKER  setup() of this worker id raises ...
  HEALING_FIXED_MARKER   ... until this file exists
"""

from __future__ import annotations

import os
import time

from snakepit_bridge import tool
from snakepit_bridge.examples.showcase import ShowcaseAdapter


class HealingAdapter(ShowcaseAdapter):
    def setup(self) -> None:
        time.sleep(float(os.environ.get("HEALING_SETUP_S", "0") or 0))
        broken = os.environ.get("HEALING_BROKEN_WORKER", "")
        marker = os.environ.get("HEALING_FIXED_MARKER", "")
        if broken and getattr(self, "worker_id", "") == broken and not os.path.exists(marker):
            raise RuntimeError(f"environment not fixed yet: {marker} is missing")

    @tool(description="Append id to the file at path (one write, O_APPEND) and return id: proof that a call that succeeded really ran")
    def record(self, id: str, path: str) -> str:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, (id + "\n").encode())
        finally:
            os.close(fd)
        return id
