"""An adapter that writes to stdout everywhere it can, to prove the
handshake pipe only ever carries the READY line."""

import os
import subprocess
import sys

from snakepit_bridge import BaseAdapter, tool

print("noisy: print at import")


class NoisyAdapter(BaseAdapter):
    def setup(self) -> None:
        print("noisy: print in setup")
        os.write(1, b"noisy: raw write to fd 1 in setup\n")

    @tool
    def shout(self) -> str:
        print("noisy: print in a tool")
        subprocess.run([sys.executable, "-c", "print('noisy: child process stdout')"], check=True)
        return "done"


class BrokenSetup(BaseAdapter):
    def setup(self) -> None:
        raise RuntimeError("model file missing")

    @tool
    def never(self) -> None:
        """A tool, so the adapter gets as far as setup()."""


class SlowSetup(BaseAdapter):
    def setup(self) -> None:
        sys.stderr.write("slow setup started\n")
        sys.stderr.flush()
        import time

        time.sleep(30)  # stands in for a long model load; the test stops it early

    @tool
    def never(self) -> None:
        """A tool, so the adapter gets as far as setup()."""


class LoopBlocker(BaseAdapter):
    @tool
    async def block_loop(self, seconds: float = 30) -> None:
        """An async tool that wrongly blocks the event loop."""
        import time

        sys.stderr.write("loop blocked\n")
        sys.stderr.flush()
        time.sleep(seconds)
