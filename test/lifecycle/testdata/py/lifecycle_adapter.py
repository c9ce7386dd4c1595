"""Adapter of the Go lifecycle suite (test/lifecycle): the showcase tools
plus grandchildren that leave the worker's process group — by setsid, or as
a double-forked daemon with its environment kept, untagged or scrubbed — so
the suite can prove who stops such a process (the worker's own descendant
kill, the host's kill of a lifetime's tagged processes, the cleanup sweep)
— the group kill cannot reach it.

Environment (set by the tests through Config.Env):
  LIFECYCLE_TEARDOWN_MARKER_DIR  teardown() first creates <dir>/<pid> there
  LIFECYCLE_TEARDOWN_SLEEP_S     then sleeps that long (a slow teardown)
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from typing import Dict

from snakepit_bridge import tool
from snakepit_bridge.examples.showcase import ShowcaseAdapter


class LifecycleAdapter(ShowcaseAdapter):
    @tool(description="Start a grandchild in a new session and process group that sleeps `seconds`; returns its pid")
    def spawn_session_child(self, seconds: float = 60) -> Dict[str, int]:
        self._tick()
        child = subprocess.Popen(
            [sys.executable, "-c", f"import time; time.sleep({float(seconds)!r})"],
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        with self._lock:
            self._children.append(child)
        return {"pid": child.pid}

    @tool(description="Start a daemon the classic way (setsid, double fork, its parent exits); returns its pid. "
          "env: 'keep' (inherits the run id and process tag), 'untagged' (drops SNAKEPIT_PROCESS_TAG), 'scrubbed' (empty environment)")
    def spawn_daemon(self, seconds: float = 60, env: str = "keep") -> Dict[str, int]:
        self._tick()
        child_env = dict(os.environ)
        if env == "untagged":
            child_env.pop("SNAKEPIT_PROCESS_TAG", None)
        elif env == "scrubbed":
            child_env = {}
        elif env != "keep":
            raise ValueError(f"env must be keep, untagged or scrubbed, not {env!r}")
        code = (
            "import os, sys, time\n"
            "os.setsid()\n"
            "pid = os.fork()\n"
            "if pid:\n"
            "    print(pid, flush=True)\n"
            "    os._exit(0)\n"
            "os.closerange(0, 3)\n"
            f"time.sleep({float(seconds)!r})\n"
        )
        mid = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, env=child_env)
        assert mid.stdout is not None
        pid = int(mid.stdout.readline())
        mid.wait()
        return {"pid": pid}

    @tool(description="The worst case for a stop: make this worker ignore SIGTERM, then sleep `seconds` in a thread, ignoring cancellation")
    async def stubborn(self, seconds: float = 60) -> None:
        # Async, so it runs on the main thread, the only one allowed to
        # change a signal's disposition.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        done = asyncio.get_running_loop().run_in_executor(None, time.sleep, float(seconds))
        while not done.done():
            try:
                await asyncio.shield(done)
            except asyncio.CancelledError:
                pass

    def teardown(self) -> None:
        super().teardown()
        marker_dir = os.environ.get("LIFECYCLE_TEARDOWN_MARKER_DIR", "")
        if marker_dir:
            with open(os.path.join(marker_dir, str(os.getpid())), "w") as f:
                f.write("teardown\n")
        time.sleep(float(os.environ.get("LIFECYCLE_TEARDOWN_SLEEP_S", "0") or 0))
