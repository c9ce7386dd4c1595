"""Tools of the Go memory and reload tests (test/integration/reload_test.go,
memory_test.go), mixed into the adapters those tests write on the fly.

hold_memory grows this worker's resident memory on purpose and keeps it;
hold_memory_in_child does it in a grandchild process, to prove the limit
counts the worker's whole process tree.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from typing import Dict, List

from snakepit_bridge import tool

_held: List[bytes] = []
_kids: List[subprocess.Popen] = []
_lock = threading.Lock()


class MemoryTools:
    @tool(description="Allocate mb MiB, touch every page, keep it until the process ends; return the MiB held")
    def hold_memory(self, mb: int) -> int:
        block = b"\x01" * (mb << 20)  # filled, so every page is resident
        with _lock:
            _held.append(block)
            return sum(len(b) for b in _held) >> 20

    @tool(description="Start a grandchild that holds mb MiB until killed; return its pid once it holds them")
    def hold_memory_in_child(self, mb: int) -> Dict[str, int]:
        code = f"import sys, time; b = b'\\x01' * ({int(mb)} << 20); print('held', flush=True); time.sleep(3600)"
        p = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)
        assert p.stdout is not None
        p.stdout.readline()
        with _lock:
            _kids.append(p)
        return {"pid": p.pid}
